"""Every lesson of the workbook, in one place: its steps, their servers, configs, clients and checks.

The Makefile (`make lesson-N`, `check-N`, `nginx-N`, `list`, `progress`), the notebooks, the checkpoint
tests and the docs all read this module; the types are in pcbook/workbook/model.py. A lesson is a story
of steps; each step is a state of the stack and what that state must show. The steps marked
``checkpoint`` prove the lesson's outcome; `make check-N CONF=...` replays them with a learner's nginx
config in place of the checkpoint's.
"""

from __future__ import annotations

from pcbook.lessons import benchmark, client_side, discovery, failures, streams
from pcbook.workbook.model import (
    DOCS_URL,
    NGINX_PORT,
    Client,
    ControlPlane,
    Driver,
    Expect,
    Lesson,
    Nginx,
    Probe,
    Registry,
    Server,
    Step,
    Text,
)

__all__ = ["DOCS_URL", "LESSONS", "NGINX_PORT", "Lesson", "Server", "Step", "get"]

AUTH_LOGIN = "/techschool_pcbook.AuthService/Login"
CREATE_LAPTOP = "/techschool_pcbook.LaptopService/CreateLaptop"


def _step(title: str, servers: tuple[Server, ...], client: Client, expect: Expect, why: str, *,
          nginx: Nginx | None = None, checkpoint: bool = False) -> Step:
    """A step of the tutorial: its client, judged by an Expect."""
    return Step(title, why, servers, nginx, client, expect, checkpoint=checkpoint)


# nginx with `ssl_verify_client on` completes the handshake and answers every request 400 when the
# client showed no certificate or one it cannot verify; the gRPC client reports that HTTP status.
REFUSED_400 = Text(r"cannot create auth interceptor: rpc error: code = \w+ desc = .*status: 400",
                   "that nginx answered 400 (`Received http2 header with status: 400`)")


def _refusals(servers: tuple[Server, ...], conf: str | Nginx,
              address: str = f"0.0.0.0:{NGINX_PORT}") -> tuple[Step, ...]:
    """The checkpoint steps that prove nginx itself requires a client certificate signed by the CA."""
    return tuple(
        _step(
            title,
            servers,
            Client(tls=True, address=address, cert=cert),
            Expect(ok=False, client_says=REFUSED_400, no_calls=True),
            f"`ssl_verify_client on` with `ssl_client_certificate cert/ca-cert.pem`: nginx answers 400 to {who}, "
            "and no backend ever sees the call.",
            nginx=conf if isinstance(conf, Nginx) else Nginx(conf),
            checkpoint=True,
        )
        for title, cert, who in (
            ("a TLS client without a certificate is refused by nginx", "none", "a client that shows no certificate"),
            ("a TLS client with another CA's certificate is refused by nginx", "foreign",
             "a certificate that the CA did not sign"),
        )
    )


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
UNAVAILABLE = Text(r"cannot create auth interceptor: rpc error: code = Unavailable desc = ",
                   "that Login failed with `code = Unavailable`")
HTTP1_400 = Text(UNAVAILABLE.regex + r".*\(HTTP status 400\)",
                 "that Login failed with `code = Unavailable` and `(HTTP status 400)`")
CREATED = Text(r"created laptop with id: ", "`created laptop with id: ...`")
BAD_GATEWAY = Text(r"code = Unavailable desc = .*502", "`code = Unavailable` with nginx's HTML 502 page")
# A backend that requires a client certificate refuses nginx: the Go server of the tutorial alerts
# "bad certificate" in the handshake (TLS 1.2); grpcio's server (TLS 1.3) closes after the handshake.
# Which of nginx's lines appears depends on when the close reaches it: while reading the response
# header, or still writing the request (Broken pipe).
UPSTREAM_DROPPED = r"upstream prematurely closed connection|Connection reset by peer|Broken pipe"
DROPPED = Text(UPSTREAM_DROPPED, "that the backend closed the connection")
# nginx 1.22 with OpenSSL 3.0 (Debian 12) notices it still in the handshake.
NO_CLIENT_CERT_NGINX = (
    r"bad certificate|certificate required|peer closed connection in SSL handshake|" + UPSTREAM_DROPPED
)
NO_CLIENT_CERT_SERVER = r"PEER_DID_NOT_RETURN_A_CERTIFICATE"
NO_CERT_NGINX = Text(NO_CLIENT_CERT_NGINX, "that the backend refused the TLS connection (no client certificate)")
NO_CERT_SERVER = Text(NO_CLIENT_CERT_SERVER, "`PEER_DID_NOT_RETURN_A_CERTIFICATE`")
# With TLS 1.2 the refusal comes inside the handshake: Go servers alert `bad certificate` (the lecture's
# `SSL_do_handshake() failed`), grpcio servers close the connection.
TLS12_REFUSED_NGINX = r"while SSL handshaking to upstream"
TLS12_REFUSED = Text(TLS12_REFUSED_NGINX, "`... while SSL handshaking to upstream`")

# Lesson 7: the client dials both servers itself; nginx only for the latency comparison.
L7_TARGET = "ipv4:127.0.0.1:50071,127.0.0.1:50072"
# 20 ms of work per CreateLaptop, so that a call is in flight when a server is killed.
L7_WORKING = tuple(Server(n, p, flags=("--work-ms", "20")) for n, p in (("server1", 50071), ("server2", 50072)))
L7_IDLE = (Server("server1", 50071), Server("server2", 50072))
# Lesson 8: 50 ms of work per CreateLaptop keeps calls in flight (a kill hits some, 24 calls overlap);
# 32 workers let a server take all 24 concurrent calls at once.
L8_BOTH = tuple(Server(n, p, flags=("--work-ms", "50", "--workers", "32"))
                for n, p in (("server1", 50081), ("server2", 50082)))
L8_ADDRESS = "127.0.0.1:8081"
L8_TUTORIAL = Nginx("lesson-8-tutorial.conf", 8081)
L8_FINAL = Nginx("lesson-8.conf", 8081)
# Lesson 9: mutual TLS on both hops; nginx L7 (grpc_pass, TLS terminated) on 8091, L4 (stream) on 8092.
L9_SERVERS = tuple(Server(n, p, tls=True, flags=("--host", "127.0.0.1")) for n, p in (("server1", 50091),
                                                                                       ("server2", 50092)))
L9_L7, L9_L4 = "127.0.0.1:8091", "127.0.0.1:8092"
L9_DEFAULTS = Nginx("lesson-9-defaults.conf", 8091, more_ports=(8092,))
L9_FINAL = Nginx("lesson-9.conf", 8091, more_ports=(8092,))
# Lesson 10: the servers' per-call lines go to files (through the pipe they would cost more CPU than
# the calls measured). The hop's four servers stay up for steps 1 and 2.
_BENCH = ("--host", "127.0.0.1")
L10_HOP = (
    Server("server1", 50101, flags=_BENCH, log_file=True),
    Server("server2", 50102, flags=_BENCH, log_file=True),
    Server("server3", 50103, tls=True, flags=_BENCH, log_file=True),
    Server("server4", 50104, tls=True, flags=_BENCH, log_file=True),
)
L10_HOP_NGINX = Nginx("bench-hop.conf", 8101, more_ports=(8102, 8103, 8104))
_SCALE = (*_BENCH, "--workers", str(benchmark.SCALE_SETTINGS.workers),
          "--work-ms", str(benchmark.SCALE_SETTINGS.work_ms))
L10_SCALE = tuple(Server(n, p, flags=_SCALE, log_file=True) for n, p in (("server1", 50101), ("server2", 50102)))

LESSONS: tuple[Lesson, ...] = (
    Lesson(
        1,
        "tls-flag",
        "The TLS flag",
        "Run the server and the client with and without TLS, and see what a mismatch looks like.",
        steps=(
            _step(
                "server and client without TLS",
                (_plain("server", NGINX_PORT),),
                Client(),
                Expect(ok=True, client_says=CREATED),
                "Both sides speak plaintext HTTP/2, so every call goes through.",
            ),
            _step(
                "server with TLS, client without",
                (_mtls("server", NGINX_PORT),),
                Client(),
                Expect(ok=False, client_says=UNAVAILABLE),
                "The client sends a plaintext HTTP/2 preface to a port that expects a TLS handshake; "
                "the server closes the connection and the first call, Login, fails.",
            ),
            _step(
                "server and client with TLS",
                (_mtls("server", NGINX_PORT),),
                Client(tls=True),
                Expect(ok=True, client_says=CREATED),
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
            _step(
                "nginx balances plaintext gRPC across server1 and server2",
                PLAIN_PAIR,
                # Stays up past one token refresh, so that a second Login shows (the lecture's 5th line).
                Client(stay=3, refresh_seconds=2),
                Expect(ok=True, spread=BOTH, access_posts=5),
                "nginx accepts HTTP/2 on 8080 and passes each call (Login, then three CreateLaptop) "
                "to the next server of the upstream in turn: round robin per call, not per connection. "
                "The client stays up, and its token refresher logs in again after 2 s: a fifth access-log "
                "line, as in the lecture (whose client refreshes every 30 s).",
                nginx=Nginx("lesson-2.conf"),
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
            _step(
                "plaintext client against nginx with TLS",
                PLAIN_PAIR,
                Client(),
                Expect(ok=False, client_says=HTTP1_400),
                "nginx now expects a TLS handshake on 8080. It takes the client's plaintext HTTP/2 preface "
                "for an HTTP request sent to its HTTPS port and answers with an HTTP/1.1 400 page (access log: "
                '`"PRI * HTTP/2.0" 400`); grpcio, expecting HTTP/2 frames, reports `Trying to connect an '
                "http1.x server (HTTP status 400)` and the first call, Login, fails.",
                nginx=Nginx("lesson-3.conf"),
                checkpoint=True,
            ),
            _step(
                "TLS client against nginx with TLS",
                PLAIN_PAIR,
                Client(tls=True),
                Expect(ok=True, spread=BOTH, access_posts=4),
                "The client and nginx verify each other's certificates; nginx decrypts and forwards "
                "each call in plaintext to the backends.",
                nginx=Nginx("lesson-3.conf"),
                checkpoint=True,
            ),
            *_refusals(PLAIN_PAIR, "lesson-3.conf"),
        ),
    ),
    Lesson(
        4,
        "tls-to-backends",
        "TLS to the backends",
        "Turn on TLS on the backends, break nginx twice as the tutorial does, then fix it.",
        steps=(
            _step(
                "TLS backends, nginx still on grpc://",
                MTLS_PAIR,
                Client(tls=True),
                Expect(
                    ok=False,
                    client_says=BAD_GATEWAY,
                    nginx_error=DROPPED,
                ),
                "nginx speaks plaintext HTTP/2 to backends that expect TLS; they close the connection "
                "and nginx answers the client with an HTML 502 Bad Gateway.",
                nginx=Nginx("lesson-3.conf"),
            ),
            _step(
                "grpcs:// against backends that require a client certificate",
                MTLS_PAIR,
                Client(tls=True),
                Expect(
                    ok=False,
                    client_says=BAD_GATEWAY,
                    nginx_error=NO_CERT_NGINX,
                    server_says=NO_CERT_SERVER,
                ),
                "nginx now does TLS to the backends but shows no certificate; the backends require one "
                "and drop the connection (the server logs PEER_DID_NOT_RETURN_A_CERTIFICATE). With TLS 1.3, "
                "nginx 1.23.4+'s default, a server checks the client certificate after the handshake, when "
                "nginx has begun sending the call: nginx logs a broken pipe or an upstream that closed "
                "prematurely, and, as it never resends a gRPC call it has sent (lesson 8), answers 502 "
                "after trying one backend. The lecture's two `SSL_do_handshake() failed` lines came from "
                "TLS 1.2: see the aside, step 4.",
                nginx=Nginx("lesson-4.conf"),
            ),
            _step(
                "grpcs:// against backends with server-side TLS only",
                SERVER_TLS_PAIR,
                Client(tls=True),
                Expect(ok=True, spread=BOTH, access_posts=4),
                "The backends no longer ask for a client certificate (`--client-auth none`, the "
                "tutorial's NoClientCert edit), so nginx's TLS handshake succeeds.",
                nginx=Nginx("lesson-4.conf"),
                checkpoint=True,
            ),
            *_refusals(SERVER_TLS_PAIR, "lesson-4.conf"),
            _step(
                "aside: backends requiring a certificate again, nginx held to TLS 1.2 as the lecture's nginx was",
                MTLS_PAIR,
                Client(tls=True),
                Expect(
                    ok=False,
                    client_says=BAD_GATEWAY,
                    nginx_error=TLS12_REFUSED,
                    server_says=NO_CERT_SERVER,
                ),
                "Before 1.23.4 nginx left TLS 1.3 out of grpc_ssl_protocols, so the lecture's nginx spoke "
                "TLS 1.2. There the server refuses inside the handshake, before nginx has sent anything: a "
                "connection error, which `grpc_next_upstream error` retries on the next server, so nginx "
                "logs one `... while SSL handshaking to upstream` line per backend, as in the lecture (Go "
                "servers alert `bad certificate`: `SSL_do_handshake() failed`; grpcio servers just close: "
                "`peer closed connection in SSL handshake`). With TLS 1.3 (step 2) the refusal comes after "
                "nginx has begun sending the call, and nginx never resends a gRPC call: one backend, one line.",
                nginx=Nginx("lesson-4-tls12.conf"),
            ),
        ),
    ),
    Lesson(
        5,
        "mutual-tls-to-backends",
        "Mutual TLS between nginx and the backends",
        "Give nginx a client certificate so the backends can require one again.",
        steps=(
            _step(
                "backends require a client certificate again, nginx shows none",
                MTLS_PAIR,
                Client(tls=True),
                Expect(ok=False, nginx_error=NO_CERT_NGINX, server_says=NO_CERT_SERVER),
                "Back to mutual TLS on the backends: lesson 4's config fails as before.",
                nginx=Nginx("lesson-4.conf"),
            ),
            _step(
                "nginx shows its certificate to the backends",
                MTLS_PAIR,
                Client(tls=True),
                Expect(ok=True, spread=BOTH, access_posts=4),
                "grpc_ssl_certificate and grpc_ssl_certificate_key give nginx a certificate signed by "
                "the CA the backends trust: both hops are mutual TLS.",
                nginx=Nginx("lesson-5.conf"),
                checkpoint=True,
            ),
            *_refusals(MTLS_PAIR, "lesson-5.conf"),
        ),
    ),
    Lesson(
        6,
        "routing-by-service",
        "Routing by service",
        "Send the auth service to server1 and the laptop service to server2, whatever the run.",
        steps=(
            _step(
                "one upstream per service, two client runs",
                MTLS_PAIR,
                Client(tls=True, runs=2),
                Expect(
                    ok=True,
                    routes={AUTH_LOGIN: ("server1",), CREATE_LAPTOP: ("server2",)},
                ),
                "Every gRPC call is a POST to /package.Service/Method, so a location per service "
                "prefix picks the upstream; repeated runs keep the split.",
                nginx=Nginx("lesson-6.conf"),
                checkpoint=True,
            ),
            *_refusals(MTLS_PAIR, "lesson-6.conf"),
        ),
    ),
    # Beyond the tutorial. These lessons use their own ports (50071.., 8071..) so that they never
    # clash with the tutorial's 8080/50051/50052; their act and judge functions are in pcbook/lessons/.
    Lesson(
        7,
        "client-side-balancing",
        "Client-side load balancing",
        "Let the client balance by itself: pick_first vs round_robin, health-aware, a dying server.",
        tutorial=False,
        steps=(
            Step(
                "pick_first: the client knows both servers, every call goes to one",
                "pick_first connects to the first address that answers and sends every call there; the "
                "second address is only a fallback. It is grpcio's default policy.",
                L7_WORKING,
                client=Driver(L7_TARGET, calls=10, lb_policy="pick_first"),
                act=client_side.send,
                judge=client_side.one_server,
                claims=("every call reaches the same server",),
                checkpoint=True,
            ),
            Step(
                "round_robin: the same client spreads its calls over both servers",
                "round_robin keeps a connection to every address and picks the next READY one for each "
                "call. The first calls may all land on the server that connected first.",
                L7_WORKING,
                client=Driver(L7_TARGET, calls=10, lb_policy="round_robin"),
                act=client_side.send,
                judge=client_side.every_server,
                claims=("both servers receive calls",),
                checkpoint=True,
            ),
            Step(
                "round_robin with health checking: a NOT_SERVING server gets no calls, then gets them back",
                "With healthCheckConfig the client keeps a grpc.health.v1 Watch stream open to each server; "
                "a NOT_SERVING answer takes that server out of round robin at once, SERVING puts it back. "
                "Nothing was restarted: the server process stayed up the whole time.",
                L7_WORKING,
                client=Driver(L7_TARGET, calls=70, rate=60, concurrency=4, lb_policy="round_robin",
                              health_check=True),
                then=("after 20 calls server2 gets SIGUSR1 (NOT_SERVING); after 40 calls SIGUSR2 (SERVING)",),
                act=client_side.health_flip,
                judge=client_side.health_judge,
                claims=("server2 gets calls, then none while NOT_SERVING, then calls again",),
                checkpoint=True,
            ),
            Step(
                "a server dies mid-run: its calls in flight fail, round robin moves on",
                "A call in flight on a server that dies ends with UNAVAILABLE: the connection is gone and "
                "grpcio does not know whether the server ran it, so it does not retry it. The channel sees the "
                "connection drop, cannot reconnect (connection refused), and round robin picks only server1.",
                L7_WORKING,
                client=Driver(L7_TARGET, calls=40, rate=40, concurrency=4, lb_policy="round_robin"),
                then=("after 10 calls, while server2 is working on a call, server2 is killed (SIGKILL)",),
                act=client_side.kill_one,
                judge=client_side.dies_judge,
                claims=("the calls in flight on server2 fail with UNAVAILABLE", "later calls all succeed on server1"),
                checkpoint=True,
            ),
            Step(
                "the cost of the hop: the same call direct, through nginx, and client-side balanced",
                "Through nginx every call crosses two connections and one more process; client-side balancing "
                "goes straight to a server, like the direct call, and only adds the client's pick. The numbers "
                "are this machine's, now: each difference is shown with its interval, and called one only when "
                "the interval excludes zero.",
                L7_IDLE,
                Nginx("lesson-7.conf", 8071),
                Driver(compare=("direct=127.0.0.1:50071", "nginx=127.0.0.1:8071",
                                f"client-side=round_robin@{L7_TARGET}"), calls=100, warmup=20),
                act=client_side.latency,
                judge=client_side.three_medians,
                claims=("three medians; the servers do no simulated work here, so the hop is what differs",),
                quiet=True,
            ),
        ),
    ),
    Lesson(
        8,
        "when-a-backend-fails",
        "When a backend fails",
        "Kill a backend under load, see what nginx retries and what it cannot, and answer in gRPC.",
        tutorial=False,
        steps=(
            Step(
                "no backend, the tutorial's config: nginx answers with an HTML 502 page",
                "With no backend, nginx answers 502 Bad Gateway with an HTML body. grpcio finds no grpc-status, "
                "so it makes one up from the HTTP status (502 -> UNAVAILABLE) and can only say "
                "`Received http2 header with status: 502`. The first call tried both servers (connection "
                "refused twice); after that both are marked down and nginx says `no live upstreams`.",
                (),
                L8_TUTORIAL,
                Driver(L8_ADDRESS, calls=3, login_optional=True),
                act=failures.no_backend,
                judge=failures.html_502,
                claims=("every call fails with UNAVAILABLE: `Received http2 header with status: 502`",),
            ),
            Step(
                "no backend, error_page: nginx answers with a gRPC status",
                "`error_page 502 = @grpc_unavailable` sends the error to a named location that answers "
                "204 with the headers grpc-status: 14 and grpc-message; grpcio reads the status from them, "
                "so the client gets nginx's own words and a status it can act on (UNAVAILABLE: try again). "
                "The message says which 502 it was: the Login found no server to connect to, the calls after "
                "it found every server marked down (no live upstreams).",
                (),
                L8_FINAL,
                Driver(L8_ADDRESS, calls=3, login_optional=True),
                act=failures.no_backend,
                judge=failures.grpc_status,
                claims=("every call fails with UNAVAILABLE and nginx's own message (grpc-status 14 / grpc-message)",
                        "the Login: `nginx: could not connect to any backend`; the calls after it: "
                        "`nginx: no live backend (each failed less than fail_timeout ago)`"),
                checkpoint=True,
            ),
            Step(
                "server1 dies with calls in flight: those calls fail, the others go to server2",
                "A gRPC call is a POST whose body nginx streams to the backend as it arrives. Once a call has "
                "been sent, nginx cannot know whether server1 ran it, and has no copy of the body to send "
                "again: the call fails (upstream prematurely closed connection -> 502 -> UNAVAILABLE). "
                "The failure also marks server1 down (max_fails=1), so later calls go straight to server2.",
                L8_BOTH,
                L8_FINAL,
                Driver(L8_ADDRESS, calls=30, rate=40, concurrency=4),
                then=("after 10 calls, while server1 works on a call, server1 is killed (SIGKILL)",),
                act=failures.kill_under_load,
                judge=failures.not_retried,
                claims=("the calls in flight on server1 fail with UNAVAILABLE (`nginx: the backend closed the "
                        "connection before answering; not retried`) and are not retried",
                        "every call started after the kill succeeds"),
                checkpoint=True,
            ),
            Step(
                "the same with `non_idempotent`: nginx still cannot retry a call it has sent",
                "`non_idempotent` lets nginx retry POSTs it has already sent, but only when it kept the request "
                "body; grpc_pass never does (it streams the body, for client streams), so a sent gRPC call is "
                "never retried. Good: for CreateLaptop a retry could run it twice, one laptop saved on each "
                "server while the client sees one answer. A client that retries must make the call "
                "idempotent itself, e.g. with the client-chosen laptop id the server refuses twice.",
                L8_BOTH,
                Nginx("lesson-8-non-idempotent.conf", 8081),
                Driver(L8_ADDRESS, calls=30, rate=40, concurrency=4),
                then=("after 10 calls, while server1 works on a call, server1 is killed (SIGKILL)",),
                act=failures.kill_under_load,
                judge=failures.not_retried,
                claims=("the same as before: non_idempotent does not make nginx retry a gRPC call",),
            ),
            Step(
                "server1 is down, nginx is new: a refused connection is retried, then server1 is left alone",
                "Connection refused means the call never left nginx, so nginx may try the next server "
                "(grpc_next_upstream error). The failure counts against server1: with max_fails=1 it is out "
                "of rotation for fail_timeout, so nginx does not pay a refused connection on every other call.",
                L8_BOTH[1:],
                L8_FINAL,
                Driver(L8_ADDRESS, calls=10),
                act=failures.refused,
                judge=failures.refused_is_retried,
                claims=("every call succeeds", "nginx tries server1 once (refused) and retries that call on server2",
                        "the next calls go straight to server2"),
                checkpoint=True,
            ),
            Step(
                "server2 dies too: no live upstreams, then nginx waits fail_timeout before trying again",
                "With every server marked down, nginx does not even try: it answers at once (`no live upstreams`, "
                "502, here as UNAVAILABLE through error_page). It tries a server again only when fail_timeout has "
                "passed since that server's last failure (counted in whole seconds: 2 to 3 s for 2s), even if the "
                "server is back sooner. Active health checks, which would notice sooner, are NGINX Plus only.",
                L8_BOTH[1:],
                L8_FINAL,
                Driver(L8_ADDRESS, calls=100, rate=10, progress_every=5),
                then=("after 5 calls server2 is killed and started again at once",
                      f"the client stops once server2 has saved a laptop again ({failures.BACK_WITHIN:g} s at most)"),
                act=failures.all_down,
                judge=failures.no_live_upstreams,
                claims=("calls fail with UNAVAILABLE (no live upstreams) until fail_timeout after the last failure",),
            ),
            Step(
                f"the tutorial's worker_connections 10 under {failures.CONCURRENT} concurrent calls",
                "The 10 connections must hold the listening socket, the 4 client connections and one upstream "
                "connection per call in flight: a handful of calls use them up. A call that finds none left is "
                "answered 500 (grpcio: UNKNOWN, `Received http2 header with status: 500`); a client connection "
                "nginx cannot accept is closed at once (UNAVAILABLE: `Socket closed`).",
                L8_BOTH,
                L8_TUTORIAL,
                Driver(L8_ADDRESS, calls=2 * failures.CONCURRENT, concurrency=failures.CONCURRENT, channels=4),
                act=failures.concurrent,
                judge=failures.too_few_connections,
                claims=("calls fail; nginx logs `worker_connections are not enough`",),
            ),
            Step(
                f"the same {failures.CONCURRENT} concurrent calls with enough worker connections",
                "Each call in flight holds one upstream connection of its own (nginx does not multiplex "
                "calls on a backend connection), and worker_connections counts those, the clients' "
                "connections and the listening socket. 1024 leaves room for this load and much more.",
                L8_BOTH,
                L8_FINAL,
                Driver(L8_ADDRESS, calls=2 * failures.CONCURRENT, concurrency=failures.CONCURRENT, channels=4),
                act=failures.concurrent,
                judge=failures.enough_connections,
                claims=("every call succeeds",),
                checkpoint=True,
            ),
        ),
    ),
    Lesson(
        9,
        "streams-and-l4-vs-l7",
        "Streams through nginx, L4 vs L7",
        "Stream through nginx with TLS on both hops, hit its limits, and compare TCP with per-call balancing.",
        tutorial=False,
        hide=streams.CHUNK_NOISE,
        steps=(
            Step(
                "three stream kinds through nginx",
                "Each stream is one HTTP/2 stream (one POST) that nginx proxies as a whole, whatever the number of "
                "messages in it; nginx logs it once, when it ends, with the backend that served it.",
                L9_SERVERS,
                L9_DEFAULTS,
                Probe(L9_L7, ("streams", "--upload-bytes", str(streams.SMALL_IMAGE))),
                act=streams.streams_logged,
                judge=streams.three_ok_and_logged,
                claims=("SearchLaptop, UploadImage (64 KiB) and RateLaptop succeed through nginx",
                        "nginx's access log has a 200 line for each"),
            ),
            Step(
                "an image near 1 MiB uploads directly",
                f"{streams.BIG_IMAGE} bytes is under the service's limit of 1 MiB of image data.",
                L9_SERVERS,
                client=Probe("127.0.0.1:50091", ("streams", "--upload-bytes", str(streams.BIG_IMAGE))),
                act=streams.upload,
                judge=streams.upload_ok,
                claims=(f"an image of {streams.BIG_IMAGE} bytes uploads straight to server1",),
            ),
            Step(
                "nginx refuses the upload with 413",
                "client_max_body_size counts every DATA byte of the call: 1023 chunks of 1 KiB plus 8 bytes of gRPC "
                "and protobuf framing each is over 1m, so nginx answers an HTTP 413, which grpcio reports as UNKNOWN.",
                L9_SERVERS,
                L9_DEFAULTS,
                Probe(L9_L7, ("streams", "--upload-bytes", str(streams.BIG_IMAGE))),
                act=streams.upload_through_nginx,
                judge=streams.upload_refused,
                claims=("the same upload through nginx fails with `Received http2 header with status: 413`",
                        "nginx logs `client intended to send too large chunked body`"),
            ),
            Step(
                "nginx cuts the quiet stream",
                "grpc_read_timeout is the longest nginx waits between two reads from the backend, not the length "
                "of the call: after 1 s of silence nginx gives up and resets the stream (RST_STREAM), which the "
                "client sees as INTERNAL. The default, 60 s, does the same to any stream quiet for a minute.",
                L9_SERVERS,
                L9_DEFAULTS,
                Probe(L9_L7, ("quiet", "--pause", f"{streams.QUIET_PAUSE:g}")),
                act=streams.quiet_cut,
                judge=streams.stream_cut,
                claims=(f"a RateLaptop stream quiet for {streams.QUIET_PAUSE:g} s fails with RST_STREAM (INTERNAL)",
                        "nginx logs `upstream timed out`"),
            ),
            Step(
                "three stream kinds and the near-1 MiB image through nginx",
                "The UploadImage location raises client_max_body_size; each stream is still one POST that nginx "
                "proxies as a whole.",
                L9_SERVERS,
                L9_FINAL,
                Probe(L9_L7, ("streams", "--upload-bytes", str(streams.BIG_IMAGE))),
                act=streams.streams,
                judge=streams.three_ok,
                claims=(f"SearchLaptop, UploadImage ({streams.BIG_IMAGE} bytes) and RateLaptop succeed through nginx",),
                checkpoint=True,
            ),
            Step(
                "the quiet stream survives",
                "The RateLaptop location raises grpc_read_timeout (and the send and client body timeouts) for that "
                "method only; every other call still gets the short timeout.",
                L9_SERVERS,
                L9_FINAL,
                Probe(L9_L7, ("quiet", "--pause", f"{streams.QUIET_PAUSE:g}")),
                act=streams.quiet,
                judge=streams.quiet_ok,
                claims=(f"a RateLaptop stream quiet for {streams.QUIET_PAUSE:g} s gets both replies",),
                checkpoint=True,
            ),
            Step(
                "L7 (grpc_pass): one connection",
                "nginx reads every HTTP/2 stream of the connection and picks a backend for each call: "
                "round robin per call.",
                L9_SERVERS,
                L9_FINAL,
                Probe(L9_L7, ("calls", "--calls", str(streams.CALLS))),
                act=streams.calls,
                judge=streams.per_call,
                claims=(f"one client's {streams.CALLS + 1} calls on one connection reach both servers",),
                checkpoint=True,
            ),
            Step(
                "L4 (stream, TLS passed through): one connection",
                "nginx only sees a TCP connection and picks a backend once, when it opens; every call the "
                "client multiplexes on that connection goes to that backend.",
                L9_SERVERS,
                L9_FINAL,
                Probe(L9_L4, ("calls", "--calls", str(streams.CALLS))),
                act=streams.calls,
                judge=streams.per_connection,
                claims=(f"the same client's {streams.CALLS + 1} calls through port 8092 all reach one server",),
                checkpoint=True,
            ),
            Step(
                "L4: several connections",
                "Round robin per TCP connection: the load spreads only as far as the clients open connections, "
                "and a long-lived connection stays on its backend.",
                L9_SERVERS,
                L9_FINAL,
                Probe(L9_L4, ("calls", "--calls", str(streams.CALLS), "--clients", str(streams.L4_CLIENTS))),
                act=streams.calls,
                judge=streams.spread_connections,
                claims=(f"{streams.L4_CLIENTS} clients, one connection each: the calls spread over both servers",),
                checkpoint=True,
            ),
            *_refusals(L9_SERVERS, L9_FINAL, L9_L7),
        ),
    ),
    Lesson(
        10,
        "cost-of-the-hop",
        "The cost of the hop, the gain of scale-out",
        "Measure the proxy's latency and two backends' throughput on your own machine.",
        tutorial=False,
        pinned=True,
        steps=(
            Step(
                "one call in flight: direct to server1 vs through nginx",
                "nginx receives the call, decodes its HTTP/2 frames, picks a backend and writes the call again on "
                "a second connection. Every call of the nginx path is in nginx's log; the time the hop adds is "
                "measured, and only called a difference when its interval excludes zero.",
                L10_HOP,
                L10_HOP_NGINX,
                then=(f"{benchmark.SETTINGS.reps} rounds of (direct, nginx) in balanced order, "
                      f"{benchmark.SETTINGS.latency_window:g} s each, one call in flight, from a load generator",),
                act=benchmark.hop,
                judge=benchmark.hop_judge,
                claims=("every call of the nginx path appears in nginx's log, and no direct call does",
                        "the hop's added time, shown with its interval (measured, not asserted)"),
                checkpoint=True,
            ),
            Step(
                "backend connections nginx opens, with and without upstream keepalive",
                "With keepalive nginx keeps its connection to the backend (and its TLS session) for the next "
                "call; with `keepalive_requests 1;` every call pays a new TCP connection and a mutual TLS "
                "handshake.",
                L10_HOP,
                L10_HOP_NGINX,
                then=(f"calls, in rounds of 0.5 s until each path has {benchmark.KEEPALIVE_MIN_CALLS}, through "
                      "8103 (keepalive) and 8104 (a connection per call) to server3 and server4; the backend "
                      "connections are counted in /proc/net/tcp",),
                act=benchmark.keepalive,
                judge=benchmark.keepalive_judge,
                claims=("with upstream keepalive nginx opens one backend connection for all calls; without, "
                        "one per call",),
                checkpoint=True,
            ),
            Step(
                "saturated servers of fixed capacity: one vs two behind nginx",
                f"Each server does at most {benchmark.SCALE_SETTINGS.capacity:.0f} calls/s "
                f"({benchmark.SCALE_SETTINGS.workers} threads x {benchmark.SCALE_SETTINGS.work_ms} ms of simulated "
                "work per call); with more calls waiting than two servers can take, nginx keeps both busy: capacity "
                "adds up.",
                L10_SCALE,
                Nginx("bench-scale.conf", 8101, more_ports=(8105,)),
                then=(f"{benchmark.SCALE_SETTINGS.reps} rounds of (1 server direct, 2 behind nginx, 2 with client "
                      f"RR), {benchmark.SCALE_SETTINGS.scale_concurrency} calls in flight",
                      "a round of them in which nginx reaches only one server ends the measurement"),
                act=benchmark.scale,
                judge=benchmark.scale_judge,
                claims=("calls wait at the one server (it is saturated)",
                        f"two saturated servers behind nginx both serve calls and deliver at least "
                        f"{benchmark.SCALE_MIN}x the calls of one"),
                checkpoint=True,
            ),
        ),
    ),
    Lesson(
        11,
        "service-discovery",
        "Service discovery with etcd",
        "Servers register themselves in etcd; a thick client and nginx follow the live set with no config change.",
        tutorial=False,
        steps=(
            Step(
                "the thick client follows the registry",
                "Each server puts `/pcbook/<name> = host:port` in etcd under a 3 s lease it keeps alive; a graceful "
                "stop revokes the lease first, then serves 1 s more. The client watches the prefix and rebuilds its "
                "round_robin channel on each change, so a new server gets calls at once; a killed server's "
                "connection breaks and round robin leaves it out before its lease expires.",
                then=("server3 starts and registers", "server1 gets SIGTERM", "server2 gets SIGKILL"),
                registry=Registry(),
                act=discovery.thick,
                judge=discovery.judge_story,
                claims=("with two servers registered the calls spread over both",
                        "server3 gets calls within 3 s of registering, with no change to the client",
                        "a graceful stop loses no call; a SIGKILL loses at most the calls in flight",
                        "the killed server's key leaves when its lease expires"),
                checkpoint=True,
            ),
            Step(
                "nginx fed by the registry",
                "nginx knows nothing of etcd: nginx_sync renders the upstream's servers from the registry into a "
                "file nginx.conf includes, checks it with `nginx -t` and reloads nginx on each change (the "
                "consul-template pattern). nginx retries a refused connection on the next server, so only the "
                "call in flight on the killed server fails.",
                then=("server3 starts and registers", "server1 gets SIGTERM", "server2 gets SIGKILL"),
                registry=Registry(),
                act=discovery.via_nginx,
                judge=discovery.judge_story,
                claims=("the same story through nginx on 8080, with one reload per change of the set",
                        "server3 gets calls after one reload, with no edit of nginx's config by hand"),
                checkpoint=True,
            ),
        ),
    ),
    Lesson(
        12,
        "look-aside-xds",
        "Look-aside balancing with xDS",
        "A small xDS control plane tells grpc's own xDS client which servers to use, with weights and draining.",
        tutorial=False,
        steps=(
            Step(
                "xDS clients follow the registry",
                "The client dials `xds:///pcbook`: grpc reads the bootstrap file, opens an ADS stream to the control "
                "plane and gets a listener, a cluster and its endpoints, which the control plane builds from etcd "
                "and pushes again on each change.",
                then=("server3 starts and registers", "server1 gets SIGTERM", "server2 gets SIGKILL"),
                registry=Registry(),
                control_plane=ControlPlane(),
                act=discovery.xds_story,
                judge=discovery.judge_story,
                claims=("lesson 11's story holds with the control plane as the only source of endpoints",
                        "each push and each ACK is a line of the control plane's log"),
                checkpoint=True,
            ),
            Step(
                "the control plane shifts traffic by weight",
                "grpc's round robin balances between localities by their weight; each server is its own locality, "
                f"so `etcdctl put /pcbook-lb/weight/server1 {discovery.WEIGHT}` sends about three calls in four to "
                "server1.",
                then=(f"weight/server1 = {discovery.WEIGHT} is written to etcd", f"{discovery.MEASURED} calls after "
                      "the client ACKs the new endpoints"),
                registry=Registry(),
                control_plane=ControlPlane(),
                act=discovery.weights,
                judge=discovery.judge_weights,
                claims=(f"server1 gets between {discovery.WEIGHT_BAND[0]} and {discovery.WEIGHT_BAND[1]} of the calls",
                        "no call fails"),
                checkpoint=True,
            ),
            Step(
                "round robin ignores endpoint weights",
                "The same weight put on the endpoint, both endpoints in one locality: grpc's ROUND_ROBIN ignores "
                "per-endpoint weights, so the split stays even.",
                then=(f"weight/server1 = {discovery.WEIGHT}, sent as an endpoint weight",),
                registry=Registry(),
                control_plane=ControlPlane(weights="endpoint"),
                act=discovery.weights,
                judge=discovery.judge_endpoint_weights,
                claims=(f"server1 gets between {discovery.EVEN_BAND[0]} and {discovery.EVEN_BAND[1]} of the calls",),
            ),
            Step(
                "draining a backend loses no call",
                "The control plane sends server2's endpoint as DRAINING: grpc takes it out of the picker and lets "
                "the calls it has finish.",
                then=("drain/server2 is written to etcd",),
                registry=Registry(),
                control_plane=ControlPlane(),
                act=discovery.drain,
                judge=discovery.judge_drain,
                claims=("after the client's ACK every call goes to server1", "no call fails"),
                checkpoint=True,
            ),
            Step(
                "the control plane dies and comes back",
                "grpc keeps the last resources it accepted: with no control plane the client goes on calling the "
                "servers it knows, and learns nothing new. Restarted, the control plane answers the client's "
                "reconnect from etcd and the client resyncs.",
                then=("the control plane gets SIGKILL", "server3 registers while it is down",
                      "the control plane starts again"),
                registry=Registry(),
                control_plane=ControlPlane(),
                act=discovery.restart,
                judge=discovery.judge_restart,
                claims=("no call fails while the control plane is down",
                        "server3 gets no call until the control plane is back, then it does"),
                checkpoint=True,
            ),
        ),
    ),
)


def get(number: int) -> Lesson:
    for lesson in LESSONS:
        if lesson.number == number:
            return lesson
    known = ", ".join(str(lesson.number) for lesson in LESSONS)
    raise KeyError(f"there is no lesson {number}; the lessons are {known}")
