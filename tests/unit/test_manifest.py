"""The lesson manifest agrees with the files it names: configs, exercises, lesson modules, docs, notebooks."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcbook.paths import NGINX_DIR, ROOT
from pcbook.stage.model import Client, ControlPlane, Driver, Expect, Lesson, Nginx, Registry, Server, Step
from pcbook.workbook import manifest
from pcbook.workbook.runner import conf_for

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
    # In order, no repeats; a lesson still being written elsewhere may leave a gap (13 while 14 landed).
    assert numbers == sorted(set(numbers)) and numbers[:12] == list(range(1, 13))
    assert len({lesson.slug for lesson in manifest.LESSONS}) == len(numbers)


def test_each_lesson_lives_in_its_module_and_steps_have_keys() -> None:
    for module, lesson in zip(manifest.MODULES, manifest.LESSONS, strict=True):
        assert module.__name__ == f"pcbook.lessons.{manifest.module_name(lesson)}", module.__name__
    with pytest.raises(ValueError, match="lowercase words"):
        Step(key="Not A Key", title="t", why="w", client=Client(), expect=Expect())
    with pytest.raises(ValueError, match="share a key"):
        step = manifest.get(2).steps[0]
        Lesson(number=98, slug="x", title="x", goal="x", steps=(step, step))


def test_each_lesson_has_a_checkpoint_and_unique_step_titles() -> None:
    for lesson in manifest.LESSONS:
        assert lesson.checkpoint_steps, f"lesson {lesson.number} has no checkpoint step"
        titles = [s.title for s in lesson.steps]
        assert len(set(titles)) == len(titles), f"lesson {lesson.number} repeats a step title"


def test_act_and_judge_functions_live_in_lesson_modules() -> None:
    for lesson in manifest.LESSONS:
        for step in lesson.steps:
            if step.act is not None:
                # The act is the lesson's own; a judge may be another lesson's rules (lesson 12 judges its xDS
                # story by lesson 11's).
                assert step.act.__module__ == f"pcbook.lessons.{manifest.module_name(lesson)}", step.key
                assert step.judge is not None and step.judge.__module__.startswith("pcbook.lessons."), step.key
            assert step.must_show(), f"lesson {lesson.number}, {step.title!r} says nothing it must show"


def test_lessons_beyond_the_tutorial_are_marked() -> None:
    assert [lesson.number for lesson in manifest.LESSONS if not lesson.tutorial] == [7, 8, 9, 10, 11, 12, 13, 14]


def test_conf_replaces_exactly_the_checkpoint_config() -> None:
    learner = Path("/tmp/learner.conf")
    for lesson in manifest.LESSONS:
        replaced = [s for s in lesson.steps if conf_for(lesson, s, learner) == learner]
        if lesson.checkpoint_config is None:
            assert replaced == [], lesson.number
            continue
        assert replaced and all(s.checkpoint for s in replaced), lesson.number
        assert all(s.config_file == lesson.checkpoint_config for s in replaced)
    # Lessons 1-9: the checkpoint steps use one config at most, so CONF replaces all of them.
    for lesson in manifest.LESSONS[:9]:
        assert len({s.nginx.path for s in lesson.checkpoint_steps if s.nginx}) <= 1, lesson.number


def test_a_step_is_judged_one_way() -> None:
    with pytest.raises(ValueError, match="either expect or judge"):
        Step(key="no-verdict", title="no verdict", why="why", client=Client())
    with pytest.raises(ValueError, match="needs an act"):
        Step(key="no-act", title="no act", why="why", client=Driver("x"), judge=lambda _r: [])
    with pytest.raises(ValueError, match="tutorial's client"):
        Step(key="expect-a-driver", title="expect a driver", why="why", client=Driver("x"), expect=Expect())


def test_a_server_describes_what_to_type() -> None:
    assert Server("server1", 50051).command() == "make server1"
    assert Server("server1", 50051, tls=True, client_auth="none").command() == "make server1-tls CLIENT_AUTH=none"
    assert Server("server1", 50071, flags=("--work-ms", "20")).command() == \
        "python -m pcbook.server --port 50071 --work-ms 20"
    assert Nginx("lesson-2.conf").path == NGINX_DIR / "lesson-2.conf"


def test_an_envoy_spec_names_its_config_ports_and_command() -> None:
    from pcbook.paths import ENVOY_DIR
    from pcbook.stage.model import Envoy

    spec = Envoy("lesson-13-health.yaml", 8131, admin_port=9131)
    assert spec.path == ENVOY_DIR / "lesson-13-health.yaml" and spec.ports == (8131, 9131)
    assert spec.command().startswith("envoy -c ") and "port_value: 9131" in spec.command()
    # The lesson's ports include Envoy's listeners and its admin port (the tests check they are left free).
    assert {8131, 8132, 9131, 8133, 50131, 50132} <= set(manifest.get(13).ports)


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


def test_progress_checks_exactly_the_lessons_with_an_exercise() -> None:
    # `make progress` runs these; lesson 1 (no proxy, no client config) it lists as having no exercise, never
    # as done. Lesson 7's is the client's service config, 12's the knobs written to etcd, 13's an Envoy
    # config. Lesson 10's is its scale-out upstream, not upstream keepalive: nginx 1.31 keeps upstream
    # connections alive by default, so a starter without it passes.
    assert [lesson.number for lesson in manifest.LESSONS if lesson.exercise] == list(range(2, 15))
    for lesson in manifest.LESSONS:
        assert lesson.exercise_problems() == [], lesson.exercise_problems()
        if lesson.exercise is not None:
            assert lesson.exercise.path.is_file(), f"lesson {lesson.number}: no starter at {lesson.exercise.starter}"


def test_discovery_lessons_declare_their_registry_and_control_plane() -> None:
    for number in (11, 12):
        assert all(step.registry is not None and step.registry.prefix == Registry().prefix
                   for step in manifest.get(number).steps), number
    assert all(step.control_plane is None for step in manifest.get(11).steps)
    planes = {step.key: step.control_plane for step in manifest.get(12).steps}
    assert planes.pop("endpoint-weights") == ControlPlane(weights="endpoint")
    assert set(planes.values()) == {ControlPlane()}


def test_control_plane_flags_and_its_registry() -> None:
    assert ControlPlane().args("etcd://x") == ["serve", "--registry", "etcd://x"]
    assert ControlPlane(weights="endpoint", follow=False).args("etcd://x") == [
        "serve", "--registry", "etcd://x", "--weights", "endpoint", "--no-follow"]
    with pytest.raises(ValueError, match="needs a registry"):
        Step(key="t", title="t", why="w", act=lambda ctx: None, judge=lambda r: [], control_plane=ControlPlane())
