"""Shared test setup: generated code must exist before any test module imports pcbook.pb; under
`make test` (pytest-xdist, `-n auto`) each worker gets its own network namespace and run folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Before pcbook is imported: each worker keeps its run files (nginx prefixes, lesson logs) apart.
# What is kept between runs stays in the checkout's .run/ (the debootstrapped base image; Docker's data
# root: tests/deploy), whichever worker makes it.
SHARED_RUN = Path(__file__).resolve().parent.parent / ".run"
if worker := os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("PCBOOK_RUN_DIR", str(SHARED_RUN / worker))
    os.environ.setdefault("PCBOOK_BASE_CACHE", str(SHARED_RUN / "deploy"))

import isolation  # noqa: E402  (tests/ is on sys.path)

from pcbook import codegen  # noqa: E402


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: two workers per core where each can have its own network namespace; else none. Most
    tests wait on their processes more than they compute: on 2 cores, 2 workers kept the machine 56% busy
    (416 s), 4 workers 92% (254 s)."""
    reason = isolation.why_serial()
    if reason:
        print(f"tests run in one process: {reason}", file=sys.stderr)
        return 0
    return 2 * (os.cpu_count() or 1)


def pytest_configure(config: pytest.Config) -> None:
    if worker and not isolation.why_serial():
        isolation.leave_machine_network()
    # `make test` generates the code first; this covers `pytest` run by hand after a proto edit.
    if codegen.is_stale():
        codegen.generate()


def group_of(nodeid: str) -> str | None:
    """Tests that share an expensive fixture run on one worker, one after the other (None: any worker)."""
    path, _, name = nodeid.partition("::")
    folder, _, module = path.rpartition("/")
    if folder.endswith("checkpoints") and module.startswith("test_lesson_"):
        return f"story-{module.removeprefix('test_lesson_').removesuffix('.py')}"  # notebooks.play: once per process
    if name.startswith("test_notebook_runs_top_to_bottom[lesson-"):
        return f"story-{name.split('lesson-')[1].rstrip(']')}"  # the same play as the checkpoint tests'
    if folder.endswith("deploy") and module != "test_render.py":
        return "docker"  # one private Docker daemon and one image build
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):  # type: ignore[no-untyped-def]
    """Load balancing by test, except that each group of group_of() is one unit of work.

    (xdist's own `--dist loadgroup` marks tests by rewriting their node ids, which pytest 9 ignores.)"""
    from xdist.scheduler import LoadScopeScheduling

    class Grouped(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid) or nodeid

    return Grouped(config, log)
