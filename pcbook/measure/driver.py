"""A small load driver: N CreateLaptop calls, at a rate and a concurrency, with each call's status.

    python -m pcbook.measure.driver --address ipv4:127.0.0.1:50071,127.0.0.1:50072 --lb-policy round_robin \\
        --calls 40 --rate 50 --concurrency 4 --json .run/calls.json

The tutorial's client stops at the first failed call; lessons 7 and 8 need to see every call: which
ones failed, with which status, and when. Each call carries its number in the `x-call-id` header (nginx
can log it) and a fresh laptop id (the servers log it), so a call can be followed through every log.

The driver prints a line per failed call, a progress line every ``--progress-every`` finished calls
(`20 calls done: 19 OK, 1 UNAVAILABLE`; the lessons wait on these lines: pcbook/workbook/runner.py
starts the driver for them) and a summary. ``--json``
writes every call's record, read back by `read_report()`. Whole lines, not rich or a `\\r` line: its
stdout is a pipe read line by line, where rich shows only the end state and a `\\r` line arrives whole
at its end (measured), and the lessons time events by these lines.

``--compare NAME=TARGET`` (repeated) measures latency instead: the same small unary call on each
target in turn (interleaved, so a busy machine slows every path alike), warm-up calls first.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc

from pcbook.pb import laptop_service_pb2 as pb
from pcbook.pb import laptop_service_pb2_grpc as pb_grpc
from pcbook.service import sample
from pcbook.service.channels import LB_POLICIES, STATUS_CODES, ServiceConfigError, load_service_config, make_channel
from pcbook.service.interceptors import AuthClientInterceptor
from pcbook.service.laptop_client import AuthClient, TokenRefresher
from pcbook.service.registry import RegistryError, parse_url
from pcbook.service.thick import DiscoveredChannel

CALL_ID_HEADER = "x-call-id"
DEFAULT_TIMEOUT = 5.0
# Separate channels must not share one TCP connection (gRPC pools subchannels process-wide).
_OWN_CONNECTION = ("grpc.use_local_subchannel_pool", 1)


@dataclass
class Call:
    """One CreateLaptop call as the client saw it."""

    number: int  # 1-based, in the order the calls were started
    laptop_id: str
    t0: float  # time.time() when it was sent
    t1: float  # time.time() when its status arrived
    code: str  # grpc.StatusCode name: OK, UNAVAILABLE, ...
    details: str = ""
    channel: int = 0

    @property
    def ok(self) -> bool:
        return self.code == "OK"

    @property
    def ms(self) -> float:
        return (self.t1 - self.t0) * 1000


@dataclass
class Report:
    """What a run of the driver saw: every call, and latency per target for --compare."""

    calls: list[Call] = field(default_factory=list)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    login_error: str = ""  # the first Login failed (and no call was sent): its status and details
    login_s: float = 0.0  # how long the first Login took, until its answer or its failure
    samples_ms: dict[str, list[float]] = field(default_factory=dict)  # --compare: every measured call, in order

    def codes(self) -> Counter[str]:
        return Counter(c.code for c in self.calls)

    def failed(self) -> list[Call]:
        return [c for c in self.calls if not c.ok]


def read_report(path: Path) -> Report:
    raw = json.loads(Path(path).read_text())
    return Report([Call(**c) for c in raw["calls"]], raw.get("latency_ms", {}), raw.get("login_error", ""),
                  raw.get("login_s", 0.0), raw.get("samples_ms", {}))


def write_report(report: Report, path: Path) -> None:
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps({"calls": [asdict(c) for c in report.calls], "latency_ms": report.latency_ms,
                               "login_error": report.login_error, "login_s": report.login_s,
                               "samples_ms": report.samples_ms}))
    tmp.replace(path)  # the reader never sees half a file


def summarize(codes: Counter[str]) -> str:
    parts = [f"{codes['OK']} OK"] if codes.get("OK") else []
    parts += [f"{n} {code}" for code, n in sorted(codes.items()) if code != "OK"]
    return ", ".join(parts) or "none"


# -- connections ------------------------------------------------------------------------------------


class Laptops:
    """A logged-in channel for CreateLaptop calls (the tutorial client's wiring, with extra options)."""

    def __init__(self, address: str, *, tls_enabled: bool = False, lb_policy: str | None = None,
                 health_check: bool = False, own_connection: bool = False, login_optional: bool = False,
                 discover: str | None = None, retry: Sequence[str] = (), wait_for_ready: bool = False,
                 timeout: float = DEFAULT_TIMEOUT, config_json: str | None = None) -> None:
        """`discover` (etcd://...): ignore `address`, call the servers registered there (thick.DiscoveredChannel).
        `retry` (status code names), `wait_for_ready`: the channels' service config (channels.service_config);
        `timeout`: the Login's deadline too. `config_json`: the CreateLaptop channel's whole service config
        (a learner's file) instead of `lb_policy` and `health_check`."""
        options = [_OWN_CONNECTION] if own_connection else []
        policy = {"retry": retry, "wait_for_ready": wait_for_ready}
        self._discovered: DiscoveredChannel | None = None
        if discover is not None:
            self._discovered = DiscoveredChannel(discover, log=lambda line: print(line, flush=True), factory=(
                lambda target: make_channel(target, tls_enabled=tls_enabled, lb_policy="round_robin",
                                            health_check=health_check, options=options, **policy)))
        self._auth_channel = self._discovered or make_channel(address, tls_enabled=tls_enabled, options=options,
                                                              **policy)
        self._refresher = TokenRefresher(AuthClient(self._auth_channel, "admin1", "secret", timeout), quiet=True)
        try:
            self._refresher.start()
        except grpc.RpcError as err:
            if not login_optional:
                raise
            # Go on without a token: the calls show what the proxy answers when no backend is there.
            print(f"cannot log in ({err.code().name}: {err.details()}); sending the calls without a token",
                  flush=True)
        base = self._discovered or make_channel(address, tls_enabled=tls_enabled, lb_policy=lb_policy,
                                                health_check=health_check, options=options,
                                                config_json=config_json, **policy)
        self._channel = grpc.intercept_channel(base, AuthClientInterceptor(lambda: self._refresher.token,
                                                                           log_calls=False))
        self._stub = pb_grpc.LaptopServiceStub(self._channel)

    def create(self, number: int, timeout: float = DEFAULT_TIMEOUT, channel: int = 0) -> Call:
        laptop = sample.new_laptop()
        t0 = time.time()
        try:
            self._stub.CreateLaptop(pb.CreateLaptopRequest(laptop=laptop), timeout=timeout,
                                    metadata=[(CALL_ID_HEADER, str(number))])
            code, details = "OK", ""
        except grpc.RpcError as err:
            code = err.code().name if err.code() is not None else "UNKNOWN"
            details = err.details() or ""
        return Call(number, laptop.id, t0, time.time(), code, details, channel)

    def close(self) -> None:
        self._refresher.stop()
        self._channel.close()
        if self._discovered is None:
            self._auth_channel.close()


# -- the two modes ----------------------------------------------------------------------------------


def run_calls(conns: Sequence[Laptops], calls: int, *, rate: float = 0.0, concurrency: int = 1,
              timeout: float = DEFAULT_TIMEOUT, progress_every: int = 10,
              stop: threading.Event | None = None) -> Report:
    """Send `calls` CreateLaptop calls over `conns` in turn, at most `concurrency` at a time, started
    `rate` per second (0: as fast as the concurrency allows). Once `stop` is set no call is started;
    the calls in flight finish and are reported."""
    report = Report()
    lock = threading.Lock()
    done: Counter[str] = Counter()

    def one(number: int) -> None:
        call = conns[number % len(conns)].create(number, timeout, number % len(conns))
        with lock:
            report.calls.append(call)
            done[call.code] += 1
            if not call.ok:
                print(f"call {number}: {call.code} after {call.ms:.1f} ms: {call.details}", flush=True)
            finished = sum(done.values())
            if progress_every and finished % progress_every == 0:
                print(f"{finished} calls done: {summarize(done)}", flush=True)

    start = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="load")
    for number in range(1, calls + 1):
        if rate > 0:  # pacing: call n leaves at start + (n-1)/rate
            delay = start + (number - 1) / rate - time.monotonic()
            if delay > 0 and stop is not None:
                stop.wait(delay)
            elif delay > 0:
                time.sleep(delay)
        if stop is not None and stop.is_set():
            break
        pool.submit(one, number)
    # Paced calls queue behind busy workers (the pool's queue has no bound); once stopped, the queued ones
    # are dropped and only the calls in flight finish: a stop used to wait for every queued call.
    pool.shutdown(wait=True, cancel_futures=stop is not None and stop.is_set())
    report.calls.sort(key=lambda c: c.number)
    return report


def run_compare(targets: Sequence[tuple[str, Laptops]], calls: int, warmup: int,
                timeout: float = DEFAULT_TIMEOUT, run_length: int = 1) -> Report:
    """Latency of one CreateLaptop on each target, interleaved; median, p90 and mean in ms.

    Each turn visits the targets in an order rotated by the turn, so that no target always follows the
    same other; at each visit a target makes `run_length` calls in a row (1: call by call). Runs longer
    than 1 keep a target's calls on the same servers back to back, as a round of `make bench` does: call
    by call, every call follows another target's, and may be the first on its server for a while."""
    samples: dict[str, list[float]] = {name: [] for name, _ in targets}
    report = Report()
    total = warmup + calls
    for turn, first in enumerate(range(1, total + 1, run_length)):
        shift = (turn + 1) % len(targets)  # with run_length 1: call n rotated by n
        for name, conn in [*targets[shift:], *targets[:shift]]:
            for number in range(first, min(first + run_length, total + 1)):
                call = conn.create(number, timeout)
                if not call.ok:
                    raise SystemExit(f"{name}: call {number} failed: {call.code}: {call.details}")
                if number > warmup:
                    samples[name].append(call.ms)
    report.samples_ms = {name: list(values) for name, values in samples.items()}  # call i of each: same moment
    for name, values in samples.items():
        values.sort()
        report.latency_ms[name] = {
            "median": statistics.median(values),
            "p90": values[min(len(values) - 1, int(0.9 * len(values)))],
            "mean": statistics.fmean(values),
        }
    return report


# -- command line -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pcbook.measure.driver", description=__doc__.split("\n\n")[1].strip())
    p.add_argument("--address", help="target: host:port or ipv4:host:port,host:port")
    p.add_argument("--discover", metavar="etcd://HOST:PORT[/prefix]", default=None,
                   help="call the servers registered there, round robin over the live set (instead of --address)")
    p.add_argument("--tls", action="store_true", help="mutual TLS, like the tutorial's client")
    p.add_argument("--lb-policy", choices=LB_POLICIES, default=None, help="client-side load balancing")
    p.add_argument("--health-check", action="store_true", help="client-side health checking")
    p.add_argument("--service-config", metavar="FILE", default=None,
                   help="the CreateLaptop channel's service config, a JSON file (// lines are comments), instead"
                        " of --lb-policy and --health-check")
    p.add_argument("--calls", type=int, default=20, help="how many CreateLaptop calls")
    p.add_argument("--rate", type=float, default=0.0, help="calls started per second (0: no pacing)")
    p.add_argument("--concurrency", type=int, default=1, help="calls in flight at most")
    p.add_argument("--channels", type=int, default=1, help="client connections, each its own TCP connection")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="per-call deadline (the Login's too), s")
    p.add_argument("--retry", default="", metavar="CODE[,CODE]",
                   help="the service config's retryPolicy: retry calls that fail with these status codes"
                        " (e.g. UNAVAILABLE), up to 4 attempts")
    p.add_argument("--wait-for-ready", action="store_true",
                   help="every call waits for a connection until its deadline instead of failing at once")
    p.add_argument("--login-optional", action="store_true",
                   help="send the calls even if Login fails (to see what a proxy answers with no backend)")
    p.add_argument("--progress-every", type=int, default=10, help="a progress line every N calls (0: none)")
    p.add_argument("--compare", action="append", default=[], metavar="NAME=[POLICY@]TARGET",
                   help="measure latency on this target instead (repeat it); POLICY: pick_first|round_robin;"
                        " an etcd://HOST:PORT/prefix target discovers the servers there (as --discover)")
    p.add_argument("--warmup", type=int, default=20, help="with --compare: calls per target not measured")
    p.add_argument("--run-length", type=int, default=1,
                   help="with --compare: calls in a row on one target before the next (default 1: call by call)")
    p.add_argument("--json", type=Path, default=None, help="write every call's record to this file")
    args = p.parse_args(argv)
    if not args.compare and not args.address and not args.discover:
        p.error("give --address or --discover, or --compare NAME=TARGET")
    if args.discover is not None:
        if args.address or args.compare or args.lb_policy:
            p.error("--discover replaces --address, --compare and --lb-policy (it always balances round robin)")
        try:
            parse_url(args.discover)
        except ValueError as err:
            p.error(f"--discover: {err}")
    args.config_json = None
    if args.service_config is not None:
        if args.lb_policy or args.health_check or args.retry or args.wait_for_ready or args.discover or args.compare:
            p.error("--service-config is the whole service config: give no --lb-policy, --health-check, --retry, "
                    "--wait-for-ready, --discover or --compare with it")
        try:
            args.config_json = load_service_config(args.service_config)
        except ServiceConfigError as err:
            p.error(f"--service-config: {err}")
    args.retry = tuple(code.strip().upper() for code in args.retry.split(",") if code.strip())
    unknown = [code for code in args.retry if code not in STATUS_CODES]
    if unknown:
        p.error(f"--retry: {', '.join(unknown)} is not a status code; choose from {', '.join(STATUS_CODES)}")
    if args.calls < 1 or args.concurrency < 1 or args.channels < 1 or args.rate < 0 or args.warmup < 0:
        p.error("--calls, --concurrency and --channels must be at least 1; --rate and --warmup not negative")
    return args


def _parse_target(spec: str) -> tuple[str, str | None, str]:
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise SystemExit(f"--compare {spec!r}: expected NAME=[POLICY@]TARGET")
    policy, at, target = rest.partition("@")
    if not at:
        return name, None, rest
    if policy not in LB_POLICIES:
        raise SystemExit(f"--compare {spec!r}: the policy must be one of {', '.join(LB_POLICIES)}")
    return name, policy, target


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    conns: list[Laptops] = []
    login_from = time.time()
    try:
        if args.compare:
            targets = []
            for spec in args.compare:
                name, policy, target = _parse_target(spec)
                discover = target if target.startswith("etcd://") else None  # the thick client of lesson 11
                conns.append(Laptops(target, tls_enabled=args.tls, lb_policy=policy, discover=discover))
                targets.append((name, conns[-1]))
            print(f"measuring {args.calls} calls per target after {args.warmup} warm-up calls: "
                  + ", ".join(args.compare), flush=True)
            report = run_compare(targets, args.calls, args.warmup, args.timeout, max(1, args.run_length))
            for name, stats in report.latency_ms.items():
                print(f"{name:<12} median {stats['median']:6.2f} ms   p90 {stats['p90']:6.2f} ms   "
                      f"mean {stats['mean']:6.2f} ms", flush=True)
        else:
            if args.wait_for_ready:  # the Login waits too: this line says the driver is up and waiting
                print(f"logging in to {args.address or args.discover}, waiting for a connection (wait for ready, "
                      f"deadline {args.timeout:g} s)", flush=True)
            for _ in range(args.channels):
                conns.append(Laptops(args.address, tls_enabled=args.tls, lb_policy=args.lb_policy,
                                     health_check=args.health_check, own_connection=args.channels > 1,
                                     login_optional=args.login_optional, discover=args.discover,
                                     retry=args.retry, wait_for_ready=args.wait_for_ready, timeout=args.timeout,
                                     config_json=args.config_json))
            logged_in = time.time() - login_from
            pacing = f", {args.rate:g}/s" if args.rate else ""
            print(f"sending {args.calls} CreateLaptop calls to {args.address or args.discover} over {args.channels} "
                  f"connection(s), {args.concurrency} at a time{pacing}", flush=True)
            # SIGTERM/SIGINT: stop sending, let the calls in flight finish, report what was sent.
            stop = threading.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda _signum, _frame: stop.set())
            report = run_calls(conns, args.calls, rate=args.rate, concurrency=args.concurrency,
                               timeout=args.timeout, progress_every=args.progress_every, stop=stop)
            report.login_s = round(logged_in, 4)
            if stop.is_set():
                print(f"stopped after {len(report.calls)} calls (signal)", flush=True)
            print(f"done: {len(report.calls)} calls: {summarize(report.codes())}", flush=True)
    except RegistryError as err:
        print(f"cannot read the registry: {err}", file=sys.stderr, flush=True)
        return 2
    except grpc.RpcError as err:  # the first Login failed: no call was sent
        report = Report(login_error=f"{err.code().name}: {err.details()}", login_s=round(time.time() - login_from, 4))
        print(f"cannot log in: {report.login_error}", file=sys.stderr, flush=True)
    finally:
        for conn in conns:
            conn.close()
    if args.json is not None:
        write_report(report, args.json)
    return 2 if report.login_error else 0


if __name__ == "__main__":
    sys.exit(main())
