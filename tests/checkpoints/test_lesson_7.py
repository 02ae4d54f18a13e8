"""Lesson 7: client-side load balancing, observed on real servers (ports 50071, 50072, nginx 8071)."""

from __future__ import annotations

from pathlib import Path

from pcbook.stage.results import Calls, Latency, Phases

from .support import client_variant, explain, lesson_ports_fixture, run_steps, story

_ports = lesson_ports_fixture(7)

PICK_FIRST = "pick-first"
ROUND_ROBIN = "round-robin"
HEALTH = "health-checking"


def test_story_shows_each_policy_health_a_dying_server_and_the_hop() -> None:
    result = story(7)
    assert result.story_passed, explain(result)
    pick_first, round_robin, health, dies, latency = (s.result for s in result.steps)
    assert [s.checkpoint for s in result.steps] == [True, True, True, True, False]

    # pick_first: one server took every call.
    assert isinstance(pick_first, Calls) and sorted(pick_first.counts().per_server.values()) == [0, 10]
    # round_robin: both did.
    assert all(n > 0 for n in round_robin.counts().per_server.values())

    # Health: server2 served calls, then none while NOT_SERVING, then calls again.
    assert isinstance(health, Phases)
    phases = {p: c.per_server for p, c in health.phases.items()}
    assert phases["serving"]["server2"] > 0
    assert phases["not serving"]["server2"] == 0 and phases["not serving"]["server1"] > 0
    assert phases["serving again"]["server2"] > 0

    # A dying server: the calls in flight failed with UNAVAILABLE, every other call succeeded.
    assert isinstance(dies, Calls) and dies.origin == "the kill"
    failed = dies.failed()
    assert failed and {c.code for c in failed} == {"UNAVAILABLE"}
    assert all(c.server == "server1" for c in dies.calls if c.start > 0.25)

    # The hop: three positive medians, for the notebook's chart (values are not asserted).
    assert isinstance(latency, Latency)
    assert set(latency.median_ms) == {"direct", "nginx", "client-side"}
    assert all(v > 0 for v in latency.median_ms.values())


def test_checkpoints_fail_on_a_wrong_client_setup(tmp_path: Path) -> None:
    blind_config = tmp_path / "round-robin-only.json"
    blind_config.write_text('{"loadBalancingConfig": [{"round_robin": {}}]}')
    result = run_steps(7, [
        # The round-robin check with grpcio's default policy: one server gets everything.
        client_variant(7, ROUND_ROBIN, lb_policy="pick_first"),
        # The pick_first check with round robin: both servers get calls.
        client_variant(7, PICK_FIRST, lb_policy="round_robin"),
        # Health-aware round robin without client-side health checking: server2 keeps getting calls.
        client_variant(7, HEALTH, service_config=str(blind_config)),
    ])
    spread, single, blind = result.steps
    assert not spread.passed and "received no call" in spread.diffs[0]
    assert not single.passed
    assert not blind.passed and any("while NOT_SERVING" in diff for diff in blind.diffs)


def test_check_refuses_a_conf_for_a_checkpoint_without_a_config_file() -> None:
    import pytest

    from pcbook.workbook import cli

    # Lesson 1's checkpoint runs the tutorial's server and client, and no file of the learner's.
    with pytest.raises(SystemExit, match="lesson 1's checkpoint runs no config file of yours, so it takes no CONF"):
        cli.main(["check", "1", "--conf", "nginx/lesson-7.conf"])


def test_a_service_config_that_is_not_json_gets_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "bad.json"
    bad.write_text('// a comment\n{"loadBalancingConfig": [{"round_robin": {}}],}\n')
    done = subprocess.run([sys.executable, "-m", "pcbook.measure.driver", "--address", "127.0.0.1:1",
                           "--service-config", str(bad)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith(f"--service-config: {bad}:2:47: not JSON: "
                                                          "Expecting property name enclosed in double quotes")
