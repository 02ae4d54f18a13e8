"""Replay a lesson's steps on real processes and judge each step.

The runner owns what every lesson shares: numbering the steps and picking the checkpoint ones,
putting a learner's `CONF=` in place of the checkpoint's config, announcing each step, bringing the
stack to the step's state (servers started, restarted or stopped, nginx started afresh), waiting for
evidence (one `settle` helper), judging, stopping, and the summary lines. Between steps only what
changed is restarted: servers whose flags differ (or that a step killed), and nginx (always, as in the
tutorial). Every process's output is streamed with its name as a prefix by the Stack.

A step with an `act` gets a StepContext: the only way a lesson module touches the stack.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from pcbook.measure import driver as load_driver
from pcbook.measure.loadgen import LoadGenerator
from pcbook.measure.placement import LOADGEN, NGINX, SERVERS, Placement, available, pinned, plan
from pcbook.paths import shown
from pcbook.service import certs, tls
from pcbook.stack import nginx, procs
from pcbook.stack.etcd import EtcdError, EtcdProcess, start_etcd
from pcbook.stack.ports import hold_ports, pick_free_port, wait_bindable
from pcbook.workbook import judge
from pcbook.workbook.model import Client, Driver, Lesson, Probe, Server, Step
from pcbook.workbook.results import Call, Calls, Latency, Mark, ProbeRun

if TYPE_CHECKING:
    from pcbook.discovery.lab import Lab

CLIENT_TIMEOUT = 30.0  # seconds for one client run; the client itself gives up on a dead server after 5 s
SETTLE_TIMEOUT = 3.0  # how long to wait for evidence that follows a run (pipes and log tailing)
SETTLE_AFTER_SURPRISE = 0.5  # the same when the run already contradicts the step: only explaining lines
READY_TIMEOUT = 20.0
REGISTRY = "registry"  # the Stack name of a step's etcd (model.Registry)
# The laptop service logs `receive a create-laptop request with id: <uuid>` for every CreateLaptop.
# Anchored to the whole line (the server escapes control characters of client values: none can start a line).
_RECEIVED = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d receive a create-laptop request with id: ([0-9a-f-]{36})$")
# Errors that mean the stack could not be brought up: the lesson stops with one line, no traceback.
STACK_ERRORS = (procs.PortBusyError, procs.NotReadyError, nginx.NginxError, tls.CertificateFileError, EtcdError)

Echo = Callable[[str], None]
_runs = itertools.count(1)

# What changes from one call's line to the next: times, ids, call numbers, durations, nginx's pid and
# connection number. Two lines equal but for these are of one kind. Ports and status codes are kept:
# a 502 is not a 200, and server1's upstream is not server2's.
_VARYING = (
    (re.compile(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d"), "<time>"),
    (re.compile(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]"), "[<time>]"),
    (re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}"), "<id>"),
    (re.compile(r"\d+#\d+: \*\d+"), "<pid>: *<n>"),
    (re.compile(r"\bcall[= ]\d+"), "call <n>"),
    (re.compile(r"\d+(?:\.\d+)? ms\b"), "<ms>"),
)


def line_kind(text: str) -> str:
    """`text` with what varies from call to call replaced: the same for every line of one kind."""
    for pattern, replacement in _VARYING:
        text = pattern.sub(replacement, text)
    return text


@dataclass
class Repeats:
    """A step's lines beyond the tutorial: the first line of each kind of each process is shown, the
    others are counted. Under load a server prints three lines per call and nginx one or two: shown
    once, they still teach what a call looks like without burying the step's finding."""

    kinds: set[tuple[str, str]] = field(default_factory=set)
    hidden: Counter[str] = field(default_factory=Counter)

    def show(self, name: str, text: str) -> bool:
        key = (name, line_kind(text))
        if key in self.kinds:
            self.hidden[name] += 1
            return False
        self.kinds.add(key)
        return True

    def summary(self, transcript: Path) -> str | None:
        if not self.hidden:
            return None
        counts = ", ".join(f"{name} {n}" for name, n in self.hidden.items())
        return (f"(repeated lines captured, not shown: {counts}; the first line of each kind is above, "
                f"every line is in {shown(transcript)})")


def write_line(line: str) -> None:
    """The default echo: one write per line, so that the runner's lines and the processes' (echoed by
    reader threads) never interleave mid-line. (print() writes the text and the newline separately; a
    lock around it could be left held by a Ctrl-C landing between acquiring it and entering the block.)"""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def settle(ready: Callable[[], bool], timeout: float, wait: Callable[[float], Any] = time.sleep) -> bool:
    """Wait until `ready()` is true or `timeout` seconds pass; returns the last `ready()`.

    Evidence (a server's line, nginx's log files) reaches the runner a moment after the client has its
    answer. `wait(s)` blocks between looks: a Stack's wait_for_output wakes up on any new line.
    """
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return True
        if time.monotonic() > deadline:
            return False
        wait(0.05)


@dataclass
class Outcome:
    """What one step of a lesson showed, judged."""

    title: str
    why: str  # the cause of what the learner sees, printed when the step passes
    checkpoint: bool
    diffs: list[str]  # empty: the step showed what it should
    seen: judge.Observation | None = None  # an Expect step's evidence
    result: Any = None  # an act step's measurement: a pcbook.workbook.results type

    @property
    def passed(self) -> bool:
        return not self.diffs


@dataclass
class LessonResult:
    lesson: Lesson
    steps: list[Outcome] = field(default_factory=list)
    error: str | None = None  # the stack could not be brought up (busy port, missing binary, ...)

    @property
    def checkpoint_passed(self) -> bool:
        marked = [r for r in self.steps if r.checkpoint]
        return self.error is None and bool(marked) and all(r.passed for r in marked)

    @property
    def story_passed(self) -> bool:
        return self.error is None and all(r.passed for r in self.steps)

    def step(self, title: str) -> Outcome:
        return next(s for s in self.steps if s.title == title)

    def checkpoint_line(self) -> str:
        name = f"checkpoint {self.lesson.target}"
        if self.checkpoint_passed:
            return f"{name}: passed"
        if self.error:
            return f"{name}: failed: {self.error}"
        diffs = [d for r in self.steps if r.checkpoint for d in r.diffs]
        return f"{name}: failed: {'; '.join(diffs) or 'no checkpoint step ran'}"


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-u", "-m", module, *args]


def server_argv(server: Server, log_dir: Path | None = None) -> list[str]:
    argv = python_module("pcbook.server", *server.args())
    if server.log_file and log_dir is not None:
        log = shlex.quote(str(log_dir / f"{server.name}.log"))
        return ["/bin/sh", "-c", f'exec "$@" >> {log}', "sh", *argv]
    return argv


def readiness_credentials(server: Server) -> grpc.ChannelCredentials | None:
    # The client certificate satisfies both mutual TLS and server-side TLS only.
    return tls.client_credentials() if server.tls else None


def conf_for(lesson: Lesson, step: Step, learner_conf: Path | None) -> Path | None:
    """The config nginx runs with in `step`: the learner's in place of the checkpoint's config."""
    if step.nginx is None:
        return None
    if learner_conf is not None and step.checkpoint and step.nginx.path == lesson.checkpoint_config:
        return learner_conf
    return step.nginx.path


class LessonRunner:
    """Brings a Stack from one step's state to the next and judges each step."""

    def __init__(self, stack: procs.Stack, lesson: Lesson, echo: Echo | None = write_line) -> None:
        self.stack = stack
        self.lesson = lesson
        self.echo = echo or (lambda _line: None)
        self.running: dict[str, list[str]] = {}  # server name -> argv it runs with
        self.servers: dict[str, Server] = {}
        self.nginx: nginx.NginxProcess | None = None
        self.etcd: EtcdProcess | None = None  # the step's Registry
        self.log_dir = stack.run_dir / lesson.target
        self.quiet: set[str] = set()  # names whose lines are captured, not shown
        self.hidden = 0  # lines kept out of the terminal by lesson.hide
        self.quieted = 0
        # Beyond the tutorial, a step's repeated lines (bulk traffic) are counted, not shown. Kept
        # until the next step starts: what stopping the step's processes flushes is collapsed too.
        self.repeats: Repeats | None = None
        # Every line the terminal gets or is spared, in order: what a summary leaves out can be read.
        self.transcript = self.log_dir / "output.log"
        # Lessons that measure pin the servers, nginx and the load generators on separate cores.
        self.placement = plan(available()) if lesson.pinned else Placement()
        if stack.echo is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.transcript.write_text("")
            self.echo = self._recorded(self.echo)
            stack.echo = self._filter(stack.echo)

    def _recorded(self, echo: Echo) -> Echo:
        def recorded(line: str) -> None:
            self._record(line)
            echo(line)
        return recorded

    def _record(self, line: str) -> None:
        # One O_APPEND write per line: the runner's thread and the readers' never interleave mid-line.
        fd = os.open(self.transcript, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode("utf-8", "replace"))
        finally:
            os.close(fd)

    def _filter(self, echo: Echo) -> Echo:
        def filtered(line: str) -> None:
            self._record(line)
            name, _, body = line.partition(" | ")
            name = name.rstrip()
            if name in self.quiet:
                self.quieted += 1
            elif self.lesson.hide and any(text in line for text in self.lesson.hide):
                self.hidden += 1
            elif self.repeats is None or self.repeats.show(name, body):
                echo(line)
        return filtered

    def say(self, line: str) -> None:
        self.echo(line)

    # -- a whole lesson ------------------------------------------------------------------------------------
    def replay(self, *, conf: Path | None = None, checkpoint_only: bool = False, keep: bool = False,
               stop_at_failure: bool = False, first: str | None = None) -> LessonResult:
        """Announce, run and report each step (see run_lesson); a stack error ends the replay with one line.
        `first`: the title of a step to run before the others (each step brings the stack to its own state)."""
        lesson, say = self.lesson, self.say
        result = LessonResult(lesson)
        steps = lesson.checkpoint_steps if checkpoint_only else lesson.steps
        steps = sorted(steps, key=lambda s: s.title != first)  # stable: the others keep the lesson's order
        say(f"== lesson {lesson.number}: {lesson.title}")
        if lesson.pinned:
            say(f"placement: {self.placement.describe()}")
        self.hidden = 0
        try:
            # A module a config needs and this nginx lacks (stream, on a distribution's nginx) fails
            # the lesson here, before step 1, not at the step that first uses it.
            nginx.require_modules([c for s in steps if (c := conf_for(lesson, s, conf)) is not None])
            for index, step in enumerate(steps, 1):
                step_conf = conf_for(lesson, step, conf)
                # What stopping the previous step's processes prints comes before this header, not under it.
                self.leave(step.servers)
                announce(say, index, len(steps), step, step_conf)
                outcome = self.run_step(step, step_conf)
                result.steps.append(outcome)
                report(say, outcome)
                if stop_at_failure and outcome.checkpoint and not outcome.passed:
                    break
            if self.hidden:
                say("")
                say(f"({self.hidden} lines of the servers' output were not shown: {', '.join(lesson.hide)})")
            if keep:
                _hold(say, self)
        except STACK_ERRORS as err:
            result.error = str(err)
            say(f"!! {err}")
        return result

    # -- bringing the stack to a step's state ------------------------------------------------------------
    def leave(self, servers: Sequence[Server]) -> None:
        """Stop what the next state does not keep: nginx (started afresh for every step) and the
        servers not in `servers`, or whose flags differ, or that died. Called before the next step
        is announced, so that what stopping prints stays with the step that ran them."""
        wanted = {s.name: s for s in servers}
        if self.nginx is not None:
            if self.nginx.proc.running:
                self.stack.stop(self.nginx.name)
            self.nginx = None
        # Every story of lessons 11-12 starts from an empty registry: none is kept from the step before
        # (the control plane an act left, which watches it, goes first).
        for name in ("xds", REGISTRY):
            if name in self.stack and self.stack.proc(name).running:
                self.stack.stop(name)
        self.etcd = None
        for name in list(self.running):
            if (name not in wanted or self.running[name] != server_argv(wanted[name], self.log_dir)
                    or not self.stack.proc(name).running):
                self.stack.stop(name)
                del self.running[name]

    def apply(self, servers: Sequence[Server], conf: Path | None, step: Step | None = None) -> None:
        self.leave(servers)  # a no-op when replay() left the previous state before the announcement
        self.apply_registry(step)  # before the servers: a server declared with --register needs it
        wanted = {s.name: s for s in servers}
        fresh = [s for name, s in wanted.items() if name not in self.running]
        if any(s.log_file for s in fresh):
            self.log_dir.mkdir(parents=True, exist_ok=True)
        for server in fresh:
            wait_bindable(server.port, self.say)
        for server in fresh:  # all start at once (their imports overlap), then each is waited for
            self.start_server(server, wait=False)
        for server in fresh:
            self.wait_server(server)
        if conf is not None and step is not None and step.nginx is not None:
            for port in step.nginx.more_ports:
                procs.check_port_free(port)
            with pinned(self.placement, NGINX):
                self.nginx = nginx.start_nginx(self.stack, conf, port=step.nginx.port, timeout=READY_TIMEOUT)

    def apply_registry(self, step: Step | None) -> None:
        """A fresh etcd for a step that declares a Registry (leave() stopped the step before's). Named
        "registry": an act may still start an etcd of its own."""
        if step is not None and step.registry is not None:
            with pinned(self.placement, NGINX):
                self.etcd = start_etcd(self.stack, name=REGISTRY, port=pick_free_port(), peer_port=pick_free_port())

    def start_server(self, server: Server, wait: bool = True) -> None:
        argv = server_argv(server, self.log_dir)
        procs.check_port_free(server.port)
        with pinned(self.placement, SERVERS):
            self.stack.start(server.name, argv)
        self.running[server.name] = argv
        self.servers[server.name] = server
        if wait:
            self.wait_server(server)

    def wait_server(self, server: Server) -> None:
        self.stack.wait_ready(server.name, port=server.port, health=f"127.0.0.1:{server.port}",
                              credentials=readiness_credentials(server), timeout=READY_TIMEOUT)

    def wait_output(self, timeout: float) -> None:
        self.stack.wait_for_output(timeout)  # pipes wake us up; nginx's log files are polled

    # -- one step ------------------------------------------------------------------------------------------
    def run_step(self, step: Step, conf: Path | None) -> Outcome:
        self.repeats = None if self.lesson.tutorial else Repeats()
        if step.quiet:
            self.quiet = {s.name for s in step.servers} | {"nginx"}
            self.quieted = 0
        try:
            self.apply(step.servers, conf, step)
            # The lesson's servers this step keeps down hold their ports (bound, not listening): no
            # connection of the step can take one as its local port and leave it in TIME_WAIT.
            running = {s.port for s in step.servers}
            down = sorted({s.port for other in self.lesson.steps for s in other.servers} - running)
            with hold_ports(down):
                if step.act is not None:
                    return self._act(step, conf)
                return self._client(step)
        finally:
            if step.quiet:
                self.quiet = set()
                self.say(f"   (servers and nginx ran quietly: {self.quieted} lines captured, not shown; "
                         f"every line is in {shown(self.transcript)})")
            if self.repeats is not None and (summary := self.repeats.summary(self.transcript)):
                self.say(f"   {summary}")

    def _client(self, step: Step) -> Outcome:
        assert isinstance(step.client, Client) and step.expect is not None
        mark = self.stack.mark()
        client_ok = True
        client_lines: list[str] = []
        argv = python_module(step.client.module, *step.client.args())
        if step.client.cert == "foreign":
            argv += ["--certs-dir", str(certs.foreign_client_dir())]
        for _ in range(step.client.runs):
            result = self.stack.run("client", argv, timeout=CLIENT_TIMEOUT)
            client_ok = client_ok and result.returncode == 0
            client_lines += result.lines
        seen = judge.Observation(client_ok=client_ok, client_lines=client_lines)

        def arrived() -> bool:
            records = [r for r in self.stack.records(since=mark) if r.name in self.running and r.source != "note"]
            seen.calls = [call for r in records for call in judge.calls_in(r.name, [r.text])]
            seen.server_lines = [r.text for r in records]
            if self.nginx is not None:
                seen.access_lines = self.nginx.access_log_lines()
                seen.nginx_errors = self.nginx.error_log_lines()
                seen.access_log = access_note(self.nginx.access_log, self.nginx.conf)
            return judge.settled(step.expect, seen, step.client.runs)

        # A client that did not do what the step expects has decided the verdict already: wait only
        # briefly for the log lines that explain it, not for calls that will never come.
        timeout = SETTLE_TIMEOUT if client_ok == step.expect.ok else SETTLE_AFTER_SURPRISE
        settle(arrived, timeout, self.wait_output)
        return Outcome(step.title, step.why, step.checkpoint, judge.differences(step.expect, seen), seen)

    def _act(self, step: Step, conf: Path | None) -> Outcome:
        assert step.act is not None and step.judge is not None
        ctx = StepContext(self, step, conf)
        try:
            result = step.act(ctx)
        except STACK_ERRORS:
            raise
        except RuntimeError as err:  # a measurement that could not run (a load generator's error)
            return Outcome(step.title, step.why, step.checkpoint, [f"the measurement could not run: {err}"])
        finally:
            ctx.cleanup()
        return Outcome(step.title, step.why, step.checkpoint, step.judge(result), result=result)


@dataclass
class DriverRun:
    """A load driver started in the background by StepContext.start_driver()."""

    name: str
    path: Path
    mark: int
    driver: Driver


class StepContext:
    """What an act function of a lesson module gets: the step, the running stack, and the runner's
    helpers to drive it (start a load, wait for a line, kill or restart a server, read nginx's logs)."""

    def __init__(self, runner: LessonRunner, step: Step, conf: Path | None) -> None:
        self.runner = runner
        self.step = step
        self.conf = conf  # the config nginx runs with (a learner's for `make check-N CONF=...`)
        self.stack = runner.stack
        self.mark = runner.stack.mark()
        self._started: list[str] = []
        self._loads: list[LoadGenerator] = []

    # -- what is running ---------------------------------------------------------------------------------
    @property
    def nginx(self) -> nginx.NginxProcess:
        if self.runner.nginx is None:
            raise RuntimeError(f"step {self.step.title!r} runs no nginx")
        return self.runner.nginx

    @property
    def server_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.step.servers)

    @property
    def log_dir(self) -> Path:
        """Where servers declared with log_file write their output."""
        return self.runner.log_dir

    def lines(self, name: str) -> list[str]:
        """What `name` printed since the step began."""
        return self.stack.lines_since(self.mark, name)

    @property
    def lesson_ports(self) -> dict[str, int]:
        """Server name -> port, for every server of the lesson (also those this step keeps down)."""
        return {s.name: s.port for step in reversed(self.runner.lesson.steps) for s in step.servers}

    @property
    def driver(self) -> Driver:
        if not isinstance(self.step.client, Driver):
            raise TypeError(f"step {self.step.title!r} declares no Driver")
        return self.step.client

    @property
    def probe(self) -> Probe:
        if not isinstance(self.step.client, Probe):
            raise TypeError(f"step {self.step.title!r} declares no Probe")
        return self.step.client

    def say(self, line: str) -> None:
        """A line of the step's report, indented under its announcement."""
        self.runner.say(f"   {line}")

    def settle(self, ready: Callable[[], bool], timeout: float = SETTLE_TIMEOUT) -> bool:
        return settle(ready, timeout, self.runner.wait_output)

    def await_line(self, name: str, text: str, timeout: float = 15.0, *, since: int | None = None) -> procs.Line:
        """The first line of `name` since the step began (or since the stack mark `since`) that contains
        `text`, once it is printed."""
        start = self.mark if since is None else since
        self.stack.wait_for_line(name, text, timeout, since=start)
        return next(r for r in self.stack.records(name, since=start) if text in r.text and r.source != "note")

    def sees_line(self, name: str, text: str, timeout: float, *, since: int) -> bool:
        """Whether `name` prints a line that contains `text` (from the stack mark `since` on) by the deadline."""
        try:
            self.await_line(name, text, timeout, since=since)
        except procs.NotReadyError:
            return False
        return True

    def lab(self) -> Lab:
        """Lessons 11-12: a discovery Lab on the step's Registry, which the runner started and stops; its
        control_plane() starts the step's declared ControlPlane. The lab starts and stops the servers,
        nginx, control plane and drivers of the act."""
        from pcbook.discovery.lab import Lab

        if self.runner.etcd is None:
            raise RuntimeError(f"step {self.step.title!r} declares no Registry")
        declared = self.step.control_plane
        return Lab(self.stack, etcd=self.runner.etcd, xds_args=declared.args() if declared else ())

    # -- acting on the servers ---------------------------------------------------------------------------
    def signal(self, name: str, sig: int) -> None:
        self.stack.signal(name, sig)

    def kill(self, name: str) -> float:
        """SIGKILL a server now; returns when (time.time())."""
        at = time.time()
        self.stack.kill(name)
        return at

    def restart(self, name: str) -> float:
        """Start a server of this step again (after a kill) and wait until it serves; returns when."""
        server = next(s for s in self.step.servers if s.name == name)
        wait_bindable(server.port, self.runner.say)
        self.runner.start_server(server)
        return time.time()

    # -- the load driver -----------------------------------------------------------------------------------
    def start_driver(self, driver: Driver | None = None, name: str = "client") -> DriverRun:
        driver = driver or self.driver
        self.stack.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.stack.run_dir / f"load-{os.getpid()}-{next(_runs)}.json"
        run = DriverRun(name, path, self.stack.mark(), driver)
        self.stack.start(name, python_module(driver.module, *driver.args(), "--json", str(path)))
        self._started.append(name)
        return run

    def finish_driver(self, run: DriverRun, *, origin: float | None = None, marks: Sequence[tuple[str, float]] = (),
                      origin_label: str = "the first call", timeout: float = CLIENT_TIMEOUT,
                      stop: bool = False) -> Calls:
        """Wait for a driver to end (`stop`: stop it now; it reports the calls it made), then for the
        servers' lines of its calls; every time is made relative to `origin` (time.time(); default: the
        first call's start)."""
        if stop:
            self.stack.stop(run.name)
        report = self._collect(run, timeout)
        wanted = {c.laptop_id for c in report.calls if c.ok}
        received: dict[str, list[str]] = {}

        def arrived() -> bool:
            received.clear()
            received.update(self._received(run.mark))
            return wanted <= received.keys()

        self.settle(arrived)
        start = origin if origin is not None else (report.calls[0].t0 if report.calls else time.time())
        calls = tuple(Call(c.number, c.code, c.details, round(c.t0 - start, 4), tuple(received.get(c.laptop_id, ())))
                      for c in report.calls)
        return Calls(calls, self.server_names, report.login_error,
                     tuple(Mark(label, round(at - start, 4)) for label, at in marks), origin_label)

    def run_driver(self, driver: Driver | None = None) -> Calls:
        """Run the load driver in the foreground (its lines echoed with the `client` prefix)."""
        return self.finish_driver(self.start_driver(driver))

    def kill_mid_run(self, victim: str, driver: Driver | None = None, after: int = 10) -> Calls:
        """Start the driver; once `after` calls are done and `victim` is working on a call (its
        create-laptop line: that call has surely been sent), SIGKILL `victim`. Times are relative to
        the kill."""
        run = self.start_driver(driver)
        self.await_line(run.name, f"{after} calls done")
        since = self.stack.mark()
        self.stack.wait_for_line(victim, "receive a create-laptop request", 5, since=since)
        killed_at = self.kill(victim)
        return self.finish_driver(run, origin=killed_at, marks=[("killed", killed_at)], origin_label="the kill")

    def measure_latency(self, driver: Driver | None = None, timeout: float = 90.0) -> Latency:
        """The driver's --compare mode: the same call on each path, median and p90."""
        driver = driver or self.driver
        self.stack.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.stack.run_dir / f"load-{os.getpid()}-{next(_runs)}.json"
        result = self.stack.run("client", python_module(driver.module, *driver.args(), "--json", str(path)),
                                timeout=timeout)
        try:
            report = load_driver.read_report(path) if result.ok and path.exists() else load_driver.Report()
        finally:
            path.unlink(missing_ok=True)
        error = "" if result.ok else (result.lines[-1] if result.lines else "no output")
        return Latency({n: round(s["median"], 3) for n, s in report.latency_ms.items()},
                       {n: round(s["p90"], 3) for n, s in report.latency_ms.items()}, driver.calls, error,
                       report.samples_ms)

    def _collect(self, run: DriverRun, timeout: float) -> load_driver.Report:
        proc = self.stack.proc(run.name)
        if not settle(proc.done, timeout, self.runner.wait_output):
            self.stack.stop(run.name)
            raise procs.NotReadyError(f"{run.name} did not finish within {timeout:g} s", name=run.name,
                                      tail=proc.tail(15))
        if not run.path.exists():  # exit code 2 with a report: the Login failed, the report says how
            raise procs.NotReadyError(f"{run.name} failed ({proc.returncode})", name=run.name, tail=proc.tail(15))
        try:
            return load_driver.read_report(run.path)
        finally:
            run.path.unlink(missing_ok=True)

    def _received(self, since: int) -> dict[str, list[str]]:
        """Laptop id -> the servers that received that CreateLaptop (more than one: it ran twice)."""
        out: dict[str, list[str]] = {}
        names = set(self.server_names)
        for rec in self.stack.records(since=since):
            if rec.name in names and (m := _RECEIVED.search(rec.text)):
                out.setdefault(m.group(1), []).append(rec.name)
        return out

    # -- nginx's logs ------------------------------------------------------------------------------------
    def nginx_errors(self, pattern: str, settle_first: bool = True) -> list[str]:
        """nginx's error-log lines matching `pattern`, waiting a moment for the first one."""
        def found() -> list[str]:
            return [line for line in self.nginx.error_log_lines() if re.search(pattern, line)]
        if settle_first:
            self.settle(lambda: bool(found()))
        return found()

    # -- the stream probe (lesson 9) ---------------------------------------------------------------------
    def run_probe(self, probe: Probe | None = None, *, calls: int = 0, posts: int = 0,
                  nginx_line: re.Pattern[str] | None = None) -> ProbeRun:
        """Run the probe, then wait for `calls` interceptor lines, `posts` POST lines in nginx's access
        log and `nginx_line` in its error log (briefly, if the probe failed: it made fewer calls)."""
        probe = probe or self.probe
        logs = self.runner.nginx
        mark = self.stack.mark()
        access_from = len(logs.access_log_lines()) if logs else 0
        errors_from = len(logs.error_log_lines()) if logs else 0
        # The probe dumps its threads shortly before the runner would kill it: a hang explains itself.
        argv = python_module(probe.module, *probe.args(dump_after=CLIENT_TIMEOUT - 3))
        result = self.stack.run("probe", argv, timeout=CLIENT_TIMEOUT)
        seen: dict[str, Any] = {}

        def arrived() -> bool:
            names = set(self.server_names)
            seen["calls"] = tuple(call for r in self.stack.records(since=mark) if r.name in names
                                  for call in judge.calls_in(r.name, [r.text]))
            seen["access"] = tuple(logs.access_log_lines()[access_from:]) if logs else ()
            seen["errors"] = tuple(logs.error_log_lines()[errors_from:]) if logs else ()
            posts_seen = len(judge.Observation(access_lines=list(seen["access"])).posts)
            found = nginx_line is None or any(nginx_line.search(line) for line in seen["errors"])
            return len(seen["calls"]) >= calls and posts_seen >= posts and found

        self.settle(arrived, SETTLE_TIMEOUT if result.ok else SETTLE_AFTER_SURPRISE)
        port = int(probe.address.rsplit(":", 1)[1])
        return ProbeRun(result.ok, result.returncode, tuple(result.lines), seen["calls"], seen["access"],
                        seen["errors"], port, self.server_names)

    # -- the load generator (lesson 10) ------------------------------------------------------------------
    def load_generator(self, processes: int = 1) -> LoadGenerator:
        """Worker processes that drive calls on command; stopped when the step ends."""
        with pinned(self.runner.placement, LOADGEN):
            load = LoadGenerator(self.stack, processes)
        self._loads.append(load)
        self._started += load.names
        return load

    def cleanup(self) -> None:
        for load in self._loads:
            try:
                load.close()
            except Exception:  # noqa: BLE001  a worker that died already: it is stopped below anyway
                pass
        for name in reversed(self._started):
            if name in self.stack and self.stack.proc(name).running:
                self.stack.stop(name)


def access_note(read: Path, conf: Path) -> str:
    """Which access log the checkpoint read and, when the config writes elsewhere, where."""
    note = f"read from {shown(read)}"
    try:
        targets = nginx.access_log_targets(nginx.read_config(conf))
    except nginx.NginxError:
        return note
    elsewhere = [t for t in targets if t != "logs/access.log"]
    if elsewhere and "logs/access.log" not in targets:
        note += f"; your config writes its access log to {', '.join(elsewhere)}, the checkpoint reads logs/access.log"
    return note


def run_lesson(
    lesson: Lesson,
    *,
    conf: Path | None = None,
    checkpoint_only: bool = False,
    keep: bool = False,
    stop_at_failure: bool = False,
    echo: Echo | None = write_line,
) -> LessonResult:
    """Replay a lesson (or only its checkpoint steps) and return what each step showed.

    ``conf`` replaces the checkpoint steps' nginx config (a learner's own file).
    ``keep`` leaves the last step's stack running until Ctrl-C.
    ``stop_at_failure`` ends the run at the first checkpoint step that fails (a quick "no").
    """
    with procs.Stack(echo=echo) as stack:
        runner = LessonRunner(stack, lesson, echo)
        return runner.replay(conf=conf, checkpoint_only=checkpoint_only, keep=keep, stop_at_failure=stop_at_failure)


def run_checkpoints(lesson: Lesson, confs: Sequence[Path], *, echo: Echo | None = None) -> list[LessonResult]:
    """The lesson's checkpoint once for each config, one after the other on one stack, each stopping at
    its first failing checkpoint step. The servers start once (a step restarts only those whose flags
    differ or that died) and nginx once per step, as in run_lesson: judging many configs (the mutant
    test) costs one nginx start per config, not a whole stack. Each config starts with the step that
    failed the config before it: one-directive mutants of a config mostly fail at the same few steps,
    and every passing step before the failing one costs its seconds (lesson 9: 21 s of 49, measured)."""
    results: list[LessonResult] = []
    first: str | None = None
    with procs.Stack(echo=echo) as stack:
        runner = LessonRunner(stack, lesson, echo)
        for conf in confs:
            results.append(runner.replay(conf=conf, checkpoint_only=True, stop_at_failure=True, first=first))
            first = next((o.title for o in results[-1].steps if o.checkpoint and not o.passed), first)
    return results


def announce(say: Echo, index: int, total: int, step: Step, conf: Path | None) -> None:
    say("")
    say(f"-- step {index}/{total}: {step.title}")
    for line in describe(step, conf):
        say(f"   {line}")


def describe(step: Step, conf: Path | None) -> list[str]:
    """The step's stack and what it must show, one `label: text` line each."""
    lines = [f"servers: {', '.join(s.describe() for s in step.servers) or 'none running'}"]
    if conf is not None and step.nginx is not None:
        lines.append(f"nginx:   {shown(conf)} on {step.nginx.port}")
    if step.registry is not None:
        lines.append(f"registry: {step.registry.describe()}")
    if step.control_plane is not None:
        lines.append(f"control plane: {step.control_plane.command()}")
    if step.client is not None:
        lines.append(f"client:  {step.client.command()}")
    lines += [f"then:    {line}" for line in step.then]
    lines.append(f"expect:  {'; '.join(step.must_show())}")
    return lines


def report(say: Echo, outcome: Outcome) -> None:
    split = outcome.seen.split() if outcome.seen else {}
    if split:
        say("   calls:   " + "; ".join(f"{srv}: {', '.join(m)}" for srv, m in sorted(split.items())))
    if outcome.passed:
        say(f"   ok: {outcome.why}")
    else:
        for diff in outcome.diffs:
            say(f"   DIFFERS: {diff}")


def _hold(say: Echo, runner: LessonRunner) -> None:
    names = ", ".join(name for name in runner.stack.names if runner.stack.proc(name).running)
    say("")
    say(f"the stack stays up for you to explore ({names}); press Ctrl-C to stop it")
    try:
        runner.stack.wait_forever()
    except KeyboardInterrupt:
        say("stopping ...")
