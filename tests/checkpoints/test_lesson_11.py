"""Lesson 11: service discovery with etcd, on real etcd, servers, thick client and nginx (the lesson's ports)."""

from __future__ import annotations

import math

from pcbook.lessons import l11_service_discovery as discovery
from pcbook.stage.context import StepContext
from pcbook.stage.results import Discovered

from .support import explain, run_steps, story, variant

THICK = "thick-client"
NGINX = "nginx-sync"


def test_story_shows_both_paths_following_the_registry() -> None:
    result = story(11)
    assert result.story_passed, explain(result)
    thick, nginx = (s.result for s in result.steps)
    assert isinstance(thick, Discovered) and isinstance(nginx, Discovered)
    for run in (thick, nginx):
        assert run.failed["join"] == 0 and run.failed["graceful stop"] == 0 and run.failed["kill"] <= 2
        assert run.register_to_first_call is not None and run.register_to_first_call < 3
        assert run.phases["killed"].used() == ["server3"]
        assert [m.label for m in run.run.marks][:3] == ["server3 registered", "server1 SIGTERM", "server2 SIGKILL"]
    # The thick client needs no reload: it reaches server3 well within the judge's 3 s.
    assert discovery.judge_story(thick, first_call_within=2.0) == []
    # nginx: one reload per change of the set during the story (+server3, -server1, -server2; the first
    # render, of server1 and server2, came before the story began); the list at the story's start names
    # server1, the one nginx_sync left names server3 alone.
    assert nginx.notes["nginx reloads"] == 3, nginx.notes
    first, last = nginx.upstream_lists
    assert "# server1" in first, first
    assert "# server3" in last and last.count("server ") == 1, last


def _fixed_list(ctx: StepContext) -> Discovered:
    """A wrong setup: lesson 7's client, a fixed address list that nobody updates."""
    s1, s2 = ctx.step.servers
    return discovery.discovered("fixed list", discovery.play(ctx, f"ipv4:127.0.0.1:{s1.port},127.0.0.1:{s2.port}"))


def _nginx_without_sync(ctx: StepContext) -> Discovered:
    """A wrong setup: nginx rendered once from the registry, then nobody reloads it."""
    ctx.stack.stop("sync")
    return discovery.discovered("static nginx", discovery.play(ctx, f"127.0.0.1:{discovery.NGINX_PORT}"))


def test_checkpoint_fails_for_a_client_that_does_not_watch() -> None:
    result = run_steps(11, [variant(11, THICK, act=_fixed_list)])
    assert not result.checkpoint_passed
    (outcome,) = result.steps
    assert any("is the client watching?" in d for d in outcome.diffs), outcome.diffs
    assert math.isinf(outcome.result.register_to_first_call)
    joined = dict(outcome.result.phases["joined"].per_server)
    assert not discovery.spread(joined, {"server1", "server2", "server3"}), joined


def test_checkpoint_fails_for_nginx_that_is_never_reloaded() -> None:
    result = run_steps(11, [variant(11, NGINX, act=_nginx_without_sync)])
    assert not result.checkpoint_passed
    (outcome,) = result.steps
    assert any("server3 got no call" in d for d in outcome.diffs), outcome.diffs
