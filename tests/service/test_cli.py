"""The CLIs as the tutorial runs them: log lines, exit codes and the one-line errors."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

from grpc_health.v1 import health_pb2, health_pb2_grpc

from pcbook.paths import ROOT

from .conftest import env_with, run_client

STAMP = r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d "
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
JWT = r"[\w-]+\.[\w-]+\.[\w-]+"


def test_client_prints_the_tutorial_lines(plain_server, certs_dir) -> None:  # type: ignore[no-untyped-def]
    start = len(plain_server.lines)
    res = run_client("--address", f"127.0.0.1:{plain_server.port}", certs_dir=certs_dir)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    expected = [
        rf"dial server 127\.0\.0\.1:{plain_server.port}, TLS = false",
        rf"token refreshed: {JWT}",
        *[r"--> unary interceptor: /techschool_pcbook\.LaptopService/CreateLaptop", rf"created laptop with id: {UUID}"]
        * 3,
    ]
    assert len(lines) == len(expected), res.stdout
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(STAMP + pattern, line), line
    # The server's side of the same run, in the tutorial's order (two spaces: Go's Println).
    ids = re.findall(rf"created laptop with id: ({UUID})", res.stdout)
    plain_server.wait_for_line(rf"saved laptop with id: {ids[-1]}", start=start)
    server_lines = plain_server.lines[start:]
    assert re.fullmatch(STAMP + r"--> unary interceptor:  /techschool_pcbook\.AuthService/Login", server_lines[0])
    for i, laptop_id in enumerate(ids):
        chunk = server_lines[1 + 3 * i : 4 + 3 * i]
        assert chunk[0].endswith("--> unary interceptor:  /techschool_pcbook.LaptopService/CreateLaptop")
        assert chunk[1].endswith(f"receive a create-laptop request with id: {laptop_id}")
        assert chunk[2].endswith(f"saved laptop with id: {laptop_id}")


def test_client_every_option(plain_server, certs_dir) -> None:  # type: ignore[no-untyped-def]
    res = run_client(
        "--address",
        f"127.0.0.1:{plain_server.port}",
        "--laptops",
        "2",
        "--search",
        "--upload-bytes",
        "5000",
        "--rate",
        "--lb-policy",
        "round_robin",
        "--health-check",
        "--refresh-seconds",
        "60",
        certs_dir=certs_dir,
    )
    assert res.returncode == 0, res.stderr
    assert "image uploaded with id: " in res.stdout and ", size: 5000" in res.stdout
    assert res.stdout.count("average_score: 8.5") == 2


def test_client_stays_up_and_refreshes_its_token(plain_server, certs_dir) -> None:  # type: ignore[no-untyped-def]
    # The lecture's client stays up; its refresher logs in again (lesson 2's fifth access-log line).
    res = run_client("--address", f"127.0.0.1:{plain_server.port}", "--stay", "1.5", "--refresh-seconds", "0.5",
                     certs_dir=certs_dir)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    stay = next(i for i, line in enumerate(lines) if "staying up for 1.5 s; the token is refreshed every 0.5 s" in line)
    assert any(re.search(rf"token refreshed: {JWT}", line) for line in lines[stay + 1:]), res.stdout
    bad = run_client("--address", f"127.0.0.1:{plain_server.port}", "--stay", "-1", certs_dir=certs_dir)
    assert bad.returncode == 2 and "--stay cannot be negative" in bad.stderr and "Traceback" not in bad.stderr


def test_client_tls_against_mtls_server(mtls_server, certs_dir) -> None:  # type: ignore[no-untyped-def]
    res = run_client("--address", f"127.0.0.1:{mtls_server.port}", "--tls", "--laptops", "1", certs_dir=certs_dir)
    assert res.returncode == 0, res.stderr
    assert "TLS = true" in res.stdout and "created laptop with id: " in res.stdout


def test_client_without_tls_against_tls_server(mtls_server, certs_dir) -> None:  # type: ignore[no-untyped-def]
    res = run_client("--address", f"127.0.0.1:{mtls_server.port}", certs_dir=certs_dir)
    assert res.returncode == 1
    assert re.fullmatch(
        STAMP + r"cannot create auth interceptor: rpc error: code = Unavailable desc = .+\n", res.stderr
    ), res.stderr
    assert "Traceback" not in res.stdout + res.stderr


def test_client_other_rpc_failure(plain_server, certs_dir) -> None:  # type: ignore[no-untyped-def]
    res = run_client(
        "--address",
        f"127.0.0.1:{plain_server.port}",
        "--laptops",
        "1",
        "--upload-bytes",
        "1048577",
        certs_dir=certs_dir,
    )
    assert res.returncode == 1
    assert res.stderr.endswith(
        "cannot upload image: rpc error: code = InvalidArgument desc = image is too large: 1048577 > 1048576\n"
    )


def test_client_missing_certificate(plain_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = run_client("--address", f"127.0.0.1:{plain_server.port}", "--tls", certs_dir=tmp_path)
    assert res.returncode == 1
    assert res.stderr.endswith("ca-cert.pem is missing; run `make cert`\n") and "Traceback" not in res.stderr
    assert str(tmp_path / "ca-cert.pem") in res.stderr


def test_server_missing_certificate(start_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    srv = start_server("--tls", wait=False, certs_dir=tmp_path)
    assert srv.proc.wait(15) == 1
    srv.wait_for_line(
        re.escape(f"cannot load TLS credentials: {tmp_path / 'server-key.pem'} is missing; run `make cert`")
    )
    assert "Traceback" not in srv.output


def test_server_busy_port(plain_server) -> None:  # type: ignore[no-untyped-def]
    port = plain_server.port
    busy = subprocess.run(
        [sys.executable, "-m", "pcbook.server", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env_with(plain_server.certs_dir),
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert busy.returncode == 1
    assert f"cannot listen on port {port}: address already in use" in busy.stderr
    assert "choose another --port" in busy.stderr and "Traceback" not in busy.stderr


def test_wrong_flags_exit_2(certs_dir) -> None:  # type: ignore[no-untyped-def]
    for module in ("pcbook.server", "pcbook.client"):
        res = subprocess.run(
            [sys.executable, "-m", module, "--bogus"], cwd=ROOT, capture_output=True, text=True, timeout=15
        )
        assert res.returncode == 2 and res.stderr.startswith("usage: "), res.stderr


def test_health_signals_and_clean_shutdown(start_server) -> None:  # type: ignore[no-untyped-def]
    srv = start_server()

    def status() -> int:
        with srv.channel() as ch:
            req = health_pb2.HealthCheckRequest(service="techschool_pcbook.LaptopService")
            return health_pb2_grpc.HealthStub(ch).Check(req, timeout=5).status

    assert status() == health_pb2.HealthCheckResponse.SERVING
    srv.proc.send_signal(signal.SIGUSR1)
    srv.wait_for_line(r"health status set to NOT_SERVING \(SIGUSR1\)")
    assert status() == health_pb2.HealthCheckResponse.NOT_SERVING
    srv.proc.send_signal(signal.SIGUSR2)
    srv.wait_for_line(r"health status set to SERVING \(SIGUSR2\)")
    assert status() == health_pb2.HealthCheckResponse.SERVING
    assert srv.stop(signal.SIGTERM) == 0
    assert srv.lines[-1].endswith("server stopped")


def test_server_start_line(start_server) -> None:  # type: ignore[no-untyped-def]
    srv = start_server()
    assert re.fullmatch(STAMP + "start server on port 0, TLS = false", srv.lines[0])
    assert "development JWT secret" in srv.lines[1]
    assert srv.stop(signal.SIGINT) == 0
