"""Helpers for the runner tests: stand-in children, process and port checks with deadlines."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pcbook.stack.ports import PortBusyError, check_port_free
from pcbook.stack.procs import Stack, close_all

PY = sys.executable

# A stand-in server: listens on argv[1], says so, then idles.
LISTENER = (
    "import os, socket, sys, time\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
    "print('listening on', sys.argv[1], 'pid', os.getpid())\n"
    "time.sleep(120)\n"
)


def pid_gone(pid: int) -> bool:
    """No such process, or only its zombie is left (reparented orphans may wait for a reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def port_free(port: int) -> bool:
    try:
        check_port_free(port, "127.0.0.1")
    except PortBusyError:
        return False
    return True


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll `condition` until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def echoed() -> list[str]:
    return []


@pytest.fixture
def stack(tmp_path: Path, echoed: list[str]) -> Iterator[Stack]:
    with Stack(echo=echoed.append, run_dir=tmp_path / "run") as s:
        yield s


@pytest.fixture(autouse=True)
def _no_leftover_stacks() -> Iterator[None]:
    yield
    close_all()
