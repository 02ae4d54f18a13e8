"""Interop: a Node.js pcbook client, built only from proto/, against the real Python server.

tests/interop/node/client.mjs (@grpc/grpc-js + @grpc/proto-loader, pinned in package-lock.json)
runs a scripted scenario and prints one JSON result per line; this module starts the server
(plaintext, then mutual TLS), runs the client against it and checks every status and value.
Without node/npm, or when the npm registry cannot be reached, the tests skip with the reason.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from isolation import machine_network  # tests/isolation.py (tests/ is on sys.path)
from service.conftest import ServerProcess  # tests/service's server subprocess helper (tests/ is on sys.path)

from pcbook.service import certs

NODE_DIR = Path(__file__).parent / "node"
CLIENT = NODE_DIR / "client.mjs"
LOCKFILE = NODE_DIR / "package-lock.json"
INSTALLED = NODE_DIR / "node_modules" / ".package-lock.json"  # npm writes it after an install
NPM_CI_TIMEOUT = 90.0  # below pytest-timeout's 120 s per test, which counts fixture setup
REACH_TIMEOUT = 3.0  # seconds to resolve and connect to the registry (or its proxy) before `npm ci`
CLIENT_TIMEOUT = 30.0
MIN_NODE_MAJOR = 18  # util.parseArgs

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# npm's words for "the registry is out of reach" (DNS, refused, reset, timed out, proxy, offline)
_NETWORK = re.compile(
    r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|"
    r"network|socket hang up|ENOTCACHED|offline|getaddrinfo|proxy",
    re.IGNORECASE,
)

STEPS = [
    "login_admin",
    "login_user",
    "login_wrong_password",
    "create_empty_id",
    "create_fixed_id",
    "create_duplicate_id",
    "create_invalid_id",
    "create_without_token",
    "create_forged_token",
    "create_as_user",
    "search",
    "search_no_match",
    "upload_image",
    "upload_unknown_laptop",
    "rate_laptop",
    "rate_as_user",
    "rate_unknown_laptop",
]


def _node_major(node: str) -> int:
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10).stdout
    m = re.match(r"v(\d+)\.", out.strip())
    return int(m.group(1)) if m else 0


def _needs_install() -> bool:
    return not INSTALLED.exists() or INSTALLED.stat().st_mtime < LOCKFILE.stat().st_mtime


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with the client's dependencies installed by `npm ci` if they are missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the Node.js interop client (not found on PATH)")
    major = _node_major(node)
    if major < MIN_NODE_MAJOR:
        pytest.skip(f"node >= {MIN_NODE_MAJOR} is needed for the interop client (found major version {major})")
    # Another test run in the same working tree may be installing too: one `npm ci` at a time.
    with LOCKFILE.open("rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _needs_install():
                with machine_network():  # a test worker's own namespace has no route to the registry
                    _npm_ci(npm)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return node


def _registry_address(npm: str) -> tuple[str, str, int]:
    """(what, host, port) `npm ci` would connect to first: the registry, or the proxy npm is told to use."""
    res = subprocess.run([npm, "config", "get", "registry"], capture_output=True, text=True, timeout=10)
    registry = res.stdout.strip() or "https://registry.npmjs.org/"
    url = urlsplit(registry)
    proxy = next((os.environ[k] for k in ("npm_config_https_proxy", "npm_config_proxy", "HTTPS_PROXY",
                                          "https_proxy", "HTTP_PROXY", "http_proxy") if os.environ.get(k)), "")
    if proxy:
        p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return f"proxy {proxy}", p.hostname or "", p.port or 80
    return f"registry {registry}", url.hostname or "", url.port or (443 if url.scheme == "https" else 80)


def unreachable(host: str, port: int, timeout: float = REACH_TIMEOUT) -> str | None:
    """Why a TCP connection to host:port cannot be made within `timeout` s (None: it can)."""
    deadline = time.monotonic() + timeout
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as err:
        return f"cannot resolve {host}: {err}"
    last = "no address"
    for family, kind, proto, _, addr in infos:
        left = deadline - time.monotonic()
        if left <= 0:
            return f"no answer from {host}:{port} within {timeout:g} s"
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(left)
                sock.connect(addr)
                return None
        except OSError as err:
            last = str(err) or type(err).__name__
    return f"cannot connect to {host}:{port}: {last}"


def _npm_ci(npm: str) -> None:
    what, host, port = _registry_address(npm)
    why = unreachable(host, port)
    if why is not None:  # seconds, instead of npm's own retries for a minute and more
        pytest.skip(f"`npm ci` needs the npm {what}, which is out of reach: {why}")
    # --ignore-scripts: the only install script in the tree (protobufjs's) is a version-scheme warning.
    cmd = [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"]
    try:
        res = subprocess.run(cmd, cwd=NODE_DIR, capture_output=True, text=True, timeout=NPM_CI_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.skip(f"`npm ci` did not finish within {NPM_CI_TIMEOUT:g} s: is the npm registry reachable?")
    if res.returncode != 0:
        output = (res.stdout + res.stderr).strip()
        network = _NETWORK.search(output)
        if network:
            first_error = next((ln for ln in output.splitlines() if "npm error" in ln), "")
            pytest.skip(f"`npm ci` could not reach the npm registry ({network.group(0)}): {first_error}")
        pytest.fail(f"`npm ci` failed (exit {res.returncode}):\n{output[-3000:]}")


@pytest.fixture(scope="module")
def certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return certs.ensure_certs(tmp_path_factory.mktemp("interop-certs"))


def _server(certs_dir: Path, images: Path, *args: str) -> Iterator[ServerProcess]:
    srv = ServerProcess(["--port", "0", "--image-dir", str(images), *args], certs_dir, "--tls" in args)
    try:
        yield srv.wait_ready()
    finally:
        srv.kill()


@pytest.fixture
def plain_server(certs_dir: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    yield from _server(certs_dir, tmp_path / "images")


@pytest.fixture
def mtls_server(certs_dir: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    yield from _server(certs_dir, tmp_path / "images", "--tls", "--client-auth", "require")


def run_client(node: str, port: int, *args: str) -> tuple[int, dict[str, dict[str, Any]], str]:
    """Run client.mjs; return its exit code, its results by step, and its whole output for messages."""
    res = subprocess.run(
        [node, str(CLIENT), f"127.0.0.1:{port}", *args],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
    )
    results: dict[str, dict[str, Any]] = {}
    for line in res.stdout.splitlines():
        record = json.loads(line)
        assert record["step"] not in results, f"step {record['step']} reported twice"
        results[record["step"]] = record
    return res.returncode, results, f"stdout:\n{res.stdout}\nstderr:\n{res.stderr}"


def tls_args(certs_dir: Path, client_cert: bool = True) -> list[str]:
    args = ["--tls", "--ca", str(certs_dir / certs.CA_CERT)]
    if client_cert:
        args += ["--cert", str(certs_dir / certs.CLIENT_CERT), "--key", str(certs_dir / certs.CLIENT_KEY)]
    return args


def check_scenario(results: dict[str, dict[str, Any]], server: ServerProcess) -> None:
    """Every step present and as the reference (original-go.md) says, whatever the client concluded."""
    assert list(results) == STEPS
    r = results

    login = r["login_admin"]
    assert login["code"] == "OK" and login["token_parts"] == 3
    assert (login["alg"], login["username"], login["role"]) == ("HS256", "admin1", "admin")
    assert 890 <= login["lifetime_s"] <= 900  # 15 minutes
    assert (r["login_user"]["code"], r["login_user"]["role"]) == ("OK", "user")
    assert (r["login_wrong_password"]["code"], r["login_wrong_password"]["details"]) == (
        "NOT_FOUND",
        "incorrect username/password",
    )

    made, fixed = r["create_empty_id"], r["create_fixed_id"]
    assert made["code"] == "OK" and UUID.match(made["id"])
    assert fixed["code"] == "OK" and fixed["id"] == fixed["sent_id"] and UUID.match(fixed["id"])
    assert r["create_duplicate_id"]["code"] == "ALREADY_EXISTS"
    assert r["create_duplicate_id"]["details"] == "cannot save laptop to the store: record already exists"
    assert r["create_invalid_id"]["code"] == "INVALID_ARGUMENT"
    assert r["create_invalid_id"]["details"].startswith("laptop ID is not a valid UUID: ")
    assert (r["create_without_token"]["code"], r["create_without_token"]["details"]) == (
        "UNAUTHENTICATED",
        "authorization token is not provided",
    )
    assert r["create_forged_token"]["code"] == "UNAUTHENTICATED"
    assert r["create_forged_token"]["details"].startswith("access token is invalid: ")
    assert (r["create_as_user"]["code"], r["create_as_user"]["details"]) == (
        "PERMISSION_DENIED",
        "no permission to access this RPC",
    )

    search = r["search"]
    assert search["code"] == "OK"
    assert search["found_ids"] == search["created_ids"] == sorted([made["id"], fixed["id"]])
    assert search["changed"] == []  # every field came back as the Node client sent it
    assert (r["search_no_match"]["code"], r["search_no_match"]["count"]) == ("OK", 0)

    upload = r["upload_image"]
    assert upload["code"] == "OK" and UUID.match(upload["id"])
    assert upload["size"] == upload["sent_bytes"] == 10_000 and upload["chunks"] == 10
    assert r["upload_unknown_laptop"]["code"] == "INVALID_ARGUMENT"
    assert re.fullmatch(r"laptop id \S+ doesn't exist", r["upload_unknown_laptop"]["details"])

    rate = r["rate_laptop"]
    assert rate["code"] == "OK" and rate["scores"] == [8, 7.5, 10]
    assert rate["averages"] == [8, 7.75, 8.5] and rate["counts"] == [1, 2, 3]
    assert rate["laptop_ids"] == [made["id"]]
    assert (r["rate_as_user"]["code"], r["rate_as_user"]["counts"]) == ("OK", [4])  # users may rate
    assert r["rate_unknown_laptop"]["code"] == "NOT_FOUND"
    assert re.fullmatch(r"laptopID \S+ is not found", r["rate_unknown_laptop"]["details"])

    for step, record in results.items():
        assert record["ok"] is True, f"client judged {step} unexpected: {record}"

    # The server saw the Node client's calls as the Go server logs them.
    out = server.output
    assert "--> unary interceptor:  /techschool_pcbook.LaptopService/CreateLaptop" in out
    assert "--> stream interceptor:  /techschool_pcbook.LaptopService/RateLaptop" in out
    assert f"saved laptop with id: {fixed['id']}" in out
    assert f"receive an upload-image request for laptop {made['id']} with image type .png" in out
    assert f"saved image with id: {upload['id']}, size: 10000" in out


def test_node_client_plaintext(node: str, plain_server: ServerProcess) -> None:
    code, results, output = run_client(node, plain_server.port)
    assert code == 0, output
    check_scenario(results, plain_server)


def test_node_client_mutual_tls(node: str, mtls_server: ServerProcess, certs_dir: Path) -> None:
    assert "client certificates required" in mtls_server.output
    code, results, output = run_client(node, mtls_server.port, *tls_args(certs_dir))
    assert code == 0, output
    check_scenario(results, mtls_server)


def test_node_client_without_certificate_refused_by_mtls_server(
    node: str, mtls_server: ServerProcess, certs_dir: Path
) -> None:
    # The same client trusting the right CA but showing no certificate: the handshake fails.
    code, results, output = run_client(node, mtls_server.port, *tls_args(certs_dir, client_cert=False))
    assert code == 1, output
    assert list(results) == ["login_admin"], output
    assert results["login_admin"]["code"] == "UNAVAILABLE"


def test_node_plaintext_client_refused_by_mtls_server(node: str, mtls_server: ServerProcess) -> None:
    code, results, output = run_client(node, mtls_server.port)
    assert code == 1, output
    assert results["login_admin"]["code"] == "UNAVAILABLE"
