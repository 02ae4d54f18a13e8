"""Lesson 6: routing by service keeps Login on server1 and CreateLaptop on server2."""

from __future__ import annotations

from pcbook.lessons.tutorial import AUTH_LOGIN, CREATE_LAPTOP

from .support import checkpoint, explain, story


def test_auth_on_server1_laptops_on_server2_over_two_runs() -> None:
    result = story(6)
    assert result.checkpoint_passed, explain(result)
    seen = result.steps[0].seen
    assert seen.servers_of(AUTH_LOGIN) == {"server1"}
    assert seen.servers_of(CREATE_LAPTOP) == {"server2"}
    assert len([c for c in seen.calls if c[1] == CREATE_LAPTOP]) == 6  # two runs of three


def test_checkpoint_fails_against_lesson_5_config() -> None:
    result = checkpoint(6, "lesson-5.conf")
    assert not result.checkpoint_passed
    assert "should reach only" in result.checkpoint_line()
