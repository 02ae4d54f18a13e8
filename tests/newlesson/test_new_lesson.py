"""A lesson built from exactly the files CONTRIBUTING.md lists runs, checks, documents and plays.

The sample lesson (number 99, ports 50191, 50192 and 8191) lives here, not in the manifest's index: learners
never see it. Each of its files stands for one row of CONTRIBUTING.md's table.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from pcbook.paths import ROOT
from pcbook.service import certs
from pcbook.stack.ports import find_listener
from pcbook.stage.model import Nginx
from pcbook.workbook.runner import run_lesson

from .l99_sample import HERE, LESSON

sys.path.insert(0, str(ROOT / "docs" / "hooks"))
import generate  # noqa: E402  (the MkDocs hook)

# CONTRIBUTING.md's row -> the sample's file that plays its part.
ROLES = {
    "pcbook/lessons/lNN_slug.py": "l99_sample.py",
    "nginx/lesson-N.conf": "lesson-99.conf",
    "lessons/NN-slug.ipynb": "99-sample.ipynb",
    "docs/lessons/NN-slug.md": "99-sample.md",
    "tests/checkpoints/test_lesson_N.py": "test_new_lesson.py",
}


@pytest.fixture(autouse=True)
def _stack_ready() -> Iterator[None]:
    certs.ensure_certs()
    yield
    busy = {port: find_listener(port) for port in LESSON.ports}
    assert not any(busy.values()), f"the sample lesson left ports listening: {busy}"


def test_contributing_lists_exactly_the_files_the_sample_has() -> None:
    text = (ROOT / "CONTRIBUTING.md").read_text()
    table = text[text.index("## The files of a new lesson"):]
    listed = re.findall(r"^\| `([^`]+)` \|", table, flags=re.M)
    assert listed == list(ROLES), listed
    files = sorted(p.name for p in HERE.iterdir() if p.is_file() and p.name != "__init__.py")
    assert files == sorted(ROLES.values()), files


def test_the_sample_lesson_runs_and_its_checkpoint_catches_a_wrong_config(tmp_path: Path) -> None:
    result = run_lesson(LESSON, echo=None)
    assert result.story_passed and result.checkpoint_passed, result.checkpoint_line()
    # A learner's config with one backend: the same checkpoint fails.
    alone = tmp_path / "alone.conf"
    alone.write_text(LESSON.steps[0].nginx.path.read_text().replace("server 127.0.0.1:50192;", ""))
    wrong = run_lesson(LESSON, conf=alone, checkpoint_only=True, stop_at_failure=True, echo=None)
    assert not wrong.checkpoint_passed and "no call reached server2" in wrong.checkpoint_line()
    assert len(wrong.steps) == 1  # stopped at the first failing checkpoint step


def test_its_page_gets_the_generated_steps() -> None:
    page = (HERE / "99-sample.md").read_text()
    assert "<!-- steps: 99 -->" in page and '--8<-- "tests/newlesson/lesson-99.conf"' in page
    html = generate.render_steps(LESSON)
    assert html.count("<tr><td>") == len(LESSON.steps)
    assert all(generate.html.escape(step.title) in html for step in LESSON.steps)


@pytest.mark.timeout(180)
def test_its_notebook_runs_every_step_in_order() -> None:
    from notebooks.play import check_steps, outputs_text, play_notebook  # tests/ is on sys.path

    nb = nbformat.read(HERE / "99-sample.ipynb", as_version=4)
    check_steps(LESSON, nb)
    played = play_notebook(LESSON, nb, cwd=ROOT / "tests")
    assert played.left_running == {} and played.held_ports == {}
    assert [o.title for o in played.result.steps] == [s.title for s in LESSON.steps]
    checkpoint = [c for c in played.nb.cells if c.cell_type == "code"][-2]
    assert outputs_text(checkpoint).strip().splitlines()[-1] == "checkpoint lesson-99: passed"


def test_a_step_moved_off_the_model_is_caught() -> None:
    from notebooks.play import check_steps

    nb = nbformat.read(HERE / "99-sample.ipynb", as_version=4)
    renamed = dataclasses.replace(LESSON, steps=(dataclasses.replace(LESSON.steps[0], title="another title"),
                                                 LESSON.steps[1]))
    with pytest.raises(AssertionError, match="one `### <step title>` heading"):
        check_steps(renamed, nb)
    assert isinstance(LESSON.steps[0].nginx, Nginx)
