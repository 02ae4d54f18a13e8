"""How many calls per second one pcbook server answers on one CPU core: CreateLaptop and health Check.

    python -m pcbook.measure.capacity                     # this checkout's server, pinned to core 0
    python -m pcbook.measure.capacity --server-root DIR   # another checkout's server (a before/after)

The server runs under `taskset -c CORE` (when taskset exists and the machine has more than one core),
its log lines go to a file (through a pipe they would cost this process more than the calls cost the
server). The load comes from `--clients` processes pinned to the other cores, each with grpc.aio and
`--concurrency` calls in flight; a round counts the calls completed in `--seconds` after a warm-up.
Two numbers per round: calls per second of wall-clock time, and calls per CPU-second the server
used (its user + system time from /proc). On a quiet machine with the server's core saturated they
agree; on a busy one the first drops with every process competing for the core, while the second is
what the server can do per core it gets, so it compares two servers fairly. The best of `--rounds`
rounds is reported per method (noise only lowers a round), with every round shown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pcbook import paths
from pcbook.stack import procs

METHODS = ("create", "health")
CALL_TIMEOUT = 5.0
WARMUP = 0.5


@dataclass(frozen=True)
class Measured:
    method: str
    rounds: list[float]  # calls/s of each round
    per_cpu: list[float]  # calls per CPU-second of the server, each round

    @property
    def best(self) -> float:
        return max(self.rounds)

    @property
    def best_per_cpu(self) -> float:
        return max(self.per_cpu)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pin(cores: str | None, argv: list[str]) -> list[str]:
    taskset = shutil.which("taskset")
    if cores is None or taskset is None:
        return argv
    return [taskset, "-c", cores, *argv]


def _other_cores(core: int) -> str | None:
    others = sorted(os.sched_getaffinity(0) - {core}) if hasattr(os, "sched_getaffinity") else []
    return ",".join(map(str, others)) or None


def measure(root: Path, *, methods: tuple[str, ...] = METHODS, seconds: float = 3.0, rounds: int = 3,
            clients: int = 2, concurrency: int = 32, core: int = 0,
            server_args: tuple[str, ...] = ()) -> list[Measured]:
    """Start the server of checkout `root` on `core`, drive it, return calls/s per method and round."""
    port = procs.pick_free_port()
    pinned = (os.cpu_count() or 1) > 1
    server_core = str(core) if pinned else None
    client_cores = _other_cores(core) if pinned else None
    with tempfile.TemporaryDirectory(prefix="pcbook-capacity-") as tmp, procs.Stack(echo=None) as stack:
        log = Path(tmp) / "server.log"
        env = {"PYTHONPATH": str(root)}
        server = [sys.executable, "-u", "-m", "pcbook.server", "--port", str(port), "--host", "127.0.0.1",
                  *server_args]
        stack.start("server", _pin(server_core, ["/bin/sh", "-c", f'exec "$@" >> "{log}"', "sh", *server]),
                    env=env, cwd=root)
        stack.wait_ready("server", port=port, health=f"127.0.0.1:{port}", timeout=20)
        pid = stack.proc("server").pid
        results = []
        for method in methods:
            per_round, per_cpu = [], []
            for n in range(rounds):
                names = [f"client-{method}-{n}-{i}" for i in range(clients)]
                for name in names:
                    argv = [sys.executable, "-u", "-m", "pcbook.measure.capacity", "--drive", f"127.0.0.1:{port}",
                            "--method", method, "--seconds", str(seconds), "--concurrency", str(concurrency)]
                    stack.start(name, _pin(client_cores, argv), env={"PYTHONPATH": str(paths.ROOT)})
                total = 0
                stack.wait_for_line(names[-1], "counting", timeout=30)  # the last client's window opens
                cpu0 = cpu_seconds(pid)
                for name in names:
                    line = stack.wait_for_line(name, re.compile(r"^\{"), timeout=seconds + 30)
                    if name == names[0]:
                        cpu1 = cpu_seconds(pid)
                    reply = json.loads(line)
                    if reply["errors"]:
                        raise RuntimeError(f"{name}: {reply['errors']} failed calls, first: {reply['first_error']}")
                    total += reply["calls"]
                per_round.append(total / seconds)
                per_cpu.append(total / max(cpu1 - cpu0, 1e-9))
            results.append(Measured(method, per_round, per_cpu))
    return results


# --- a client process ---------------------------------------------------------------------------------

async def _drive(address: str, method: str, seconds: float, concurrency: int) -> dict[str, object]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from pcbook.pb import (
        auth_service_pb2,
        auth_service_pb2_grpc,
        laptop_message_pb2,
        laptop_service_pb2,
        laptop_service_pb2_grpc,
    )

    async with grpc.aio.insecure_channel(address) as channel:
        if method == "create":
            login = await auth_service_pb2_grpc.AuthServiceStub(channel).Login(
                auth_service_pb2.LoginRequest(username="admin1", password="secret"), timeout=CALL_TIMEOUT)
            metadata = (("authorization", login.access_token),)
            stub = laptop_service_pb2_grpc.LaptopServiceStub(channel).CreateLaptop
            # An empty id: the server assigns one, so the same request can be sent again and again.
            request = laptop_service_pb2.CreateLaptopRequest(
                laptop=laptop_message_pb2.Laptop(brand="Lenovo", name="Thinkpad X1", price_usd=1999))
        else:
            metadata = ()
            stub = health_pb2_grpc.HealthStub(channel).Check
            request = health_pb2.HealthCheckRequest()
        start = time.monotonic() + WARMUP
        end = start + seconds
        calls = errors = 0
        first_error = ""

        async def loop() -> None:
            nonlocal calls, errors, first_error
            while time.monotonic() < end:
                try:
                    await stub(request, metadata=metadata, timeout=CALL_TIMEOUT)
                    ok = True
                except grpc.aio.AioRpcError as e:
                    ok = False
                    first_error = first_error or f"{e.code().name}: {e.details()}"
                now = time.monotonic()
                if start <= now < end:
                    calls += ok
                    errors += not ok

        async def announce() -> None:
            await asyncio.sleep(start - time.monotonic())
            print("counting", flush=True)

        await asyncio.gather(announce(), *(loop() for _ in range(concurrency)))
    return {"calls": calls, "errors": errors, "first_error": first_error}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pcbook.measure.capacity", description=__doc__.splitlines()[0])
    p.add_argument("--server-root", type=Path, default=paths.ROOT, help="the checkout whose server is measured")
    p.add_argument("--method", choices=METHODS, action="append", help="what to call (default: both)")
    p.add_argument("--seconds", type=float, default=3.0, help="length of a round (default 3)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per method (default 3)")
    p.add_argument("--clients", type=int, default=2, help="client processes (default 2)")
    p.add_argument("--concurrency", type=int, default=32, help="calls in flight per client (default 32)")
    p.add_argument("--core", type=int, default=0, help="the core the server is pinned to (default 0)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--drive", metavar="ADDRESS", help=argparse.SUPPRESS)  # a client process
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1 or args.clients < 1 or args.concurrency < 1:
        p.error("--seconds, --rounds, --clients and --concurrency must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    methods = tuple(args.method or METHODS)
    if args.drive:
        print(json.dumps(asyncio.run(_drive(args.drive, methods[0], args.seconds, args.concurrency))), flush=True)
        return 0
    results = measure(args.server_root.resolve(), methods=methods, seconds=args.seconds, rounds=args.rounds,
                      clients=args.clients, concurrency=args.concurrency, core=args.core)
    if args.json:
        print(json.dumps({r.method: {"best": r.best, "rounds": r.rounds, "best_per_cpu": r.best_per_cpu,
                                     "per_cpu": r.per_cpu} for r in results}))
        return 0
    print(f"server of {args.server_root} on core {args.core}; {args.clients} client process(es) x "
          f"{args.concurrency} calls in flight; best of {args.rounds} x {args.seconds:g} s")
    for r in results:
        shown = ", ".join(f"{v:.0f}" for v in r.rounds)
        cpu = ", ".join(f"{v:.0f}" for v in r.per_cpu)
        print(f"  {r.method:<7} {r.best:8.0f} calls/s (rounds: {shown});"
              f" {r.best_per_cpu:8.0f} calls per server CPU-second (rounds: {cpu})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
