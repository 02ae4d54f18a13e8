"""`make lesson-N KEEP=1` leaves nothing behind however it ends: Ctrl-C, or its own process killed."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ownership import ours  # tests/ is on sys.path

from pcbook.paths import ROOT
from pcbook.stack.ports import find_listener
from pcbook.workbook.cli import leftovers

from .conftest import PORTS

UP = "the stack stays up"


def _start_kept_lesson(tmp_path: Path) -> tuple[subprocess.Popen[str], list[str]]:
    """Start `python -m pcbook.workbook lesson 2 --keep` and wait until its stack is up."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "pcbook.workbook", "lesson", "2", "--keep"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    for line in proc.stdout:  # bounded: the process ends or prints UP; the deadline is a backstop
        lines.append(line.rstrip())
        if UP in line or time.monotonic() > deadline:
            break
    assert any(UP in line for line in lines), "\n".join(lines[-20:])
    return proc, lines


def _children_of_lesson() -> list[tuple[int, str]]:
    return [(pid, cmd) for pid, cmd in leftovers() if ("--port 5005" in cmd or "nginx" in cmd) and ours(pid)]


def _wait_until_clean(timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _children_of_lesson() and not any(find_listener(p) for p in PORTS):
            return
        time.sleep(0.1)  # polling the process table; the deadline bounds it
    busy = {p: find_listener(p) for p in PORTS}
    pytest.fail(f"left behind: processes {_children_of_lesson()}, ports {busy}")


def test_ctrl_c_on_a_kept_stack_stops_everything(tmp_path: Path) -> None:
    proc, _ = _start_kept_lesson(tmp_path)
    assert find_listener(8080) is not None  # the stack really is up
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert "checkpoint lesson-2: passed" in out
    _wait_until_clean()


def test_killing_the_runner_takes_its_children_down(tmp_path: Path) -> None:
    proc, _ = _start_kept_lesson(tmp_path)
    assert _children_of_lesson(), "servers and nginx should be running"
    proc.kill()  # SIGKILL: no cleanup code runs; the children must die with their parent
    proc.communicate(timeout=30)
    _wait_until_clean()
