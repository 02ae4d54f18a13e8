"""Lesson 2: nginx balances plaintext gRPC across two servers."""

from __future__ import annotations

from pcbook.lessons.tutorial import AUTH_LOGIN, CREATE_LAPTOP

from .support import explain, story


def test_calls_alternate_and_nginx_logs_the_lectures_five_posts() -> None:
    result = story(2)
    assert result.checkpoint_passed, explain(result)
    seen = result.steps[-1].seen
    assert {server for server, _ in seen.calls} == {"server1", "server2"}
    # Round robin per call: five sequential calls over two servers give three and two.
    assert sorted(len(methods) for methods in seen.split().values()) == [2, 3]
    # The lecture's access log: a Login, three CreateLaptop, and the client's token refresh (--stay).
    assert seen.posts == [(AUTH_LOGIN, 200)] + [(CREATE_LAPTOP, 200)] * 3 + [(AUTH_LOGIN, 200)]
    assert any("token refreshed" in line for line in seen.client_lines[-3:])
