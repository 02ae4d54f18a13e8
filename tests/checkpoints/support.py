"""Helpers the checkpoint tests share: run a lesson's story or its checkpoint, quietly."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pcbook.paths import NGINX_DIR
from pcbook.workbook import manifest
from pcbook.workbook.runner import LessonResult, run_lesson


def story(number: int) -> LessonResult:
    return run_lesson(manifest.get(number), echo=None)


def checkpoint(number: int, conf: str | Path | None = None) -> LessonResult:
    path = NGINX_DIR / conf if isinstance(conf, str) else conf
    return run_lesson(manifest.get(number), conf=path, checkpoint_only=True, echo=None)


def with_servers(lesson: manifest.Lesson, servers: tuple[manifest.Server, ...]) -> manifest.Lesson:
    """The lesson with its checkpoint steps run against other servers: a wrong setup."""
    steps = tuple(dataclasses.replace(s, servers=servers) if s.checkpoint else s for s in lesson.steps)
    return dataclasses.replace(lesson, steps=steps)


def explain(result: LessonResult) -> str:
    """Every step that differed, for an assertion message."""
    lines = [f"{o.title}: {'; '.join(o.diffs)}" for o in result.steps if o.diffs]
    return "\n".join([result.checkpoint_line(), *lines])
