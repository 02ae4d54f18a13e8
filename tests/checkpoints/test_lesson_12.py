"""Lesson 12: look-aside balancing with xDS, on real grpc xDS clients and our control plane (the lesson's ports)."""

from __future__ import annotations

import dataclasses

from pcbook.lessons import l11_service_discovery as discovery_lab
from pcbook.lessons import l12_look_aside_xds as discovery
from pcbook.stage.model import ControlPlane
from pcbook.stage.results import Discovered
from pcbook.workbook import manifest

from .support import explain, run_steps, story, variant

FOLLOW = "xds-story"
WEIGHTS = "weights"


def test_story_shows_pushes_weights_drain_and_restart() -> None:
    result = story(12)
    assert result.story_passed, explain(result)
    follow, weights, endpoint, drain, restart = (s.result for s in result.steps)
    assert all(isinstance(r, Discovered) for r in (follow, weights, endpoint, drain, restart))
    # Lesson 11's story through the control plane, with the thick client's 2 s bound on server3's first call.
    assert discovery.judge_story(follow, first_call_within=2.0) == []
    assert follow.notes["EDS ACKs"] >= 4, follow.notes  # first list, +server3, -server1, -server2
    assert weights.failed == {"weight": 0} and endpoint.failed == {"weight": 0}
    assert discovery.WEIGHT_BAND[0] <= weights.share["server1"] <= discovery.WEIGHT_BAND[1]
    assert discovery.EVEN_BAND[0] <= endpoint.share["server1"] <= discovery.EVEN_BAND[1]
    assert drain.share == {"server1": 1.0} and drain.failed == {"drain": 0}
    assert restart.failed == {"control plane down": 0} and restart.notes["reached server3 while down"] == 0.0


def test_checkpoint_fails_for_a_control_plane_that_never_pushes() -> None:
    # A wrong setup, declared: a control plane that reads the registry once and never pushes an update.
    result = run_steps(12, [variant(12, FOLLOW, control_plane=ControlPlane(follow=False))])
    assert not result.checkpoint_passed
    assert any("is the client watching?" in d for d in result.steps[0].diffs), result.steps[0].diffs
    found = result.steps[0].result
    assert found.register_to_first_call == float("inf")
    joined = dict(found.phases["joined"].per_server)
    assert not discovery_lab.spread(joined, {"server1", "server2", "server3"}), joined


def test_checkpoint_fails_for_weights_round_robin_ignores() -> None:
    # A wrong setup: the weight put on the endpoint, which round robin ignores. That setup is the story's own
    # third step (the weight step's act and registry, ControlPlane(weights="endpoint")), so the weight step's
    # judge is applied to what that step measured instead of running the same stack again.
    step = manifest.get(12).step(WEIGHTS)
    endpoint = manifest.get(12).step("endpoint-weights")
    assert dataclasses.replace(step, control_plane=ControlPlane(weights="endpoint"), key=endpoint.key,
                               title=endpoint.title, why=endpoint.why, then=endpoint.then, judge=endpoint.judge,
                               claims=endpoint.claims, checkpoint=endpoint.checkpoint) == endpoint
    measured = story(12).steps[2]
    assert measured.key == endpoint.key
    diffs = step.judge(measured.result)
    assert any("the weights did not reach the client" in d for d in diffs), diffs
