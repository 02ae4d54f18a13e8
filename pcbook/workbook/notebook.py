"""What the lesson notebooks in lessons/ call: the lesson runner, made to show its work in cells.

    from pcbook.workbook.notebook import Session, show_config, plot_calls
    session = Session(2)             # a fresh stack; closes whatever an earlier run left up
    show_config("lesson-2.conf")     # read from nginx/, never pasted
    step = session.step()            # runs the lesson's next step live: prefixed logs, then what it showed
    plot_calls(step)                 # which backend served which call
    session.checkpoint()             # ends with `checkpoint lesson-2: passed`
    session.close()                  # every process this notebook started is stopped

Each notebook runs its lesson's steps in order, one `session.step()` per step, under a heading that
is the step's title in the manifest (tests/notebooks checks both). The charts read each step's
typed result (pcbook/stage/results.py).

Stopping, in every way a notebook can end:
- last cell: `session.close()`;
- a cell raises (in a step or anywhere else) or the kernel is interrupted: the step's guard and an
  IPython post_run_cell hook close every live Stack of the kernel;
- the kernel restarts or dies: procs' atexit handler and PR_SET_PDEATHSIG stop the children;
- the notebook is re-run from the top: a new Session closes the Stacks of the earlier run.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pcbook import codegen

# A notebook opened right after `make setup` (no `make gen` yet): the modules imported below need the
# generated gRPC code, so the notebook's first cell makes it, as `make gen` would.
if codegen.is_stale():
    codegen.generate()
    print("generated the gRPC code from proto/ into pcbook/pb (what `make gen` does)", flush=True)

from pcbook.paths import NGINX_DIR, ROOT
from pcbook.stack import procs
from pcbook.stage.model import Driver, Lesson, Step
from pcbook.stage.results import (
    Calls,
    Connections,
    Counts,
    Discovered,
    HopRun,
    Joined,
    Latency,
    NginxRun,
    Phases,
    ProbeRun,
    ScaleRun,
)
from pcbook.workbook import manifest
from pcbook.workbook.runner import STACK_ERRORS, LessonResult, LessonRunner, Outcome, conf_for, describe

# `rpc error: code = Unavailable desc = ...`, as the tutorial's client prints a failed call.
_RPC_ERROR = re.compile(r"rpc error: code = (?P<code>\w+) desc = (?P<details>.*)$")
# nginx error log lines worth a learner's eye; [notice] lines (start, reload) are left to the live log.
_NGINX_WORTH = re.compile(r"\[(warn|error|crit|alert|emerg)\]")
SHOWN_LOG_LINES = 8


def _print(line: str) -> None:
    # One write (reader threads' lines never split it), flushed: the kernel shows a cell's output live
    # only as it is flushed.
    print(line + "\n", end="", flush=True)


# --- what notebooks display --------------------------------------------------------------------------

def _display(markdown: str) -> None:
    """Markdown in a notebook, plain text elsewhere (a script, a test)."""
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:
        print(markdown)
        return
    if get_ipython() is None:
        print(markdown)
    else:
        display(Markdown(markdown))


def _fence(text: str, lang: str = "") -> str:
    ticks = "````" if "```" in text else "```"
    return f"{ticks}{lang}\n{text.rstrip()}\n{ticks}"


def config_path(name: str | Path) -> Path:
    """A config by file name in nginx/ ("lesson-2.conf", "exercises/lesson-2.conf") or by path
    (relative to the working directory or to the repository)."""
    path = Path(name)
    for candidate in (NGINX_DIR / path, path, ROOT / path):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no nginx config {name} in {NGINX_DIR} (or at that path)")


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def show_config(name: str | Path) -> None:
    """Display a config (nginx, or Envoy's YAML) as it is on disk, highlighted."""
    path = config_path(name)
    lang = "yaml" if path.suffix in (".yaml", ".yml") else "nginx"
    _display(f"`{_shown(path)}`\n\n" + _fence(path.read_text(), lang))


def show_diff(old: str | Path, new: str | Path) -> None:
    """Display what changed from one config to the next, as a unified diff."""
    a, b = config_path(old), config_path(new)
    diff = difflib.unified_diff(a.read_text().splitlines(), b.read_text().splitlines(),
                                _shown(a), _shown(b), lineterm="")
    _display(_fence("\n".join(diff) or "(no difference)", "diff"))


def rpc_errors(lines: Sequence[str]) -> list[tuple[str, str]]:
    """(code, details) of every `rpc error: code = X desc = Y` line of a client's output."""
    return [(m["code"], m["details"]) for line in lines if (m := _RPC_ERROR.search(line))]


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> None:
    """Display a small Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    _display("\n".join(lines))


# --- stopping ----------------------------------------------------------------------------------------

def stop_everything(reason: str | None = None) -> list[str]:
    """Close every live Stack of this interpreter; returns the names of the processes that were up."""
    running = [name for stack in procs.live_stacks() for name in stack.names if stack.proc(name).running]
    procs.close_all()
    if reason and running:
        _print(f"{reason}: stopped {', '.join(running)}")
    return running


def _after_cell(result: Any) -> None:
    # Any failed cell (an error, Kernel > Interrupt) leaves nothing running; the learner re-runs the
    # notebook from the top, which starts a fresh stack.
    if not getattr(result, "success", True):
        stop_everything("the cell failed")


_hooked = False


def _hook_cells() -> None:
    global _hooked
    if _hooked:
        return
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.events.register("post_run_cell", _after_cell)
        _hooked = True


# --- what a notebook needs, made in its first cell ----------------------------------------------------

class LessonStopped(RuntimeError):
    """The lesson cannot go on; "Run All" stops at this cell, which shows only the reason."""

    def _render_traceback_(self) -> list[str]:  # IPython prints these lines instead of a traceback
        return [f"lesson stopped: {self}"]


def prepare() -> None:
    """Make what `make lab` would have made: the generated gRPC code and valid certificates."""
    from pcbook import codegen, paths
    from pcbook.service import certs

    try:
        if codegen.is_stale():
            codegen.generate()
            _print(f"generated the gRPC code from proto/ into {_shown(paths.PB_DIR)} (what `make gen` does)")
        reason = certs.check_certs(paths.CERTS_DIR)
        if reason is not None:
            certs.ensure_certs()
            _print(f"generated the certificates in {_shown(paths.CERTS_DIR)} ({reason}; what `make cert` does)")
    except (Exception, SystemExit) as err:  # SystemExit: protoc failed
        raise LessonStopped(f"cannot make the generated code and certificates ({err}); run `make cert` in a "
                            "terminal at the repository's root, then run this notebook again") from None


# --- the session -------------------------------------------------------------------------------------

class Session:
    """One notebook's run of a lesson: one Stack kept across cells, stopped in every way a notebook
    can end (see the module's docstring). Each `step()` runs the lesson's next step."""

    def __init__(self, lesson: Lesson | int) -> None:
        self.lesson = lesson if isinstance(lesson, Lesson) else manifest.get(lesson)
        stop_everything("an earlier run was still up")  # re-running from the top never hits a busy port
        prepare()  # a notebook opened outside `make lab` has no generated code or certificates yet
        _hook_cells()
        self.outcomes: list[Outcome] = []
        self.stack = procs.Stack(echo=_print)
        self.runner = LessonRunner(self.stack, self.lesson, _print)
        _print(f"lesson {self.lesson.number}: {self.lesson.title}. In a terminal: make {self.lesson.target}")

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """A step that raises (a busy port, Ctrl-C/Interrupt, a bug) leaves nothing running."""
        try:
            yield
        except BaseException:
            self.close()
            raise

    def step(self, key: str | None = None) -> Outcome:
        """Run the lesson's next step on the live stack, show it as it happens, and judge it. `key`: the
        step the cell means to run (the notebook names each); a cell out of order says so."""
        if self.stack not in procs.live_stacks():
            raise RuntimeError("this session is closed: run the notebook from the top (Session(...)) again")
        number = len(self.outcomes) + 1
        if number > len(self.lesson.steps):
            raise RuntimeError(f"lesson {self.lesson.number} has {len(self.lesson.steps)} steps, all run already")
        step = self.lesson.steps[number - 1]
        if key is not None and key != step.key:
            raise RuntimeError(f"this cell runs step {key!r}, but the next step is {number} ({step.key!r}): "
                               "run the notebook's cells in order, from the top")
        conf = conf_for(self.lesson, step, None)  # the step's own: nginx's, Envoy's, the client's, the knobs
        with self._guard():
            self.runner.leave_for(step)  # what stopping prints comes before this step's heading
        _display(_step_heading(number, len(self.lesson.steps), step, conf))
        with self._guard():
            try:
                outcome = self.runner.run_step(step, conf)
            except STACK_ERRORS as err:  # "Run All" stops here with the reason, not in a chart cell later
                raise LessonStopped(f"step {number} could not run: {err}") from None
        if (policy := _policy_of(step)) is not None:
            _POLICIES[outcome.key] = policy
        self.outcomes.append(outcome)
        _show_outcome(step, outcome)
        return outcome

    def lesson_result(self) -> LessonResult:
        missing = len(self.lesson.steps) - len(self.outcomes)
        error = f"{missing} step(s) not run yet: run every cell from the top" if missing else None
        return LessonResult(self.lesson, list(self.outcomes), error)

    def checkpoint(self) -> None:
        """Print any step that differed from the lesson's story, then the checkpoint line (last).
        Returns nothing, so that the line stays the cell's last output; lesson_result() has the verdict."""
        result = self.lesson_result()
        for outcome in result.steps:
            if not outcome.passed and not outcome.checkpoint:
                _print(f"step {outcome.key} ('{outcome.title}') did not show what the lesson shows: "
                       f"{'; '.join(outcome.diffs)}")
        _print(result.checkpoint_line())

    def close(self) -> None:
        """Stop every process this notebook started. Safe to call more than once."""
        stopped = stop_everything()
        _print(f"stopped {', '.join(stopped)}" if stopped else "nothing is running")


def _step_heading(number: int, total: int, step: Step, conf: Path | None) -> str:
    lines = [f"**Step {number}/{total}: {step.title}**" + (" (checkpoint)" if step.checkpoint else "")]
    if step.expect is not None and not step.expect.ok:
        lines.append("\n*This step is expected to fail: the client exits with an error and the output below "
                     "shows which.*")
    lines.append("")
    for line in describe(step, conf):
        label, _, text = line.partition(":")
        lines.append(f"- {label}: {text.strip()}")
    return "\n".join(lines)


def _show_outcome(step: Step, outcome: Outcome) -> None:
    seen = outcome.seen
    parts: list[str] = []
    if seen is not None:
        errors = rpc_errors(seen.client_lines)
        if errors:
            code, details = errors[-1]
            parts.append(f"The client failed: gRPC code **{code}**, details `{details}`")
        elif not seen.client_ok:
            parts.append("The client failed without an `rpc error` line (see its output above).")
        split = seen.split()
        if split:
            parts.append("Calls: " + "; ".join(f"{srv}: {', '.join(m)}" for srv, m in sorted(split.items())))
        if seen.access_lines:
            parts.append("nginx access log:\n\n" + _fence("\n".join(seen.access_lines[-SHOWN_LOG_LINES:])))
        worth = [line for line in seen.nginx_errors if _NGINX_WORTH.search(line)]
        if worth:
            parts.append("nginx error log:\n\n" + _fence("\n".join(worth[-SHOWN_LOG_LINES:])))
    if outcome.passed:
        expected = "expected failure" if step.expect is not None and not step.expect.ok else "as expected"
        parts.append(f"**{expected}**: {outcome.why}")
    else:
        parts.append("**differs from the lesson**: " + "; ".join(outcome.diffs))
    _display("\n\n".join(parts))


# --- charts ------------------------------------------------------------------------------------------

def _pyplot() -> Any:
    import matplotlib.pyplot as plt
    return plt


def _whole_numbers(axis: Any) -> None:
    """Counts have whole-number ticks (no 2.5 calls)."""
    from matplotlib.ticker import MaxNLocator
    axis.set_major_locator(MaxNLocator(integer=True))


def _legend_outside(ax: Any) -> None:
    """The legend to the right of the axes, never over the data."""
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)


# Outcome key -> the client's balancing policy of that step, as Session.step() ran it.
_POLICIES: dict[str, str] = {}


def _policy_of(step: Step) -> str | None:
    """The client-side balancing policy of a load-driver step (lesson 7), for chart titles."""
    if not isinstance(step.client, Driver):
        return None
    policy, health_check = step.client.balancing()
    if not policy:
        return None
    return policy + (" with health checking" if health_check else "")


def _with_policy(title: str, source: object) -> str:
    policy = _POLICIES.get(source.key) if isinstance(source, Outcome) else None
    return f"{title} ({policy})" if policy else title


def _finish(fig: Any) -> None:
    plt = _pyplot()
    fig.tight_layout()
    plt.show()
    plt.close(fig)


def _calls_of(source: Outcome | Calls) -> Calls:
    """The driver run a step measured (lessons 7 and 8)."""
    result = source.result if isinstance(source, Outcome) else source
    if isinstance(result, Calls):
        return result
    if isinstance(result, Phases | NginxRun | Discovered | Joined):
        return result.run
    raise ValueError("this step recorded no per-call run")


def _counts(source: Outcome | Counts | Mapping[str, Any]) -> dict[str, Any]:
    """Server -> calls (or phase -> server -> calls) from what the source carries."""
    if isinstance(source, Counts):
        return dict(source.per_server)
    if not isinstance(source, Outcome):
        return {k: (v.per_server if isinstance(v, Counts) else v) for k, v in source.items()}
    result = source.result
    if isinstance(result, Phases | Discovered):
        return {phase: dict(c.per_server) for phase, c in result.phases.items()}
    if isinstance(result, Calls | ProbeRun):
        return dict(result.counts().per_server)
    if isinstance(result, NginxRun):
        return dict(result.run.counts().per_server)
    if source.seen is not None:
        return {srv: len(m) for srv, m in source.seen.split().items()}
    return {}


def plot_calls(source: Outcome | Counts | Mapping[str, Any], title: str | None = None) -> None:
    """Which backend served which call: a call-by-call strip (for the tutorial's client, whose calls
    the servers logged in order) and a bar of calls per server. `source` is a step's Outcome, a Counts,
    or {group: Counts | {server: calls}}."""
    plt = _pyplot()
    order = source.seen.calls if isinstance(source, Outcome) and source.seen is not None else None
    counts = _counts(source)
    nested = bool(counts) and all(isinstance(v, Mapping) for v in counts.values())
    panels = 2 if order else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels + 1, 2.6), squeeze=False)
    if order:
        ax = axes[0][0]
        servers = sorted({server for server, _ in order})
        methods = sorted({method.rsplit("/", 1)[-1] for _, method in order})
        colours = {m: f"C{i}" for i, m in enumerate(methods)}
        for i, (server, method) in enumerate(order, 1):
            short = method.rsplit("/", 1)[-1]
            ax.scatter(i, servers.index(server), s=160, marker="s", color=colours[short])
        ax.set_yticks(range(len(servers)), servers)
        ax.set_xticks(range(1, len(order) + 1))
        ax.set_xlabel("call, in the order the servers logged them")
        ax.set_ylim(-0.6, len(servers) - 0.4)
        for m, c in colours.items():
            ax.scatter([], [], marker="s", color=c, label=m)
        _legend_outside(ax)
        ax.set_title("which server served each call")
    ax = axes[0][panels - 1]
    if order:  # stacked by method, in the strip's colours
        servers = sorted({server for server, _ in order})
        bottom = [0] * len(servers)
        for m, c in colours.items():
            values = [sum(1 for srv, meth in order if srv == s and meth.endswith("/" + m)) for s in servers]
            ax.bar(servers, values, bottom=bottom, color=c)
            bottom = [a + b for a, b in zip(bottom, values, strict=True)]
    elif nested:
        phases = list(counts)
        servers = sorted({s for v in counts.values() for s in v})
        width = 0.8 / max(1, len(servers))
        for j, server in enumerate(servers):
            xs = [i + j * width for i in range(len(phases))]
            ax.bar(xs, [counts[p].get(server, 0) for p in phases], width, label=server)
        ax.set_xticks([i + width * (len(servers) - 1) / 2 for i in range(len(phases))], phases)
        _legend_outside(ax)
    else:
        servers = sorted(counts)
        ax.bar(servers, [counts[s] for s in servers], color="C7")
    ax.set_ylabel("calls")
    _whole_numbers(ax.yaxis)
    ax.set_title(title or _with_policy("calls per server", source))
    _finish(fig)


def plot_timeline(source: Outcome | Calls, title: str | None = None) -> None:
    """Each call of a run at its start time: which server ran it (if known) and its gRPC code."""
    plt = _pyplot()
    run = _calls_of(source)
    if not run.calls:
        raise LessonStopped("this step recorded no call (see the step's output above)")
    in_ms = run.origin == "the kill"  # the moments around a kill are tens of milliseconds apart
    scale = 1000 if in_ms else 1
    rows = sorted({c.server for c in run.calls})
    codes = sorted({c.code for c in run.calls}, key=lambda c: (c != "OK", c))
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * len(rows)))
    for i, code in enumerate(codes):
        mine = [c for c in run.calls if c.code == code]
        ax.scatter([c.start * scale for c in mine], [rows.index(c.server) for c in mine], label=code,
                   color="C2" if code == "OK" else f"C{3 + i}", marker="o" if code == "OK" else "x")
    for mark in run.marks:
        ax.axvline(mark.at * scale, color="grey", linestyle="--")
        ax.annotate(mark.label, (mark.at * scale, len(rows) - 0.5), fontsize="small", color="grey")
    ax.set_xlabel(f"{'ms' if in_ms else 's'} since {run.origin}")
    ax.set_yticks(range(len(rows)), ["all calls"] if rows == ["none"] else rows)
    ax.set_ylim(-0.6, len(rows) - 0.2)
    _legend_outside(ax)
    ax.set_title(title or _with_policy("every call: when it started, where it ran, how it ended", source))
    _finish(fig)


def plot_codes(*sources: Outcome | Calls, labels: Sequence[str] = ()) -> None:
    """gRPC codes the client saw, one group of bars per step."""
    plt = _pyplot()
    groups = [dict(_calls_of(s).codes()) for s in sources]
    names = list(labels) or [s.title if isinstance(s, Outcome) else f"run {i}" for i, s in enumerate(sources, 1)]
    codes = sorted({c for g in groups for c in g}, key=lambda c: (c != "OK", c))
    fig, ax = plt.subplots(figsize=(7, 2.4 + 0.3 * len(groups)))
    left = [0] * len(groups)
    for i, code in enumerate(codes):
        values = [g.get(code, 0) for g in groups]
        ax.barh(range(len(groups)), values, left=left, label=code, color="C2" if code == "OK" else f"C{3 + i}")
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_yticks(range(len(groups)), [_wrap(n) for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("calls")
    _whole_numbers(ax.xaxis)
    _legend_outside(ax)
    ax.set_title("how the calls ended")
    _finish(fig)


def plot_shares(*sources: Outcome | Joined, server: str, labels: Sequence[str] = ()) -> None:
    """A joining server's share of each second's calls, one line per run, with the moment it joined (lesson 14)."""
    plt = _pyplot()
    runs = [s.result if isinstance(s, Outcome) else s for s in sources]
    if not all(isinstance(r, Joined) for r in runs):
        raise LessonStopped("these steps recorded no run with a joining server (see their output above)")
    names = list(labels) or [s.title if isinstance(s, Outcome) else f"run {i}" for i, s in enumerate(sources, 1)]
    fig, ax = plt.subplots(figsize=(8, 3))
    for i, (run, name) in enumerate(zip(runs, names, strict=True)):
        shares = run.shares(server)[:-1]  # the last second is partial
        ax.plot(range(len(shares)), [100 * v for v in shares], marker="o", color=f"C{i}", label=_wrap(name))
        ax.axvline(run.joined, color=f"C{i}", linestyle="--", alpha=0.6)
    ax.axhline(100 / len(runs[0].run.servers), color="grey", linestyle=":", label="an even share")
    ax.set_xlabel("second of the run (dashed: the server joined)")
    ax.set_ylabel(f"{server}'s share, %")
    ax.set_ylim(-5, 105)
    _legend_outside(ax)
    ax.set_title(f"{server}'s share of each second's calls")
    _finish(fig)


def _wrap(text: str, width: int = 34) -> str:
    import textwrap
    return "\n".join(textwrap.wrap(text, width)[:3])


def plot_latency(source: Outcome | Latency) -> None:
    """Lesson 7's last step: median and p90 latency of the same call on each path, and a table."""
    plt = _pyplot()
    result = source.result if isinstance(source, Outcome) else source
    if not isinstance(result, Latency):
        raise ValueError("this step measured no latency")
    median, p90 = result.median_ms, result.p90_ms
    paths = list(median)
    base = median.get("direct")
    table([(p, f"{median[p]:.3f}", f"{p90.get(p, float('nan')):.3f}",
            f"{median[p] / base:.2f}x" if base else "") for p in paths],
          ["path", "median ms", "p90 ms", "median vs direct"])
    fig, ax = plt.subplots(figsize=(6, 2.6))
    xs = range(len(paths))
    ax.bar([x - 0.2 for x in xs], [median[p] for p in paths], 0.4, label="median")
    ax.bar([x + 0.2 for x in xs], [p90.get(p, 0) for p in paths], 0.4, label="p90")
    ax.set_xticks(list(xs), paths)
    ax.set_ylabel("ms per call")
    _legend_outside(ax)
    ax.set_title("one call, three paths")
    _finish(fig)


def plot_l4_vs_l7(*steps: Outcome) -> None:
    """Lesson 9's last steps: calls per backend through L7 and L4, each step one group."""
    groups = {o.title: o.result.counts() for o in steps if isinstance(o.result, ProbeRun)}
    plot_calls(groups, title="calls per backend: per call (L7) vs per connection (L4)")


def bench_table(*steps: Outcome) -> None:
    """Lesson 10's numbers per round, one column per path and unit (p50 in ms, throughput in calls/s)."""
    rounds = [o.result.rounds for o in steps if isinstance(o.result, HopRun | ScaleRun)]
    columns = [(f"{name}: {r.unit}", [f"{v:.3f}" if r.unit == "ms" else f"{v:.0f}" for v in values])
               for r in rounds for name, values in r.per_path.items()]
    if not columns:
        raise LessonStopped("no measurements: the lesson's steps did not measure (see their output above)")
    reps = max(len(values) for _, values in columns)
    rows = [(i + 1, *(values[i] if i < len(values) else "" for _, values in columns)) for i in range(reps)]
    table(rows, ["round", *(head for head, _ in columns)])


def plot_bench(steps: LessonResult | Sequence[Outcome]) -> None:
    """Lesson 10: p50 per repetition (direct vs nginx), backend connections, calls/s of scale-out."""
    plt = _pyplot()
    outcomes = steps.steps if isinstance(steps, LessonResult) else list(steps)
    results = [o.result for o in outcomes]
    hop_run = next((r for r in results if isinstance(r, HopRun)), None)
    hop = hop_run.rounds if hop_run is not None else None
    conns = next((r for r in results if isinstance(r, Connections) and r.opened), None)
    scale = next((r.rounds for r in results if isinstance(r, ScaleRun)), None)
    panels = [p for p in (hop, conns, scale) if p is not None]
    if not panels:
        raise LessonStopped("no measurements: the lesson's steps did not measure (see their output above)")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3), squeeze=False)
    axes_iter = iter(axes[0])
    if hop is not None:
        ax = next(axes_iter)
        for name, values in hop.per_path.items():
            ax.plot(range(1, len(values) + 1), values, marker="o", label=name)
        ax.set_xticks(range(1, 1 + max(len(v) for v in hop.per_path.values())))
        ax.set_xlabel("repetition")
        ax.set_ylabel("p50 ms")
        ax.set_ylim(bottom=0)
        added = hop_run.evidence.added if hop_run is not None else None
        ax.set_title(f"the hop: {added.interval.median:+.0f} us" + ("" if added.resolved else " (not resolved)")
                     if added else f"the hop: nginx = {hop.ratio:.2f}x direct")
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)  # below the data
    if conns is not None:
        ax = next(axes_iter)
        names = list(conns.opened)
        ax.bar(range(len(names)), [conns.opened[n] for n in names], color=["C0", "C3"][:len(names)])
        ax.set_xticks(range(len(names)), [n.replace("nginx-mtls-", "") + f"\n({conns.calls[n]} calls)"
                                          for n in names])
        ax.set_ylabel("backend connections opened")
        _whole_numbers(ax.yaxis)
        ax.set_title("upstream keepalive")
    if scale is not None:
        ax = next(axes_iter)
        names = list(scale.per_path)
        for i, name in enumerate(names):
            values = scale.per_path[name]
            ax.scatter([i] * len(values), values, color=f"C{i}")
            ax.bar(i, sum(values) / len(values), alpha=0.4, color=f"C{i}")
        if scale.capacity:
            ax.axhline(scale.capacity, color="grey", linestyle="--")
        ax.set_xticks(range(len(names)), [n.replace(", ", "\n") for n in names])
        ax.set_ylabel("calls/s")
        ax.set_title(f"scale-out: {scale.ratio:.2f}x one server")
    _finish(fig)


def header(lesson: Lesson) -> str:
    """The notebook's first cell, from the lesson's declaration: title, goal, page, targets, ports
    (tests/notebooks checks every notebook's first cell against it)."""
    page = f"{lesson.number:02d}-{lesson.slug}"
    # A second process the lesson really runs, as an example of the prefixes.
    other = "nginx" if lesson.nginx_configs else "registry" if any(s.registry for s in lesson.steps) else "client"
    return "\n".join([
        f"# Lesson {lesson.number} — {lesson.title}",
        "",
        f"**Goal**: {lesson.goal}",
        "",
        f"- The lesson's page: [{lesson.doc_url}]({lesson.doc_url}) (run `make docs` first), or",
        f"  [../docs/lessons/{page}.md](../docs/lessons/{page}.md) in the repository.",
        f"- In a terminal, `make {lesson.target}` replays the same story and `make check-{lesson.number}` runs its "
        "checkpoint.",
        "- Run it with **Run → Run All Cells**. Every process a cell starts is printed with its name as a prefix",
        f"  (`server1 | ...`, `{other:<8}| ...`). The last cell stops them all; so does a failing cell, an interrupted",
        "  or restarted kernel, and running the notebook again from the top.",
        f"- Ports used: {', '.join(map(str, lesson.ports))}. If one is busy, `make stop` ends what an earlier "
        "crashed run left behind.",
    ])
