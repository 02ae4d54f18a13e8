"""Every directive a lesson teaches is load-bearing: a checkpoint fails on each one-directive mutant.

For each lesson's checkpoint config, every mutant deletes one directive that is not logging or
boilerplate, or swaps grpc:// and grpcs:// in one grpc_pass. Each mutant runs the lesson's checkpoint
steps only (stopping at the first step that differs), and the checkpoint must fail. A directive that
really is optional for a checkpoint is listed in ALLOWED, and its config says why in a comment.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pcbook.stack import nginx
from pcbook.workbook import manifest
from pcbook.workbook.runner import run_lesson

# Logging and process boilerplate: what they change is not what a checkpoint proves.
BOILERPLATE = frozenset({"worker_processes", "error_log", "access_log", "log_format"})
# (lesson, directive) pairs a checkpoint cannot notice; each config's comment says why.
ALLOWED: dict[tuple[int, str], str] = {
    # The tutorial's 10 are kept for lesson 8, which shows what they cost under load; a checkpoint's
    # few sequential calls never need more.
    **{(n, "worker_connections"): "lesson 8 measures it" for n in (2, 3, 4, 5, 6)},
}
LESSONS = [lesson.number for lesson in manifest.LESSONS if lesson.scenario is None and lesson.checkpoint_config]


@dataclass(frozen=True)
class Mutant:
    name: str  # what was changed, for the failure message
    directive: str
    text: str


def mutants(text: str) -> Iterator[Mutant]:
    """One-directive mutants of a config: each simple directive deleted, each grpc(s):// swapped."""
    for stmt in nginx.statements(text):
        if not stmt.words or stmt.opens_block:
            continue
        line = text.count("\n", 0, stmt.start) + 1
        shown = " ".join(stmt.words)
        directive = stmt.words[0]
        if directive not in BOILERPLATE:
            yield Mutant(f"line {line}: without `{shown};`", directive, text[:stmt.start] + text[stmt.end:])
        if directive == "grpc_pass":
            for old, new in (("grpcs://", "grpc://"), ("grpc://", "grpcs://")):
                if stmt.words[1].startswith(old):
                    swapped = text[:stmt.start] + text[stmt.start:stmt.end].replace(old, new, 1) + text[stmt.end:]
                    yield Mutant(f"line {line}: {old} swapped for {new}", "grpc_pass", swapped)
                    break


def test_mutants_are_generated_from_every_kind_of_directive() -> None:
    text = (manifest.get(5).checkpoint_config or Path()).read_text()
    names = [m.name for m in mutants(text)]
    assert any("without `ssl_verify_client on;`" in n for n in names)
    assert any("without `server 0.0.0.0:50052;`" in n for n in names)
    assert any("grpcs:// swapped for grpc://" in n for n in names)
    assert not any("error_log" in n or "access_log" in n for n in names)


@pytest.mark.parametrize("number", LESSONS)
def test_every_mutant_of_the_checkpoint_config_fails_the_checkpoint(number: int, tmp_path: Path) -> None:
    lesson = manifest.get(number)
    conf = lesson.checkpoint_config
    assert conf is not None
    text = conf.read_text()
    survivors, killed, allowed = [], 0, 0
    t0 = time.monotonic()
    # The control: the lesson's own config passes in the same conditions, so a mutant's failure is
    # its own and not, say, a busy port.
    control = run_lesson(lesson, conf=conf, checkpoint_only=True, echo=None, stop_at_failure=True)
    assert control.checkpoint_passed, control.checkpoint_line()
    for i, mutant in enumerate(mutants(text)):
        if (number, mutant.directive) in ALLOWED:
            assert f"{mutant.directive}" in "\n".join(line for line in text.splitlines() if "#" in line), \
                f"{conf.name} must say in a comment why {mutant.directive} is optional for its checkpoint"
            allowed += 1
            continue
        path = tmp_path / f"mutant-{i}.conf"
        path.write_text(mutant.text)
        result = run_lesson(lesson, conf=path, checkpoint_only=True, echo=None, stop_at_failure=True)
        if result.checkpoint_passed:
            survivors.append(mutant.name)
        else:
            killed += 1
            assert "already in use" not in (result.error or ""), result.error
            print(f"  {mutant.name}: {result.checkpoint_line()[:200]}")
    elapsed = time.monotonic() - t0
    print(f"lesson {number}: {killed} mutants killed, {allowed} allowed, {len(survivors)} survived, {elapsed:.1f} s")
    assert killed > 0
    assert not survivors, f"{conf.name}: the checkpoint of lesson {number} passes with " + "; ".join(survivors)
