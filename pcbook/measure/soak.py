"""`make soak`: run the measurements that used to flake, many times, and count the passes.

    python -m pcbook.measure.soak [--runs N] [--only lesson-10,probe-413,notebook-10]

- lesson-10:   `make lesson-10` (the story and its checkpoint), N times;
- probe-413:   lesson 9's probe of an image nginx refuses (413) through nginx/lesson-9-defaults.conf,
               N times on one stack; a pass is a 413 reported by the probe within its timeout;
- notebook-10: the notebook test of lesson 10 (a fresh kernel runs the notebook top to bottom), N times.

A benchmark-style script, not a test: it prints a line per run and the pass counts, and exits 1 if any
run failed. It opens the lessons' fixed ports: on a shared machine run it in a private network
namespace: `unshare -n bash -c "ip link set lo up && make soak"` where user namespaces allow it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from pcbook.paths import ROOT

KINDS = ("lesson-10", "probe-413", "notebook-10")


@dataclass
class Tally:
    kind: str
    passed: int = 0
    runs: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        mean = self.seconds / self.runs if self.runs else 0.0
        return f"{self.kind:<12} {self.passed}/{self.runs} passed   ({mean:.1f} s per run)"


def _subprocess(argv: list[str], timeout: float) -> tuple[bool, str]:
    try:
        res = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"did not finish within {timeout:g} s"
    tail = (res.stdout + res.stderr).strip().splitlines()
    return res.returncode == 0, (tail[-1] if tail else f"exit {res.returncode}")


def lesson_10() -> tuple[bool, str]:
    return _subprocess([sys.executable, "-m", "pcbook.workbook", "lesson", "10"], timeout=180)


def notebook_10() -> tuple[bool, str]:
    return _subprocess([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "tests/notebooks/test_notebooks.py::test_notebook_runs_top_to_bottom[lesson-10]"], 240)


def probes_413(runs: int, report: Callable[[int, bool, float, str], None]) -> Tally:
    """All runs on one stack: two TLS servers and nginx with lesson 9's starting config."""
    from pcbook.lessons import streams
    from pcbook.stack import procs

    class _Ctx:  # the part of a ScenarioContext that Lesson9's stack and probe use
        def __init__(self, stack: procs.Stack) -> None:
            self.stack = stack

    tally = Tally("probe-413")
    with procs.Stack(echo=None) as stack:
        lesson = streams.Lesson9(_Ctx(stack))  # type: ignore[arg-type]
        lesson.start_servers()
        lesson.start_nginx(streams.DEFAULTS_CONF)
        for n in range(1, runs + 1):
            t0 = time.monotonic()
            seen = lesson.probe(streams.L7_PORT, "streams", "--upload-bytes", str(streams.BIG_IMAGE), calls=6,
                                nginx_line=streams.TOO_LARGE)
            took = time.monotonic() - t0
            said = seen.said("UploadImage") or "(no result)"
            ok = "status: 413" in said and took < streams.PROBE_TIMEOUT
            tally.runs += 1
            tally.passed += ok
            tally.seconds += took
            report(n, ok, took, said if ok else "\n".join([said, *seen.result.lines[-40:]]))
    return tally


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pcbook.measure.soak", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10, help="runs of each kind (default 10)")
    p.add_argument("--only", default=",".join(KINDS), help=f"comma-separated kinds among {', '.join(KINDS)}")
    args = p.parse_args(argv)
    kinds = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or args.runs < 1:
        print(f"soak: unknown kind {', '.join(unknown)} (known: {', '.join(KINDS)})" if unknown
              else "soak: --runs must be at least 1")
        return 2
    tallies = []

    def report(kind: str) -> Callable[[int, bool, float, str], None]:
        def line(n: int, ok: bool, took: float, detail: str) -> None:
            print(f"{kind:<12} run {n:>2}/{args.runs}: {'pass' if ok else 'FAIL'} in {took:5.1f} s  {detail}",
                  flush=True)
        return line

    for kind in kinds:
        if kind == "probe-413":
            tallies.append(probes_413(args.runs, report(kind)))
            continue
        run = lesson_10 if kind == "lesson-10" else notebook_10
        tally = Tally(kind)
        for n in range(1, args.runs + 1):
            t0 = time.monotonic()
            ok, detail = run()
            took = time.monotonic() - t0
            tally.runs += 1
            tally.passed += ok
            tally.seconds += took
            report(kind)(n, ok, took, detail)
        tallies.append(tally)
    print()
    for tally in tallies:
        print(tally.line())
    return 0 if all(t.passed == t.runs for t in tallies) else 1


if __name__ == "__main__":
    sys.exit(main())
