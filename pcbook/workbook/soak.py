"""`make soak`: run the measurements that used to flake, many times, and count the passes.

    python -m pcbook.workbook.soak [--runs N] [--only lesson-10,probe-413,notebook-10]

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
import signal
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
    """Run a lesson or a test; on a failure, its last 40 lines are the detail."""
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # as Ctrl-C: the lesson or pytest stops what it started
        proc.communicate(timeout=30)
        return False, f"did not finish within {timeout:g} s"
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        raise
    tail = out.strip().splitlines()
    if proc.returncode == 0:
        return True, tail[-1] if tail else "exit 0"
    return False, "\n".join(tail[-40:]) or f"exit {proc.returncode}"


def lesson_10() -> tuple[bool, str]:
    return _subprocess([sys.executable, "-m", "pcbook.workbook", "lesson", "10"], timeout=180)


def notebook_10() -> tuple[bool, str]:
    return _subprocess([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "tests/notebooks/test_notebooks.py::test_notebook_runs_top_to_bottom[lesson-10]"], 240)


PROBE_TIMEOUT = 30.0  # what lesson 9 gives a probe run


def probes_413(runs: int, report: Callable[[int, bool, float, str], None]) -> Tally:
    """All runs on one stack: lesson 9's two TLS servers and nginx with its starting config; each run is
    the probe of step 3 (an image of 1023 KiB, which nginx refuses with 413)."""
    from pcbook.lessons import l09_streams_and_l4_vs_l7 as streams
    from pcbook.stack import procs
    from pcbook.stage.stage import Stage

    tally = Tally("probe-413")
    step = streams.LESSON.step("upload-413")  # its servers, nginx and probe, as the lesson runs them
    assert isinstance(step.client, streams.Probe)
    with procs.Stack(echo=None) as stack:
        # The stage waits for a port an earlier run's closed connection holds (50091-50092 lie in Linux's
        # ephemeral range).
        Stage(stack, stack.run_dir / "soak", say=print).apply(step.servers, nginx=step.nginx)
        argv = step.client.argv(dump_after=PROBE_TIMEOUT - 3)
        for n in range(1, runs + 1):
            t0 = time.monotonic()
            result = stack.run("probe", argv, timeout=PROBE_TIMEOUT)
            took = time.monotonic() - t0
            said = next((line for line in result.lines if "result: UploadImage" in line), "(no result)")
            ok = "status: 413" in said and took < PROBE_TIMEOUT
            tally.runs += 1
            tally.passed += ok
            tally.seconds += took
            report(n, ok, took, said.split("result: ", 1)[-1] if ok else "\n".join(result.lines[-40:]))
    return tally


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pcbook.workbook.soak", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10, help="runs of each kind (default 10)")
    p.add_argument("--only", default=",".join(KINDS), help=f"comma-separated kinds among {', '.join(KINDS)}")
    p.add_argument("--hogs", type=int, default=0,
                   help="busy processes beside the runs, each taking a core (default 0): counts that hold under load")
    args = p.parse_args(argv)
    kinds = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or args.runs < 1 or args.hogs < 0:
        print(f"soak: unknown kind {', '.join(unknown)} (known: {', '.join(KINDS)})" if unknown
              else "soak: --runs must be at least 1 and --hogs at least 0")
        return 2
    tallies: list[Tally] = []
    runs = args.runs

    def report(kind: str) -> Callable[[int, bool, float, str], None]:
        def line(n: int, ok: bool, took: float, detail: str) -> None:
            print(f"{kind:<12} run {n:>2}/{runs}: {'pass' if ok else 'FAIL'} in {took:5.1f} s  {detail}",
                  flush=True)
        return line

    from pcbook.stage.stage import STACK_ERRORS

    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.hogs)]
    if hogs:
        print(f"{len(hogs)} CPU hog(s) running beside the runs (pids {', '.join(str(h.pid) for h in hogs)})")
    try:
        _run_all(kinds, args.runs, tallies, report)
    except KeyboardInterrupt:
        print("interrupted: what the runs started has been stopped")
    except STACK_ERRORS as err:  # a stack that could not start (a busy port, a server that died): one line
        print(f"soak: stopped: {err}")
        tallies.append(Tally("stack", runs=1))  # counted as a failure
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    print()
    for tally in tallies:
        print(tally.line())
    return 0 if tallies and all(t.passed == t.runs for t in tallies) else 1


def _run_all(kinds: list[str], runs: int, tallies: list[Tally],
             report: Callable[[str], Callable[[int, bool, float, str], None]]) -> None:
    for kind in kinds:
        if kind == "probe-413":
            tallies.append(probes_413(runs, report(kind)))
            continue
        run = lesson_10 if kind == "lesson-10" else notebook_10
        tally = Tally(kind)
        tallies.append(tally)
        for n in range(1, runs + 1):
            t0 = time.monotonic()
            ok, detail = run()
            took = time.monotonic() - t0
            tally.runs += 1
            tally.passed += ok
            tally.seconds += took
            report(kind)(n, ok, took, detail)


if __name__ == "__main__":
    sys.exit(main())
