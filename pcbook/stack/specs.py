"""Every process a step can need, as a spec that builds its own command line in one place.

A spec is a frozen value: the lesson declarations, the runner, the bench, `make nginx-N` and the run
output's "run it by hand" lines all build a process's argv (or its shown command) from here, so what a
learner is told to type is what the runner runs. Nothing here starts a process: pcbook.stage does.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from pcbook.paths import ENVOY_DIR, NGINX_DIR, ROOT, shown
from pcbook.service.channels import parse_service_config

NGINX_PORT = 8080  # the tutorial's port, for nginx and for lesson 1's server
TUTORIAL_PORTS = (NGINX_PORT, 50051, 50052)
REGISTRY_PREFIX = "/pcbook"  # where servers register (lessons 11-12): <prefix>/<name> = host:port


def python_module(module: str, *args: str) -> list[str]:
    """`python -u -m module args`: unbuffered, so that every line reaches the runner as it is printed."""
    return [sys.executable, "-u", "-m", module, *args]


def shell_line(module: str, args: list[str]) -> str:
    return " ".join(["python -m", module, *(shlex.quote(a) for a in args)])


@dataclass(frozen=True)
class Server:
    """One pcbook server process (`python -m pcbook.server`)."""

    name: str
    port: int
    tls: bool = False
    # "require" = mutual TLS (the tutorial's default); "none" = server-side TLS only.
    client_auth: str = "require"
    flags: tuple[str, ...] = ()  # more flags: --work-ms 20, --host 127.0.0.1, --workers 32
    # Its output goes to a file in the run folder: a log line per call through the runner's pipe
    # would cost more CPU than the calls a benchmark measures. Errors still reach the terminal.
    log_file: bool = False
    # It registers itself in the step's registry as <prefix>/<name> (lessons 11-12), under a lease
    # of `ttl` seconds, and on SIGTERM revokes it and drains for `drain` seconds.
    register: bool = False
    ttl: int = 3
    drain: float = 1.0

    module = "pcbook.server"

    def args(self, registry: str | None = None) -> list[str]:
        """Its flags; `registry`: the etcd URL (with prefix) a registering server puts itself in."""
        args = ["--port", str(self.port)]
        if self.tls:
            args += ["--tls", "--client-auth", self.client_auth]
        args += list(self.flags)
        if self.register:
            args += ["--register", registry or "etcd://127.0.0.1:2379" + REGISTRY_PREFIX, "--name", self.name,
                     "--register-ttl", str(self.ttl), "--drain-seconds", f"{self.drain:g}"]
        return args

    def argv(self, *, registry: str | None = None, log_dir: Path | None = None) -> list[str]:
        argv = python_module(self.module, *self.args(registry))
        if self.log_file and log_dir is not None:
            log = shlex.quote(str(log_dir / f"{self.name}.log"))
            return ["/bin/sh", "-c", f'exec "$@" >> {log}', "sh", *argv]
        return argv

    def describe(self) -> str:
        kind = "plaintext"
        if self.tls:
            kind = "mutual TLS" if self.client_auth == "require" else "server-side TLS"
        extra = f", {' '.join(self.flags)}" if self.flags else ""
        registered = ", registers in etcd" if self.register else ""
        return f"{self.name} on {self.port} ({kind}{extra}{registered})"

    def command(self, registry: str | None = None) -> str:
        """What a learner types to run it by hand: a make target for the tutorial's servers."""
        if self.port in TUTORIAL_PORTS and not self.flags and not self.register:
            base = self.name if self.port != NGINX_PORT else "server"
            if not self.tls:
                return f"make {base}"
            return f"make {base}-tls" + (" CLIENT_AUTH=none" if self.client_auth == "none" else "")
        return shell_line(self.module, self.args(registry))


@dataclass(frozen=True)
class Nginx:
    """nginx with one config of nginx/ (or any path: a learner's, a test's)."""

    conf: str | Path
    port: int = NGINX_PORT  # nginx is up once this port accepts connections
    # Other ports the config may listen on: they must be free before it starts (nginx binds every
    # listen socket before it serves any, so waiting on `port` covers them).
    more_ports: tuple[int, ...] = ()

    @property
    def path(self) -> Path:
        return NGINX_DIR / self.conf

    @property
    def name(self) -> str:
        return Path(self.conf).name

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.port, *self.more_ports)


@dataclass(frozen=True)
class Envoy:
    """Envoy (pcbook.stack.envoy) with one config of envoy/ (or any path: a test's mutant)."""

    conf: str | Path
    port: int  # Envoy is up once this port accepts connections
    admin_port: int = 9901  # the stage puts the admin endpoint here (127.0.0.1), whatever the config says
    more_ports: tuple[int, ...] = ()  # other ports the config listens on: they must be free before it starts
    concurrency: int = 1  # worker threads (Envoy's default is one per core)

    @property
    def path(self) -> Path:
        return ENVOY_DIR / self.conf

    @property
    def name(self) -> str:
        return Path(self.conf).name

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.port, *self.more_ports, self.admin_port)

    def command(self, conf: Path | None = None) -> str:
        """What a learner types to run it by hand (from the repository's root; relative paths resolve in
        the folder it runs in, so run it in a folder with logs/ and cert/). `conf`: another config (theirs)."""
        return (f"envoy -c {shlex.quote(shown(conf or self.path))} --concurrency {self.concurrency} "
                f"--disable-hot-restart --config-yaml "
                f"'{{admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {self.admin_port}}}}}}}}}'")


@dataclass(frozen=True)
class Client:
    """One run (or several) of the tutorial's client."""

    tls: bool = False
    address: str = f"0.0.0.0:{NGINX_PORT}"
    runs: int = 1
    stay: float = 0.0  # seconds the client stays up after its calls (--stay), refreshing its token
    refresh_seconds: float | None = None  # the token refresh period (--refresh-seconds); None: 30 s
    # With tls: the client certificate it shows. "none": no certificate; "foreign": one signed by
    # another CA (certs.foreign_client_dir()); an nginx that requires mutual TLS refuses both.
    cert: str = "ours"

    module = "pcbook.client"

    def args(self, foreign_certs: Path | None = None) -> list[str]:
        """Its flags; `foreign_certs`: the folder of the other CA's client certificate (cert="foreign")."""
        args = ["--address", self.address] + (["--tls"] if self.tls else [])
        if self.stay:
            args += ["--stay", f"{self.stay:g}"]
        if self.refresh_seconds is not None:
            args += ["--refresh-seconds", f"{self.refresh_seconds:g}"]
        if self.cert == "none":
            args.append("--no-client-cert")
        elif self.cert == "foreign":
            args += ["--certs-dir", str(foreign_certs) if foreign_certs else "$(python -m pcbook.service.certs "
                                                                              "--foreign-client)"]
        return args

    def argv(self, foreign_certs: Path | None = None) -> list[str]:
        return python_module(self.module, *self.args(foreign_certs))

    def make_target(self) -> str:
        target = "client-tls" if self.tls else "client"
        if self.stay:
            target += f" STAY={self.stay:g}"
        if self.refresh_seconds is not None:
            target += f" REFRESH={self.refresh_seconds:g}"
        return target + (f" CLIENT_CERT={self.cert}" if self.cert != "ours" else "")

    def command(self) -> str:
        runs = f" (x{self.runs})" if self.runs > 1 else ""
        if self.address == f"0.0.0.0:{NGINX_PORT}":
            return f"make {self.make_target()}{runs}"
        # The foreign certificate's folder is computed where the learner runs it, as the Makefile does.
        args = self.args()
        shown = " ".join(a if a.startswith("$(") else shlex.quote(a) for a in args)
        return f"python -m {self.module} {shown}{runs}"


@dataclass(frozen=True)
class Driver:
    """A run of the load driver (`python -m pcbook.measure.driver`): every call's status, not only
    the first failure."""

    address: str = ""  # host:port, an ipv4:/xds:/// target, or etcd://... (a thick client discovers)
    calls: int = 20
    rate: float = 0.0
    concurrency: int = 1
    channels: int = 1
    lb_policy: str | None = None
    health_check: bool = False
    login_optional: bool = False
    progress_every: int = 10
    tls: bool = False
    compare: tuple[str, ...] = ()  # NAME=[POLICY@]TARGET: measure latency on each instead
    warmup: int = 20
    run_length: int = 1  # with compare: calls in a row on one target before the next (1: call by call)
    retry: tuple[str, ...] = ()  # status codes the channel's retryPolicy retries (lesson 14); (): no retries
    wait_for_ready: bool = False
    timeout: float | None = None  # the per-call deadline, s (None: the driver's default)
    # A service config file (relative to the checkout, or absolute) instead of lb_policy and health_check:
    # lesson 7's exercise, which a learner's CONF= stands in for.
    service_config: str | None = None

    module = "pcbook.measure.driver"

    @property
    def service_config_path(self) -> Path | None:
        return ROOT / self.service_config if self.service_config is not None else None

    def balancing(self) -> tuple[str | None, bool]:
        """(load-balancing policy, client-side health checking), from the flags or the service config file
        ((None, False) for a file that cannot be read: the driver itself says why)."""
        if self.service_config_path is None:
            return self.lb_policy, self.health_check
        try:
            config = json.loads(parse_service_config(self.service_config_path.read_text(), self.service_config))
        except (OSError, ValueError):
            return None, False
        policies = [next(iter(p), None) for p in config.get("loadBalancingConfig", []) if isinstance(p, dict)]
        return (policies[0] if policies else None), "healthCheckConfig" in config

    def args(self, shown_paths: bool = False) -> list[str]:
        if self.compare:
            args = ["--calls", str(self.calls), "--warmup", str(self.warmup)]
            for spec in self.compare:
                args += ["--compare", spec]
            if self.run_length != 1:
                args += ["--run-length", str(self.run_length)]
            return args + (["--tls"] if self.tls else [])
        # etcd://... is a registry: the driver discovers the servers there (a thick client).
        target = "--discover" if self.address.startswith("etcd://") else "--address"
        args = [target, self.address, "--calls", str(self.calls)]
        if self.rate:
            args += ["--rate", f"{self.rate:g}"]
        if self.concurrency != 1:
            args += ["--concurrency", str(self.concurrency)]
        if self.channels != 1:
            args += ["--channels", str(self.channels)]
        if self.lb_policy:
            args += ["--lb-policy", self.lb_policy]
        if self.health_check:
            args.append("--health-check")
        if self.service_config_path is not None:
            path = self.service_config_path
            args += ["--service-config", shown(path) if shown_paths else str(path)]
        if self.login_optional:
            args.append("--login-optional")
        if self.progress_every != 10:
            args += ["--progress-every", str(self.progress_every)]
        if self.retry:
            args += ["--retry", ",".join(self.retry)]
        if self.wait_for_ready:
            args.append("--wait-for-ready")
        if self.timeout is not None:
            args += ["--timeout", f"{self.timeout:g}"]
        return args + (["--tls"] if self.tls else [])

    def argv(self, report: Path | None = None) -> list[str]:
        """`report`: where it writes every call's outcome as JSON (--json)."""
        return python_module(self.module, *self.args(), *(["--json", str(report)] if report else []))

    def command(self) -> str:
        return shell_line(self.module, self.args(shown_paths=True))


@dataclass(frozen=True)
class Probe:
    """A run of lesson 9's stream probe (`python -m pcbook.measure.stream_probe`)."""

    address: str
    command_args: tuple[str, ...]  # the probe's command and its flags: ("streams", "--upload-bytes", "1024")
    tls: bool = True

    module = "pcbook.measure.stream_probe"

    def args(self, dump_after: float | None = None) -> list[str]:
        args = ["--address", self.address] + (["--tls"] if self.tls else [])
        if dump_after is not None:
            args += ["--dump-after", f"{dump_after:g}"]
        return args + list(self.command_args)

    def argv(self, dump_after: float | None = None) -> list[str]:
        return python_module(self.module, *self.args(dump_after))

    def command(self) -> str:
        return shell_line(self.module, self.args())


@dataclass(frozen=True)
class Registry:
    """A real etcd (pcbook.stack.etcd) on free loopback ports: the service registry of lessons 11-12.
    The step's servers declared with `register=True` put themselves in it. Kept from one step to the
    next that declares one too; each step starts from an empty registry (the prefix is cleared)."""

    prefix: str = REGISTRY_PREFIX
    # A file of the operator's knobs (`KEY VALUE` lines, pcbook.discovery.xds.knobs_from_file) that the step's
    # act writes to etcd (lesson 12's weights: its exercise, which a learner's CONF= replaces).
    knobs: str | None = None

    @property
    def knobs_path(self) -> Path | None:
        return ROOT / self.knobs if self.knobs is not None else None

    def describe(self) -> str:
        return f"etcd on a free loopback port; servers register under {self.prefix}, empty at the step's start"


@dataclass(frozen=True)
class ControlPlane:
    """Lesson 12's xDS control plane (`python -m pcbook.discovery.xds serve`) on a free loopback port,
    fed from the step's Registry, with these flags. The act starts it (StepContext.start_control_plane())
    once its first servers have registered: a control plane that never follows (follow=False) must have
    read them, and the restart step stops and starts it again in the middle of its story."""

    weights: str = "locality"  # where a server's weight goes: "locality" (honoured) or "endpoint" (ignored)
    follow: bool = True  # False: read the registry once and never push an update (a wrong setup)

    module = "pcbook.discovery.xds"

    def args(self, registry: str = "etcd://...", port: int | None = None) -> list[str]:
        args = ["serve", "--registry", registry] + (["--port", str(port)] if port else [])
        args += ["--weights", self.weights] if self.weights != "locality" else []
        return args + ([] if self.follow else ["--no-follow"])

    def argv(self, registry: str, port: int) -> list[str]:
        return python_module(self.module, *self.args(registry, port))

    def command(self, registry: str = "etcd://...") -> str:
        return shell_line(self.module, self.args(registry))


@dataclass(frozen=True)
class RegistrySync:
    """nginx_sync (`python -m pcbook.discovery.nginx_sync`): renders the step's nginx upstream from the
    registry into the file its config includes, checks it with `nginx -t` and reloads nginx."""

    module = "pcbook.discovery.nginx_sync"

    def args(self, registry: str = "etcd://...", nginx_prefix: str = "...") -> list[str]:
        return ["--registry", registry, "--nginx-prefix", nginx_prefix]

    def argv(self, registry: str, nginx_prefix: Path) -> list[str]:
        return python_module(self.module, *self.args(registry, str(nginx_prefix)))

    def command(self, registry: str = "etcd://...") -> str:
        return shell_line(self.module, self.args(registry))


ClientKind = Client | Driver | Probe
