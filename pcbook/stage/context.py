"""What an act of a lesson gets: its step, the running stage, and the calls that drive them.

A StepContext is the only way a lesson module touches processes: start a load driver or the stream
probe, wait for a line, send a signal, kill or restart a server, start a server that joins, read
nginx's logs, start load generators, and (lessons 11-12) the registry, nginx_sync and the control
plane that the step declares. Every wait is on evidence with a deadline. What an act starts is
stopped when the step ends (cleanup), whatever happened.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pcbook.measure import driver as load_driver
from pcbook.measure.loadgen import LoadGenerator
from pcbook.measure.placement import LOADGEN, pinned
from pcbook.service.registry import Etcd
from pcbook.stack import nginx, procs
from pcbook.stage import judge
from pcbook.stage.model import Driver, Probe, Step
from pcbook.stage.results import Call, Calls, Latency, Mark, ProbeRun
from pcbook.stage.stage import DriverRun, Stage

CLIENT_TIMEOUT = 30.0  # seconds for one client run; the client itself gives up on a dead server after 5 s
SETTLE_TIMEOUT = 3.0  # how long to wait for evidence that follows a run (pipes and log tailing)
SETTLE_AFTER_SURPRISE = 0.5  # the same when the run already contradicts the step: only explaining lines


def settle(ready: Callable[[], bool], timeout: float, wait: Callable[[float], Any]) -> bool:
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


class StepContext:
    """What an act function of a lesson module gets: the step, the stage it runs on, and the calls that
    drive it (start a load, wait for a line, kill or restart a server, read nginx's logs)."""

    def __init__(self, stage: Stage, step: Step, conf: Path | None, *, say: Callable[[str], None],
                 lesson_ports: dict[str, int] | None = None) -> None:
        self.stage = stage
        self.step = step
        # The step's config file (nginx's, Envoy's or the driver's): a learner's for `make check-N CONF=...`.
        self.conf = conf
        self.stack = stage.stack
        self.mark = stage.stack.mark()
        self._say = say
        self._lesson_ports = lesson_ports or {}
        self._started: list[str] = []
        self._loads: list[LoadGenerator] = []

    # -- what is running ---------------------------------------------------------------------------------
    @property
    def nginx(self) -> nginx.NginxProcess:
        if self.stage.nginx is None:
            raise RuntimeError(f"step {self.step.key!r} runs no nginx")
        return self.stage.nginx

    @property
    def server_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.step.servers)

    @property
    def log_dir(self) -> Path:
        """Where servers declared with log_file write their output."""
        return self.stage.log_dir

    def lines(self, name: str) -> list[str]:
        """What `name` printed since the step began."""
        return self.stack.lines_since(self.mark, name)

    @property
    def lesson_ports(self) -> dict[str, int]:
        """Server name -> port, for every server of the lesson (also those this step keeps down)."""
        return dict(self._lesson_ports)

    @property
    def driver(self) -> Driver:
        client = self.step.client_for(self.conf)
        if not isinstance(client, Driver):
            raise TypeError(f"step {self.step.key!r} declares no Driver")
        return client

    @property
    def probe(self) -> Probe:
        if not isinstance(self.step.client, Probe):
            raise TypeError(f"step {self.step.key!r} declares no Probe")
        return self.step.client

    def say(self, line: str) -> None:
        """A line of the step's report, indented under its announcement."""
        self._say(f"   {line}")

    def settle(self, ready: Callable[[], bool], timeout: float = SETTLE_TIMEOUT) -> bool:
        return settle(ready, timeout, self.stage.wait_output)

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

    # -- the registry, the servers that join, the control plane (lessons 11-12) ---------------------------
    @property
    def registry(self) -> Etcd:
        """A client of the step's registry (its URL has the servers' prefix)."""
        return self.stage.registry

    @property
    def registry_url(self) -> str:
        url = self.stage.registry_url
        if url is None:
            raise RuntimeError(f"step {self.step.key!r} declares no Registry")
        return url

    def start_server(self, name: str) -> float:
        """Start one of the step's servers (a standby one: a server that joins); returns when it was
        ready (registered, for a server that registers)."""
        return self.stage.start_server(self.step.server(name))

    def terminate(self, name: str) -> float:
        """SIGTERM a server (a graceful stop); returns when it was sent."""
        return self.stage.terminate(name)

    def kill_working(self, name: str) -> float:
        """SIGKILL a server once it works on a call; returns when."""
        return self.stage.kill_working(name)

    def start_control_plane(self) -> Path:
        """Start the step's control plane again (after a kill: same port, same flags); returns the
        bootstrap file."""
        return self.stage.start_control_plane(self.step.control_plane)

    # -- acting on the servers ---------------------------------------------------------------------------
    def signal(self, name: str, sig: int) -> None:
        self.stack.signal(name, sig)

    def kill(self, name: str) -> float:
        """SIGKILL a server now; returns when (time.time())."""
        return self.stage.kill(name)

    def restart(self, name: str) -> float:
        """Start a server of this step again (after a kill) and wait until it serves; returns when."""
        return self.stage.restart(self.step.server(name))

    # -- the load driver -----------------------------------------------------------------------------------
    def start_driver(self, driver: Driver | None = None, name: str = "client") -> DriverRun:
        """Start the load driver (the step's, by default) in the background."""
        run = self.stage.start_driver(driver or self.driver, name)
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
        report = self.stage.collect(run, timeout)
        names = tuple(s.name for s in (*self.step.servers, *self.step.standby))  # a server that joined too
        received = self.stage.received_once_read((c.laptop_id for c in report.calls if c.ok), run.mark,
                                                 names, SETTLE_TIMEOUT)
        start = origin if origin is not None else (report.calls[0].t0 if report.calls else time.time())
        calls = tuple(Call(c.number, c.code, c.details, round(c.t0 - start, 4), tuple(received.get(c.laptop_id, ())))
                      for c in report.calls)
        return Calls(calls, names, report.login_error,
                     tuple(Mark(label, round(at - start, 4)) for label, at in marks), origin_label, report.login_s)

    def run_driver(self, driver: Driver | None = None) -> Calls:
        """Run the load driver in the foreground (its lines echoed with the `client` prefix)."""
        return self.finish_driver(self.start_driver(driver))

    def kill_mid_run(self, victim: str, driver: Driver | None = None, after: int = 10) -> Calls:
        """Start the driver; once `after` calls are done and `victim` is working on a call (its
        create-laptop line: that call has surely been sent), SIGKILL `victim`. Times are relative to
        the kill."""
        run = self.start_driver(driver)
        self.await_line(run.name, f"{after} calls done")
        killed_at = self.stage.kill_working(victim, 5)
        return self.finish_driver(run, origin=killed_at, marks=[("killed", killed_at)], origin_label="the kill")

    def measure_latency(self, driver: Driver | None = None, timeout: float = 90.0) -> Latency:
        """The driver's --compare mode: the same call on each path, median and p90."""
        driver = driver or self.driver
        self.stack.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.stack.run_dir / f"load-{self.stack.mark()}-latency.json"
        result = self.stack.run("client", driver.argv(path), timeout=timeout)
        try:
            report = load_driver.read_report(path) if result.ok and path.exists() else load_driver.Report()
        finally:
            path.unlink(missing_ok=True)
        error = "" if result.ok else (result.lines[-1] if result.lines else "no output")
        return Latency({n: round(s["median"], 3) for n, s in report.latency_ms.items()},
                       {n: round(s["p90"], 3) for n, s in report.latency_ms.items()}, driver.calls, error,
                       report.samples_ms)

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
        logs = self.stage.nginx
        mark = self.stack.mark()
        access_from = len(logs.access_log_lines()) if logs else 0
        errors_from = len(logs.error_log_lines()) if logs else 0
        # The probe dumps its threads shortly before the runner would kill it: a hang explains itself.
        argv = probe.argv(dump_after=CLIENT_TIMEOUT - 3)
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
        with pinned(self.stage.placement, LOADGEN):
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
