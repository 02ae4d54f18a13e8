"""The pcbook server: ``python -m pcbook.server --port 50051 [--tls] [--client-auth require|none] ...``."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import sys
import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from pcbook.pb import auth_service_pb2, auth_service_pb2_grpc, laptop_service_pb2, laptop_service_pb2_grpc
from pcbook.service import auth, tls
from pcbook.service.auth_service import AuthServicer
from pcbook.service.endpoints import EndpointError, check_name, parse_endpoint
from pcbook.service.interceptors import (
    STALL_SECONDS,
    AuthServerInterceptor,
    ConcurrencyInterceptor,
    ErrorInterceptor,
)
from pcbook.service.laptop_service import LaptopServicer
from pcbook.service.logs import fatal, log
from pcbook.service.registry import Etcd, Registration, RegistryError, parse_url
from pcbook.service.stores import ImageStore, LaptopStore, RatingStore, UserStore

LAPTOP_SERVICE = laptop_service_pb2.DESCRIPTOR.services_by_name["LaptopService"].full_name
AUTH_SERVICE = auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name
# "" is the overall status; clients with healthCheckConfig {"serviceName": ""} watch it.
HEALTH_NAMES = ("", LAPTOP_SERVICE, AUTH_SERVICE)
GRACE_SECONDS = 1.0
# Each open stream holds a thread of its own (grpcio's sync server), on top of the unary workers.
MAX_STREAMS = 100
# Calls accepted at once (running or queued); beyond, grpcio answers RESOURCE_EXHAUSTED at once
# instead of queueing without bound.
MAX_CALLS = 2000


@dataclass
class PcbookServer:
    """A built (not yet started) server and the parts tests and lessons may want to reach."""

    server: grpc.Server
    health: health.HealthServicer
    port: int
    laptop_store: LaptopStore
    image_store: ImageStore
    rating_store: RatingStore
    user_store: UserStore
    jwt_manager: auth.JWTManager
    serving: bool = field(default=False)

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in HEALTH_NAMES:
            self.health.set(name, status)
        self.serving = serving

    def start(self) -> None:
        self.server.start()
        self.set_serving(True)

    def stop(self, grace: float | None = GRACE_SECONDS) -> None:
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def build_server(
    port: int,
    *,
    host: str = "0.0.0.0",
    credentials: grpc.ServerCredentials | None = None,
    image_dir: str | None = None,
    workers: int = 10,
    max_streams: int = MAX_STREAMS,
    work_ms: int = 0,
    search_delay_ms: int = 0,
    jwt_secret: str | None = None,
    stream_stall: float = STALL_SECONDS,
    max_connection_age: float | None = None,
    max_connection_age_grace: float | None = None,
) -> PcbookServer:
    """Build the server with its stores, seeded users, interceptor, health and reflection.

    The pool has ``workers`` + ``max_streams`` threads and at most ``max_streams`` streams are open at
    once, so open (even idle) streams never take the last ``workers`` threads from unary calls and
    health checks (ConcurrencyInterceptor). ``work_ms`` of simulated work runs on at most ``workers``
    calls at once, which gives a server a fixed capacity for benchmarks.
    Raises RuntimeError if the address cannot be bound. ``port=0`` picks a free port (see ``.port``).
    ``max_connection_age`` (s): gRPC's own option, GOAWAY on each connection that old (lesson 14);
    ``max_connection_age_grace`` (s): how long its calls in flight may then run before it is closed.
    """
    user_store = UserStore()
    auth.seed_users(user_store)
    jwt_manager = auth.JWTManager(jwt_secret or auth.secret_from_env()[0])
    laptop_store, rating_store, image_store = LaptopStore(), RatingStore(), ImageStore(image_dir)

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers + max_streams, thread_name_prefix="pcbook-rpc"),
        # Outermost first: unexpected errors anywhere become INTERNAL; the auth interceptor logs every
        # call and refuses a bad token before a stream slot is taken.
        interceptors=[ErrorInterceptor(), AuthServerInterceptor(jwt_manager),
                      ConcurrencyInterceptor(max_streams, jwt_manager, stream_stall)],
        maximum_concurrent_rpcs=MAX_CALLS,
        # gRPC sets SO_REUSEPORT by default, which would let a second server share a busy port
        # silently (and split the calls); turn it off so that a busy port is an error.
        options=[("grpc.so_reuseport", 0), *connection_age_options(max_connection_age, max_connection_age_grace)],
    )
    auth_service_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(user_store, jwt_manager), server)
    laptop_service_pb2_grpc.add_LaptopServiceServicer_to_server(
        LaptopServicer(laptop_store, image_store, rating_store, work_ms, search_delay_ms, work_slots=workers),
        server,
    )
    health_servicer = health.HealthServicer()
    for name in HEALTH_NAMES:
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)  # SERVING once started
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (LAPTOP_SERVICE, AUTH_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{host}:{port}"
    if credentials is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, credentials)
    return PcbookServer(
        server, health_servicer, bound, laptop_store, image_store, rating_store, user_store, jwt_manager
    )


def connection_age_options(age: float | None, grace: float | None) -> list[tuple[str, int]]:
    """gRPC's server options for a connection's age and grace, in ms (None: gRPC's default, unlimited)."""
    options = [("grpc.max_connection_age_ms", round(age * 1000))] if age is not None else []
    return options + ([("grpc.max_connection_age_grace_ms", round(grace * 1000))] if grace is not None else [])


def port_in_use(host: str, port: int) -> bool:
    """True if something already listens on host:port (checked before gRPC tries, for a clear message)."""
    if port == 0:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: TIME_WAIT is not "in use"
        try:
            s.bind((host, port))
        except OSError as e:
            return e.errno == errno.EADDRINUSE
    return False


def _busy_port_message(port: int) -> str:
    return (
        f"cannot listen on port {port}: address already in use; "
        f"stop the other process using it (find it with `lsof -i :{port}` or `ss -ltnp`) "
        f"or choose another --port"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pcbook.server", description="The pcbook gRPC server.")
    parser.add_argument("--port", type=int, required=True, help="the server port (0 picks a free one)")
    parser.add_argument("--host", default="0.0.0.0", help="the IPv4 address to listen on (default 0.0.0.0)")
    parser.add_argument("--tls", action="store_true", help="enable SSL/TLS")
    parser.add_argument(
        "--client-auth",
        choices=tls.CLIENT_AUTH_CHOICES,
        default="require",
        help="with --tls: require a client certificate signed by the CA (mutual TLS, default) or not",
    )
    parser.add_argument("--image-dir", default=None, help="where uploaded images go (default: a temp dir)")
    parser.add_argument(
        "--workers",
        type=int,
        default=10,
        help="threads always left for unary calls and health checks; also how many calls do --work-ms at once"
        " (default 10)",
    )
    parser.add_argument(
        "--max-streams",
        type=int,
        default=MAX_STREAMS,
        help=f"streams open at once, each on a thread of its own; more are refused (default {MAX_STREAMS})",
    )
    parser.add_argument(
        "--stream-stall-seconds",
        type=float,
        default=STALL_SECONDS,
        help=f"cancel a server stream whose client reads nothing for this long (default {STALL_SECONDS:g}; 0: never)",
    )
    parser.add_argument("--work-ms", type=int, default=0, help="simulated work per CreateLaptop, ms (default 0)")
    parser.add_argument(
        "--search-delay-ms", type=int, default=0, help="simulated work per laptop examined by SearchLaptop, ms"
    )
    parser.add_argument("--max-connection-age", type=float, default=None, metavar="SECONDS",
                        help="send GOAWAY on each client connection this old, so clients reconnect (default: never)")
    parser.add_argument("--max-connection-age-grace", type=float, default=None, metavar="SECONDS",
                        help="after that GOAWAY, let calls in flight run this long, then close (default: no limit)")
    reg = parser.add_argument_group("service discovery (lessons 11-12)")
    reg.add_argument("--register", metavar="etcd://HOST:PORT[/prefix]", default=None,
                     help="register as <prefix>/<name> = <advertise>:<port> in etcd under a lease kept alive;"
                          " a graceful stop revokes it first (default prefix /pcbook)")
    reg.add_argument("--name", default=None, help="the key under the prefix (default server-<port>)")
    reg.add_argument("--advertise", default=None,
                     help="the host clients should dial (default --host, or 127.0.0.1 when it is 0.0.0.0)")
    reg.add_argument("--allow-remote", action="store_true",
                     help="allow an --advertise address outside loopback (the lessons use 127.0.0.1)")
    reg.add_argument("--register-ttl", type=int, default=3, help="lease TTL, s (default 3)")
    reg.add_argument("--drain-seconds", type=float, default=1.0,
                     help="with --register: keep serving this long after deregistering, so clients that have"
                          " not seen the removal yet still get answers (default 1)")
    args = parser.parse_args(argv)
    if args.register is not None:
        try:
            args.registry = parse_url(args.register)
        except ValueError as e:
            parser.error(f"--register: {e}")
        if args.register_ttl < 1 or args.drain_seconds < 0:
            parser.error("--register-ttl must be at least 1 and --drain-seconds not negative")
        if args.port == 0:
            parser.error("--register needs a fixed --port (the address goes into the registry)")
        # What goes into the registry is parsed by the same rules its readers apply (endpoints.py).
        try:
            args.endpoint = parse_endpoint(f"{advertised_host(args)}:{args.port}", allow_remote=args.allow_remote)
            check_name(args.name or f"server-{args.port}")
        except EndpointError as e:
            parser.error(f"--advertise/--name: {e}")
    elif args.name or args.advertise or args.allow_remote:
        parser.error("--name, --advertise and --allow-remote go with --register")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be between 0 and 65535, not {args.port}")
    if args.workers < 1 or args.max_streams < 1:
        parser.error("--workers and --max-streams must be at least 1")
    if args.stream_stall_seconds < 0:
        parser.error("--stream-stall-seconds cannot be negative")
    if args.work_ms < 0 or args.search_delay_ms < 0:
        parser.error("--work-ms and --search-delay-ms cannot be negative")
    if (args.max_connection_age is not None and args.max_connection_age <= 0) or (
            args.max_connection_age_grace is not None and args.max_connection_age_grace < 0):
        parser.error("--max-connection-age must be positive and --max-connection-age-grace not negative")
    return args


def advertised_host(args: argparse.Namespace) -> str:
    return args.advertise or ("127.0.0.1" if args.host in ("0.0.0.0", "") else args.host)


def _register(args: argparse.Namespace, pcbook: PcbookServer) -> Registration:
    """Put <prefix>/<name> = host:port under a lease that a thread keeps alive (see registry.Registration)."""
    name = args.name or f"server-{pcbook.port}"
    key = f"{args.registry.prefix}/{name}"
    endpoint = args.endpoint
    if not endpoint.loopback:
        log(f"advertising {endpoint}, outside loopback (--allow-remote)")
    registration = Registration(Etcd(args.registry), key, str(endpoint), ttl=args.register_ttl, log=log)
    try:
        lease = registration.start()
    except RegistryError as e:
        pcbook.stop(0)
        fatal(f"cannot register in {args.registry}: {e}")
    log(f"registered {key} = {endpoint} in {args.registry} (lease {lease.id:x}, TTL {lease.ttl} s)")
    return registration


def _deregister(registration: Registration, pcbook: PcbookServer, drain: float) -> None:
    """Leave the registry first, then keep answering for `drain` s: a client that picked this server
    before it saw the removal still gets its answer. Health turns NOT_SERVING for health-checking clients."""
    try:
        registration.close()
        log(f"deregistered {registration.key} (lease revoked); draining for {drain:g} s")
    except RegistryError as e:
        log(f"cannot revoke the lease ({e}); the key goes when its TTL runs out; draining for {drain:g} s")
    pcbook.set_serving(False)
    time.sleep(drain)  # the drain period is the server's policy, not a wait for an event


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log(f"start server on port {args.port}, TLS = {str(args.tls).lower()}")
    try:
        secret, is_default = auth.secret_from_env()
    except auth.WeakSecretError as e:
        fatal(str(e))
    if not is_default:
        log(f"using the JWT secret from {auth.SECRET_ENV}")
    if auth.is_weak(secret):
        log(f"WARNING: {auth.INSECURE_ENV}=1: signing tokens with a {len(secret.encode())}-byte secret, which "
            "anyone can guess and forge tokens with; only for sharing the Go course's secret on this machine")
    elif not os.environ.get(auth.DEV_SECRET_NOTED_ENV):
        log(f"using the development JWT secret; set {auth.SECRET_ENV} to use your own")

    credentials = None
    if args.tls:
        try:
            credentials = tls.server_credentials(client_auth=args.client_auth)
        except tls.CertificateFileError as e:
            fatal(str(e))
    if port_in_use(args.host, args.port):
        fatal(_busy_port_message(args.port))
    try:
        pcbook = build_server(
            args.port,
            host=args.host,
            credentials=credentials,
            image_dir=args.image_dir,
            workers=args.workers,
            max_streams=args.max_streams,
            work_ms=args.work_ms,
            search_delay_ms=args.search_delay_ms,
            jwt_secret=secret,
            stream_stall=args.stream_stall_seconds,
            max_connection_age=args.max_connection_age,
            max_connection_age_grace=args.max_connection_age_grace,
        )
    except RuntimeError as e:  # lost a race for the port, or an address gRPC cannot use
        fatal(f"cannot listen on {args.host}:{args.port}: {e}; choose another --port")
    except OSError as e:
        fatal(f"cannot create the image folder {args.image_dir}: {e.strerror}")

    # Signal handlers only record the signal; the main loop acts on it (no locks taken in a handler).
    pending: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR1", None), getattr(signal, "SIGUSR2", None)):
        if sig is not None:
            signal.signal(sig, lambda signum, _frame: pending.append(signum))

    pcbook.start()
    mode = ""
    if args.tls:
        mode = ", client certificates required" if args.client_auth == "require" else ", no client certificate"
    log(f"server is listening on {args.host}:{pcbook.port}{mode}; images go to {pcbook.image_store.folder}")
    registration = _register(args, pcbook) if args.register is not None else None
    while True:
        while not pending:
            time.sleep(0.02)  # how soon a signal is acted on; a stop waits for it (0.1 s: 50 ms per stop)
        signum = pending.pop(0)
        name = signal.Signals(signum).name
        if signum == getattr(signal, "SIGUSR1", None):
            pcbook.set_serving(False)
            log(f"health status set to NOT_SERVING ({name})")
        elif signum == getattr(signal, "SIGUSR2", None):
            pcbook.set_serving(True)
            log(f"health status set to SERVING ({name})")
        else:
            log(f"shutting down ({name})")
            if registration is not None:
                _deregister(registration, pcbook, args.drain_seconds)
            pcbook.stop(GRACE_SECONDS)
            log("server stopped")
            return 0


if __name__ == "__main__":
    sys.exit(main())
