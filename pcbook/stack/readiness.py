"""Wait until a process is ready: a port accepts connections, a gRPC health check says SERVING.

Every wait has a deadline and polls with short pauses; there are no fixed sleeps. When the process
being waited for is passed in (a `procs.Proc`), the wait stops as soon as that process exits and
the error reports its exit code and last lines instead of waiting out the deadline.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from typing import Any, Protocol

import grpc

_POLL = 0.05  # pause between two attempts
_TAIL = 15  # lines of a dead process's output quoted in errors


class Watched(Protocol):
    """What the waits need from a process (procs.Proc implements it)."""

    name: str

    def poll(self) -> int | None: ...

    def tail(self, n: int = ...) -> list[str]: ...


class NotReadyError(RuntimeError):
    """A process did not become ready: it exited early, or the deadline passed."""

    def __init__(self, message: str, *, name: str | None = None, returncode: int | None = None,
                 tail: Sequence[str] = ()):
        self.name = name
        self.returncode = returncode
        self.tail = list(tail)
        if self.tail:
            prefix = f"{name} | " if name else "| "
            message += "\nits last lines:\n" + "\n".join(f"  {prefix}{line}" for line in self.tail)
        elif name is not None and returncode is not None:
            message += " (it printed nothing)"
        super().__init__(message)


def describe_exit(returncode: int) -> str:
    """'exited with code 1' or 'was killed by SIGKILL' (Popen reports signals as negative codes)."""
    if returncode < 0:
        import signal

        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def check_alive(proc: Watched | None, waiting_for: str) -> None:
    """Raise NotReadyError now if `proc` has already exited."""
    if proc is None:
        return
    code = proc.poll()
    if code is not None:
        raise NotReadyError(f"{proc.name} {describe_exit(code)} before {waiting_for}",
                            name=proc.name, returncode=code, tail=proc.tail(_TAIL))


def _timed_out(proc: Watched | None, name: str | None, timeout: float, detail: str) -> NotReadyError:
    label = proc.name if proc is not None else name
    who = f"{label} is not ready" if label else "not ready"
    return NotReadyError(f"{who} after {timeout:g} s: {detail}", name=label,
                         tail=proc.tail(_TAIL) if proc is not None else ())


def wait_port(host: str, port: int, timeout: float = 10, *, proc: Watched | None = None,
              name: str | None = None) -> None:
    """Return once `host:port` accepts a TCP connection; raise NotReadyError otherwise."""
    deadline = time.monotonic() + timeout
    waiting_for = f"port {port} accepted connections"
    last = "nothing tried"
    while True:
        check_alive(proc, waiting_for)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timed_out(proc, name, timeout, f"{host}:{port} does not accept connections ({last})")
        try:
            with socket.create_connection((host, port), timeout=min(0.5, remaining)):
                return
        except OSError as exc:
            last = exc.strerror or type(exc).__name__
        time.sleep(min(_POLL, max(0.0, deadline - time.monotonic())))


# Reconnect quickly: the default backoff (1 s, growing) would make every wait last a second or more.
_FAST_RECONNECT = {
    "grpc.initial_reconnect_backoff_ms": 50,
    "grpc.min_reconnect_backoff_ms": 50,
    "grpc.max_reconnect_backoff_ms": 250,
}


def wait_grpc_health(address: str, *, credentials: grpc.ChannelCredentials | None = None,
                     options: Sequence[tuple[str, Any]] = (), timeout: float = 10, service: str = "",
                     proc: Watched | None = None, name: str | None = None) -> None:
    """Return once grpc.health.v1 Check on `address` answers SERVING for `service`.

    `credentials` makes it a TLS channel (and `options` can carry e.g. grpc.ssl_target_name_override).
    Calls do not use wait_for_ready, so a TLS mismatch shows up as the last error, not as a bare timeout.
    """
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    merged = {**_FAST_RECONNECT, **dict(options)}
    channel = (grpc.secure_channel(address, credentials, options=list(merged.items())) if credentials
               else grpc.insecure_channel(address, options=list(merged.items())))
    deadline = time.monotonic() + timeout
    waiting_for = f"its health check on {address} answered SERVING"
    last = "nothing tried"
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        while True:
            check_alive(proc, waiting_for)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _timed_out(proc, name, timeout, f"health check on {address}: {last}")
            try:
                reply = stub.Check(request, timeout=min(1.0, remaining))
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = f"status {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details()
                if code == grpc.StatusCode.UNIMPLEMENTED:
                    label = proc.name if proc is not None else (name or address)
                    raise NotReadyError(f"{label} does not offer grpc.health.v1 on {address}"
                                        " (UNIMPLEMENTED); wait on its port instead", name=label) from None
                last = f"{code.name}: {details}"
            time.sleep(min(_POLL, max(0.0, deadline - time.monotonic())))
    finally:
        channel.close()


def wait_http(url: str, *, expect: str = "", timeout: float = 10, proc: Watched | None = None,
              name: str | None = None) -> str:
    """Return the body of GET `url` once it answers 200 (and contains `expect`); raise NotReadyError otherwise."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    waiting_for = f"{url} answered"
    last = "nothing tried"
    while True:
        check_alive(proc, waiting_for)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timed_out(proc, name, timeout, f"GET {url}: {last}")
        try:
            with urllib.request.urlopen(url, timeout=min(1.0, remaining)) as reply:
                body = reply.read().decode("utf-8", "replace")
            if expect in body:
                return body
            last = f"answered {body.strip()[:80]!r}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            last = getattr(reason, "strerror", None) or str(reason) or type(exc).__name__
        time.sleep(min(_POLL, max(0.0, deadline - time.monotonic())))
