"""The tutorial's client: ``python -m pcbook.client --address 0.0.0.0:8080 [--tls] ...``.

Logs in, creates --laptops random laptops through the auth interceptor, then optionally searches,
uploads an image and rates the laptops; non-interactive, so it runs in scripts and notebooks.
``--stay SECONDS`` keeps it running afterwards, as the lecture's client stays up: its token refresher
logs in again every --refresh-seconds (the lecture's fifth access-log line, a second Login).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

import grpc

from pcbook.pb import filter_message_pb2, memory_message_pb2
from pcbook.service import channels, laptop_client, sample
from pcbook.service.grpc_errors import format_rpc_error
from pcbook.service.logs import fatal, log
from pcbook.service.registry import RegistryError, parse_url
from pcbook.service.tls import CertificateFileError

RATE_SCORES = (8.0, 7.5, 10.0)  # the reference's example: averages 8, 7.75, 8.5 on one laptop


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pcbook.client", description="The pcbook gRPC client.")
    p.add_argument("--address", help="the server address, e.g. 0.0.0.0:8080 or ipv4:a:1,b:2")
    p.add_argument("--discover", metavar="etcd://HOST:PORT[/prefix]", default=None,
                   help="instead of --address: round robin over the servers registered there, as the set changes")
    p.add_argument("--allow-remote", action="store_true",
                   help="with --discover: accept registered servers outside loopback (the lessons use 127.0.0.1)")
    p.add_argument("--tls", action="store_true", help="enable SSL/TLS (mutual: shows the client certificate)")
    p.add_argument(
        "--no-client-cert", action="store_true", help="with --tls: show no client certificate (to see a refusal)"
    )
    p.add_argument(
        "--certs-dir",
        default=None,
        help="with --tls: the folder of ca-cert.pem and the client's certificate and key (default certs/)",
    )
    p.add_argument("--refresh-seconds", type=float, default=30.0, help="token refresh period (default 30)")
    p.add_argument("--stay", type=float, default=0.0, metavar="SECONDS",
                   help="after the calls, stay up this long while the token keeps being refreshed (default 0)")
    p.add_argument("--laptops", type=int, default=3, help="how many random laptops to create (default 3)")
    p.add_argument("--search", action="store_true", help="then search laptops (max 3000 usd, 4 cores, 2.5 GHz, 8 GB)")
    p.add_argument("--upload-bytes", type=int, default=0, help="then upload an image of N random bytes")
    p.add_argument("--rate", action="store_true", help="then rate the created laptops (fixed scores)")
    p.add_argument("--lb-policy", choices=channels.LB_POLICIES, default=None, help="client-side load balancing")
    p.add_argument("--health-check", action="store_true", help="client-side health checking (grpc.health.v1)")
    p.add_argument("--timeout", type=float, default=laptop_client.DEFAULT_TIMEOUT, help="per-call timeout, s")
    args = p.parse_args(argv)
    if (args.address is None) == (args.discover is None):
        p.error("give --address or --discover (one of them)")
    if args.discover is not None:
        try:
            parse_url(args.discover)
        except ValueError as e:
            p.error(f"--discover: {e}")
        if args.lb_policy:
            p.error("--discover always balances round robin; drop --lb-policy")
    elif args.allow_remote:
        p.error("--allow-remote goes with --discover")
    if args.laptops < 0 or args.upload_bytes < 0:
        p.error("--laptops and --upload-bytes cannot be negative")
    if args.refresh_seconds <= 0 or args.timeout <= 0:
        p.error("--refresh-seconds and --timeout must be positive")
    if args.stay < 0:
        p.error("--stay cannot be negative")
    if (args.upload_bytes or args.rate) and args.laptops == 0:
        p.error("--upload-bytes and --rate need at least one laptop (--laptops)")
    return args


def _run(args: argparse.Namespace) -> None:
    try:
        conn = laptop_client.connect(
            args.address,
            tls_enabled=args.tls,
            certs_dir=args.certs_dir,
            client_cert=not args.no_client_cert,
            refresh_seconds=args.refresh_seconds,
            lb_policy=args.lb_policy,
            health_check=args.health_check,
            timeout=args.timeout,
            discover=args.discover,
            allow_remote=args.allow_remote,
        )
    except RegistryError as e:
        fatal(f"cannot read the registry: {e}")
    except grpc.RpcError as e:
        fatal(f"cannot create auth interceptor: {format_rpc_error(e)}")

    with conn:
        laptops = conn.laptops

        def attempt(what: str, fn, *a):  # type: ignore[no-untyped-def]
            try:
                return fn(*a)
            except grpc.RpcError as e:
                fatal(f"cannot {what}: {format_rpc_error(e)}")

        ids = [attempt("create laptop", laptops.create_laptop, sample.new_laptop()) for _ in range(args.laptops)]
        if args.search:
            flt = filter_message_pb2.Filter(
                max_price_usd=3000,
                min_cpu_cores=4,
                min_cpu_ghz=2.5,
                min_ram=memory_message_pb2.Memory(value=8, unit=memory_message_pb2.Memory.GIGABYTE),
            )
            attempt("search laptop", lambda: list(laptops.search_laptop(flt)))
        if args.upload_bytes:
            attempt("upload image", laptops.upload_image, ids[0], os.urandom(args.upload_bytes))
        if args.rate:
            # Every laptop gets each score in turn, so the averages follow the reference's example.
            for score in RATE_SCORES:
                attempt("rate laptop", laptops.rate_laptop, ids, [score] * len(ids))
        if args.stay:
            log(f"staying up for {args.stay:g} s; the token is refreshed every {args.refresh_seconds:g} s")
            try:
                threading.Event().wait(args.stay)  # the refresher thread logs in meanwhile
            except KeyboardInterrupt:
                log("interrupted")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log(f"dial server {args.address or args.discover}, TLS = {str(args.tls).lower()}")
    try:
        _run(args)
    except CertificateFileError as e:
        fatal(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
