"""Checkpoint tests run real lessons: real servers, a real nginx, the real client, fixed tutorial ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pcbook.service import certs
from pcbook.stack.ports import find_listener
from pcbook.workbook.cli import leftovers
from pcbook.workbook.model import TUTORIAL_PORTS

PORTS = TUTORIAL_PORTS  # lessons beyond the tutorial check their own (support.lesson_ports_fixture)


def _ours(pid: int) -> bool:
    """Started by this test run: still our child, or orphaned (re-parented to init) by a leak.

    Other developers' runs on the same machine have their own parents and are not counted.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    ppid = int(stat.rsplit(")", 1)[1].split()[1])
    return ppid in (os.getpid(), 1)


@pytest.fixture(scope="session", autouse=True)
def _certificates() -> None:
    certs.ensure_certs()


@pytest.fixture(autouse=True)
def noleftovers() -> Iterator[None]:
    """Every lesson must leave no process and no listening port behind.

    Compared with what ran before the test, so that a developer's own `make server1` in another
    terminal does not fail the suite.
    """
    before = {pid for pid, _ in leftovers()}
    free_before = [port for port in PORTS if find_listener(port) is None]
    yield
    left = [(pid, cmd) for pid, cmd in leftovers() if pid not in before and _ours(pid)]
    assert left == [], f"a lesson left processes running: {left}"
    busy = {port: owner for port in free_before if (owner := find_listener(port))}
    assert not busy, f"a lesson left ports listening: {busy}"
