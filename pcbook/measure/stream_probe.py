"""Drive the streaming calls lesson 9 needs: ``python -m pcbook.measure.stream_probe --address A --tls COMMAND``.

Commands (each logs in first, on the same channel as its other calls):

- ``streams [--upload-bytes N]``  SearchLaptop (server stream), UploadImage (client stream, N bytes)
  and RateLaptop (bidi), one after the other; each is reported even if an earlier one failed;
- ``quiet --pause S``  one RateLaptop stream that rates, stays quiet for S seconds, then rates again;
- ``calls --calls N [--clients C]``  C clients one after the other, each with its own connection,
  making N CreateLaptop calls; which backend served them is in the servers' logs.

A client reuses one HTTP/2 connection for all its calls (`grpc.use_local_subchannel_pool` stops grpcio
from sharing it between the probe's clients), which is what L4 versus L7 balancing is about.

Every outcome ends in one line the lesson parses: ``result: NAME ok ...`` or
``result: NAME failed: rpc error: code = X desc = Y``. The exit code is 1 if any call failed.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc

from pcbook.pb import filter_message_pb2
from pcbook.pb import laptop_service_pb2 as pb
from pcbook.service import sample
from pcbook.service.channels import make_channel
from pcbook.service.grpc_errors import format_rpc_error
from pcbook.service.interceptors import AuthClientInterceptor
from pcbook.service.laptop_client import AuthClient, LaptopClient, UploadHung
from pcbook.service.logs import fatal, log
from pcbook.service.tls import CertificateFileError

# Each backend keeps laptops in its own memory: the probe creates the same laptop (same id) until
# this many backends have it, so that a later call finds it wherever the balancer sends it.
BACKENDS = 2
SEED_ATTEMPTS = 4
CALL_TIMEOUT = 10.0
# An upload of about 1 MiB over loopback takes 0.1 s or less, through nginx or not, and nginx's 413 comes
# sooner: a shorter deadline than the other calls' gives up on an upload grpcio leaves hanging (UploadHung)
# after 6 s instead of 12.
UPLOAD_TIMEOUT = 4.0
# Any laptop of the stores matches: SearchLaptop streams back every laptop its backend holds.
MATCH_ALL = filter_message_pb2.Filter(max_price_usd=1e9)


@dataclass
class Client:
    """One connection (one channel) with a token, and the laptop calls on it."""

    channel: grpc.Channel
    laptops: LaptopClient

    def close(self, timeout: float = 5.0) -> bool:
        """Close the channel; False if that did not end within `timeout` s (a call grpcio could not
        finish, see UploadHung, can keep channel.close() waiting forever)."""
        closing = threading.Thread(target=self.channel.close, name="probe-close", daemon=True)
        closing.start()
        closing.join(timeout)
        return not closing.is_alive()


def open_client(address: str, tls_enabled: bool, timeout: float = CALL_TIMEOUT) -> Client:
    """Log in and wrap the same channel with the token interceptor: every call shares one connection."""
    channel = make_channel(address, tls_enabled=tls_enabled, options=[("grpc.use_local_subchannel_pool", 1)])
    try:
        token = AuthClient(channel, "admin1", "secret", timeout=timeout).login()
    except BaseException:
        channel.close()
        raise
    intercepted = grpc.intercept_channel(channel, AuthClientInterceptor(lambda: token, log_calls=False))
    return Client(channel, LaptopClient(intercepted, timeout=timeout, quiet=True))


def seed_laptop(client: LaptopClient) -> str:
    """Create one laptop on up to BACKENDS backends (ALREADY_EXISTS: this call hit a backend twice)."""
    laptop = sample.new_laptop()
    created = 0
    for _ in range(SEED_ATTEMPTS):
        try:
            client.create_laptop(laptop)
            created += 1
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
        if created == BACKENDS:
            break
    log(f"laptop {laptop.id} created on {created} backend(s)")
    return laptop.id


def _result(name: str, fn, *args) -> bool:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    try:
        detail = fn(*args)
    except grpc.RpcError as err:
        log(f"result: {name} failed after {time.monotonic() - started:.1f} s: {format_rpc_error(err)}")
        return False
    except UploadHung as err:
        log(f"result: {name} failed after {time.monotonic() - started:.1f} s: {err}")
        return False
    log(f"result: {name} ok in {time.monotonic() - started:.1f} s: {detail}")
    return True


def cmd_streams(client: Client, upload_bytes: int, reopen: Callable[[], Client] | None = None) -> bool:
    """SearchLaptop, UploadImage and RateLaptop on one connection. `reopen` gives a new connection for
    one more try of an upload that grpcio left hanging (UploadHung): what nginx answers is the point of
    the probe, not that grpcio bug, and the probe says that it tried again."""
    laptop_id = seed_laptop(client.laptops)

    def search() -> str:
        return f"{len(list(client.laptops.search_laptop(MATCH_ALL)))} laptop(s) streamed back"

    def upload() -> str:
        data = os.urandom(upload_bytes)
        try:
            res = client.laptops.upload_image(laptop_id, data, timeout=UPLOAD_TIMEOUT)
        except UploadHung as err:
            if reopen is None:
                raise
            log(f"UploadImage: {err}; trying once more on a new connection")
            # left open: the probe exits next
            res = reopen().laptops.upload_image(laptop_id, data, timeout=UPLOAD_TIMEOUT)
        return f"image {res.id}, {res.size} bytes"

    def rate() -> str:
        results = client.laptops.rate_laptop([laptop_id] * 3, [8.0, 7.5, 10.0])
        return f"{len(results)} replies, average score {results[-1].average_score:g}"

    ok = _result("SearchLaptop", search)
    ok = _result("UploadImage", upload) and ok
    return _result("RateLaptop", rate) and ok


def quiet_rating(client: Client, laptop_id: str, pause: float) -> str:
    """Rate, stay quiet for ``pause`` seconds on the open stream, rate again."""
    go_on = threading.Event()

    def requests() -> Iterator[pb.RateLaptopRequest]:
        yield pb.RateLaptopRequest(laptop_id=laptop_id, score=8.0)
        # Released once the first reply has arrived and the quiet time has passed (or the call ended).
        go_on.wait(pause + CALL_TIMEOUT)
        yield pb.RateLaptopRequest(laptop_id=laptop_id, score=10.0)

    stub = client.laptops._stub  # the intercepted stub: the token is attached
    call = stub.RateLaptop(requests(), timeout=pause + CALL_TIMEOUT)
    replies = 0
    try:
        for reply in call:
            replies += 1
            log(f"reply {replies}: rated_count {reply.rated_count}, average {reply.average_score:g}")
            if replies == 1:
                log(f"the stream stays quiet for {pause:g} s")
                # The quiet time is the point of the lesson, not a wait for something to happen.
                time.sleep(pause)
                go_on.set()
    finally:
        go_on.set()
    return f"{replies} replies on one stream quiet for {pause:g} s"


def cmd_quiet(client: Client, pause: float) -> bool:
    laptop_id = seed_laptop(client.laptops)
    return _result("RateLaptop", quiet_rating, client, laptop_id, pause)


def cmd_calls(address: str, tls_enabled: bool, calls: int, clients: int) -> bool:
    ok = True
    for n in range(1, clients + 1):
        client = open_client(address, tls_enabled)
        try:
            ok = _result(f"client{n}", lambda c=client: _create(c, calls)) and ok
        finally:
            client.close()
    return ok


def _create(client: Client, calls: int) -> str:
    for _ in range(calls):
        client.laptops.create_laptop()
    return f"Login and {calls} CreateLaptop on one connection"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pcbook.measure.stream_probe", description=__doc__.splitlines()[0])
    p.add_argument("--address", required=True, help="host:port of nginx or of a server")
    p.add_argument("--tls", action="store_true", help="mutual TLS (shows the client certificate)")
    p.add_argument("--dump-after", type=float, default=0.0, metavar="S",
                   help="print every thread's stack if still running after S seconds (0: never)")
    sub = p.add_subparsers(dest="command", required=True)
    streams = sub.add_parser("streams", help="SearchLaptop, UploadImage and RateLaptop")
    streams.add_argument("--upload-bytes", type=int, default=64 * 1024, help="image size (default 64 KiB)")
    quiet = sub.add_parser("quiet", help="a RateLaptop stream that stays quiet in the middle")
    quiet.add_argument("--pause", type=float, default=2.0, help="quiet seconds (default 2)")
    calls = sub.add_parser("calls", help="N CreateLaptop calls per client, C clients")
    calls.add_argument("--calls", type=int, default=6, help="calls per client (default 6)")
    calls.add_argument("--clients", type=int, default=1, help="clients, each with its own connection")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.dump_after > 0:
        # A probe that outlives all its calls' deadlines names where it is stuck before it is killed.
        faulthandler.dump_traceback_later(args.dump_after, exit=False)
    log(f"dial {args.address}, TLS = {str(args.tls).lower()}")
    try:
        if args.command == "calls":
            ok = cmd_calls(args.address, args.tls, args.calls, args.clients)
        else:
            client = open_client(args.address, args.tls)
            try:
                if args.command == "streams":
                    ok = cmd_streams(client, args.upload_bytes, lambda: open_client(args.address, args.tls))
                else:
                    ok = cmd_quiet(client, args.pause)
            finally:
                closed = client.close()
            if not closed:  # the results are printed; do not let grpcio's shutdown hang the probe as well
                log("the channel did not close within 5 s (a call grpcio could not finish); exiting anyway")
                sys.stdout.flush()
                os._exit(0 if ok else 1)
    except CertificateFileError as err:
        fatal(str(err))
    except grpc.RpcError as err:
        fatal(f"result: setup failed: {format_rpc_error(err)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
