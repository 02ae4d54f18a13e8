"""The lesson manifest agrees with the files it names: configs, exercises, scenarios, docs, notebooks."""

from __future__ import annotations

import importlib

from pcbook.paths import NGINX_DIR, ROOT
from pcbook.workbook import manifest

# Wrong setups that only the checkpoint tests use, to show a checkpoint failing.
TEST_ONLY_CONFIGS = {"lesson-9-l4-only.conf"}


def test_every_config_named_by_a_lesson_exists() -> None:
    for lesson in manifest.LESSONS:
        for conf in lesson.nginx_configs:
            assert conf.is_file(), f"lesson {lesson.number} names {conf.name}, which is not in nginx/"


def test_every_config_in_nginx_belongs_to_a_lesson() -> None:
    named = {conf.name for lesson in manifest.LESSONS for conf in lesson.nginx_configs}
    on_disk = {path.name for path in NGINX_DIR.glob("*.conf")}
    assert on_disk - named - TEST_ONLY_CONFIGS == set()


def test_lessons_are_numbered_in_order_with_unique_slugs() -> None:
    numbers = [lesson.number for lesson in manifest.LESSONS]
    assert numbers == list(range(1, len(numbers) + 1))
    assert len({lesson.slug for lesson in manifest.LESSONS}) == len(numbers)


def test_each_lesson_has_steps_or_a_scenario_and_a_checkpoint() -> None:
    for lesson in manifest.LESSONS:
        if lesson.scenario is None:
            assert lesson.checkpoint_steps, f"lesson {lesson.number} has no checkpoint step"
        else:
            module, _, function = lesson.scenario.partition(":")
            assert callable(getattr(importlib.import_module(module), function))
            assert lesson.claims, f"lesson {lesson.number} does not say what its checkpoint proves"


def test_each_lesson_has_its_page_and_notebook() -> None:
    for lesson in manifest.LESSONS:
        assert (ROOT / "docs" / lesson.doc_page).is_file(), lesson.doc_page
        assert (ROOT / lesson.notebook).is_file(), lesson.notebook


def test_exercises_exist_for_the_tutorial_configs() -> None:
    for lesson in manifest.LESSONS[:6]:
        if lesson.checkpoint_config is not None:
            assert lesson.exercise is not None, f"lesson {lesson.number} has no starter in nginx/exercises/"


def test_unknown_lesson_names_the_known_ones() -> None:
    try:
        manifest.get(42)
    except KeyError as err:
        assert "1, 2, 3" in str(err)
    else:
        raise AssertionError("lessons.get(42) should fail")
