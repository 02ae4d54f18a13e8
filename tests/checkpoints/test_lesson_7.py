"""Lesson 7: client-side load balancing, observed on real servers (ports 50071, 50072, nginx 8071)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pcbook.lessons import client_side
from pcbook.stack import procs
from pcbook.stack.ports import find_listener
from pcbook.workbook.runner import ScenarioContext

from .support import explain, story

PORTS = (*client_side.SERVERS.values(), client_side.NGINX_PORT)


@pytest.fixture(autouse=True)
def _lesson_ports_free() -> Iterator[None]:
    yield
    busy = {port: find_listener(port) for port in PORTS}
    assert not any(busy.values()), f"lesson 7 left ports listening: {busy}"


def test_story_shows_each_policy_health_a_dying_server_and_the_hop() -> None:
    result = story(7)
    assert result.story_passed, explain(result)
    pick_first, round_robin, health, dies, latency = result.steps
    assert [s.checkpoint for s in result.steps] == [True, True, True, True, False]

    # pick_first: one server took every call.
    counts = pick_first.data["calls_per_server"]
    assert sorted(counts.values()) == [0, 10]
    # round_robin: both did.
    assert all(n > 0 for n in round_robin.data["calls_per_server"].values())

    # Health: server2 served calls, then none while NOT_SERVING, then calls again.
    phases = health.data["calls_per_server"]
    assert phases["serving"]["server2"] > 0
    assert phases["not serving"]["server2"] == 0 and phases["not serving"]["server1"] > 0
    assert phases["serving again"]["server2"] > 0

    # A dying server: the calls in flight failed with UNAVAILABLE, every other call succeeded.
    failed = [c for c in dies.data["calls"] if c["code"] != "OK"]
    assert failed and {c["code"] for c in failed} == {"UNAVAILABLE"}
    assert all(c["server"] == "server1" for c in dies.data["calls"] if c["t_ms"] > 250)

    # The hop: three positive medians, for the notebook's chart (values are not asserted).
    assert set(latency.data["latency_ms"]) == {"direct", "nginx", "client-side"}
    assert all(v > 0 for v in latency.data["latency_ms"].values())


@pytest.fixture
def ctx() -> Iterator[ScenarioContext]:
    with procs.Stack(echo=None) as stack:
        context = ScenarioContext(stack, lambda _line: None, checkpoint_only=True, conf=None)
        client_side.start_servers(context)
        yield context


def test_checkpoints_fail_on_a_wrong_client_setup(ctx: ScenarioContext) -> None:
    # The round-robin check with grpcio's default policy: one server gets everything.
    spread = client_side.round_robin(ctx, 1, 3, policy="pick_first")
    assert not spread.passed
    assert "received no call" in spread.diffs[0]

    # The pick_first check with round robin: both servers get calls.
    single = client_side.pick_first(ctx, 2, 3, policy="round_robin")
    assert not single.passed

    # Health-aware round robin without client-side health checking: server2 keeps getting calls.
    blind = client_side.health_aware(ctx, 3, 3, health_check=False)
    assert not blind.passed
    assert any("while NOT_SERVING" in diff for diff in blind.diffs)
