"""Replay a lesson's steps on real processes and judge each step.

The runner owns what every lesson shares: numbering the steps and picking the checkpoint ones,
putting a learner's `CONF=` in place of the checkpoint's config, announcing each step, having the
stage (pcbook.stage.stage) bring the stack to the step's state, judging an Expect step against the
evidence, the step reports and the summary lines, the transcript (.run/lesson-N/output.log) and what
the terminal is spared (repeated lines of bulk traffic, quiet steps). Every process's output is
streamed with its name as a prefix by the Stack.

A step with an `act` gets a StepContext (pcbook.stage.context): the only way a lesson module touches
the stack.
"""

from __future__ import annotations

import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcbook.measure.placement import Placement
from pcbook.paths import shown
from pcbook.service import certs
from pcbook.stack import nginx, procs
from pcbook.stack.ports import hold_ports
from pcbook.stage import judge
from pcbook.stage.context import CLIENT_TIMEOUT, SETTLE_AFTER_SURPRISE, SETTLE_TIMEOUT, StepContext, settle
from pcbook.stage.model import Client, Lesson, Step
from pcbook.stage.stage import STACK_ERRORS, Stage

__all__ = ["CLIENT_TIMEOUT", "STACK_ERRORS", "LessonResult", "LessonRunner", "Outcome", "StepContext",
           "run_checkpoints", "run_lesson"]

Echo = Callable[[str], None]

# What changes from one call's line to the next: times, ids, call numbers, durations, nginx's pid and
# connection number. Two lines equal but for these are of one kind. Ports and status codes are kept:
# a 502 is not a 200, and server1's upstream is not server2's.
_VARYING = (
    (re.compile(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d"), "<time>"),
    (re.compile(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]"), "[<time>]"),
    (re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}"), "<id>"),
    (re.compile(r"\d+#\d+: \*\d+"), "<pid>: *<n>"),
    # grpc's C core logs (`I1207 15:38:24.071034   27599 chttp2_transport.cc:1403] ... Got goaway`): its
    # time and thread id; lesson 14's clients print one such line per GOAWAY, 143 in one run.
    (re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ "), "<grpc core> "),
    (re.compile(r"\bcall[= ]\d+"), "call <n>"),
    (re.compile(r"\d+(?:\.\d+)? ms\b"), "<ms>"),
    # The load driver's progress (`120 calls done: 119 OK, 1 UNAVAILABLE`): the acts wait on these lines,
    # the learner needs the first and the driver's own summary at its end.
    (re.compile(r"^\d+ calls done: .*"), "<n> calls done"),
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


@dataclass
class Outcome:
    """What one step of a lesson showed, judged."""

    key: str
    title: str
    why: str  # the cause of what the learner sees, printed when the step passes
    checkpoint: bool
    diffs: list[str]  # empty: the step showed what it should
    seen: judge.Observation | None = None  # an Expect step's evidence
    result: Any = None  # an act step's measurement: a pcbook.stage.results type

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

    def step(self, key: str) -> Outcome:
        """The outcome of the step with this key."""
        for outcome in self.steps:
            if outcome.key == key:
                return outcome
        raise KeyError(f"no step {key!r} ran in lesson {self.lesson.number} (ran: {[o.key for o in self.steps]})")

    def checkpoint_line(self) -> str:
        name = f"checkpoint {self.lesson.target}"
        if self.checkpoint_passed:
            return f"{name}: passed"
        if self.error:
            return f"{name}: failed: {self.error}"
        diffs = [d for r in self.steps if r.checkpoint for d in r.diffs]
        return f"{name}: failed: {'; '.join(diffs) or 'no checkpoint step ran'}"


def conf_for(lesson: Lesson, step: Step, learner_conf: Path | None) -> Path | None:
    """The step's config file (nginx's, Envoy's or the driver's service config): the learner's in place of the
    checkpoint's."""
    if step.config_file is None:
        return None
    if learner_conf is not None and lesson.conf_replaces(step):
        return learner_conf
    return step.config_file


class LessonRunner:
    """Brings a Stack from one step's state to the next and judges each step."""

    def __init__(self, stack: procs.Stack, lesson: Lesson, echo: Echo | None = write_line) -> None:
        self.stack = stack
        self.lesson = lesson
        self.echo = echo or (lambda _line: None)
        self.log_dir = stack.run_dir / lesson.target
        self.quiet: set[str] = set()  # names whose lines are captured, not shown
        self.hidden = 0  # lines kept out of the terminal by lesson.hide
        self.quieted = 0
        # Beyond the tutorial, a step's repeated lines (bulk traffic) are counted, not shown. Kept
        # until the next step starts: what stopping the step's processes flushes is collapsed too.
        self.repeats: Repeats | None = None
        # Every line the terminal gets or is spared, in order: what a summary leaves out can be read.
        self.transcript = self.log_dir / "output.log"
        if stack.echo is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.transcript.write_text("")
            self.transcript.chmod(0o600)  # the client's lines hold its token
            self.echo = self._recorded(self.echo)
            stack.echo = self._filter(stack.echo)
        # Lessons run with free placement, lesson 10 too: a checkpoint runs beside other work (the test suite),
        # where a process pinned to a core the others share gets less than its due (two pinned scale-out
        # servers delivered 1.30x one in a CI run, under the checkpoint's 1.4x). `make bench` pins.
        self.stage = Stage(stack, self.log_dir, Placement(), self.say)
        # Server name -> port, for every server of the lesson (also those a step keeps down).
        self.ports = {s.name: s.port for step in reversed(lesson.steps) for s in (*step.servers, *step.standby)}

    def _recorded(self, echo: Echo) -> Echo:
        def recorded(line: str) -> None:
            self._record(line)
            echo(line)
        return recorded

    def _record(self, line: str) -> None:
        # One O_APPEND write per line: the runner's thread and the readers' never interleave mid-line.
        fd = os.open(self.transcript, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
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
        `first`: the key of a step to run before the others (each step brings the stack to its own state)."""
        lesson, say = self.lesson, self.say
        result = LessonResult(lesson)
        steps = lesson.checkpoint_steps if checkpoint_only else lesson.steps
        steps = sorted(steps, key=lambda s: s.key != first)  # stable: the others keep the lesson's order
        say(f"== lesson {lesson.number}: {lesson.title}")
        self.hidden = 0
        try:
            # A module a config needs and this nginx lacks (stream, on a distribution's nginx) fails
            # the lesson here, before step 1, not at the step that first uses it.
            nginx.require_modules([c for s in steps if s.nginx and (c := conf_for(lesson, s, conf)) is not None])
            for index, step in enumerate(steps, 1):
                step_conf = conf_for(lesson, step, conf)
                # What stopping the previous step's processes prints comes before this header, not under it.
                self.leave_for(step)
                announce(say, index, len(steps), step, step_conf, self.stage.registry_url)
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

    def leave_for(self, step: Step) -> None:
        """Stop what `step` does not keep; called before its announcement, so that what stopping prints
        stays with the step that ran those processes."""
        self.stage.leave(step.servers, keep_registry=step.registry is not None, control_plane=step.control_plane)

    # -- one step ------------------------------------------------------------------------------------------
    def run_step(self, step: Step, conf: Path | None) -> Outcome:
        self.repeats = None if self.lesson.tutorial else Repeats()
        if step.quiet:
            self.quiet = {s.name for s in step.servers} | {"nginx", "envoy"}
            self.quieted = 0
        try:
            self.stage.apply(step.servers, nginx=step.nginx, conf=conf, registry=step.registry, sync=step.sync,
                             control_plane=step.control_plane, envoy=step.envoy)
            # The lesson's servers this step keeps down hold their ports (bound, not listening): no
            # connection of the step can take one as its local port and leave it in TIME_WAIT.
            running = {s.port for s in step.servers}
            down = sorted(set(self.ports.values()) - running - {s.port for s in step.standby})
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
        foreign = certs.foreign_client_dir() if step.client.cert == "foreign" else None
        argv = step.client.argv(foreign)
        for _ in range(step.client.runs):
            result = self.stack.run("client", argv, timeout=CLIENT_TIMEOUT)
            client_ok = client_ok and result.returncode == 0
            client_lines += result.lines
        seen = judge.Observation(client_ok=client_ok, client_lines=client_lines)

        def arrived() -> bool:
            records = [r for r in self.stack.records(since=mark) if r.name in self.stage.argv and r.source != "note"]
            seen.calls = [call for r in records for call in judge.calls_in(r.name, [r.text])]
            seen.server_lines = [r.text for r in records]
            if (logs := self.stage.nginx) is not None:
                seen.access_lines = logs.access_log_lines()
                seen.nginx_errors = logs.error_log_lines()
                seen.access_log = access_note(logs.access_log, logs.conf)
            return judge.settled(step.expect, seen, step.client.runs)

        # A client that did not do what the step expects has decided the verdict already: wait only
        # briefly for the log lines that explain it, not for calls that will never come.
        timeout = SETTLE_TIMEOUT if client_ok == step.expect.ok else SETTLE_AFTER_SURPRISE
        settle(arrived, timeout, self.stage.wait_output)
        return Outcome(step.key, step.title, step.why, step.checkpoint, judge.differences(step.expect, seen), seen)

    def _act(self, step: Step, conf: Path | None) -> Outcome:
        assert step.act is not None and step.judge is not None
        ctx = StepContext(self.stage, step, conf, say=self.say, lesson_ports=self.ports)
        try:
            result = step.act(ctx)
        except STACK_ERRORS:
            raise
        except RuntimeError as err:  # a measurement that could not run (a load generator's error)
            return Outcome(step.key, step.title, step.why, step.checkpoint, [f"the measurement could not run: {err}"])
        finally:
            ctx.cleanup()
        return Outcome(step.key, step.title, step.why, step.checkpoint, step.judge(result), result=result)


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
        try:
            return runner.replay(conf=conf, checkpoint_only=checkpoint_only, keep=keep,
                                 stop_at_failure=stop_at_failure)
        finally:
            runner.stage.close()  # servers side by side (each drains), before the Stack stops the rest


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
        try:
            for conf in confs:
                results.append(runner.replay(conf=conf, checkpoint_only=True, stop_at_failure=True, first=first))
                first = next((o.key for o in results[-1].steps if o.checkpoint and not o.passed), first)
        finally:
            runner.stage.close()
    return results


def announce(say: Echo, index: int, total: int, step: Step, conf: Path | None, registry: str | None = None) -> None:
    say("")
    say(f"-- step {index}/{total}: {step.title}")
    for line in describe(step, conf, registry):
        say(f"   {line}")


def describe(step: Step, conf: Path | None, registry: str | None = None) -> list[str]:
    """The step's stack and what it must show, one `label: text` line each; every command is the spec's."""
    lines = [f"servers: {', '.join(s.describe() for s in step.servers) or 'none running'}"]
    if step.standby:
        lines.append(f"joins:   {', '.join(s.describe() for s in step.standby)}")
    if conf is not None and step.nginx is not None:
        lines.append(f"nginx:   {shown(conf)} on {step.nginx.port}")
    if step.envoy is not None:
        lines.append(f"envoy:   {step.envoy.command(conf)}")
    if step.registry is not None:
        lines.append(f"registry: {step.registry.describe()}")
    if step.sync is not None:
        lines.append(f"sync:    {step.sync.command(registry or 'etcd://...')}")
    if step.control_plane is not None:
        lines.append(f"control plane: {step.control_plane.command(registry or 'etcd://...')}")
    if (client := step.client_for(conf)) is not None:
        lines.append(f"client:  {client.command()}")
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
    names = ", ".join(name for name in runner.stack.names if runner.stage.running(name))
    say("")
    say(f"the stack stays up for you to explore ({names}); press Ctrl-C to stop it")
    try:
        runner.stack.wait_forever()
    except KeyboardInterrupt:
        say("stopping ...")
