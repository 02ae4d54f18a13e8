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


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker per core where each can have its own network namespace, else none."""
    reason = isolation.why_serial()
    if reason:
        print(f"tests run in one process: {reason}", file=sys.stderr)
        return 0
    return max(2, os.cpu_count() or 1)


def pytest_configure(config: pytest.Config) -> None:
    if worker and not isolation.why_serial():
        isolation.leave_machine_network()
    # `make test` generates the code first; this covers `pytest` run by hand after a proto edit.
    if codegen.is_stale():
        codegen.generate()


def _group(item: pytest.Item) -> str | None:
    """Tests that share an expensive fixture run on one worker (`--dist loadgroup`)."""
    path = Path(item.fspath)
    if path.parent.name == "checkpoints" and path.stem.startswith("test_lesson_"):
        return f"story-{path.stem.removeprefix('test_lesson_')}"  # one play of the story, as below
    if item.name.startswith("test_notebook_runs_top_to_bottom[lesson-"):
        return f"story-{item.name.split('lesson-')[1].rstrip(']')}"  # notebooks.play: played once per process
    if path.parent.name == "deploy" and path.name != "test_render.py":
        return "docker"  # one private Docker daemon and one image build
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if group := _group(item):
            item.add_marker(pytest.mark.xdist_group(group))
