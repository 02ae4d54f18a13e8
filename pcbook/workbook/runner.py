"""Replay a lesson's steps on real processes and judge each step.

Between steps only what changed is restarted: servers whose flags differ, and nginx (always, as in the
tutorial, which also clears nginx's memory of failed backends). Every process's output is streamed
with its name as a prefix by the Stack.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from pcbook.paths import NGINX_DIR, shown
from pcbook.service import certs, tls
from pcbook.stack import nginx, procs
from pcbook.workbook import judge
from pcbook.workbook.manifest import NGINX_PORT, Lesson, Server, Step

CLIENT_TIMEOUT = 30.0  # seconds for one client run; the client itself gives up on a dead server after 5 s
SETTLE_TIMEOUT = 3.0  # how long to wait for log lines that follow a client run (pipes and log tailing)
SETTLE_AFTER_SURPRISE = 0.5
READY_TIMEOUT = 15.0

Echo = Callable[[str], None]


@dataclass
class Outcome:
    """What one step of a lesson showed, judged."""

    title: str
    why: str  # the cause of what the learner sees, printed when the step passes
    checkpoint: bool
    diffs: list[str]  # empty: the step showed what it should
    seen: judge.Observation | None = None
    data: dict[str, object] = field(default_factory=dict)  # measurements a scenario wants to show

    @property
    def passed(self) -> bool:
        return not self.diffs


@dataclass
class ScenarioContext:
    """What a lesson beyond the tutorial gets to tell its own story (`Lesson.scenario`)."""

    stack: procs.Stack
    say: Echo
    checkpoint_only: bool
    conf: Path | None  # a learner's nginx config, for `make check-N CONF=...`
    outcomes: list[Outcome] = field(default_factory=list)

    def step(self, index: int, total: int, title: str, details: list[str] | None = None) -> None:
        """Announce a step the way the tutorial's lessons do."""
        self.say("")
        self.say(f"-- step {index}/{total}: {title}")
        for line in details or []:
            self.say(f"   {line}")

    def record(self, outcome: Outcome) -> Outcome:
        self.outcomes.append(outcome)
        _report(self.say, outcome)
        return outcome


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


def server_argv(server: Server) -> list[str]:
    return python_module("pcbook.server", *server.args())


def readiness_credentials(server: Server) -> grpc.ChannelCredentials | None:
    # The client certificate satisfies both mutual TLS and server-side TLS only.
    return tls.client_credentials() if server.tls else None


class LessonRunner:
    """Brings a Stack from one step's state to the next and judges each step."""

    def __init__(self, stack: procs.Stack, echo: Echo | None = print) -> None:
        self.stack = stack
        self.echo = echo or (lambda _line: None)
        self.running: dict[str, list[str]] = {}  # server name -> argv it runs with
        self.nginx: nginx.NginxProcess | None = None

    # -- bringing the stack to a step's state ------------------------------------------------------------
    def apply(self, servers: tuple[Server, ...], conf: Path | None) -> None:
        wanted = {s.name: s for s in servers}
        if self.nginx is not None:
            self.stack.stop(self.nginx.name)
            self.nginx = None
        for name in list(self.running):
            if name not in wanted or self.running[name] != server_argv(wanted[name]):
                self.stack.stop(name)
                del self.running[name]
        for name, server in wanted.items():
            if name in self.running:
                continue
            argv = server_argv(server)
            procs.check_port_free(server.port)
            self.stack.start(name, argv)
            self.running[name] = argv
            self.stack.wait_ready(
                name,
                port=server.port,
                health=f"127.0.0.1:{server.port}",
                credentials=readiness_credentials(server),
                timeout=READY_TIMEOUT,
            )
        if conf is not None:
            self.nginx = nginx.start_nginx(self.stack, conf, port=NGINX_PORT)

    # -- one step ------------------------------------------------------------------------------------------
    def run_step(self, step: Step, conf: Path | None) -> Outcome:
        self.apply(step.servers, conf)
        mark = self.stack.mark()
        client_ok = True
        client_lines: list[str] = []
        argv = python_module("pcbook.client", *step.client.args())
        if step.client.cert == "foreign":
            argv += ["--certs-dir", str(certs.foreign_client_dir())]
        for _ in range(step.client.runs):
            result = self.stack.run("client", argv, timeout=CLIENT_TIMEOUT)
            client_ok = client_ok and result.returncode == 0
            client_lines += result.lines
        seen = self._observe(mark, step, client_ok, client_lines)
        return Outcome(step.title, step.why, step.checkpoint, judge.differences(step.expect, seen), seen)

    def _access_log_note(self) -> str:
        assert self.nginx is not None
        return _access_note(self.nginx.access_log, self.nginx.conf)

    def _observe(
        self, mark: object, step: Step, client_ok: bool, client_lines: list[str]
    ) -> judge.Observation:
        # A client that did not do what the step expects has decided the verdict already: wait only
        # briefly for the log lines that explain it, not for calls that will never come.
        settle = SETTLE_TIMEOUT if client_ok == step.expect.ok else SETTLE_AFTER_SURPRISE
        deadline = time.monotonic() + settle
        while True:
            seen = judge.Observation(client_ok=client_ok, client_lines=client_lines)
            for name in self.running:
                lines = self.stack.lines_since(mark, name)
                seen.calls += judge.calls_in(name, lines)
                seen.server_lines += lines
            if self.nginx is not None:
                seen.access_lines = self.nginx.access_log_lines()
                seen.access_log = self._access_log_note()
                seen.nginx_errors = self.nginx.error_log_lines()
            if judge.settled(step.expect, seen, step.client.runs) or time.monotonic() > deadline:
                return seen
            self.stack.wait_for_output(0.05)  # nginx's log files are polled, pipes wake us up


def _access_note(read: Path, conf: Path) -> str:
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
    echo: Echo | None = print,
    fail_fast: bool = False,
) -> LessonResult:
    """Replay a lesson (or only its checkpoint steps) and return what each step showed.

    ``conf`` replaces the nginx config of the checkpoint steps (a learner's own file).
    ``keep`` leaves the last step's stack running until Ctrl-C. ``fail_fast`` stops at the first step
    that differs (the verdict is known; the mutant test uses it).
    """
    say = echo or (lambda _line: None)
    result = LessonResult(lesson)
    steps = lesson.checkpoint_steps if checkpoint_only else lesson.steps
    say(f"== lesson {lesson.number}: {lesson.title}")
    with procs.Stack(echo=echo) as stack:
        runner = LessonRunner(stack, echo)
        try:
            if lesson.scenario is not None:
                context = ScenarioContext(stack, say, checkpoint_only, conf, result.steps)
                _load(lesson.scenario)(context)
            for index, step in enumerate(steps, 1):
                step_conf = _conf_for(step, conf)
                _announce(say, index, len(steps), step, step_conf)
                outcome = runner.run_step(step, step_conf)
                result.steps.append(outcome)
                _report(say, outcome)
                if fail_fast and not outcome.passed:
                    break
            if keep:
                _hold(say, runner)
        except (procs.PortBusyError, procs.NotReadyError, nginx.NginxError, tls.CertificateFileError) as err:
            result.error = str(err)
            say(f"!! {err}")
    return result


def _load(dotted: str) -> Callable[[ScenarioContext], None]:
    module, _, function = dotted.partition(":")
    return getattr(importlib.import_module(module), function)


def _conf_for(step: Step, learner_conf: Path | None) -> Path | None:
    if step.nginx is None:
        return None
    if learner_conf is not None and step.checkpoint:
        return learner_conf
    return NGINX_DIR / step.nginx


def _announce(say: Echo, index: int, total: int, step: Step, conf: Path | None) -> None:
    say("")
    say(f"-- step {index}/{total}: {step.title}")
    say(f"   servers: {', '.join(s.describe() for s in step.servers)}")
    if conf is not None:
        say(f"   nginx:   {shown(conf)} on {NGINX_PORT}")
    runs = f" (x{step.client.runs})" if step.client.runs > 1 else ""
    say(f"   client:  make {step.client.make_target()}{runs}")
    say(f"   expect:  {'; '.join(step.expect.describe())}")


def _report(say: Echo, outcome: Outcome) -> None:
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

