"""`make stop` stops only what its own checkout started (issue 11, item 3).

Two copies of the workbook stand for two learners' checkouts on one machine: checkout B runs lesson 2
with KEEP, checkout A a server of its own; `stop` in A stops A's server and leaves B's lesson running.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pcbook.paths import ROOT
from pcbook.stack.ports import find_listener, pick_free_port

UP = "the stack stays up"
HTTP_PORT = 8092  # a port of lesson 9's configs, so `stop` looks at it


def _copy_checkout(dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", ".run")
    for part in ("pcbook", "nginx", "certs"):
        shutil.copytree(ROOT / part, dest / part, ignore=ignore)
    for path in (dest, *dest.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)  # readable by another user (the non-root case)
    return dest


@pytest.fixture
def checkouts() -> Iterator[tuple[Path, Path]]:
    top = Path(tempfile.mkdtemp(prefix="pcbook-checkouts-"))
    top.chmod(0o755)
    try:
        yield _copy_checkout(top / "a"), _copy_checkout(top / "b")
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _env(checkout: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(checkout), PYTHONUNBUFFERED="1")
    for name in ("PCBOOK_RUN_DIR", "PCBOOK_CERTS"):
        env.pop(name, None)
    return env


def _popen(checkout: Path, *args: str, **kw) -> subprocess.Popen[str]:  # type: ignore[no-untyped-def]
    return subprocess.Popen([sys.executable, "-u", *args], cwd=checkout, env=_env(checkout), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def _wait_line(proc: subprocess.Popen[str], pattern: str, timeout: float = 60) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    for line in proc.stdout:  # bounded: the process ends or prints it; the deadline is a backstop
        lines.append(line.rstrip())
        if re.search(pattern, line) or time.monotonic() > deadline:
            break
    assert any(re.search(pattern, line) for line in lines), "\n".join(lines[-20:])
    return lines


def _stop(checkout: Path, user: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(user or []), sys.executable, "-m", "pcbook.workbook", "stop"], cwd=checkout,
                          env=_env(checkout), capture_output=True, text=True, timeout=60)


def _alive(proc: subprocess.Popen[str]) -> bool:
    return proc.poll() is None


def test_stop_in_one_checkout_leaves_the_other_running(checkouts: tuple[Path, Path]) -> None:
    a, b = checkouts
    lesson = _popen(b, "-m", "pcbook.workbook", "lesson", "2", "--keep")
    port = pick_free_port()
    server = _popen(a, "-m", "pcbook.server", "--port", str(port), "--host", "127.0.0.1")
    other = subprocess.Popen([sys.executable, "-m", "http.server", str(HTTP_PORT), "--bind", "127.0.0.1"],
                             cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_line(lesson, UP)
        _wait_line(server, r"server is listening")
        deadline = time.monotonic() + 10
        while find_listener(HTTP_PORT) is None:
            assert time.monotonic() < deadline and other.poll() is None, "http.server did not start"
            time.sleep(0.05)  # polling for the listener, bounded by the deadline
        b_processes = {find_listener(p)[0] for p in (8080, 50051, 50052)}  # type: ignore[index]

        done = _stop(a)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        server.wait(10)  # A's own server was stopped ...
        assert re.search(rf"stopped {server.pid}:", done.stdout), done.stdout
        assert "stopped 1 process(es)" in done.stdout, done.stdout
        # ... B's lesson (nginx and both servers) was not touched ...
        assert _alive(lesson)
        assert {find_listener(p)[0] for p in (8080, 50051, 50052)} == b_processes  # type: ignore[index]
        # ... and a port held by something else is explained, not freed.
        assert re.search(rf"port {HTTP_PORT} is still in use by a process this checkout did not start "
                         rf"\(pid {other.pid}: .*http\.server.*\), which `make stop` leaves alone", done.stdout), \
            done.stdout

        # From B's own checkout, `stop` does stop B's lesson's processes.
        done_b = _stop(b)
        assert done_b.returncode == 0, done_b.stderr
        for pid in b_processes:
            assert re.search(rf"stopped {pid}:", done_b.stdout), done_b.stdout
    finally:
        for proc in (lesson, server, other):
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root to run a process as another user")
def test_a_non_root_user_gets_a_message_not_a_traceback(checkouts: tuple[Path, Path]) -> None:
    a, _ = checkouts
    server = _popen(a, "-m", "pcbook.server", "--port", str(pick_free_port()), "--host", "127.0.0.1")
    try:
        _wait_line(server, r"server is listening")
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        probe = subprocess.run([*nobody, sys.executable, "-c", "import grpc"], capture_output=True, text=True,
                               timeout=30, env=_env(a))
        if probe.returncode != 0:  # e.g. a clone inside a `mktemp -d` folder (mode 700)
            pytest.skip(f"user nobody cannot use this checkout's Python environment ({sys.prefix}): "
                        f"{probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else probe.returncode}")
        done = _stop(a, nobody)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        assert f"left alone: pid {server.pid}" in done.stdout and "belongs to another user" in done.stdout
        assert _alive(server)
    finally:
        server.kill()
        server.wait(10)
