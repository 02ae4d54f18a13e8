"""Discovery tests run a real etcd, real self-registering servers, real nginx and real xDS clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pcbook.discovery.lab import Lab
from pcbook.stack.procs import Stack

ECHO = True  # every process's lines, which pytest shows when a test fails


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(echo=print if ECHO else None, run_dir=tmp_path / "run")
    try:
        yield s
    finally:
        s.close()
    # close() stops every child: nothing of this test may still run.
    alive = [p for p in s._all if p.running]
    assert alive == [], f"left running: {alive}"


@pytest.fixture
def lab(stack: Stack) -> Lab:
    return Lab(stack)
