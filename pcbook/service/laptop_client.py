"""A small pcbook client library, shaped like the Go client: AuthClient, TokenRefresher, LaptopClient.

``connect()`` wires them like the tutorial's client: log in on a first channel (no interceptor),
then make the laptop calls on a second channel whose interceptor attaches the token.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import grpc

from pcbook.pb import auth_service_pb2, auth_service_pb2_grpc, filter_message_pb2, laptop_message_pb2
from pcbook.pb import laptop_service_pb2 as pb
from pcbook.pb import laptop_service_pb2_grpc as pb_grpc
from pcbook.service import sample
from pcbook.service.channels import make_channel
from pcbook.service.grpc_errors import format_rpc_error
from pcbook.service.interceptors import AuthClientInterceptor
from pcbook.service.logs import log

DEFAULT_TIMEOUT = 5.0
CHUNK_SIZE = 1024  # the Go client's buffer size


class AuthClient:
    """Logs in with a username and password and returns an access token."""

    def __init__(self, channel: grpc.Channel, username: str, password: str, timeout: float = DEFAULT_TIMEOUT):
        self._stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        self.username = username
        self._password = password
        self.timeout = timeout

    def login(self) -> str:
        """Raises grpc.RpcError (e.g. NotFound for a wrong password, Unavailable with no server)."""
        req = auth_service_pb2.LoginRequest(username=self.username, password=self._password)
        return self._stub.Login(req, timeout=self.timeout).access_token


class TokenRefresher:
    """Holds the current token and renews it every ``refresh_seconds`` in a daemon thread."""

    def __init__(self, auth_client: AuthClient, refresh_seconds: float = 30.0, quiet: bool = False):
        self._auth = auth_client
        self.refresh_seconds = refresh_seconds
        self._quiet = quiet
        self._lock = threading.Lock()
        self._token = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def token(self) -> str:
        with self._lock:
            return self._token

    def refresh(self) -> str:
        token = self._auth.login()
        with self._lock:
            self._token = token
        if not self._quiet:
            log(f"token refreshed: {token}")
        return token

    def start(self) -> None:
        """Log in now (raising grpc.RpcError if that fails), then keep refreshing in the background."""
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="pcbook-token-refresh", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        wait = self.refresh_seconds
        while not self._stop.wait(wait):
            try:
                self.refresh()
                wait = self.refresh_seconds
            except grpc.RpcError as e:
                log(f"cannot refresh token: {format_rpc_error(e)}")
                wait = 1.0  # retry soon, as the Go client does

    def stop(self) -> None:
        self._stop.set()


UPLOAD_GRACE = 2.0  # seconds past an upload's deadline before the client gives up on a hung call


class UploadHung(RuntimeError):
    """An upload with no status well past its deadline: grpcio's write never completed (seen 1 in 10
    soak runs through nginx's 413 on a loaded machine); the call has been cancelled."""


class LaptopClient:
    """The four LaptopService calls. ``quiet`` silences the Go client's per-call log lines."""

    def __init__(self, channel: grpc.Channel, timeout: float = DEFAULT_TIMEOUT, quiet: bool = False):
        self._stub = pb_grpc.LaptopServiceStub(channel)
        self.timeout = timeout
        self._quiet = quiet

    def _log(self, message: str) -> None:
        if not self._quiet:
            log(message)

    def create_laptop(self, laptop: laptop_message_pb2.Laptop | None = None) -> str:
        """Create ``laptop`` (a random one by default); return its id. Raises grpc.RpcError."""
        laptop = laptop if laptop is not None else sample.new_laptop()
        res = self._stub.CreateLaptop(pb.CreateLaptopRequest(laptop=laptop), timeout=self.timeout)
        self._log(f"created laptop with id: {res.id}")
        return res.id

    def search_laptop(self, flt: filter_message_pb2.Filter) -> Iterator[laptop_message_pb2.Laptop]:
        """Yield the matching laptops as they arrive; closing the iterator early cancels the call."""
        self._log(f"search filter: {_one_line(flt)}")
        call = self._stub.SearchLaptop(pb.SearchLaptopRequest(filter=flt), timeout=self.timeout)
        try:
            for res in call:
                laptop = res.laptop
                self._log(f"- found: {laptop.id}")
                self._log(f"  + brand: {laptop.brand}, name: {laptop.name}, price: {laptop.price_usd:.0f} usd")
                yield laptop
        finally:
            call.cancel()  # a no-op once the stream has ended

    search = search_laptop  # the short name the notebooks use

    def upload_image(
        self, laptop_id: str, data: bytes, image_type: str = ".jpg", chunk_size: int = CHUNK_SIZE,
        timeout: float | None = None,
    ) -> pb.UploadImageResponse:
        """Send the info, then ``data`` in chunks, within ``timeout`` s (default: the client's). Raises
        grpc.RpcError, or UploadHung."""
        timeout = self.timeout if timeout is None else timeout

        def requests() -> Iterator[pb.UploadImageRequest]:
            yield pb.UploadImageRequest(info=pb.ImageInfo(laptop_id=laptop_id, image_type=image_type))
            for i in range(0, len(data), chunk_size):
                yield pb.UploadImageRequest(chunk_data=data[i : i + chunk_size])

        # The future, not the blocking call: when the server (or nginx, with a 413) ends the call while
        # grpcio's thread is still writing chunks, the blocking form can wait forever for the write's
        # completion, past the call's deadline (1 in 10 soak runs through nginx under load). The future
        # returns once the status is in, and the bounded wait cancels a call that still hangs.
        future = self._stub.UploadImage.future(requests(), timeout=timeout)
        try:
            res = future.result(timeout=timeout + UPLOAD_GRACE)
        except grpc.FutureTimeoutError:
            future.cancel()
            raise UploadHung(f"no status {timeout + UPLOAD_GRACE:g} s after the upload began, past its "
                             f"{timeout:g} s deadline: grpcio's write never completed; the call was cancelled"
                             ) from None
        self._log(f"image uploaded with id: {res.id}, size: {res.size}")
        return res

    def rate_laptop(self, laptop_ids: Iterable[str], scores: Iterable[float]) -> list[pb.RateLaptopResponse]:
        """Rate each laptop once on one bidi stream; return the running results. Raises grpc.RpcError."""
        reqs = [pb.RateLaptopRequest(laptop_id=i, score=s) for i, s in zip(laptop_ids, scores, strict=True)]
        results = []
        for res in self._stub.RateLaptop(iter(reqs), timeout=self.timeout):
            self._log(
                f"received response: laptop_id: {res.laptop_id}, rated_count: {res.rated_count}, "
                f"average_score: {res.average_score:g}"
            )
            results.append(res)
        return results


def _one_line(msg: filter_message_pb2.Filter) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(msg, as_one_line=True)


@dataclass
class Connection:
    """What ``connect()`` returns: both channels, the token refresher and the laptop client."""

    auth_channel: grpc.Channel
    laptop_channel: grpc.Channel
    refresher: TokenRefresher
    laptops: LaptopClient

    def close(self) -> None:
        self.refresher.stop()
        self.laptop_channel.close()
        self.auth_channel.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(
    address: str,
    *,
    tls_enabled: bool = False,
    certs_dir: str | os.PathLike[str] | None = None,
    username: str = "admin1",
    password: str = "secret",
    refresh_seconds: float = 30.0,
    lb_policy: str | None = None,
    health_check: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    quiet: bool = False,
    client_cert: bool = True,
    discover: str | None = None,
    allow_remote: bool = False,
) -> Connection:
    """Log in and return a ready Connection, as the tutorial's client sets itself up.

    The login channel has no interceptor and a 5 s timeout; the laptop channel has the auth
    interceptor (and the ``lb_policy`` / ``health_check`` settings). Raises grpc.RpcError if the first
    login fails and tls.CertificateFileError if a certificate file is missing.

    ``discover`` (etcd://...): ignore ``address``; both channels are one thick.DiscoveredChannel, round
    robin over the servers registered there (registry.RegistryError if etcd cannot be read);
    ``allow_remote``: accept registered servers outside loopback (endpoints.parse_endpoint).
    """
    if discover is not None:
        from pcbook.service.thick import DiscoveredChannel

        discovered = DiscoveredChannel(discover, factory=lambda target: make_channel(
            target, tls_enabled=tls_enabled, certs_dir=certs_dir, client_cert=client_cert, lb_policy="round_robin",
            health_check=health_check), allow_remote=allow_remote)
        auth_channel: grpc.Channel = discovered
    else:
        auth_channel = make_channel(address, tls_enabled=tls_enabled, certs_dir=certs_dir, client_cert=client_cert)
    try:
        refresher = TokenRefresher(AuthClient(auth_channel, username, password), refresh_seconds, quiet=quiet)
        refresher.start()
        base = auth_channel if discover is not None else make_channel(
            address,
            tls_enabled=tls_enabled,
            certs_dir=certs_dir,
            client_cert=client_cert,
            lb_policy=lb_policy,
            health_check=health_check,
        )
    except BaseException:
        auth_channel.close()
        raise
    interceptor = AuthClientInterceptor(lambda: refresher.token, log_calls=not quiet)
    laptop_channel = grpc.intercept_channel(base, interceptor)
    return Connection(auth_channel, laptop_channel, refresher, LaptopClient(laptop_channel, timeout, quiet))
