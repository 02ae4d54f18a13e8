"""Server interceptor (log each call, enforce the role map) and client interceptor (attach the token)."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from pcbook.service.grpc_errors import go_code_name
from pcbook.service.logs import clean, log

if TYPE_CHECKING:
    # Not at run time: every client, load driver and stream probe imports this module for
    # AuthClientInterceptor, and PyJWT (with the cryptography it loads) cost each of them about 50 ms
    # of CPU at start (measured with -X importtime). The server has them from pcbook.service.auth.
    from pcbook.service.auth import JWTManager, UserClaims

LAPTOP_SERVICE_PATH = "/techschool_pcbook.LaptopService/"
AUTH_SERVICE_PATH = "/techschool_pcbook.AuthService/"
TOKEN_KEY = "authorization"

# Who may call what. A method missing from the map (Login, SearchLaptop, health, reflection) is open.
ACCESSIBLE_ROLES: Mapping[str, frozenset[str]] = {
    LAPTOP_SERVICE_PATH + "CreateLaptop": frozenset({"admin"}),
    LAPTOP_SERVICE_PATH + "UploadImage": frozenset({"admin"}),
    LAPTOP_SERVICE_PATH + "RateLaptop": frozenset({"admin", "user"}),
}

# The methods the client attaches its token to (the Go client's authMethods).
AUTH_METHODS: frozenset[str] = frozenset(ACCESSIBLE_ROLES)

Metadata = Sequence[tuple[str, str | bytes]]


# Readiness probes and tools call these; the Go service had neither, so logging them would bury the
# tutorial's lines (and the lessons count calls per server from these log lines).
UNLOGGED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class AuthError(Exception):
    """A call refused by the role map, with the status to answer."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def authorize(
    jwt_manager: JWTManager,
    accessible_roles: Mapping[str, frozenset[str]],
    method: str,
    metadata: Metadata | None,
) -> UserClaims | None:
    """Check one call against the role map: the caller's claims, None for an open method.

    Raises AuthError with the Go service's status and message otherwise.
    """
    roles = accessible_roles.get(method)
    if roles is None:
        return None
    if metadata is None:
        raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "metadata is not provided")
    tokens = [v for k, v in metadata if k.lower() == TOKEN_KEY]
    if not tokens:
        raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "authorization token is not provided")
    token = tokens[0].decode() if isinstance(tokens[0], bytes) else tokens[0]
    try:
        claims = jwt_manager.verify(token)
    except jwt_manager.InvalidTokenError as e:
        raise AuthError(grpc.StatusCode.UNAUTHENTICATED, f"access token is invalid: {e}") from None
    if claims.role not in roles:
        raise AuthError(grpc.StatusCode.PERMISSION_DENIED, "no permission to access this RPC")
    return claims


def _handler_kind(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "stream_stream"
    if handler.request_streaming:
        return "stream_unary"
    if handler.response_streaming:
        return "unary_stream"
    return "unary_unary"


_HANDLER_FACTORIES = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


class AuthServerInterceptor(grpc.ServerInterceptor):
    """Logs every call like the Go service and lets only the right roles through."""

    def __init__(
        self, jwt_manager: JWTManager, accessible_roles: Mapping[str, frozenset[str]] = ACCESSIBLE_ROLES
    ) -> None:
        self._jwt = jwt_manager
        self._roles = accessible_roles

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        kind = _handler_kind(handler)
        # Go's log.Println("--> unary interceptor: ", method) puts two spaces before the method.
        if not method.startswith(UNLOGGED_PREFIXES):
            log(f"--> {'unary' if kind == 'unary_unary' else 'stream'} interceptor:  {clean(method, 200)}")
        if method not in self._roles:
            return handler  # untouched: keeps attributes such as the health service's non-blocking Watch
        return self._guarded(handler, kind, method, handler_call_details.invocation_metadata)

    def _guarded(
        self, handler: grpc.RpcMethodHandler, kind: str, method: str, metadata: Metadata | None
    ) -> grpc.RpcMethodHandler:
        inner = getattr(handler, kind)

        def behavior(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
            # Runs in the worker thread of the call, not in the server's polling thread.
            try:
                authorize(self._jwt, self._roles, method, metadata)
            except AuthError as e:
                context.abort(e.code, e.message)
            return inner(request_or_iterator, context)

        return _HANDLER_FACTORIES[kind](
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


INTERNAL_MESSAGE = "internal error in the server (its log says more)"


class ErrorInterceptor(grpc.ServerInterceptor):
    """An exception a pcbook method did not expect is logged with the method and answered INTERNAL.

    Without it grpcio answers UNKNOWN with the exception's own text (which may name server paths)
    and logs a traceback only through Python's logging. Refusals made with ``context.abort`` pass
    through unchanged (grpcio raises a bare Exception for them, after setting the call's code).
    """

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith((LAPTOP_SERVICE_PATH, AUTH_SERVICE_PATH)):
            return handler
        kind = _handler_kind(handler)
        inner = getattr(handler, kind)

        def failed(context: grpc.ServicerContext, exc: Exception) -> None:
            if context.code() is not None:  # context.abort(): an answer chosen on purpose
                raise exc
            log(f"unexpected error in {method}: {type(exc).__name__}: {clean(str(exc), 200)}")
            log(f"rpc error: code = {go_code_name(grpc.StatusCode.INTERNAL)} desc = {INTERNAL_MESSAGE}")
            context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)

        if handler.response_streaming:

            def streaming(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
                try:
                    yield from inner(request_or_iterator, context)
                except Exception as exc:  # noqa: BLE001 - every unexpected one, by design
                    failed(context, exc)

            behavior: Callable[..., Any] = streaming
        else:

            def unary(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
                try:
                    return inner(request_or_iterator, context)
                except Exception as exc:  # noqa: BLE001 - every unexpected one, by design
                    failed(context, exc)

            behavior = unary
        return _HANDLER_FACTORIES[kind](
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


STALL_SECONDS = 10.0  # an unread server stream is cancelled after this long without its client reading


@dataclass(eq=False)
class _Slot:
    """One open stream: who holds it, and since when its last response waits for the client to read."""

    method: str
    peer: str
    anonymous: bool
    context: grpc.ServicerContext
    waiting_since: float | None = None
    cancelled: bool = False


class ConcurrencyInterceptor(grpc.ServerInterceptor):
    """Keeps streams from taking the threads that unary calls and health checks need, and shares the
    stream slots fairly.

    grpcio's sync server runs every call on a thread of its pool, and a stream (a call whose request
    or response is a stream) holds its thread for as long as it is open, idle or not. The server's
    pool has ``workers`` threads more than ``streams``; beyond ``streams`` open streams a new one is
    refused at once with RESOURCE_EXHAUSTED, so at least ``workers`` threads are always left for unary
    calls and health checks. Unary calls are left untouched: they may use any free thread.

    Fair shares, so that no single caller can lock the others out: one connection (grpc's peer) holds
    at most half of the slots, and callers without a valid token (SearchLaptop is open to everyone, as
    in the course) hold at most half of them together. A server stream whose client reads nothing
    (its last response waits on HTTP/2 flow control) for ``stall`` seconds is cancelled, with a line.
    Hand-written: grpcio has a limit on concurrent RPCs (maximum_concurrent_rpcs), not per caller.
    """

    def __init__(self, streams: int, jwt_manager: JWTManager | None = None, stall: float = STALL_SECONDS) -> None:
        self.streams = streams
        self.per_peer = max(1, streams // 2)
        self.anonymous_share = max(1, streams // 2)
        self.stall = stall
        self._jwt = jwt_manager
        self._lock = threading.Lock()
        self._open: set[_Slot] = set()
        self._per_peer: collections.Counter[str] = collections.Counter()
        self._anonymous = 0
        self._watchdog: threading.Thread | None = None

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or not (handler.request_streaming or handler.response_streaming):
            return handler
        method = handler_call_details.method
        if method.startswith("/grpc.health.v1.Health/"):
            return handler  # the health service's Watch is non-blocking: it holds no thread
        metadata = handler_call_details.invocation_metadata
        kind = _handler_kind(handler)
        inner = getattr(handler, kind)
        if handler.response_streaming:

            def streaming(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
                slot = self._enter_stream(context, method, metadata)
                try:
                    for response in inner(request_or_iterator, context):
                        slot.waiting_since = time.monotonic()
                        yield response  # grpcio asks for the next one once this one is sent
                        slot.waiting_since = None
                finally:  # also when the call is cancelled and grpcio drops the generator
                    self._leave(slot)

            behavior: Callable[..., Any] = streaming
        else:

            def client_streaming(request_iterator: Any, context: grpc.ServicerContext) -> Any:
                slot = self._enter_stream(context, method, metadata)
                try:
                    return inner(request_iterator, context)
                finally:
                    self._leave(slot)

            behavior = client_streaming
        return _HANDLER_FACTORIES[kind](
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _authenticated(self, metadata: Metadata | None) -> bool:
        if self._jwt is None:
            return True  # no token checks at all: everyone is the same caller
        for key, value in metadata or ():
            if key.lower() == TOKEN_KEY:
                try:
                    self._jwt.verify(value.decode() if isinstance(value, bytes) else value)
                    return True
                except self._jwt.InvalidTokenError:
                    return False
        return False

    def _enter_stream(self, context: grpc.ServicerContext, method: str, metadata: Metadata | None) -> _Slot:
        slot = _Slot(method, context.peer(), not self._authenticated(metadata), context)
        with self._lock:
            if len(self._open) >= self.streams:
                message = f"too many streams in progress: this server takes at most {self.streams} streams at once"
            elif self._per_peer[slot.peer] >= self.per_peer:
                message = (f"too many streams from one connection: one takes at most {self.per_peer} of this"
                           f" server's {self.streams} streams")
            elif slot.anonymous and self._anonymous >= self.anonymous_share:
                message = (f"too many streams without a token: callers without one share {self.anonymous_share}"
                           f" of this server's {self.streams} streams")
            else:
                message = ""
                self._open.add(slot)
                self._per_peer[slot.peer] += 1
                self._anonymous += slot.anonymous
                if self._watchdog is None and self.stall > 0:
                    self._watchdog = threading.Thread(target=self._watch, name="stream-watchdog", daemon=True)
                    self._watchdog.start()
        if message:
            log(f"rpc error: code = {go_code_name(grpc.StatusCode.RESOURCE_EXHAUSTED)} desc = {message}")
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
        return slot

    def _leave(self, slot: _Slot) -> None:
        with self._lock:
            if slot not in self._open:
                return
            self._open.discard(slot)
            self._per_peer[slot.peer] -= 1
            if not self._per_peer[slot.peer]:
                del self._per_peer[slot.peer]
            self._anonymous -= slot.anonymous

    def _watch(self) -> None:
        """Cancel the server streams whose client has read nothing for `stall` s (checked 4 times per stall)."""
        tick = threading.Event()
        while not tick.wait(self.stall / 4):
            now = time.monotonic()
            with self._lock:
                stalled = [s for s in self._open if not s.cancelled and s.waiting_since is not None
                           and now - s.waiting_since > self.stall]
                for s in stalled:
                    s.cancelled = True
            for s in stalled:
                log(f"cancelled {s.method} from {clean(s.peer)}: its client read nothing for {self.stall:g} s"
                    " (the stream's slot is free again)")
                s.context.cancel()


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class AuthClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Logs each call (``--> unary interceptor: <method>``, one space as in the Go client) and
    attaches the current access token, raw, to the calls that need one."""

    def __init__(
        self,
        token_source: Callable[[], str],
        auth_methods: Iterable[str] = AUTH_METHODS,
        log_calls: bool = True,
    ) -> None:
        self._token = token_source
        self._auth_methods = frozenset(auth_methods)
        self._log_calls = log_calls

    def _prepare(self, details: grpc.ClientCallDetails, kind: str) -> grpc.ClientCallDetails:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        if self._log_calls:
            log(f"--> {kind} interceptor: {clean(method, 200)}")
        if method not in self._auth_methods:
            return details
        metadata = [*(details.metadata or ()), (TOKEN_KEY, self._token())]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._prepare(client_call_details, "unary"), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._prepare(client_call_details, "stream"), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._prepare(client_call_details, "stream"), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._prepare(client_call_details, "stream"), request_iterator)
