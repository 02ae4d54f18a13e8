"""Lesson 1: the TLS flag on server and client."""

from __future__ import annotations

from pcbook.workbook import manifest
from pcbook.workbook.runner import run_lesson

from .support import explain, story, with_servers


def test_story_plain_works_mismatch_fails_tls_works() -> None:
    result = story(1)
    assert result.story_passed, explain(result)
    plain, mismatch, both_tls = result.steps
    assert plain.seen.client_ok and both_tls.seen.client_ok
    assert not mismatch.seen.client_ok
    assert any("code = Unavailable desc =" in line for line in mismatch.seen.client_lines)
    # The server logged the calls the TLS client made: Login and three CreateLaptop.
    methods = [m.rsplit("/", 1)[-1] for _, m in both_tls.seen.calls]
    assert methods == ["Login", "CreateLaptop", "CreateLaptop", "CreateLaptop"]
    assert result.checkpoint_line() == "checkpoint lesson-1: passed"


def test_checkpoint_fails_when_the_server_has_no_tls() -> None:
    wrong = with_servers(manifest.get(1), (manifest.Server("server", manifest.NGINX_PORT),))
    result = run_lesson(wrong, checkpoint_only=True, echo=None)
    assert not result.checkpoint_passed
    assert "the client should succeed but failed" in result.checkpoint_line()
