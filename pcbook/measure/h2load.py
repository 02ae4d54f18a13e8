"""The native cross-check: `h2load` (nghttp2) sends the bench's CreateLaptop over plaintext HTTP/2.

h2load is a C HTTP/2 load tool (Debian package `nghttp2-client`). It cannot show a client certificate
nor balance client-side, so it measures only the plaintext paths, direct and through nginx. Its
latencies next to the Python load generator's show how much of "direct" is the client itself.

A gRPC call over HTTP/2 is a POST to /package.Service/Method with `content-type: application/grpc`,
`te: trailers` and a body of length-prefixed messages (1 byte "compressed", 4 bytes length, the
message), which is what `grpc_body` writes. h2load checks only the HTTP status; whether the calls
really succeeded is checked on the server's side: each one it served wrote a "saved laptop" line.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pcbook.service.laptop_client import AuthClient

CREATE_LAPTOP = "/techschool_pcbook.LaptopService/CreateLaptop"
KIND = "h2load (nghttp2, C)"


def find() -> str | None:
    return shutil.which("h2load")


def grpc_body(message: bytes) -> bytes:
    """One uncompressed gRPC message frame."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def request_body() -> bytes:
    """The same small CreateLaptop the load generator sends (an empty id: the server picks one)."""
    from pcbook.pb import laptop_message_pb2, laptop_service_pb2

    req = laptop_service_pb2.CreateLaptopRequest(
        laptop=laptop_message_pb2.Laptop(brand="Lenovo", name="Thinkpad X1", price_usd=1999))
    return grpc_body(req.SerializeToString())


def login_token(address: str) -> str:
    import grpc

    with grpc.insecure_channel(address) as channel:
        return AuthClient(channel, "admin1", "secret").login()


@dataclass
class H2Round:
    target: str
    latencies_ns: list[int]
    non_200: int


def run(binary: str, address: str, token: str, body: Path, log: Path, *, window: float, warmup: float,
        timeout: float = 30.0) -> H2Round:
    """One call in flight on one connection for `warmup` + `window` s; latencies of the window's calls."""
    argv = [binary, "-c", "1", "-m", "1", "-t", "1", "-D", f"{round(window * 1000)}ms",
            f"--warm-up-time={round(warmup * 1000)}ms",
            "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers",
            "-H", f"authorization: {token}", f"--log-file={log}", f"http://{address}{CREATE_LAPTOP}"]
    log.unlink(missing_ok=True)
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"h2load failed (exit {res.returncode}): {(res.stderr or res.stdout).strip()[-300:]}")
    latencies, non_200 = [], 0
    for line in log.read_text().splitlines():
        parts = line.split("\t")  # start time (us), HTTP status, time to the response's end (us)
        if len(parts) < 3:
            continue
        if parts[1] != "200":
            non_200 += 1
            continue
        latencies.append(int(parts[2]) * 1000)
    return H2Round(address, latencies, non_200)
