"""Helpers the checkpoint tests share: run a lesson's story, its checkpoint, or a wrong setup, quietly."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from pcbook.paths import NGINX_DIR
from pcbook.stack.ports import find_listener
from pcbook.stage.model import Step
from pcbook.workbook import manifest
from pcbook.workbook.runner import LessonResult, run_lesson


def story(number: int) -> LessonResult:
    """The lesson's whole story, as its notebook plays it (once per test session: the notebook tests
    reuse the same run)."""
    from notebooks.play import play  # tests/ is on sys.path: pytest puts the rootdir conftest's folder there

    return play(number).result


def checkpoint(number: int, conf: str | Path | None = None, *, stop_at_failure: bool = False) -> LessonResult:
    path = NGINX_DIR / conf if isinstance(conf, str) else conf
    return run_lesson(manifest.get(number), conf=path, checkpoint_only=True, stop_at_failure=stop_at_failure,
                      echo=None)


def with_servers(lesson: manifest.Lesson, servers: tuple[manifest.Server, ...]) -> manifest.Lesson:
    """The lesson with its checkpoint steps run against other servers: a wrong setup."""
    steps = tuple(dataclasses.replace(s, servers=servers) if s.checkpoint else s for s in lesson.steps)
    return dataclasses.replace(lesson, steps=steps)


def variant(number: int, title: str, **changes: object) -> Step:
    """Step `title` of lesson `number` with some of its declaration changed (client=..., nginx=...)."""
    return dataclasses.replace(manifest.get(number).step(title), **changes)


def client_variant(number: int, title: str, **changes: object) -> Step:
    """Step `title` with its client (a Driver, a Probe) declared otherwise: a wrong setup."""
    step = manifest.get(number).step(title)
    return dataclasses.replace(step, client=dataclasses.replace(step.client, **changes))


def run_steps(number: int, steps: Sequence[Step]) -> LessonResult:
    """Lesson `number` reduced to `steps`, in that order, on one stack."""
    return run_lesson(dataclasses.replace(manifest.get(number), steps=tuple(steps)), echo=None)


def conf_variant(tmp_path: Path, conf: Path, name: str, old: str, new: str) -> Path:
    """`conf` with one change: a wrong setup for one checkpoint."""
    text = conf.read_text()
    assert old in text
    path = tmp_path / name
    path.write_text(text.replace(old, new))
    return path


def explain(result: LessonResult) -> str:
    """Every step that differed, for an assertion message."""
    lines = [f"{o.title}: {'; '.join(o.diffs)}" for o in result.steps if o.diffs]
    return "\n".join([result.checkpoint_line(), *lines])


def lesson_ports_fixture(number: int):  # type: ignore[no-untyped-def]
    """An autouse fixture for a lesson's test module: the lesson left nothing listening on its ports."""

    @pytest.fixture(autouse=True)
    def _lesson_ports_free() -> Iterator[None]:
        yield
        busy = {port: find_listener(port) for port in manifest.get(number).ports}
        assert not any(busy.values()), f"lesson {number} left ports listening: {busy}"

    return _lesson_ports_free
