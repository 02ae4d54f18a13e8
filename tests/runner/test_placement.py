"""The bench's placement takes: a child started inside `pinned()` runs on the planned cores only, although the
Stack forks from a thread of its own (the pinning used to stay on the caller's thread)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from pcbook.measure.placement import LOADGEN, SERVERS, affinity_of, available, pinned, plan
from pcbook.stack.procs import Stack

SLEEPER = [sys.executable, "-c", "import time; time.sleep(30)"]


@pytest.mark.skipif(len(available() or ()) < 2, reason="placement needs two cores or more")
def test_children_run_where_the_plan_puts_them(tmp_path: Path) -> None:
    where = plan(available())
    before = os.sched_getaffinity(0)
    with Stack(echo=None, run_dir=tmp_path) as stack:
        with pinned(where, SERVERS):
            server = stack.start("server1", SLEEPER)
        with pinned(where, LOADGEN):
            load = stack.start("loadgen", SLEEPER)
        free = stack.start("free", SLEEPER)
        assert affinity_of(server.pid) == where.of(SERVERS)
        assert affinity_of(load.pid) == where.of(LOADGEN)
        assert affinity_of(free.pid) == before  # outside pinned(): the caller's own cores
    assert os.sched_getaffinity(0) == before  # the caller's thread is put back
