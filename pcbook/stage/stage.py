"""The stage: every process a step needs, brought up from its spec, waited for, signalled and stopped.

A Stage owns a procs.Stack and what runs on it: pcbook servers (pcbook.stack.specs.Server), nginx,
etcd (a step's Registry), nginx_sync, the xDS control plane, and the load drivers of a step. The
lesson runner brings it from one step's state to the next (`apply`), the acts of the lessons drive it
through their StepContext, and the bench composes its own stacks with it. Every wait is on evidence
(a line a process printed, a port, a health check) with a deadline; nothing here sleeps.

Between two states only what changed is restarted: servers whose command line differs (or that died),
nginx (always: a fresh nginx forgets failed backends, as in the tutorial), and the control plane when
its flags differ. A registry is kept from one state to the next that declares one too; each state
starts with an empty registry (what the servers kept running registered stays).
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from pcbook.discovery.nginx_sync import render_upstream
from pcbook.discovery.xds import write_bootstrap
from pcbook.measure import driver as load_driver
from pcbook.measure.placement import NGINX, SERVERS, Placement, pinned
from pcbook.service import tls
from pcbook.service.logs import RECEIVED, RECEIVED_TEXT
from pcbook.service.registry import Etcd, RegistryError
from pcbook.stack import envoy as envoy_stack
from pcbook.stack import nginx as nginx_stack
from pcbook.stack import procs
from pcbook.stack.etcd import EtcdError, EtcdProcess, start_etcd
from pcbook.stack.ports import pick_free_port, wait_bindable
from pcbook.stack.specs import ControlPlane, Driver, Envoy, Nginx, Registry, RegistrySync, Server

READY_TIMEOUT = 20.0
REGISTRY = "registry"  # the Stack names of a step's etcd, nginx_sync and control plane
SYNC = "sync"
XDS = "xds"
ENVOY = "envoy"
# Errors that mean the stack could not be brought up: a lesson stops with one line, no traceback.
STACK_ERRORS = (procs.PortBusyError, procs.NotReadyError, nginx_stack.NginxError, tls.CertificateFileError,
                EtcdError, RegistryError, envoy_stack.EnvoyError)
_runs = itertools.count(1)
_PROGRESS = re.compile(r"^(\d+) calls done")


@dataclass
class DriverRun:
    """A load driver started in the background (Stage.start_driver)."""

    stage: Stage
    name: str
    path: Path  # where it writes its report
    mark: int  # the stack's mark when it started
    driver: Driver

    def progress(self) -> int:
        """Calls finished, as its last progress line said."""
        done = 0
        for rec in self.stage.stack.records(self.name, since=self.mark):
            if m := _PROGRESS.match(rec.text):
                done = int(m.group(1))
        return done

    def wait_done(self, calls: int, timeout: float = 30) -> float:
        """Wait for its `N calls done` line (N a multiple of its progress step); returns when it was read."""
        return self.stage.wait_line(self.name, re.compile(rf"^{calls} calls done"), timeout, since=self.mark)

    def wait_more(self, calls: int, timeout: float = 30) -> float:
        """Wait until at least `calls` more calls have finished; returns when that progress line was read."""
        step = self.driver.progress_every
        return self.wait_done((self.progress() // step + -(-calls // step)) * step, timeout)

    def finish(self, timeout: float = 90, *, stop: bool = True) -> load_driver.Report:
        """stop=True: SIGTERM it (it stops sending, finishes the calls in flight and writes its report)."""
        if stop:
            self.stage.stack.stop(self.name, timeout=10)
        return self.stage.collect(self, timeout)


@dataclass
class Stage:
    """A stack and the processes of the current state on it."""

    stack: procs.Stack
    log_dir: Path  # where servers declared with log_file write their output
    placement: Placement = field(default_factory=Placement)
    say: Callable[[str], None] = lambda _line: None
    servers: dict[str, Server] = field(default_factory=dict)  # running, by name
    argv: dict[str, list[str]] = field(default_factory=dict)  # name -> the command line it runs with
    nginx: nginx_stack.NginxProcess | None = None
    envoy: envoy_stack.EnvoyProcess | None = None
    etcd: EtcdProcess | None = None
    registry_prefix: str = ""
    control_plane: ControlPlane | None = None
    xds_port: int | None = None
    bootstrap: Path | None = None
    drivers: list[str] = field(default_factory=list)

    # -- what is up ----------------------------------------------------------------------------------
    @property
    def registry_url(self) -> str | None:
        """The etcd URL (with the prefix) servers register in; None: no registry is up."""
        return f"{self.etcd.url}{self.registry_prefix}" if self.etcd else None

    @property
    def registry(self) -> Etcd:
        if self.registry_url is None:
            raise RuntimeError("no registry is up on this stage")
        return Etcd(self.registry_url)

    def running(self, name: str) -> bool:
        return name in self.stack and self.stack.proc(name).running

    def wait_output(self, timeout: float) -> None:
        self.stack.wait_for_output(timeout)  # pipes wake us up; nginx's log files are polled

    def wait_line(self, name: str, pattern: str | re.Pattern[str], timeout: float = 15, *,
                  since: int | None = None) -> float:
        """Wait for a line of `name` (from the mark `since`, default now) that matches; returns when it was read."""
        mark = self.stack.mark() if since is None else since
        text = self.stack.wait_for_line(name, pattern, timeout, since=mark)
        return next(r.t for r in self.stack.records(name, since=mark) if r.text == text)

    # -- bringing the stage to a state ---------------------------------------------------------------
    def leave(self, servers: Sequence[Server], *, keep_registry: bool = False,
              control_plane: ControlPlane | None = None) -> None:
        """Stop what the next state does not keep: its drivers, nginx (and nginx_sync), the control plane
        unless the same one is wanted, the registry unless `keep_registry`, and the servers not in
        `servers`, or whose command line differs, or that died."""
        for name in reversed(self.drivers):
            if self.running(name):
                self.stack.stop(name)
        self.drivers.clear()
        for name in (SYNC, "nginx", ENVOY):
            if self.running(name):
                self.stack.stop(name)
        self.nginx = None
        self.envoy = None
        if control_plane is None or control_plane != self.control_plane or not keep_registry:
            self.stop_control_plane()
        wanted = {s.name: s for s in servers}
        registry = self.registry_url if keep_registry else None
        stale = [name for name in self.argv
                 if name not in wanted or self.argv[name] != self._argv(wanted[name], registry)
                 or not self.running(name)]
        # Together: each registered server revokes its lease and drains for its --drain-seconds, side by side.
        self.stack.stop_together([name for name in stale if self.running(name)])
        for name in stale:
            del self.argv[name]
            self.servers.pop(name, None)
        if not keep_registry and self.etcd is not None:
            if self.running(self.etcd.name):
                self.stack.stop(self.etcd.name)
            self.etcd = None

    def apply(self, servers: Sequence[Server], *, nginx: Nginx | None = None, conf: Path | None = None,
              registry: Registry | None = None, sync: RegistrySync | None = None,
              control_plane: ControlPlane | None = None, envoy: Envoy | None = None) -> None:
        """Bring the stage to this state: the registry (empty), the servers (each started and waited for:
        serving, and registered if it registers), nginx and nginx_sync, then the control plane once the
        servers are in the registry, then Envoy (which may read it). `conf`: the config of the step's proxy
        (nginx's, else Envoy's) in place of the spec's own."""
        keep = registry is not None and self.etcd is not None and self.registry_prefix == registry.prefix
        self.leave(servers, keep_registry=keep, control_plane=control_plane)
        if registry is not None:
            self.start_registry(registry)
        fresh = [s for s in servers if s.name not in self.argv]
        if any(s.log_file for s in fresh):
            self.log_dir.mkdir(parents=True, exist_ok=True)
        for server in fresh:
            wait_bindable(server.port, self.say)
        marks = {s.name: self.stack.mark() for s in fresh}
        for server in fresh:  # all start at once (their imports overlap), then each is waited for
            self.start_server(server, wait=False)
        for server in fresh:
            self.wait_server(server, since=marks[server.name])
        if nginx is not None:
            self.start_nginx(nginx, conf or nginx.path, sync=sync)
        if control_plane is not None and not self.running(XDS):
            self.start_control_plane(control_plane)
        if envoy is not None:
            self.start_envoy(envoy, conf if nginx is None else None)

    # -- the registry (lessons 11-12) ----------------------------------------------------------------
    def start_registry(self, registry: Registry) -> None:
        """etcd on free loopback ports, or the one already up with its keys cleared (servers kept
        running re-register below)."""
        self.registry_prefix = registry.prefix
        if self.etcd is None:
            with pinned(self.placement, NGINX):
                self.etcd = start_etcd(self.stack, name=REGISTRY, port=pick_free_port(), peer_port=pick_free_port())
            return
        # A kept etcd: only the keys of the servers still running stay (their leases are alive), the
        # rest (a SIGKILLed server's key, lesson 12's weights and drains) goes.
        etcd = Etcd(self.etcd.url)
        keep = {f"{registry.prefix}/{name}" for name in self.servers if self.running(name)}
        for kv in etcd.range_prefix(registry.prefix)[0]:
            if kv.key not in keep:
                etcd.delete(kv.key)

    # -- servers -------------------------------------------------------------------------------------
    def _argv(self, server: Server, registry: str | None) -> list[str]:
        return server.argv(registry=registry, log_dir=self.log_dir)

    def start_server(self, server: Server, *, wait: bool = True) -> float:
        """Start a server (its port must be free); `wait`: until it serves (and has registered); returns
        when it was ready."""
        if server.register and self.registry_url is None:
            raise RuntimeError(f"{server.name} registers itself, but no registry is up")
        argv = self._argv(server, self.registry_url)
        procs.check_port_free(server.port)
        mark = self.stack.mark()
        with pinned(self.placement, SERVERS):
            self.stack.start(server.name, argv)
        self.argv[server.name] = argv
        self.servers[server.name] = server
        return self.wait_server(server, since=mark) if wait else time.time()

    def wait_server(self, server: Server, *, since: int = 0) -> float:
        """Until it answers SERVING (and, if it registers, has logged its registration); returns when."""
        if server.register:
            return self.wait_line(server.name, "registered ", READY_TIMEOUT, since=since)
        # The client certificate satisfies both mutual TLS and server-side TLS only.
        credentials = tls.client_credentials() if server.tls else None
        self.stack.wait_ready(server.name, port=server.port, health=f"127.0.0.1:{server.port}",
                              credentials=credentials, timeout=READY_TIMEOUT)
        return time.time()

    def restart(self, server: Server) -> float:
        """Start it again after a kill, once its port can be bound; returns when it serves."""
        wait_bindable(server.port, self.say)
        return self.start_server(server)

    def terminate(self, name: str) -> float:
        """SIGTERM (a graceful stop); returns when it was sent."""
        sent = time.time()
        self.stack.signal(name, 15)
        return sent

    def kill(self, name: str) -> float:
        """SIGKILL now; returns when."""
        at = time.time()
        self.stack.kill(name)
        return at

    def kill_working(self, name: str, timeout: float = 10) -> float:
        """SIGKILL a server once it is working on a CreateLaptop (a call is surely in flight); returns when."""
        self.stack.wait_for_line(name, RECEIVED_TEXT, timeout, since=self.stack.mark())
        return self.kill(name)

    # -- nginx, nginx_sync and the control plane -----------------------------------------------------
    def start_nginx(self, spec: Nginx, conf: Path, *, sync: RegistrySync | None = None) -> nginx_stack.NginxProcess:
        for port in spec.more_ports:
            procs.check_port_free(port)
        # nginx_sync renders the upstream the config includes: empty until it has read the registry.
        files = {"upstream.conf": render_upstream({})} if sync else None
        with pinned(self.placement, NGINX):
            self.nginx = nginx_stack.start_nginx(self.stack, conf, port=spec.port, timeout=READY_TIMEOUT,
                                                 files=files)
        # nginx binds every listen socket before it serves any: once `port` answers, the others (those the
        # config has: a learner's may have fewer) are bound too.
        if sync is not None:
            mark = self.stack.mark()
            assert self.registry_url is not None  # the model refuses a sync without a registry
            with pinned(self.placement, NGINX):
                self.stack.start(SYNC, sync.argv(self.registry_url, self.nginx.prefix))
            self.stack.wait_for_line(SYNC, re.compile(r"nginx reloaded|is up to date"), 15, since=mark)
        return self.nginx

    def start_envoy(self, spec: Envoy, conf: Path | None = None) -> envoy_stack.EnvoyProcess:
        """Envoy with `conf` (default: the spec's), afresh; returns once its listener accepts connections. With
        the control plane up, Envoy gets a static cluster `xds_control_plane` on its port (an ADS config names it)."""
        clusters = (envoy_stack.xds_cluster(self.xds_port),) if self.xds_port and self.running(XDS) else ()
        with pinned(self.placement, NGINX):
            self.envoy = envoy_stack.start_envoy(self.stack, conf or spec.path, name=ENVOY, port=spec.port,
                                                 admin_port=spec.admin_port, more_ports=spec.more_ports,
                                                 concurrency=spec.concurrency, timeout=READY_TIMEOUT,
                                                 clusters=clusters)
        return self.envoy

    def start_control_plane(self, spec: ControlPlane | None = None) -> Path:
        """Start (or start again: same port, same flags) the xDS control plane on the registry, wait until it
        listens (it has read the registry); returns the bootstrap file xds:/// clients need."""
        spec = spec or self.control_plane or ControlPlane()
        if self.registry_url is None:
            raise RuntimeError("the control plane needs a registry, and none is up")
        self.control_plane = spec
        self.xds_port = self.xds_port or pick_free_port()
        mark = self.stack.mark()
        with pinned(self.placement, NGINX):
            self.stack.start(XDS, spec.argv(self.registry_url, self.xds_port))
        self.stack.wait_for_line(XDS, "listening on", 15, since=mark)
        self.bootstrap = self.stack.run_dir / f"xds-bootstrap-{self.xds_port}.json"
        write_bootstrap(self.bootstrap, f"127.0.0.1:{self.xds_port}")
        return self.bootstrap

    def stop_control_plane(self) -> None:
        if self.running(XDS):
            self.stack.stop(XDS)
        if self.bootstrap is not None:
            self.bootstrap.unlink(missing_ok=True)
        self.control_plane, self.xds_port, self.bootstrap = None, None, None

    # -- load drivers ----------------------------------------------------------------------------------
    def start_driver(self, driver: Driver, name: str = "client") -> DriverRun:
        """Start the load driver in the background; with a control plane up it gets its bootstrap file, so
        that an xds:/// target (also one of --compare's) finds it."""
        self.stack.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.stack.run_dir / f"load-{os.getpid()}-{next(_runs)}.json"
        env = {"GRPC_XDS_BOOTSTRAP": str(self.bootstrap)} if self.bootstrap else None
        run = DriverRun(self, name, path, self.stack.mark(), driver)
        self.stack.start(name, driver.argv(path), env=env)
        if name not in self.drivers:
            self.drivers.append(name)
        return run

    def collect(self, run: DriverRun, timeout: float) -> load_driver.Report:
        """Wait for a driver to end and read its report (the report file is removed)."""
        proc = self.stack.proc(run.name)
        deadline = time.monotonic() + timeout
        while not proc.done():
            if time.monotonic() > deadline:
                self.stack.stop(run.name)
                run.path.unlink(missing_ok=True)
                raise procs.NotReadyError(f"{run.name} did not finish within {timeout:g} s", name=run.name,
                                          tail=proc.tail(15))
            self.wait_output(0.05)
        if not run.path.exists():  # exit code 2 with a report: the Login failed, the report says how
            raise procs.NotReadyError(f"{run.name} failed ({proc.returncode})", name=run.name, tail=proc.tail(15))
        try:
            return load_driver.read_report(run.path)
        finally:
            run.path.unlink(missing_ok=True)

    # -- who received which call -----------------------------------------------------------------------
    def received(self, since: int = 0, servers: Iterable[str] | None = None) -> dict[str, list[str]]:
        """Laptop id -> the servers that logged its CreateLaptop (more than one: it ran twice)."""
        names = set(self.servers if servers is None else servers)
        out: dict[str, list[str]] = {}
        for rec in self.stack.records(since=since):
            if rec.name in names and (m := RECEIVED.match(rec.text)):
                out.setdefault(m.group(1), []).append(rec.name)
        return out

    def received_once_read(self, ids: Iterable[str], since: int = 0, servers: Iterable[str] | None = None,
                           timeout: float = 3.0) -> dict[str, list[str]]:
        """received(), once every id in `ids` has been read from a server (or at the deadline): a server's
        line reaches us a moment after the client has its answer."""
        wanted = set(ids)
        deadline = time.monotonic() + timeout
        while True:
            seen = self.received(since, servers)
            if wanted <= seen.keys() or time.monotonic() > deadline:
                return seen
            self.wait_output(0.05)

    def receivers(self, report: load_driver.Report, since: int = 0) -> dict[str, str]:
        """Laptop id -> the server that received it, for the report's successful calls."""
        seen = self.received_once_read((c.laptop_id for c in report.calls if c.ok), since)
        return {laptop: names[0] for laptop, names in seen.items()}

    def received_at(self, server: str, since: int = 0) -> dict[str, float]:
        """Laptop id -> when `server`'s line for that CreateLaptop was read."""
        return {m.group(1): rec.t for rec in self.stack.records(server, since=since)
                if (m := RECEIVED.match(rec.text))}

    def first_call(self, server: str, after: float) -> float:
        """When `server` logged its first CreateLaptop after `after` (inf: none)."""
        return min((t for t in self.received_at(server).values() if t >= after), default=float("inf"))

    def receivers_of_lines(self, since: int = 0) -> Counter[str]:
        """CreateLaptop requests each server logged (for clients that write no report)."""
        return Counter(name for names in self.received(since).values() for name in names)

    # -- the end -----------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop everything, newest first (the Stack would at its end; a stage that lives on must now)."""
        self.leave(())


def per_server(report: load_driver.Report, receivers: dict[str, str], start: float = 0.0,
               end: float = float("inf")) -> Counter[str]:
    """Calls sent in [start, end) per server that received them ('failed': those that failed)."""
    out: Counter[str] = Counter()
    for call in report.calls:
        if start <= call.t0 < end:
            out[receivers.get(call.laptop_id, "failed" if not call.ok else "unknown")] += 1
    return out


def failed_between(report: load_driver.Report, start: float, end: float) -> list[load_driver.Call]:
    """Failed calls that ended in [start, end): a call in flight at an event fails after it."""
    return [c for c in report.calls if start <= c.t1 < end and not c.ok]


def readiness_credentials(server: Server) -> grpc.ChannelCredentials | None:
    return tls.client_credentials() if server.tls else None
