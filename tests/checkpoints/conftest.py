"""Checkpoint tests run real lessons: real servers, a real nginx, the real client, fixed tutorial ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ownership import ours  # tests/ownership.py (tests/ is on sys.path)

from pcbook.service import certs
from pcbook.stack.ports import find_listener
from pcbook.stage.model import TUTORIAL_PORTS
from pcbook.workbook.cli import leftovers

PORTS = TUTORIAL_PORTS  # lessons beyond the tutorial check their own (support.lesson_ports_fixture)


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
    left = [(pid, cmd) for pid, cmd in leftovers() if pid not in before and ours(pid)]
    assert left == [], f"a lesson left processes running: {left}"
    busy = {port: owner for port in free_before if (owner := find_listener(port))}
    assert not busy, f"a lesson left ports listening: {busy}"
