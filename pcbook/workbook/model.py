"""The lesson model: the types every lesson is declared with (the declarations are in manifest.py).

A lesson is an ordered list of steps. A step is a state of the stack (which servers run with which
flags, which nginx config, which client or load driver) and how it is judged: declaratively by an
`Expect` (what the tutorial's client and the logs must show), or by an `act` + `judge` pair of plain
functions from the lesson's module (pcbook/lessons/): `act(ctx)` drives the step through the runner's
StepContext and returns what it measured (a pcbook.workbook.results type), `judge(result)` returns
what differs from the lesson's story (empty: the step passed). The runner owns everything else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcbook.paths import NGINX_DIR

if TYPE_CHECKING:
    from pcbook.workbook.runner import StepContext

NGINX_PORT = 8080  # the tutorial's port, for nginx and for lesson 1's server
TUTORIAL_PORTS = (NGINX_PORT, 50051, 50052)
# Where `make docs` (mkdocs serve) shows the site; notebooks link their page there.
DOCS_URL = "http://127.0.0.1:8000/"

Act = Callable[["StepContext"], Any]
Judge = Callable[[Any], list[str]]


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

    def args(self) -> list[str]:
        args = ["--port", str(self.port)]
        if self.tls:
            args += ["--tls", "--client-auth", self.client_auth]
        return args + list(self.flags)

    def describe(self) -> str:
        kind = "plaintext"
        if self.tls:
            kind = "mutual TLS" if self.client_auth == "require" else "server-side TLS"
        extra = f", {' '.join(self.flags)}" if self.flags else ""
        return f"{self.name} on {self.port} ({kind}{extra})"

    def command(self) -> str:
        """What a learner types to run it by hand: a make target for the tutorial's servers."""
        if self.port in TUTORIAL_PORTS and not self.flags:
            base = self.name if self.port != NGINX_PORT else "server"
            if not self.tls:
                return f"make {base}"
            return f"make {base}-tls" + (" CLIENT_AUTH=none" if self.client_auth == "none" else "")
        return "python -m pcbook.server " + " ".join(self.args())


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

    def args(self) -> list[str]:
        args = ["--address", self.address] + (["--tls"] if self.tls else [])
        if self.stay:
            args += ["--stay", f"{self.stay:g}"]
        if self.refresh_seconds is not None:
            args += ["--refresh-seconds", f"{self.refresh_seconds:g}"]
        return args + (["--no-client-cert"] if self.cert == "none" else [])

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
        return f"python -m {self.module} {' '.join(self.args())}{runs}"


@dataclass(frozen=True)
class Driver:
    """A run of the load driver (`python -m pcbook.measure.driver`): every call's status, not only
    the first failure."""

    address: str = ""
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

    module = "pcbook.measure.driver"

    def args(self) -> list[str]:
        if self.compare:
            args = ["--calls", str(self.calls), "--warmup", str(self.warmup)]
            for spec in self.compare:
                args += ["--compare", spec]
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
        if self.login_optional:
            args.append("--login-optional")
        if self.progress_every != 10:
            args += ["--progress-every", str(self.progress_every)]
        return args + (["--tls"] if self.tls else [])

    def command(self) -> str:
        return f"python -m {self.module} {' '.join(self.args())}"


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

    def command(self) -> str:
        return f"python -m {self.module} {' '.join(self.args())}"


@dataclass(frozen=True)
class Text:
    """A regex the evidence must match, and the same claim in plain words (for people)."""

    regex: str
    words: str


@dataclass(frozen=True)
class Expect:
    """What a step of the tutorial's client must show. Every field left at its default is not checked."""

    ok: bool = True  # the client exits 0; False: it must fail
    client_says: Text | None = None  # the client's output must match
    nginx_error: Text | None = None  # a line of nginx's error log must match
    server_says: Text | None = None  # a line of some server's output must match
    # Every server listed got at least one call (round robin reached them all).
    spread: tuple[str, ...] = ()
    # method -> the only servers allowed to serve it (and at least one of them must).
    routes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    access_posts: int | None = None  # at least this many POST lines in nginx's access log
    no_calls: bool = False  # no server logged any call: nginx refused it before any backend saw it

    def describe(self) -> list[str]:
        """Plain-English claims, for the docs and the runner's output."""
        claims = ["the client succeeds" if self.ok else "the client fails"]
        if self.client_says:
            claims.append(f"the client prints {self.client_says.words}")
        if self.nginx_error:
            claims.append(f"nginx's error log shows {self.nginx_error.words}")
        if self.server_says:
            claims.append(f"a server logs {self.server_says.words}")
        if self.spread:
            claims.append("calls reach " + " and ".join(self.spread))
        for method, servers in self.routes.items():
            claims.append(f"{method} is served only by {' or '.join(servers)}")
        if self.access_posts:
            claims.append(f"nginx's access log shows {self.access_posts} POST lines")
        if self.no_calls:
            claims.append("no call reaches a server")
        return claims


@dataclass(frozen=True)
class Registry:
    """A real etcd (pcbook.stack.etcd) on free loopback ports, started afresh for the step: the service
    registry of lessons 11-12. The step's servers register themselves in it (`--register`)."""

    def describe(self) -> str:
        return "etcd on a free loopback port, fresh for this step; servers register under /pcbook"


@dataclass(frozen=True)
class ControlPlane:
    """Lesson 12's xDS control plane (`python -m pcbook.discovery.xds serve`) on a free loopback port,
    fed from the step's Registry, with these flags. The act starts it (StepContext.lab().control_plane())
    once its first servers have registered: a control plane that never follows (follow=False) must have
    read them, and the restart step stops and starts it again in the middle of its story."""

    weights: str = "locality"  # where a server's weight goes: "locality" (honoured) or "endpoint" (ignored)
    follow: bool = True  # False: read the registry once and never push an update (a wrong setup)

    def args(self) -> list[str]:
        args = ["--weights", self.weights] if self.weights != "locality" else []
        return args + ([] if self.follow else ["--no-follow"])

    def command(self) -> str:
        return " ".join(["python -m pcbook.discovery.xds serve --registry etcd://...", *self.args()])


ClientKind = Client | Driver | Probe


@dataclass(frozen=True)
class Step:
    """One state of the stack and what it must show.

    Judged by `expect` (the tutorial's client, run `client.runs` times), or by `act` + `judge`.
    Servers not listed are stopped; nginx is started afresh for every step that names one (as in
    the tutorial, which also clears nginx's memory of failed backends).
    """

    title: str
    why: str  # one or two sentences: the cause of what the learner sees
    servers: tuple[Server, ...] = ()
    nginx: Nginx | None = None
    client: ClientKind | None = None
    expect: Expect | None = None
    act: Act | None = None
    judge: Judge | None = None
    checkpoint: bool = False
    then: tuple[str, ...] = ()  # what happens while the client runs (a kill, a signal), announced
    claims: tuple[str, ...] = ()  # what an act/judge step must show, in plain words
    quiet: bool = False  # the servers' and nginx's lines are captured, not shown (a measurement)
    registry: Registry | None = None  # lessons 11-12: a fresh etcd for the step
    control_plane: ControlPlane | None = None  # lesson 12: the xDS control plane fed from that registry

    def must_show(self) -> list[str]:
        return self.expect.describe() if self.expect is not None else list(self.claims)

    def __post_init__(self) -> None:
        if (self.expect is None) == (self.judge is None):
            raise ValueError(f"step {self.title!r}: give either expect or judge (with act)")
        if self.expect is not None and not isinstance(self.client, Client):
            raise ValueError(f"step {self.title!r}: an Expect judges the tutorial's client; give client=Client()")
        if self.judge is not None and self.act is None:
            raise ValueError(f"step {self.title!r}: a judge needs an act that measures what it judges")
        if self.control_plane is not None and self.registry is None:
            raise ValueError(f"step {self.title!r}: a control plane needs a registry to read its endpoints from")


@dataclass(frozen=True)
class Lesson:
    number: int
    slug: str
    title: str
    goal: str
    steps: tuple[Step, ...]
    tutorial: bool = True  # False: beyond the tutorial (lessons 7-10)
    # Lines of the servers' output not echoed (still captured): e.g. lesson 9's two lines per 1 KiB chunk.
    hide: tuple[str, ...] = ()
    # Servers, nginx and load generators pinned on separate cores (pcbook.measure.placement): on a
    # small machine the scheduler would otherwise put a load generator on its server's core now and then.
    pinned: bool = False

    @property
    def target(self) -> str:
        return f"lesson-{self.number}"

    @property
    def doc_page(self) -> str:
        """Path of the lesson's page inside docs/."""
        return f"lessons/{self.number:02d}-{self.slug}.md"

    @property
    def doc_url(self) -> str:
        return f"{DOCS_URL}lessons/{self.number:02d}-{self.slug}/"

    @property
    def notebook(self) -> str:
        return f"lessons/{self.number:02d}-{self.slug}.ipynb"

    def step(self, title: str) -> Step:
        for step in self.steps:
            if step.title == title:
                return step
        raise KeyError(f"lesson {self.number} has no step {title!r}")

    @property
    def checkpoint_steps(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.checkpoint)

    @property
    def nginx_configs(self) -> list[Path]:
        """The lesson's own configs in story order, without repeats."""
        return list(dict.fromkeys(s.nginx.path for s in self.steps if s.nginx))

    @property
    def ports(self) -> tuple[int, ...]:
        """Every port the lesson's processes listen on, sorted."""
        found = {srv.port for s in self.steps for srv in s.servers}
        found |= {p for s in self.steps if s.nginx for p in s.nginx.ports}
        return tuple(sorted(found))

    @property
    def exercise(self) -> Path | None:
        path = NGINX_DIR / "exercises" / f"lesson-{self.number}.conf"
        return path if path.exists() else None

    @property
    def checkpoint_config(self) -> Path | None:
        """The nginx config a learner's `CONF=` replaces: the one the checkpoint steps end with.
        None: the checkpoint uses no nginx (and `make check-N` takes no CONF)."""
        confs = [s.nginx.path for s in self.checkpoint_steps if s.nginx]
        return confs[-1] if confs else None

    @property
    def nginx_step(self) -> Step | None:
        """The step whose stack `make nginx-N` puts up: the last checkpoint step with nginx, else
        the last step with nginx."""
        with_nginx = [s for s in self.checkpoint_steps if s.nginx] or [s for s in self.steps if s.nginx]
        return with_nginx[-1] if with_nginx else None
