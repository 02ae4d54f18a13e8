"""Every lesson of the workbook, in one place.

The Makefile (`make lesson-N`, `make check-N`, `make help`), the notebooks, the checkpoint tests and
the docs all read this module. A lesson is a story of steps; each step is a state of the stack
(which servers with which flags, which nginx config, which client run) and what that state must show.
The steps marked ``checkpoint`` prove the lesson's outcome; `make check-N CONF=...` replays them with a
learner's nginx config instead of the lesson's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pcbook.paths import NGINX_DIR

AUTH_LOGIN = "/techschool_pcbook.AuthService/Login"
CREATE_LAPTOP = "/techschool_pcbook.LaptopService/CreateLaptop"
NGINX_PORT = 8080
# Where `make docs` (mkdocs serve) shows the site; notebooks link their page there.
DOCS_URL = "http://127.0.0.1:8000/"


@dataclass(frozen=True)
class Server:
    """One pcbook server process."""

    name: str
    port: int
    tls: bool = False
    # "require" = mutual TLS (the tutorial's default); "none" = server-side TLS only.
    client_auth: str = "require"

    def args(self) -> list[str]:
        args = ["--port", str(self.port)]
        if self.tls:
            args += ["--tls", "--client-auth", self.client_auth]
        return args

    def describe(self) -> str:
        if not self.tls:
            return f"{self.name} on {self.port} (plaintext)"
        kind = "mutual TLS" if self.client_auth == "require" else "server-side TLS"
        return f"{self.name} on {self.port} ({kind})"


@dataclass(frozen=True)
class Client:
    """One run (or several) of the tutorial's client."""

    tls: bool = False
    address: str = f"0.0.0.0:{NGINX_PORT}"
    runs: int = 1
    stay: float = 0.0  # seconds the client stays up after its calls (--stay), refreshing its token
    refresh_seconds: float | None = None  # the token refresh period (--refresh-seconds); None: 30 s

    def args(self) -> list[str]:
        args = ["--address", self.address] + (["--tls"] if self.tls else [])
        if self.stay:
            args += ["--stay", f"{self.stay:g}"]
        if self.refresh_seconds is not None:
            args += ["--refresh-seconds", f"{self.refresh_seconds:g}"]
        return args

    def make_target(self) -> str:
        target = "client-tls" if self.tls else "client"
        if self.stay:
            target += f" STAY={self.stay:g}"
        if self.refresh_seconds is not None:
            target += f" REFRESH={self.refresh_seconds:g}"
        return target


@dataclass(frozen=True)
class Expect:
    """What a step must show. Every field left at its default is not checked."""

    ok: bool = True  # the client exits 0; False: it must fail
    client_says: str | None = None  # regex the client's output must match
    nginx_error: str | None = None  # regex a line of nginx's error log must match
    server_says: str | None = None  # regex a line of some server's output must match
    # Every server listed got at least one call (round robin reached them all).
    spread: tuple[str, ...] = ()
    # method -> the only servers allowed to serve it (and at least one of them must).
    routes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    access_posts: int | None = None  # at least this many POST lines in nginx's access log

    def describe(self) -> list[str]:
        """Plain-English claims, for the docs and the runner's output."""
        claims = ["the client succeeds" if self.ok else "the client fails"]
        if self.client_says:
            claims.append(f"the client prints /{self.client_says}/")
        if self.nginx_error:
            claims.append(f"nginx's error log shows /{self.nginx_error}/")
        if self.server_says:
            claims.append(f"a server logs /{self.server_says}/")
        if self.spread:
            claims.append("calls reach " + " and ".join(self.spread))
        for method, servers in self.routes.items():
            claims.append(f"{method} is served only by {' or '.join(servers)}")
        if self.access_posts:
            claims.append(f"nginx's access log shows {self.access_posts} POST lines")
        return claims


@dataclass(frozen=True)
class Step:
    title: str
    servers: tuple[Server, ...]
    client: Client
    expect: Expect
    why: str  # one or two sentences: the cause of what the learner sees
    nginx: str | None = None  # a file name in nginx/
    checkpoint: bool = False


@dataclass(frozen=True)
class Lesson:
    number: int
    slug: str
    title: str
    goal: str
    steps: tuple[Step, ...] = ()
    # Lessons beyond the tutorial tell their own story: "module:function", called with a
    # lesson_runner.ScenarioContext (a string, so this module imports none of the runner).
    scenario: str | None = None
    claims: tuple[str, ...] = ()  # what a scenario's checkpoint proves, for the docs
    # A scenario's nginx configs (files in nginx/) in story order, the checkpoint's own last.
    configs: tuple[str, ...] = ()

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

    @property
    def checkpoint_steps(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.checkpoint)

    @property
    def nginx_configs(self) -> list[Path]:
        """The lesson's own configs in story order, without repeats."""
        names = dict.fromkeys([*(s.nginx for s in self.steps if s.nginx), *self.configs])
        return [NGINX_DIR / n for n in names]

    @property
    def exercise(self) -> Path | None:
        path = NGINX_DIR / "exercises" / f"lesson-{self.number}.conf"
        return path if path.exists() else None

    @property
    def checkpoint_config(self) -> Path | None:
        """The nginx config the checkpoint uses unless a learner passes their own."""
        names = [s.nginx for s in self.checkpoint_steps if s.nginx] or list(self.configs)
        return NGINX_DIR / names[-1] if names else None


def _plain(name: str, port: int) -> Server:
    return Server(name, port)


def _mtls(name: str, port: int) -> Server:
    return Server(name, port, tls=True, client_auth="require")


def _server_tls(name: str, port: int) -> Server:
    return Server(name, port, tls=True, client_auth="none")


PLAIN_PAIR = (_plain("server1", 50051), _plain("server2", 50052))
MTLS_PAIR = (_mtls("server1", 50051), _mtls("server2", 50052))
SERVER_TLS_PAIR = (_server_tls("server1", 50051), _server_tls("server2", 50052))
BOTH = ("server1", "server2")
UNAVAILABLE = r"cannot create auth interceptor: rpc error: code = Unavailable desc = "
# A backend that requires a client certificate refuses nginx: the Go server of the tutorial alerts
# "bad certificate" in the handshake (TLS 1.2); grpcio's server (TLS 1.3) closes after the handshake.
# Which of nginx's lines appears depends on when the close reaches it: while reading the response
# header, or still writing the request (Broken pipe).
UPSTREAM_DROPPED = r"upstream prematurely closed connection|Connection reset by peer|Broken pipe"
# nginx 1.22 with OpenSSL 3.0 (Debian 12) notices it still in the handshake.
NO_CLIENT_CERT_NGINX = (
    r"bad certificate|certificate required|peer closed connection in SSL handshake|" + UPSTREAM_DROPPED
)
NO_CLIENT_CERT_SERVER = r"PEER_DID_NOT_RETURN_A_CERTIFICATE"
# With TLS 1.2 the refusal comes inside the handshake: Go servers alert `bad certificate` (the lecture's
# `SSL_do_handshake() failed`), grpcio servers close the connection.
TLS12_REFUSED_NGINX = r"while SSL handshaking to upstream"

LESSONS: tuple[Lesson, ...] = (
    Lesson(
        1,
        "tls-flag",
        "The TLS flag",
        "Run the server and the client with and without TLS, and see what a mismatch looks like.",
        steps=(
            Step(
                "server and client without TLS",
                (_plain("server", NGINX_PORT),),
                Client(),
                Expect(ok=True, client_says=r"created laptop with id: "),
                "Both sides speak plaintext HTTP/2, so every call goes through.",
            ),
            Step(
                "server with TLS, client without",
                (_mtls("server", NGINX_PORT),),
                Client(),
                Expect(ok=False, client_says=UNAVAILABLE),
                "The client sends a plaintext HTTP/2 preface to a port that expects a TLS handshake; "
                "the server closes the connection and the first call, Login, fails.",
            ),
            Step(
                "server and client with TLS",
                (_mtls("server", NGINX_PORT),),
                Client(tls=True),
                Expect(ok=True, client_says=r"created laptop with id: "),
                "The client verifies the server's certificate against the CA and shows its own "
                "certificate, which the server requires (mutual TLS).",
                checkpoint=True,
            ),
        ),
    ),
    Lesson(
        2,
        "insecure-load-balancing",
        "Load balancing insecure gRPC",
        "Put nginx on 8080 in front of two plaintext servers and watch the calls alternate.",
        steps=(
            Step(
                "nginx balances plaintext gRPC across server1 and server2",
                PLAIN_PAIR,
                # Stays up past one token refresh, so that a second Login shows (the lecture's 5th line).
                Client(stay=3, refresh_seconds=2),
                Expect(ok=True, spread=BOTH, access_posts=5),
                "nginx accepts HTTP/2 on 8080 and passes each call (Login, then three CreateLaptop) "
                "to the next server of the upstream in turn: round robin per call, not per connection. "
                "The client stays up, and its token refresher logs in again after 2 s: a fifth access-log "
                "line, as in the lecture (whose client refreshes every 30 s).",
                nginx="lesson-2.conf",
                checkpoint=True,
            ),
        ),
    ),
    Lesson(
        3,
        "tls-at-nginx",
        "TLS at nginx",
        "Terminate mutual TLS at nginx while the backends stay plaintext.",
        steps=(
            Step(
                "plaintext client against nginx with TLS",
                PLAIN_PAIR,
                Client(),
                Expect(ok=False, client_says=UNAVAILABLE + r".*\(HTTP status 400\)"),
                "nginx now expects a TLS handshake on 8080. It takes the client's plaintext HTTP/2 preface "
                "for an HTTP request sent to its HTTPS port and answers with an HTTP/1.1 400 page (access log: "
                '`"PRI * HTTP/2.0" 400`); grpcio, expecting HTTP/2 frames, reports `Trying to connect an '
                "http1.x server (HTTP status 400)` and the first call, Login, fails.",
                nginx="lesson-3.conf",
                checkpoint=True,
            ),
            Step(
                "TLS client against nginx with TLS",
                PLAIN_PAIR,
                Client(tls=True),
                Expect(ok=True, spread=BOTH, access_posts=4),
                "The client and nginx verify each other's certificates; nginx decrypts and forwards "
                "each call in plaintext to the backends.",
                nginx="lesson-3.conf",
                checkpoint=True,
            ),
        ),
    ),
    Lesson(
        4,
        "tls-to-backends",
        "TLS to the backends",
        "Turn on TLS on the backends, break nginx twice as the tutorial does, then fix it.",
        steps=(
            Step(
                "TLS backends, nginx still on grpc://",
                MTLS_PAIR,
                Client(tls=True),
                Expect(
                    ok=False,
                    client_says=r"code = Unavailable desc = .*502",
                    nginx_error=UPSTREAM_DROPPED,
                ),
                "nginx speaks plaintext HTTP/2 to backends that expect TLS; they close the connection "
                "and nginx answers the client with an HTML 502 Bad Gateway.",
                nginx="lesson-3.conf",
            ),
            Step(
                "grpcs:// against backends that require a client certificate",
                MTLS_PAIR,
                Client(tls=True),
                Expect(
                    ok=False,
                    client_says=r"code = Unavailable desc = .*502",
                    nginx_error=NO_CLIENT_CERT_NGINX,
                    server_says=NO_CLIENT_CERT_SERVER,
                ),
                "nginx now does TLS to the backends but shows no certificate; the backends require one "
                "and drop the connection (the server logs PEER_DID_NOT_RETURN_A_CERTIFICATE). With TLS 1.3, "
                "nginx 1.23.4+'s default, a server checks the client certificate after the handshake, when "
                "nginx has begun sending the call: nginx logs a broken pipe or an upstream that closed "
                "prematurely, and, as it never resends a gRPC call it has sent (lesson 8), answers 502 "
                "after trying one backend. The lecture's two `SSL_do_handshake() failed` lines came from "
                "TLS 1.2: see the aside, step 4.",
                nginx="lesson-4.conf",
            ),
            Step(
                "grpcs:// against backends with server-side TLS only",
                SERVER_TLS_PAIR,
                Client(tls=True),
                Expect(ok=True, spread=BOTH, access_posts=4),
                "The backends no longer ask for a client certificate (`--client-auth none`, the "
                "tutorial's NoClientCert edit), so nginx's TLS handshake succeeds.",
                nginx="lesson-4.conf",
                checkpoint=True,
            ),
            Step(
                "aside: backends requiring a certificate again, nginx held to TLS 1.2 as the lecture's nginx was",
                MTLS_PAIR,
                Client(tls=True),
                Expect(
                    ok=False,
                    client_says=r"code = Unavailable desc = .*502",
                    nginx_error=TLS12_REFUSED_NGINX,
                    server_says=NO_CLIENT_CERT_SERVER,
                ),
                "Before 1.23.4 nginx left TLS 1.3 out of grpc_ssl_protocols, so the lecture's nginx spoke "
                "TLS 1.2. There the server refuses inside the handshake, before nginx has sent anything: a "
                "connection error, which `grpc_next_upstream error` retries on the next server, so nginx "
                "logs one `... while SSL handshaking to upstream` line per backend, as in the lecture (Go "
                "servers alert `bad certificate`: `SSL_do_handshake() failed`; grpcio servers just close: "
                "`peer closed connection in SSL handshake`). With TLS 1.3 (step 2) the refusal comes after "
                "nginx has begun sending the call, and nginx never resends a gRPC call: one backend, one line.",
                nginx="lesson-4-tls12.conf",
            ),
        ),
    ),
    Lesson(
        5,
        "mutual-tls-to-backends",
        "Mutual TLS between nginx and the backends",
        "Give nginx a client certificate so the backends can require one again.",
        steps=(
            Step(
                "backends require a client certificate again, nginx shows none",
                MTLS_PAIR,
                Client(tls=True),
                Expect(ok=False, nginx_error=NO_CLIENT_CERT_NGINX, server_says=NO_CLIENT_CERT_SERVER),
                "Back to mutual TLS on the backends: lesson 4's config fails as before.",
                nginx="lesson-4.conf",
            ),
            Step(
                "nginx shows its certificate to the backends",
                MTLS_PAIR,
                Client(tls=True),
                Expect(ok=True, spread=BOTH, access_posts=4),
                "grpc_ssl_certificate and grpc_ssl_certificate_key give nginx a certificate signed by "
                "the CA the backends trust: both hops are mutual TLS.",
                nginx="lesson-5.conf",
                checkpoint=True,
            ),
        ),
    ),
    Lesson(
        6,
        "routing-by-service",
        "Routing by service",
        "Send the auth service to server1 and the laptop service to server2, whatever the run.",
        steps=(
            Step(
                "one upstream per service, two client runs",
                MTLS_PAIR,
                Client(tls=True, runs=2),
                Expect(
                    ok=True,
                    routes={AUTH_LOGIN: ("server1",), CREATE_LAPTOP: ("server2",)},
                ),
                "Every gRPC call is a POST to /package.Service/Method, so a location per service "
                "prefix picks the upstream; repeated runs keep the split.",
                nginx="lesson-6.conf",
                checkpoint=True,
            ),
        ),
    ),
    # Beyond the tutorial. These lessons use their own ports (50071.., 8071..) so that they never
    # clash with the tutorial's 8080/50051/50052, and tell their story in pcbook/lessons/.
    Lesson(
        7,
        "client-side-balancing",
        "Client-side load balancing",
        "Let the client balance by itself: pick_first vs round_robin, health-aware, a dying server.",
        scenario="pcbook.lessons.client_side:run",
        configs=("lesson-7.conf",),
        claims=(
            "pick_first sends every call to one server; round_robin reaches both",
            "with client-side health checking a NOT_SERVING server gets no calls, and gets them back when SERVING",
            "a killed server fails only the call it was serving (UNAVAILABLE); round robin moves on",
        ),
    ),
    Lesson(
        8,
        "when-a-backend-fails",
        "When a backend fails",
        "Kill a backend under load, see what nginx retries and what it cannot, and answer in gRPC.",
        scenario="pcbook.lessons.failures:run",
        configs=("lesson-8-tutorial.conf", "lesson-8-non-idempotent.conf", "lesson-8.conf"),
        claims=(
            "with error pages nginx's own failures reach the client as gRPC statuses, not an HTML 502",
            "a refused connection is retried on the other server; a call already sent fails",
            "passive health checks skip a dead server until fail_timeout passes",
            "with enough worker_connections 24 concurrent calls succeed with zero failures",
        ),
    ),
    Lesson(
        9,
        "streams-and-l4-vs-l7",
        "Streams through nginx, L4 vs L7",
        "Stream through nginx with TLS on both hops, hit its limits, and compare TCP with per-call balancing.",
        scenario="pcbook.lessons.streams:run",
        configs=("lesson-9-defaults.conf", "lesson-9.conf"),
        claims=(
            "SearchLaptop, UploadImage and RateLaptop work through nginx with mutual TLS on both hops",
            "an image just under 1 MiB uploads through nginx once client_max_body_size is raised",
            "a quiet RateLaptop stream outlives nginx's read timeout once it is raised for that method",
            "grpc_pass (L7) balances per call; the stream module (L4) per connection",
        ),
    ),
    Lesson(
        10,
        "cost-of-the-hop",
        "The cost of the hop, the gain of scale-out",
        "Measure the proxy's latency and two backends' throughput on your own machine.",
        scenario="pcbook.lessons.benchmark:run",
        configs=("bench-hop.conf", "bench-scale.conf"),
        claims=(
            "every call of the nginx path appears in nginx's log, and no direct call does",
            "with upstream keepalive nginx opens one backend connection for all calls; without, one per call",
            "two saturated servers behind nginx both serve calls and deliver at least 1.4x the calls of one",
        ),
    ),
)


def get(number: int) -> Lesson:
    for lesson in LESSONS:
        if lesson.number == number:
            return lesson
    known = ", ".join(str(lesson.number) for lesson in LESSONS)
    raise KeyError(f"there is no lesson {number}; the lessons are {known}")
