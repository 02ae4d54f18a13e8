"""A discovery stack in a Stack: etcd, self-registering servers, and the three ways to reach them.

    with Stack() as stack:
        lab = Lab(stack)                       # a real etcd on a free loopback port
        lab.server("server1"); lab.server("server2")
        run = lab.driver(lab.url, calls=400, rate=50)       # the thick client (--discover)
        run.wait_done(50); lab.server("server3"); ...
        report = run.finish()
        lab.per_server(report, since=t)        # who received the calls sent after t

The same servers can be reached through nginx fed by nginx_sync (`lab.nginx()`, then dial
127.0.0.1:8080) and through the xDS control plane (`lab.control_plane()`, then dial xds:///pcbook with
`run = lab.driver("xds:///pcbook", ...)`, which passes the bootstrap). Tests and lessons 11-12 use it;
every wait is on a line a process printed, with a deadline.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pcbook.discovery.nginx_sync import render_upstream
from pcbook.discovery.registry import Etcd
from pcbook.discovery.xds import write_bootstrap
from pcbook.measure import driver as load
from pcbook.paths import NGINX_DIR
from pcbook.stack import procs
from pcbook.stack.etcd import EtcdProcess, start_etcd
from pcbook.stack.nginx import NginxProcess, start_nginx
from pcbook.stack.ports import pick_free_port
from pcbook.workbook.model import Driver as Driver_

REGISTRY_CONF = NGINX_DIR / "discovery" / "registry.conf"
NGINX_PORT = 8080  # as in that config
PREFIX = "/pcbook"
FIRST_CALL_WITHIN = 3.0  # s from server3's registration to its first call, for every path of lesson 11
# The laptop service logs `receive a create-laptop request with id: <uuid>` for every CreateLaptop.
_RECEIVED = re.compile(r"receive a create-laptop request with id: (\S+)")
_runs = itertools.count(1)


def driver_argv(target: str, json_path: Path, *, calls: int, rate: float, concurrency: int,
                progress_every: int) -> list[str]:
    """The load driver's command line; an etcd:// target makes it a discovering (thick) client."""
    args = Driver_(address=target, calls=calls, rate=rate, concurrency=concurrency,
                   progress_every=progress_every).args()
    return [sys.executable, "-u", "-m", "pcbook.measure.driver", *args, "--json", str(json_path)]


# Waiting for a driver and reading its report is the driver module's own.
collect = load.collect


@dataclass
class Driver:
    """A load driver started in the background (pcbook.measure.driver)."""

    lab: Lab
    name: str
    path: Path
    mark: int
    step: int

    def progress(self) -> int:
        """Calls finished, as its last progress line said."""
        done = 0
        for rec in self.lab.stack.records(self.name, since=self.mark):
            if m := re.match(r"(\d+) calls done", rec.text):
                done = int(m.group(1))
        return done

    def wait_more(self, calls: int, timeout: float = 30) -> float:
        """Wait until at least `calls` more calls have finished; returns the time of that progress line."""
        return self.wait_done((self.progress() // self.step + -(-calls // self.step)) * self.step, timeout)

    def wait_done(self, calls: int, timeout: float = 30) -> float:
        """Wait for its `N calls done` progress line (N a multiple of its progress step); returns its time."""
        line = self.lab.stack.wait_for_line(self.name, re.compile(rf"^{calls} calls done"), timeout, since=self.mark)
        return self.lab.time_of(self.name, line, self.mark)

    def finish(self, timeout: float = 90, *, stop: bool = True) -> load.Report:
        """stop=True: SIGTERM it (it stops sending, finishes the calls in flight and writes its report)."""
        if stop:
            self.lab.stack.stop(self.name, timeout=10)
        return collect(self.lab.stack, self.name, self.path, timeout)


def bootstrap_path(stack: procs.Stack, port: int) -> Path:
    return stack.run_dir / f"xds-bootstrap-{port}.json"


def start_control_plane(stack: procs.Stack, registry_url: str, port: int, args: Sequence[str] = ()) -> Path:
    """Start the xDS control plane as Stack child "xds" on `port`, fed from `registry_url`, and wait until
    it listens (it reads the registry first); returns the bootstrap file clients need (written once)."""
    mark = stack.mark()
    stack.start("xds", [sys.executable, "-u", "-m", "pcbook.discovery.xds", "serve", "--registry", registry_url,
                        "--port", str(port), *args])
    stack.wait_for_line("xds", "listening on", 15, since=mark)
    path = bootstrap_path(stack, port)
    if not path.exists():
        write_bootstrap(path, f"127.0.0.1:{port}")
    return path


class Lab:
    def __init__(self, stack: procs.Stack, *, etcd_port: int | None = None, ttl: int = 3, drain: float = 1.0,
                 work_ms: int = 20, etcd: EtcdProcess | None = None, xds_args: Sequence[str] = ()):
        """`work_ms`: each CreateLaptop takes that long, so that a kill finds calls in flight.

        `etcd`: a registry someone else started and stops (the runner, for a step that declares a
        Registry): the lab uses it and leaves it running; without, the lab starts its own etcd and stops
        it in close(). `xds_args`: the flags control_plane() starts the control plane with (a step's
        ControlPlane declaration)."""
        self.stack = stack
        self.work_ms = work_ms
        self.ttl = ttl
        self.drain = drain
        self._own_etcd = etcd is None
        self.etcd: EtcdProcess = etcd or start_etcd(stack, port=etcd_port or pick_free_port(),
                                                    peer_port=pick_free_port())
        self.url = f"{self.etcd.url}{PREFIX}"
        self.registry = Etcd(self.url)
        self.servers: list[str] = []
        self.nginx_proc: NginxProcess | None = None
        self.xds_port: int | None = None
        self.xds_args: tuple[str, ...] = tuple(xds_args)
        self.bootstrap: Path | None = None
        self.clients: list[str] = []  # the drivers started, by name

    def close(self) -> None:
        """Stop everything this lab started, newest first (the Stack would at its end; a lesson step must now)."""
        def running(name: str) -> bool:
            return name in self.stack and self.stack.proc(name).running

        for name in (*reversed(self.clients), "xds", "sync", "nginx"):
            if running(name):
                self.stack.stop(name)
        # The servers together: each revokes its lease and drains for --drain-seconds, side by side.
        self.stack.stop_together([name for name in reversed(self.servers) if running(name)])
        if self._own_etcd and running(self.etcd.name):
            self.stack.stop(self.etcd.name)

    # timing -----------------------------------------------------------------------------------------

    def time_of(self, name: str, text: str, since: int = 0) -> float:
        """When (time.time()) the runner read that line of `name`."""
        for rec in self.stack.records(name, since=since):
            if rec.text == text:
                return rec.t
        raise KeyError(text)

    def wait_line(self, name: str, pattern: str, timeout: float = 15, since: int | None = None) -> float:
        mark = self.stack.mark() if since is None else since
        line = self.stack.wait_for_line(name, pattern, timeout, since=mark)
        return self.time_of(name, line, mark)

    # servers ----------------------------------------------------------------------------------------

    def server(self, name: str, port: int | None = None, *, register: bool = True, work_ms: int | None = None) -> float:
        """Start a server that registers itself as <prefix>/<name>; returns when it registered.
        `work_ms`: this server's work per call (default: the lab's)."""
        port = port or pick_free_port()
        argv = [sys.executable, "-u", "-m", "pcbook.server", "--port", str(port), "--host", "127.0.0.1",
                "--work-ms", str(self.work_ms if work_ms is None else work_ms)]
        if register:
            argv += ["--register", self.url, "--name", name, "--register-ttl", str(self.ttl),
                     "--drain-seconds", f"{self.drain:g}"]
        mark = self.stack.mark()
        self.stack.start(name, argv)
        if name not in self.servers:
            self.servers.append(name)
        if not register:
            self.stack.wait_ready(name, port=port, health=True, timeout=15)
            return time.time()
        return self.wait_line(name, "registered ", 20, since=mark)

    def terminate(self, name: str) -> float:
        """SIGTERM (a graceful stop); returns when it was sent."""
        sent = time.time()
        self.stack.signal(name, signal.SIGTERM)
        return sent

    def kill(self, name: str) -> float:
        """SIGKILL when it is working on a call (so a call is surely in flight); returns the kill's time."""
        self.stack.wait_for_line(name, "receive a create-laptop request", 10, since=self.stack.mark())
        killed = time.time()
        self.stack.kill(name)
        return killed

    # the three paths --------------------------------------------------------------------------------

    def nginx(self, conf: Path = REGISTRY_CONF, port: int = NGINX_PORT) -> NginxProcess:
        """nginx with the registry config (`conf` listens on `port`), and nginx_sync keeping its upstream
        list; waits for the first reload."""
        self.nginx_proc = start_nginx(self.stack, conf, port=port, files={"upstream.conf": render_upstream({})})
        mark = self.stack.mark()
        self.stack.start("sync", [sys.executable, "-u", "-m", "pcbook.discovery.nginx_sync", "--registry", self.url,
                                  "--nginx-prefix", str(self.nginx_proc.prefix)])
        self.stack.wait_for_line("sync", re_any("nginx reloaded", "is up to date"), 15, since=mark)
        return self.nginx_proc

    def control_plane(self, port: int | None = None, *args: str) -> Path:
        """Start (or restart: same port, same flags unless given) the xDS control plane; returns the
        bootstrap file clients need."""
        self.xds_port = port or self.xds_port or pick_free_port()
        self.xds_args = tuple(args) or self.xds_args
        self.bootstrap = start_control_plane(self.stack, self.url, self.xds_port, self.xds_args)
        return self.bootstrap

    def driver(self, target: str, *, calls: int, rate: float, concurrency: int = 2, name: str = "client",
               progress_every: int = 10) -> Driver:
        """Start the load driver on `target`: an etcd:// URL (thick client), host:port (nginx) or xds:///pcbook."""
        self.stack.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.stack.run_dir / f"discovery-load-{os.getpid()}-{next(_runs)}.json"
        env = {"GRPC_XDS_BOOTSTRAP": str(self.bootstrap)} if target.startswith("xds:") and self.bootstrap else None
        mark = self.stack.mark()
        self.stack.start(name, driver_argv(target, path, calls=calls, rate=rate, concurrency=concurrency,
                                           progress_every=progress_every), env=env)
        if name not in self.clients:
            self.clients.append(name)
        return Driver(self, name, path, mark, progress_every)

    # who got what ----------------------------------------------------------------------------------

    def receivers(self, report: load.Report, since: int = 0) -> dict[str, str]:
        """Laptop id -> the server that logged it (servers' lines are read a moment after the answers)."""
        wanted = {c.laptop_id for c in report.calls if c.ok}
        deadline = time.monotonic() + 3.0  # a server's line reaches us a moment after the client's answer
        while True:
            seen: dict[str, str] = {}
            for rec in self.stack.records(since=since):
                if rec.name in self.servers and (m := _RECEIVED.search(rec.text)):
                    seen.setdefault(m.group(1), rec.name)
            if wanted <= seen.keys() or time.monotonic() > deadline:
                return seen
            self.stack.wait_for_output(0.05)

    def per_server(self, report: load.Report, start: float = 0.0, end: float = float("inf"),
                   receivers: dict[str, str] | None = None) -> Counter[str]:
        """Calls sent in [start, end) per server that received them ('failed': those that failed)."""
        receivers = receivers if receivers is not None else self.receivers(report)
        out: Counter[str] = Counter()
        for call in report.calls:
            if start <= call.t0 < end:
                out[receivers.get(call.laptop_id, "failed" if not call.ok else "unknown")] += 1
        return out

    def receivers_of_lines(self, since: int = 0) -> Counter[str]:
        """Create-laptop requests each server logged (for clients that write no report)."""
        return Counter(rec.name for rec in self.stack.records(since=since)
                       if rec.name in self.servers and "receive a create-laptop request" in rec.text)

    def received_at(self, server: str, since: int = 0) -> dict[str, float]:
        """Laptop id -> when `server`'s line for that CreateLaptop was read."""
        return {m.group(1): rec.t for rec in self.stack.records(server, since=since)
                if (m := _RECEIVED.search(rec.text))}

    def first_call(self, server: str, after: float) -> float:
        """When `server` logged its first create-laptop request after `after` (inf: none)."""
        for rec in self.stack.records(server):
            if rec.t >= after and "receive a create-laptop request" in rec.text:
                return rec.t
        return float("inf")


def failed_between(report: load.Report, start: float, end: float) -> list[load.Call]:
    """Failed calls that ended in [start, end): a call in flight at an event fails after it."""
    return [c for c in report.calls if start <= c.t1 < end and not c.ok]


def re_any(*texts: str) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(t) for t in texts))


def names_in(line: str, names: Sequence[str]) -> set[str]:
    return {n for n in names if f"{n}=" in line}


@dataclass
class Story:
    """Lesson 11's story on one path: who received the calls in each phase, and what each event cost."""

    path: str
    phases: dict[str, Counter[str]]  # "two", "joined", "left", "killed" (those played) -> calls per server
    register_to_first_call: float  # s from server3's registration to its first call (inf: never)
    kill_to_removal: float | None  # s from the SIGKILL to the registry's DELETE of server2 (None: not played)
    failed: dict[str, int]  # event -> calls that failed around it
    report: load.Report
    receivers: dict[str, str]  # laptop id -> server
    events: dict[str, float]  # label -> time.time()


def story(lab: Lab, target: str, *, rate: float = 40, step: int = 60, concurrency: int = 2) -> Story:
    """server1 and server2 registered and taking calls; server3 joins; server1 stops gracefully;
    server2 is SIGKILLed. `target`: lab.url (thick client), 127.0.0.1:8080 (nginx) or xds:///pcbook."""
    return stories(lab, {"client": target}, rate=rate, step=step, concurrency=concurrency)["client"]


def stories(lab: Lab, targets: dict[str, str], *, rate: float = 40, step: int = 60, concurrency: int = 2,
            end_unfollowed: bool = True) -> dict[str, Story]:
    """The story of story(), once, with one driver per target (driver name -> target) calling at the
    same time: every client sees the same servers and the same events. Each call's server, and so each
    client's first call on server3, comes from the servers' own lines.

    `end_unfollowed`: when no client reaches server3 (none follows the registry), the story ends after the
    join, whose phase already fails the judge: the stop and the kill would only add ten seconds of calls
    to servers that are gone. Only the phases played are in the stories."""
    from pcbook.discovery.registry import Members

    for name in ("server1", "server2"):
        if name not in lab.servers:
            lab.server(name)
    seen: list[tuple[float, set[str]]] = []  # when our own watch saw each state of the registry
    with Members(lab.registry, on_change=lambda m: seen.append((time.time(), set(m)))) as members:
        members.wait(lambda m: {"server1", "server2"} <= m.keys(), 10)
        runs = {name: lab.driver(target, calls=100_000, rate=rate, concurrency=concurrency, name=name,
                                 progress_every=10) for name, target in targets.items()}
        lead = next(iter(runs.values()))  # every driver calls at the same rate: one paces the story
        t_start = max(run.wait_done(10) for run in runs.values())
        t_two = lead.wait_more(step)
        mark3 = lab.stack.mark()
        lab.server("server3")
        members.wait(lambda m: "server3" in m, 5)
        t_reg = next(t for t, names in seen if "server3" in names)  # the PUT, before server3 logs it
        try:  # twice what the judge allows: "late" and "never" still read apart, a wrong setup is quick
            lab.stack.wait_for_line("server3", "receive a create-laptop request", 2 * FIRST_CALL_WITHIN, since=mark3)
            followed = True
        except procs.NotReadyError:
            followed = False  # no client learns of server3: first call = inf
        t_joined = lead.wait_more(step)
        events = {"server3 registered": t_reg}
        played = followed or not end_unfollowed  # the stop and the kill
        if played:
            t_term = events["server1 SIGTERM"] = lab.terminate("server1")
            lab.stack.proc("server1").wait(15)
            t_gone = time.time()  # after its drain: from here on nobody can send it a call
            lead.wait_more(step)
            t_kill = events["server2 SIGKILL"] = lab.kill("server2")
            members.wait(lambda m: "server2" not in m, lab.ttl + 5)
            removed = events["server2's lease expired"] = next(
                t for t, names in seen if t > t_kill and "server2" not in names)
            t_end = lead.wait_more(step)
        reports = {name: run.finish() for name, run in runs.items()}
    since = min(run.mark for run in runs.values())
    receivers_all = lab.receivers(load.Report([c for r in reports.values() for c in r.calls]), since)
    on_server3 = lab.received_at("server3", mark3)
    out = {}
    for name, report in reports.items():
        ids = {c.laptop_id for c in report.calls}
        receivers = {i: srv for i, srv in receivers_all.items() if i in ids}
        first = min((t for i, t in on_server3.items() if i in ids and t >= t_reg), default=math.inf)
        joined_end = t_term if played else t_joined
        phases = {"two": lab.per_server(report, t_start, t_two, receivers),
                  "joined": lab.per_server(report, first if math.isfinite(first) else t_reg, joined_end, receivers)}
        failed = {"join": len(failed_between(report, t_two, joined_end))}
        if played:
            phases |= {"left": lab.per_server(report, t_gone, t_kill, receivers),
                       "killed": lab.per_server(report, removed, t_end, receivers)}
            failed |= {"graceful stop": len(failed_between(report, t_term, t_kill)),
                       "kill": len(failed_between(report, t_kill, t_end))}
        out[name] = Story(targets[name], phases, first - t_reg, removed - t_kill if played else None, failed,
                          report, receivers, dict(events))
    return out


SIGMAS = 3.5  # xDS picks localities at random (weighted), so the band is binomial: about 1 in 2000 per check


def spread(counts: Counter[str] | dict[str, int], servers: set[str]) -> bool:
    """Exactly `servers` got the calls, each within SIGMAS standard deviations of an even share."""
    counts = {k: v for k, v in counts.items() if v}
    total = sum(counts.values())
    p = 1 / len(servers)
    band = SIGMAS * math.sqrt(total * p * (1 - p))
    return set(counts) == servers and all(abs(counts[s] - total * p) <= band for s in servers)


def judge_story(story: Story, *, first_call_within: float = FIRST_CALL_WITHIN, kill_losses: int = 2) -> list[str]:
    """What differs from lesson 11's story (empty: it held)."""
    return judge_phases(story.phases, story.register_to_first_call, story.failed,
                        first_call_within=first_call_within, kill_losses=kill_losses)


def judge_phases(p: dict[str, Counter[str]] | dict[str, dict[str, int]], first_call: float, failed: dict[str, int],
                 *, first_call_within: float = FIRST_CALL_WITHIN, kill_losses: int = 2) -> list[str]:
    """The phases a story played (an unfollowed one ends after "joined"), each against lesson 11's rule."""
    diffs = []
    if not spread(p["two"], {"server1", "server2"}):
        diffs.append(f"with two servers registered the calls did not spread over both: {dict(p['two'])}")
    if not first_call <= first_call_within:
        diffs.append(f"server3 got no call within {first_call_within:g} s of registering (is the client watching?)")
    if not spread(p["joined"], {"server1", "server2", "server3"}):
        diffs.append(f"after server3 joined the calls did not spread over all three: {dict(p['joined'])}")
    if "left" in p and not spread(p["left"], {"server2", "server3"}):
        diffs.append(f"after server1's graceful stop the calls did not spread over server2 and server3: "
                     f"{dict(p['left'])}")
    if "killed" in p and set(k for k, v in p["killed"].items() if v) != {"server3"}:
        diffs.append(f"after server2's lease expired calls went elsewhere than server3: {dict(p['killed'])}")
    for event in ("join", "graceful stop"):
        if failed.get(event):
            diffs.append(f"{failed[event]} call(s) failed around the {event} (expected none)")
    if failed.get("kill", 0) > kill_losses:
        diffs.append(f"{failed['kill']} calls failed around the kill (at most the {kill_losses} in flight)")
    return diffs


def eds_version(lab: Lab) -> int:
    """The version of the endpoints the control plane last announced (`endpoints vN: ...`), 0: none yet."""
    found = [int(m.group(1)) for rec in lab.stack.records("xds") if (m := re.search(r" endpoints v(\d+): ", rec.text))]
    return found[-1] if found else 0


def share_after(lab: Lab, change: Callable[[], object], ack_version: str | None = None, calls: int = 200,
                say: Callable[[str], None] = lambda _line: None) -> tuple[dict[str, float], float, load.Report]:
    """xDS: apply `change` (an etcd write), wait for the client's ACK of EDS `ack_version` (default: the
    version after the control plane's current one), then send `calls` calls; returns each server's share
    of them, the change-to-ACK time and the report."""
    run = lab.driver("xds:///pcbook", calls=100_000, rate=100, concurrency=2, progress_every=10)
    run.wait_done(10)
    ack_version = ack_version or f"v{eds_version(lab) + 1}"
    mark = lab.stack.mark()
    changed = time.time()
    change()
    acked = lab.wait_line("xds", f"ACK EDS {ack_version} ", 10, since=mark)
    say(f"the change reached the client (its ACK) {acked - changed:.3f} s after the write to etcd")
    run.wait_more(calls + 10)
    report = run.finish()
    counts = lab.per_server(report, acked + 0.05)
    total = sum(counts.values()) or 1
    return {name: n / total for name, n in counts.items()}, acked - changed, report


@dataclass
class Restart:
    """The control plane SIGKILLed and started again while a client keeps calling."""

    down_s: float
    failed: int
    reached_new_server_while_down: bool
    restart_to_first_call: float  # s from the restart to the first call of the server registered meanwhile
    spread_while_down: bool
    report: load.Report
    events: dict[str, float]


def restart_control_plane(lab: Lab) -> Restart:
    run = lab.driver("xds:///pcbook", calls=100_000, rate=50, concurrency=2, progress_every=10)
    run.wait_done(20)
    killed = time.time()
    lab.stack.kill("xds")
    run.wait_more(60)  # the client goes on with the endpoints it had
    registered = lab.server("server3")  # unknown to the clients while no control plane runs
    run.wait_more(60)
    reached = math.isfinite(lab.first_call("server3", registered))
    mark = lab.stack.mark()
    restarted = time.time()
    lab.control_plane()
    lab.wait_line("xds", "ACK EDS", 30, since=mark)  # the client reconnected (with backoff) and resynced
    first = lab.stack.wait_for_line("server3", "receive a create-laptop request", 15, since=mark)
    resynced = lab.time_of("server3", first, mark) - restarted
    run.wait_more(30)
    report = run.finish()
    return Restart(restarted - killed, len(report.failed()), reached, resynced,
                   spread(lab.per_server(report, killed, registered), {"server1", "server2"}), report,
                   {"control plane SIGKILL": killed, "server3 registered": registered,
                    "control plane restarted": restarted})

