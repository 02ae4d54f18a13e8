"""The thick client of lesson 11: round robin over the servers that etcd lists right now.

Python grpcio has no pluggable name resolver (Go and Java let a client feed addresses into the
channel; Python only knows dns:, ipv4:, ipv6:, unix: and xds:). So `DiscoveredChannel` watches the
registry prefix (registry.Members) and, on every change, builds a new channel on the target
`ipv4:a:1,b:2,...` with the round_robin policy, and swaps it in:

- A call picks the channel that is current when it starts and keeps it to the end; the previous
  channel is closed only once its last call has finished (channel.close() would cancel calls in
  flight). So a change of the set by itself loses no call.
- The new channel shares the old one's connections: grpc keeps subchannels in a process-wide pool
  keyed by address, so the servers that stay are READY at once and only a new server is dialled.
- A server that left gracefully (lease revoked, then it keeps serving for --drain-seconds) gets no
  new call once the DELETE event has arrived (a few ms after the revoke on loopback), and finishes
  the calls it already has: no call lost.
- A SIGKILLed server stays in the registry until its lease expires (the TTL, 3 s by default), but
  round_robin already skips it: its connection breaks, the subchannel turns TRANSIENT_FAILURE and
  the picker leaves it out. Only the calls in flight on it at the kill fail (at most the client's
  concurrency), the same as a fixed `ipv4:` list of lesson 7 would lose. The registry's part is
  the new server: it receives calls with no change to the client.

Measured (the story of lesson 11 step 1, `make lesson-11`, loopback, 2 busy shared cores, 40 calls/s, 2 in flight, 20 ms
of work per call, TTL 3 s, three runs): a new server's first call 0.05-0.10 s after its registration;
0 calls lost on a join and on a graceful stop; 1 call lost on a SIGKILL (the one in flight); the
killed server's key went 2.6-3.0 s after the kill, with no call sent to it meanwhile.

The alternative, one channel per backend with our own round robin, would have to re-implement what
round_robin does with connectivity states (skip a broken backend), or lose every call picked for a
dead backend until its lease expires.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from pcbook.service.endpoints import Endpoint, Screen
from pcbook.service.logs import error
from pcbook.service.registry import Etcd, Members, RegistryError, RegistryUrl, parse_url

ROUND_ROBIN = '{"loadBalancingConfig": [{"round_robin": {}}]}'


def default_factory(target: str) -> grpc.Channel:
    return grpc.insecure_channel(target, options=[("grpc.service_config", ROUND_ROBIN)])


def target_of(members: dict[str, Endpoint]) -> str:
    """`ipv4:127.0.0.1:50051,127.0.0.1:50052` for the members' parsed addresses, in name order."""
    return "ipv4:" + ",".join(str(members[name]) for name in sorted(members))


def ipv4_only(endpoint: Endpoint) -> str | None:
    """One ipv4: target cannot also hold IPv6 addresses or DNS names (grpc's target syntax)."""
    ip = endpoint.ip
    return None if ip is not None and ip.version == 4 else "the thick client's ipv4: target holds IPv4 addresses only"


class NoBackendsError(grpc.RpcError, grpc.Call):
    """A call when the registry lists no server: UNAVAILABLE, as grpc says when nothing can be reached."""

    def __init__(self, prefix: str):
        self._details = f"no server is registered under {prefix}"

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> tuple:
        return ()

    def trailing_metadata(self) -> tuple:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False

    def __str__(self) -> str:
        return f"UNAVAILABLE: {self._details}"


@dataclass(eq=False)
class _Generation:
    number: int
    members: dict[str, str]
    channel: grpc.Channel | None  # None: no server registered
    in_flight: int = 0
    retired: bool = False
    callables: dict[tuple[str, str], Any] = field(default_factory=dict)


class DiscoveredChannel(grpc.Channel):
    """A grpc.Channel whose backends are the registry's live set (see the module docstring)."""

    def __init__(self, url: RegistryUrl | str, *, factory: Callable[[str], grpc.Channel] = default_factory,
                 log: Callable[[str], None] | None = None, timeout: float = 5.0, allow_remote: bool = False):
        """Read the registry (RegistryError if etcd cannot be reached within `timeout`) and watch it.
        Each entry goes through endpoints.Screen: a bad one is skipped with one line, the others serve."""
        self.url = parse_url(url) if isinstance(url, str) else url
        self._factory = factory
        self._log = log or (lambda _line: None)
        self._lock = threading.Lock()
        self._generations = 0
        self._current: _Generation | None = None
        self._errors: list[str] = []
        self._ready = threading.Event()  # the first channel is built
        # A skipped entry is said even when the caller wants no log: to stderr, one line per entry.
        self._screen = Screen(log or error, allow_remote=allow_remote, dialable=ipv4_only)
        self.members = Members(Etcd(self.url), on_change=self._on_change, on_error=self._on_error)
        self.members.start()
        if not self._ready.wait(timeout):
            self.members.close()
            raise RegistryError(self._errors[-1] if self._errors else f"no answer from {self.url} in {timeout:g} s")\
                from None

    @property
    def generation(self) -> int:
        """How many channels were built so far (one per change of the set)."""
        return self._generations

    def _on_error(self, message: str) -> None:
        self._errors.append(message)
        self._log(f"registry: {message}")

    def _on_change(self, raw: dict[str, str]) -> None:
        endpoints = self._screen(raw)
        members = {name: str(endpoint) for name, endpoint in endpoints.items()}
        channel = self._factory(target_of(endpoints)) if endpoints else None
        with self._lock:
            self._generations += 1
            old, self._current = self._current, _Generation(self._generations, members, channel)
            close_old = old is not None and old.in_flight == 0
            if old is not None:
                old.retired = True
        self._ready.set()
        listed = ", ".join(f"{name}={addr}" for name, addr in sorted(members.items())) or "none"
        self._log(f"discovered {len(members)} server(s) under {self.url.prefix}: {listed}")
        if close_old and old is not None and old.channel is not None:
            old.channel.close()

    def _acquire(self) -> _Generation:
        with self._lock:
            gen = self._current
            assert gen is not None  # set before __init__ returns
            gen.in_flight += 1
            return gen

    def _release(self, gen: _Generation) -> None:
        with self._lock:
            gen.in_flight -= 1
            close = gen.retired and gen.in_flight == 0
        if close and gen.channel is not None:
            gen.channel.close()

    def _callable(self, gen: _Generation, kind: str, method: str, serializer: Any, deserializer: Any) -> Any:
        if gen.channel is None:
            raise NoBackendsError(self.url.prefix)
        key = (kind, method)
        found = gen.callables.get(key)
        if found is None:
            found = getattr(gen.channel, kind)(method, request_serializer=serializer,
                                               response_deserializer=deserializer, _registered_method=True)
            gen.callables[key] = found
        return found

    # grpc.Channel ---------------------------------------------------------------------------------

    def unary_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                    _registered_method: bool | None = False) -> _Call:
        return _Call(self, "unary_unary", method, request_serializer, response_deserializer)

    def unary_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                     _registered_method: bool | None = False) -> _Call:
        return _Call(self, "unary_stream", method, request_serializer, response_deserializer)

    def stream_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                     _registered_method: bool | None = False) -> _Call:
        return _Call(self, "stream_unary", method, request_serializer, response_deserializer)

    def stream_stream(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                      _registered_method: bool | None = False) -> _Call:
        return _Call(self, "stream_stream", method, request_serializer, response_deserializer)

    def subscribe(self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False) -> None:
        raise NotImplementedError("a DiscoveredChannel has one channel per registry state; watch .members")

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.members.close()
        with self._lock:
            gen, self._current = self._current, None
        if gen is not None and gen.channel is not None:
            gen.channel.close()

    def __enter__(self) -> DiscoveredChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Call:
    """A multi-callable that runs each call on the channel current when the call starts."""

    def __init__(self, owner: DiscoveredChannel, kind: str, method: str, serializer: Any, deserializer: Any):
        self._owner, self._kind, self._method = owner, kind, method
        self._ser, self._deser = serializer, deserializer

    def _target(self) -> tuple[_Generation, Any]:
        gen = self._owner._acquire()
        try:
            return gen, self._owner._callable(gen, self._kind, self._method, self._ser, self._deser)
        except BaseException:
            self._owner._release(gen)
            raise

    def __call__(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        gen, call = self._target()
        if self._kind in ("unary_unary", "stream_unary"):
            try:
                return call(request, *args, **kwargs)
            finally:
                self._owner._release(gen)
        try:  # a stream: the channel stays in use until the call is over
            stream = call(request, *args, **kwargs)
        except BaseException:
            self._owner._release(gen)
            raise
        if not stream.add_callback(lambda: self._owner._release(gen)):
            self._owner._release(gen)
        return stream

    def with_call(self, request: Any, *args: Any, **kwargs: Any) -> tuple[Any, grpc.Call]:
        gen, call = self._target()
        try:
            return call.with_call(request, *args, **kwargs)
        finally:
            self._owner._release(gen)

    def future(self, request: Any, *args: Any, **kwargs: Any) -> grpc.Future:
        gen, call = self._target()
        try:
            fut = call.future(request, *args, **kwargs)
        except BaseException:
            self._owner._release(gen)
            raise
        fut.add_done_callback(lambda _f: self._owner._release(gen))
        return fut

