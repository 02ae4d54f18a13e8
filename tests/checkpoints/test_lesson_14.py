"""Lesson 14: connection age behind L4, L7 for contrast, the client's retries and wait_for_ready
(ports 50141-50143, nginx 8141-8143)."""

from __future__ import annotations

import dataclasses

import pytest

from pcbook.lessons.l14_connections_and_retries import JOINER, PLAIN
from pcbook.stage.results import Calls, Joined

from .support import client_variant, explain, lesson_ports_fixture, run_steps, story, variant

_ports = lesson_ports_fixture(14)


def _after(result: Joined) -> list[dict[str, int]]:
    return list(result.per_second[int(result.joined) + 1:-1])


@pytest.mark.timeout(300)  # ten steps, three of them 9-12 s of load with a server starting under it
def test_story_shows_age_moving_connections_and_retries_saving_calls() -> None:
    result = story(14)
    assert result.story_passed, explain(result)
    by_key = {s.key: s.result for s in result.steps}
    no_age, aged, no_grace, l7 = (by_key[k] for k in ("l4-join", "l4-join-with-age", "goaway-no-grace", "l7-join"))
    assert all(isinstance(r, Joined) for r in (no_age, aged, no_grace, l7))
    # Without connection age server3 got nothing, second after second; with it, and through L7, it did.
    assert len(_after(no_age)) >= 3 and all(s[JOINER] == 0 for s in _after(no_age))
    assert sum(s[JOINER] for s in _after(aged)[-2:]) > 0 and not aged.run.failed()
    assert _after(l7)[0][JOINER] > 0
    # No grace: calls in flight were cut, with UNAVAILABLE.
    assert no_grace.run.failed() and {c.code for c in no_grace.run.failed()} == {"UNAVAILABLE"}

    lost = {k: by_key[k] for k in ("kill-no-retry", "kill-client-retry", "kill-client-retry-round-robin")}
    assert all(isinstance(r, Calls) for r in lost.values())
    assert lost["kill-no-retry"].failed()
    for key in ("kill-client-retry", "kill-client-retry-round-robin"):
        run = lost[key]
        assert not run.failed() and any(len(c.servers) == 2 for c in run.calls), key

    fast, waited, bounded = (by_key[k] for k in ("fail-fast", "wait-for-ready", "wait-for-ready-deadline"))
    assert fast.login_error.startswith("UNAVAILABLE") and fast.login_s < 1
    assert not waited.login_error and waited.codes()["OK"] == len(waited.calls) > 0
    assert waited.login_s >= waited.mark("up")
    assert bounded.login_error.startswith("DEADLINE_EXCEEDED") and bounded.login_s >= 1.3


def test_checkpoint_fails_without_connection_age_or_without_retrying_unavailable() -> None:
    result = run_steps(14, [
        # Servers that never send GOAWAY: server3's share stays 0.
        variant(14, "l4-join-with-age", servers=PLAIN[:2], standby=PLAIN[2:]),
        # A client with no retry policy, and one that retries another code.
        client_variant(14, "kill-client-retry", retry=()),
        client_variant(14, "kill-client-retry-round-robin", retry=("DEADLINE_EXCEEDED",)),
    ])
    no_age, no_retry, wrong_code = result.steps
    assert not no_age.passed and any("share of the last two seconds is 0%" in d for d in no_age.diffs), no_age.diffs
    for outcome in (no_retry, wrong_code):
        assert not outcome.passed and any("must name UNAVAILABLE" in d for d in outcome.diffs), outcome.diffs


def test_the_variants_differ_from_the_story() -> None:
    """The wrong setups above really are other command lines (a variant equal to the story proves nothing)."""
    aged = variant(14, "l4-join-with-age")
    assert dataclasses.replace(aged, servers=PLAIN[:2]).servers != aged.servers
    assert "--max-connection-age" in " ".join(aged.servers[0].flags)
    assert "--retry" in client_variant(14, "kill-client-retry").client.args()
    assert "--retry" not in client_variant(14, "kill-client-retry", retry=()).client.args()
