"""Shared test setup: generated code must exist before any test module imports pcbook.pb; under
`make test` (pytest-xdist, `-n auto`) each worker gets its own network namespace and run folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Before pcbook is imported: each worker keeps its run files (nginx prefixes, lesson logs) apart.
# What is kept between runs (the debootstrapped base image, the Docker daemon's data root) stays in the
# checkout's .run/deploy, whichever worker makes it, unless PCBOOK_BASE_CACHE names another folder (CI).
SHARED_RUN = Path(__file__).resolve().parent.parent / ".run"
if worker := os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("PCBOOK_RUN_DIR", str(SHARED_RUN / worker))
    os.environ.setdefault("PCBOOK_BASE_CACHE", str(SHARED_RUN / "deploy"))

import isolation  # noqa: E402  (tests/ is on sys.path)

from pcbook import codegen  # noqa: E402


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: five workers per two cores where each can have its own network namespace; else none.
    Most tests wait on their processes more than they compute: on 2 cores (long work first, start_rank),
    4 workers kept the machine 74% busy for 144 s, 5 workers 82% for 129 s (measured back to back)."""
    reason = isolation.why_serial()
    if reason:
        print(f"tests run in one process: {reason}", file=sys.stderr)
        return 0
    return max(2, 5 * (os.cpu_count() or 1) // 2)


def pytest_configure(config: pytest.Config) -> None:
    if worker and not os.environ.get(isolation.USERNS_ENV) and not isolation.why_serial():
        isolation.leave_machine_network()
    if not worker:
        use_userns_workers(config)
    # `make test` generates the code first; this covers `pytest` run by hand after a proto edit.
    if codegen.is_stale():
        codegen.generate()


def use_userns_workers(config: pytest.Config) -> None:
    """Not root, but the kernel allows user namespaces: start each local xdist worker through
    userns_python.py, in a user + network namespace of its own (see tests/isolation.py)."""
    specs = getattr(config.option, "tx", None) or []
    if specs and all(spec == "popen" for spec in specs) and isolation.uses_userns():
        config.option.tx = [isolation.worker_spec()] * len(specs)
        print(f"tests run in {len(specs)} workers, each in an unprivileged user + network namespace",
              file=sys.stderr)


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


def start_rank(nodeid: str) -> int:
    """Long work first, so that none of it starts near the end while the other workers run out of tests:
    the container tests (one image build), then each lesson's story group and mutant test, later lessons
    (more steps, longer stacks) first; everything else after them, in collection order."""
    group = group_of(nodeid) or ""
    if group == "docker":
        return 0
    if group.startswith("story-"):
        return 100 - int(group.removeprefix("story-"))
    if nodeid == "tests/checkpoints/test_mutants.py::test_every_envoy_mutant_fails_the_checkpoint":
        return 100 - 13  # lesson 13's mutants: 190-250 s in a CI run
    if nodeid.startswith("tests/checkpoints/test_mutants.py::") and nodeid.endswith("]"):
        return 100 - int(nodeid.rsplit("[", 1)[1].rstrip("]"))
    return 1000


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: start_rank(item.nodeid))  # stable: collection order within a rank


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):  # type: ignore[no-untyped-def]
    """Load balancing by test, except that each group of group_of() is one unit of work, handed out in
    collection order (start_rank), not xdist's default of the groups with most tests first.

    (xdist's own `--dist loadgroup` marks tests by rewriting their node ids, which pytest 9 ignores.)"""
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False

    class Grouped(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid) or nodeid

    return Grouped(config, log)
