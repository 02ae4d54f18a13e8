"""A multi-process gRPC load generator for `make bench` and lesson 10.

One Python process cannot load a gRPC server on its own: the GIL caps a client near one core, about
what one Python server needs. So the load comes from several worker processes, each running asyncio
with grpc.aio and its own channels (its own HTTP/2 connections). The workers are children of a
`procs.Stack` like everything else (they die with the runner), and take commands from the parent over
a `multiprocessing.connection` socket on 127.0.0.1 that each worker opens and announces on stdout.

    python -m pcbook.measure.loadgen    # a worker; started by LoadGenerator, not by hand

A round: every worker runs its share of the concurrency against one target for warm-up + window
seconds; calls that complete inside the window are counted and their latencies kept. The parent
samples the CPU time of the workers and of the processes it is told to watch (servers, nginx) around
the round, so the report can say whether the load generator kept up.
"""

from __future__ import annotations

import array
import asyncio
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

import grpc

from pcbook.service.channels import service_config, target_host
from pcbook.stack import procs

KEY_ENV = "PCBOOK_LOADGEN_KEY"
READY = "loadgen listening on"
CALL_TIMEOUT = 5.0  # per call; a hung call must not hang a round
LOGIN = ("admin1", "secret")  # the seeded admin: CreateLaptop needs the admin role
QUIT_GRACE = 2.0  # seconds a worker gets to exit by itself after "quit"
KIND = "python-grpcio-aio"  # what the report names as the load generator


@dataclass(frozen=True)
class Target:
    """Where a round sends its calls: one address, an nginx port, or a multi-address target."""

    name: str
    address: str  # "127.0.0.1:8101", "ipv4:127.0.0.1:50101,127.0.0.1:50102" or "xds:///pcbook"
    tls: bool = False  # mutual TLS with the workbook's client certificate
    lb_policy: str | None = None  # "round_robin" for client-side balancing


@dataclass
class Round:
    """What one round measured, all workers merged."""

    target: str
    concurrency: int
    window: float  # seconds over which calls were counted
    latencies_ns: list[int]
    errors: int = 0
    first_error: str = ""
    cpu: dict[str, float] = field(default_factory=dict)  # role -> cores used during the round
    completed: int = 0  # every call that succeeded in the round, warm-up and stragglers included
    machine_busy: float | None = None  # cores busy machine-wide during the round (/proc/stat), anyone's

    @property
    def calls(self) -> int:
        return len(self.latencies_ns)

    @property
    def throughput(self) -> float:
        return self.calls / self.window if self.window > 0 else 0.0

    @property
    def mean_latency_s(self) -> float:
        return sum(self.latencies_ns) / len(self.latencies_ns) / 1e9 if self.latencies_ns else 0.0


class LoadGenError(RuntimeError):
    """A worker failed to start, to connect to a target, or to answer in time."""


# --- CPU accounting -----------------------------------------------------------------------------------

def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of `pid` and its children (nginx's workers), or None if unknown."""
    import psutil  # here, not at the top: ~11 ms that only the rounds measuring CPU need

    try:
        root = psutil.Process(pid)
        total = 0.0
        for proc in [root, *root.children(recursive=True)]:
            times = proc.cpu_times()
            total += times.user + times.system
        return total
    except psutil.Error:
        return None


def machine_busy_seconds() -> float | None:
    """CPU seconds every core has spent busy since boot, all processes (Linux /proc/stat), or None."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    ticks = [int(x) for x in fields[:8]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Cores used by groups of processes between start() and stop()."""

    def __init__(self, groups: Mapping[str, Sequence[int]]) -> None:
        self.groups = {role: list(pids) for role, pids in groups.items()}
        self._t0 = 0.0
        self._before: dict[str, float | None] = {}
        self._machine: float | None = None
        self.machine_busy: float | None = None  # cores busy machine-wide between start() and stop()

    def _sample(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for role, pids in self.groups.items():
            values = [_cpu_seconds(pid) for pid in pids]
            out[role] = None if any(v is None for v in values) else sum(v for v in values if v is not None)
        return out

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._before = self._sample()
        self._machine = machine_busy_seconds()

    def stop(self) -> dict[str, float]:
        elapsed = time.monotonic() - self._t0
        after = self._sample()
        machine = machine_busy_seconds()
        if self._machine is not None and machine is not None and elapsed > 0:
            self.machine_busy = (machine - self._machine) / elapsed
        cores: dict[str, float] = {}
        for role, before in self._before.items():
            now = after.get(role)
            if before is not None and now is not None and elapsed > 0:
                cores[role] = (now - before) / elapsed
        return cores


# --- the parent side ----------------------------------------------------------------------------------

class LoadGenerator:
    """`processes` worker processes in `stack`, named loadgen1, loadgen2, ..."""

    def __init__(self, stack: procs.Stack, processes: int = 2, *, ready_timeout: float = 20.0,
                 env: Mapping[str, str] | None = None) -> None:
        """`env`: more environment for the workers (GRPC_XDS_BOOTSTRAP for an xds:/// target)."""
        self.stack = stack
        self.processes = processes
        self._key = secrets.token_hex(16)
        self._conns: list[Connection] = []
        self.names = [f"loadgen{i + 1}" for i in range(processes)]
        self._completed: dict[str, int] = {}  # target -> calls that succeeded, since open()
        mark = stack.mark()
        argv = [sys.executable, "-u", "-m", "pcbook.measure.loadgen"]
        for name in self.names:
            stack.start(name, argv, env={**(env or {}), KEY_ENV: self._key})
        pattern = re.compile(rf"{READY} (\d+)")
        for name in self.names:
            line = stack.wait_for_line(name, pattern, timeout=ready_timeout, since=mark)
            match = pattern.search(line)
            assert match is not None
            self._conns.append(Client(("127.0.0.1", int(match.group(1))), authkey=self._key.encode()))

    @property
    def pids(self) -> list[int]:
        return [self.stack.proc(name).pid for name in self.names]

    def _ask_all(self, messages: Sequence[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
        for conn, message in zip(self._conns, messages, strict=True):
            conn.send(message)
        replies: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        for name, conn in zip(self.names, self._conns, strict=True):
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise LoadGenError(f"{name} did not answer within {timeout:g} s")
            reply = conn.recv()
            if not reply.get("ok"):
                raise LoadGenError(f"{name}: {reply.get('error', 'failed')}")
            replies.append(reply)
        return replies

    def open(self, targets: Sequence[Target], timeout: float = 20.0) -> None:
        """Every worker opens a channel per target, logs in through it and makes one call."""
        message = {"op": "open", "targets": [asdict(t) for t in targets]}
        self._ask_all([message] * self.processes, timeout)
        for t in targets:  # each worker made one CreateLaptop through the new channel
            self._completed[t.name] = self.processes

    def completed(self, target: str) -> int:
        """Every CreateLaptop that succeeded on `target` since open(): warm-ups, windows, stragglers."""
        return self._completed.get(target, 0)

    def run(self, target: str, *, concurrency: int, window: float, warmup: float = 0.2,
            watch: Mapping[str, Sequence[int]] | None = None) -> Round:
        """One round against `target` with `concurrency` calls in flight in total."""
        shares = [concurrency // self.processes + (1 if i < concurrency % self.processes else 0)
                  for i in range(self.processes)]
        messages = [{"op": "run", "target": target, "concurrency": share, "warmup": warmup, "window": window}
                    for share in shares]
        meter = CpuMeter({"loadgen": self.pids, **(watch or {})})
        meter.start()
        replies = self._ask_all(messages, timeout=warmup + window + CALL_TIMEOUT + 10)
        cpu = meter.stop()
        merged = Round(target, concurrency, window, [], cpu=cpu, machine_busy=meter.machine_busy)
        for reply in replies:
            merged.latencies_ns.extend(array.array("q", reply["latencies"]))
            merged.errors += reply["errors"]
            merged.first_error = merged.first_error or reply["first_error"]
            merged.completed += reply["completed"]
        self._completed[target] = self._completed.get(target, 0) + merged.completed
        return merged

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send({"op": "quit"})
                conn.close()
            except OSError:
                pass
        self._conns.clear()
        for name in self.names:
            proc = self.stack.proc(name)
            try:
                proc.wait(QUIT_GRACE)  # told to quit: let it close its channels and exit 0
            except subprocess.TimeoutExpired:
                pass
            self.stack.stop(name)


# --- the worker side ----------------------------------------------------------------------------------

def _options(target: Target) -> list[tuple[str, Any]]:
    # A private subchannel pool: "direct" and the round-robin target both reach 50101, and must not
    # share one HTTP/2 connection through gRPC's process-wide pool.
    options: list[tuple[str, Any]] = [("grpc.use_local_subchannel_pool", 1)]
    config = service_config(target.lb_policy)
    if config is not None:
        options.append(("grpc.service_config", config))
    if target.tls and ("," in target.address or target.address.startswith(("ipv4:", "ipv6:"))):
        options.append(("grpc.ssl_target_name_override", target_host(target.address)))
    return options


class _Worker:
    def __init__(self) -> None:
        from pcbook.pb import laptop_message_pb2, laptop_service_pb2

        self.channels: dict[str, grpc.aio.Channel] = {}
        self.calls: dict[str, Any] = {}
        self.metadata: dict[str, tuple[tuple[str, str], ...]] = {}
        # A small request: an empty ID makes the server assign one, so the same request works every time.
        self.request = laptop_service_pb2.CreateLaptopRequest(
            laptop=laptop_message_pb2.Laptop(brand="Lenovo", name="Thinkpad X1", price_usd=1999))

    async def open(self, targets: list[dict[str, Any]]) -> None:
        from pcbook.pb import auth_service_pb2, auth_service_pb2_grpc, laptop_service_pb2_grpc
        from pcbook.service import tls

        for spec in targets:
            target = Target(**spec)
            if target.name in self.channels:
                await self.channels.pop(target.name).close()
            options = _options(target)
            channel = (grpc.aio.secure_channel(target.address, tls.client_credentials(), options=options)
                       if target.tls else grpc.aio.insecure_channel(target.address, options=options))
            self.channels[target.name] = channel
            login = auth_service_pb2_grpc.AuthServiceStub(channel).Login
            reply = await login(auth_service_pb2.LoginRequest(username=LOGIN[0], password=LOGIN[1]),
                                timeout=CALL_TIMEOUT, wait_for_ready=True)
            self.metadata[target.name] = (("authorization", reply.access_token),)
            self.calls[target.name] = laptop_service_pb2_grpc.LaptopServiceStub(channel).CreateLaptop
            await self.calls[target.name](self.request, metadata=self.metadata[target.name], timeout=CALL_TIMEOUT)

    async def run(self, target: str, concurrency: int, warmup: float, window: float) -> dict[str, Any]:
        call, metadata, request = self.calls[target], self.metadata[target], self.request
        start = time.perf_counter_ns() + int(warmup * 1e9)
        end = start + int(window * 1e9)
        latencies = array.array("q")
        errors = 0
        completed = 0
        first_error = ""

        async def one_stream() -> None:
            nonlocal errors, first_error, completed
            while (t0 := time.perf_counter_ns()) < end:
                try:
                    await call(request, metadata=metadata, timeout=CALL_TIMEOUT)
                    failed = None
                except grpc.aio.AioRpcError as exc:
                    failed = f"{exc.code().name}: {exc.details()}"
                t1 = time.perf_counter_ns()
                completed += failed is None
                if start <= t1 < end:  # completed inside the window
                    if failed is None:
                        latencies.append(t1 - t0)
                    else:
                        errors += 1
                        first_error = first_error or failed

        await asyncio.gather(*(one_stream() for _ in range(concurrency)))
        return {"latencies": latencies.tobytes(), "errors": errors, "first_error": first_error,
                "completed": completed}

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()


async def _serve(conn: Connection) -> None:
    worker = _Worker()
    loop = asyncio.get_running_loop()
    try:
        while True:
            try:
                message = await loop.run_in_executor(None, conn.recv)
            except EOFError:  # the parent went away
                return
            op = message["op"]
            if op == "quit":
                return
            try:
                if op == "open":
                    await worker.open(message["targets"])
                    conn.send({"ok": True})
                elif op == "run":
                    result = await worker.run(message["target"], message["concurrency"], message["warmup"],
                                              message["window"])
                    conn.send({"ok": True, **result})
                else:
                    conn.send({"ok": False, "error": f"unknown op {op!r}"})
            except grpc.aio.AioRpcError as exc:
                conn.send({"ok": False, "error": f"{op}: {exc.code().name}: {exc.details()}"})
    finally:
        await worker.close()


def main() -> int:
    key = os.environ.get(KEY_ENV)
    if not key:
        print(f"{KEY_ENV} is not set: this is a worker that LoadGenerator starts", file=sys.stderr)
        return 2
    with Listener(("127.0.0.1", 0), authkey=key.encode()) as listener:
        print(f"{READY} {listener.address[1]}", flush=True)
        conn = listener.accept()
    with conn:
        asyncio.run(_serve(conn))
    return 0


if __name__ == "__main__":
    sys.exit(main())
