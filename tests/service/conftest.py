"""End-to-end fixtures: real `python -m pcbook.server` processes on free loopback ports.

Readiness is waited for with a deadline (the server's "listening" line, then the grpc.health.v1
service), never with a fixed sleep. Every process is killed in teardown.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pcbook.paths import ROOT
from pcbook.service import certs, tls

START_TIMEOUT = 15.0
_LISTENING = re.compile(r"server is listening on 127\.0\.0\.1:(\d+)")


def env_with(certs_dir: Path | str) -> dict[str, str]:
    env = dict(os.environ, PCBOOK_CERTS=str(certs_dir), PYTHONUNBUFFERED="1")
    env.pop("PCBOOK_JWT_SECRET", None)
    return env


class ServerProcess:
    """A server subprocess whose output lines are collected by a reader thread."""

    def __init__(self, args: Sequence[str], certs_dir: Path, tls_enabled: bool = False) -> None:
        self.certs_dir, self.tls_enabled = certs_dir, tls_enabled
        cmd = [sys.executable, "-m", "pcbook.server", "--host", "127.0.0.1", *args]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env_with(certs_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = 5.0, start: int = 0) -> re.Match[str]:
        """The first line from index ``start`` matching ``pattern``; fails after ``timeout``."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    m = rx.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no line matching {pattern!r}; output so far:\n{self.output_unlocked()}")
                self._cond.wait(min(left, 0.2))

    def output_unlocked(self) -> str:
        return "\n".join(self.lines)

    def channel(self, **kw) -> grpc.Channel:  # type: ignore[no-untyped-def]
        from pcbook.service.channels import make_channel

        return make_channel(f"127.0.0.1:{self.port}", tls_enabled=self.tls_enabled, certs_dir=self.certs_dir, **kw)

    def wait_ready(self) -> ServerProcess:
        self.port = int(self.wait_for_line(_LISTENING.pattern, START_TIMEOUT).group(1))
        with self.channel() as ch:
            res = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=START_TIMEOUT, wait_for_ready=True
            )
        assert res.status == health_pb2.HealthCheckResponse.SERVING
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(2)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(2)


@pytest.fixture(scope="session")
def certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return certs.ensure_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def other_ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second, unrelated CA with its own server and client certificates."""
    return certs.generate_ca_and_certs(tmp_path_factory.mktemp("other-ca"), common_name_prefix="intruder")


@pytest.fixture
def start_server(certs_dir: Path, tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """Start servers with extra arguments; all are killed at the end of the test."""
    started: list[ServerProcess] = []

    def start(*args: str, wait: bool = True, certs_dir: Path = certs_dir) -> ServerProcess:
        tls_enabled = "--tls" in args
        srv = ServerProcess(["--port", "0", "--image-dir", str(tmp_path / "images"), *args], certs_dir, tls_enabled)
        started.append(srv)
        return srv.wait_ready() if wait else srv

    yield start
    for srv in started:
        srv.kill()


def _session_server(certs_dir: Path, tmp: Path, *args: str) -> Iterator[ServerProcess]:
    srv = ServerProcess(["--port", "0", "--image-dir", str(tmp), *args], certs_dir, "--tls" in args)
    try:
        yield srv.wait_ready()
    finally:
        srv.kill()


@pytest.fixture(scope="session")
def plain_server(certs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from _session_server(certs_dir, tmp_path_factory.mktemp("images-plain"))


@pytest.fixture(scope="session")
def mtls_server(certs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from _session_server(certs_dir, tmp_path_factory.mktemp("images-tls"), "--tls")


def run_client(*args: str, certs_dir: Path, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pcbook.client", *args],
        cwd=ROOT,
        env=env_with(certs_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tls_credentials(ca_dir: Path, client_dir: Path | None) -> grpc.ChannelCredentials:
    """Trust the CA in ``ca_dir``; show the client certificate of ``client_dir`` (None: none)."""
    ca = tls.read_pem(ca_dir / certs.CA_CERT)
    if client_dir is None:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    return grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=tls.read_pem(client_dir / certs.CLIENT_KEY),
        certificate_chain=tls.read_pem(client_dir / certs.CLIENT_CERT),
    )
