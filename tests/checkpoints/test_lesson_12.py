"""Lesson 12: look-aside balancing with xDS, on real grpc xDS clients and our control plane (free ports)."""

from __future__ import annotations

from pcbook.lessons import discovery
from pcbook.workbook.model import ControlPlane
from pcbook.workbook.results import Discovered

from .support import explain, run_steps, story, variant

FOLLOW = "xDS clients follow the registry"
WEIGHTS = "the control plane shifts traffic by weight"


def test_story_shows_pushes_weights_drain_and_restart() -> None:
    result = story(12)
    assert result.story_passed, explain(result)
    follow, weights, endpoint, drain, restart = (s.result for s in result.steps)
    assert all(isinstance(r, Discovered) for r in (follow, weights, endpoint, drain, restart))
    assert discovery.WEIGHT_BAND[0] <= weights.share["server1"] <= discovery.WEIGHT_BAND[1]
    assert discovery.EVEN_BAND[0] <= endpoint.share["server1"] <= discovery.EVEN_BAND[1]
    assert drain.share == {"server1": 1.0} and drain.failed == {"drain": 0}
    assert restart.failed == {"control plane down": 0} and restart.notes["reached server3 while down"] == 0.0


def test_checkpoint_fails_for_a_control_plane_that_never_pushes() -> None:
    # A wrong setup, declared: a control plane that reads the registry once and never pushes an update.
    result = run_steps(12, [variant(12, FOLLOW, control_plane=ControlPlane(follow=False))])
    assert not result.checkpoint_passed
    assert any("is the client watching?" in d for d in result.steps[0].diffs), result.steps[0].diffs


def test_checkpoint_fails_for_weights_round_robin_ignores() -> None:
    # A wrong setup, declared: the weight put on the endpoint, which round robin ignores.
    result = run_steps(12, [variant(12, WEIGHTS, control_plane=ControlPlane(weights="endpoint"))])
    assert not result.checkpoint_passed
    assert any("the weights did not reach the client" in d for d in result.steps[0].diffs), result.steps[0].diffs
