"""Lesson 5: mutual TLS on both hops."""

from __future__ import annotations

from .support import checkpoint, explain, story


def test_lesson_4_config_is_refused_then_client_certificate_works() -> None:
    result = story(5)
    assert result.story_passed, explain(result)
    refused, mutual, *refusals = result.steps
    assert not refused.seen.client_ok
    assert mutual.seen.client_ok
    assert {server for server, _ in mutual.seen.calls} == {"server1", "server2"}


def test_checkpoint_fails_against_lesson_4_config() -> None:
    result = checkpoint(5, "lesson-4.conf")
    assert not result.checkpoint_passed
    assert "the client should succeed but failed" in result.checkpoint_line()
