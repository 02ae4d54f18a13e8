"""Checkpoint tests run real lessons: real servers, a real nginx, the real client, fixed tutorial ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pcbook import certs
from pcbook.ports import find_listener
from pcbook.workbook import leftovers

PORTS = (8080, 50051, 50052)


@pytest.fixture(scope="session", autouse=True)
def _certificates() -> None:
    certs.ensure_certs()


@pytest.fixture(autouse=True)
def noleftovers() -> Iterator[None]:
    """Every lesson must leave no process and no listening port behind."""
    yield
    assert leftovers() == [], "a lesson left processes running"
    busy = {port: find_listener(port) for port in PORTS}
    assert not any(busy.values()), f"a lesson left ports listening: {busy}"
