"""Discovery tests run a real etcd, real self-registering servers, real nginx and real xDS clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pcbook.stack.ports import pick_free_port
from pcbook.stack.procs import Stack
from pcbook.stack.specs import Registry, Server
from pcbook.stage.stage import Stage

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
def lab(stack: Stack) -> Stage:
    """A stage with a registry up (a real etcd on free ports)."""
    stage = Stage(stack, stack.run_dir)
    stage.start_registry(Registry())
    return stage


def start(stage: Stage, name: str) -> float:
    """A server on a free port that registers itself as /pcbook/<name>; returns when it registered."""
    return stage.start_server(Server(name, pick_free_port(), flags=("--host", "127.0.0.1"), register=True))
