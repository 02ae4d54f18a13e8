"""Lesson 8: a backend fails behind nginx, observed on real servers (ports 50081, 50082, nginx 8081)."""

from __future__ import annotations

from pathlib import Path

from pcbook.lessons import l08_when_a_backend_fails as failures
from pcbook.stage.model import Nginx
from pcbook.stage.results import NginxRun
from pcbook.workbook import manifest

from .support import checkpoint, conf_variant, explain, lesson_ports_fixture, run_steps, story, variant

_ports = lesson_ports_fixture(8)

CONF = failures.L8_FINAL.path
GRPC_STATUS = "grpc-status"
KILLED = "kill-under-load"
REFUSED = "refused-retried"
ENOUGH = "enough-worker-connections"


def test_story_shows_each_failure_and_its_fix() -> None:
    result = story(8)
    assert result.story_passed, explain(result)
    steps = [s.result for s in result.steps]
    assert all(isinstance(s, NginxRun) for s in steps)
    html, grpc, killed, non_idempotent, refused, all_down, ten, enough = steps
    assert [s.checkpoint for s in result.steps] == [False, True, True, False, True, False, False, True]

    # No backend: an HTML 502 turned into a status by grpcio, then nginx's own gRPC status.
    assert html.seen() == ["UNAVAILABLE: Received http2 header with status: 502"]
    # Each 502 worded for what happened: nothing to connect to, then every server marked down.
    assert grpc.login == "UNAVAILABLE: nginx: could not connect to any backend"
    assert grpc.seen() == ["UNAVAILABLE: nginx: no live backend (each failed less than fail_timeout ago)"]
    assert html.error_lines and grpc.error_lines

    # Killed under load: the calls in flight failed and were received by server1 only.
    for step in (killed, non_idempotent):
        failed = step.run.failed()
        assert failed and all(c.code == "UNAVAILABLE" for c in failed)
        assert all("server2" not in c.servers for c in failed)
        assert all(c.upstream == "127.0.0.1:50081" for c in failed)
        # The message says the call reached the backend that dropped it, not "no backend".
        assert {c.details for c in failed} == {"nginx: the backend closed the connection before answering; not retried"}
        assert [c.number for c in step.run.calls if len(c.servers) > 1] == []

    # A refused connection is retried; passive health takes the dead server out after one try.
    assert refused.run.codes() == {"OK": 10}
    assert refused.attempts_on_dead_server == 1
    assert refused.temporarily_disabled

    # Both down: nginx answers at once until fail_timeout (2 s) has passed since the last failure.
    assert all_down.outage_s is not None and all_down.outage_s >= 1.5
    assert all_down.run.codes()["UNAVAILABLE"] > 0

    # worker_connections 10: 500s (UNKNOWN) and nginx's alert; 1024: the same load without a failure.
    assert ten.run.codes().get("UNKNOWN", 0) > 0 and ten.error_lines
    assert enough.run.codes() == {"OK": 2 * failures.CONCURRENT}


def _with(key: str, conf: Path) -> manifest.Step:
    """Step `key` with another config; keyed by the config too, as two variants of one step may run."""
    step = manifest.get(8).step(key)
    return variant(8, key, key=f"{key}-{conf.stem}", nginx=Nginx(conf, step.nginx.port))


def test_checkpoints_fail_on_wrong_configs(tmp_path: Path) -> None:
    no_retry = conf_variant(tmp_path, CONF, "no-retry.conf", "grpc_next_upstream error timeout;",
                            "grpc_next_upstream off;")
    no_health = conf_variant(tmp_path, CONF, "no-health.conf", "50081 max_fails=1", "50081 max_fails=0")
    alone = conf_variant(tmp_path, CONF, "alone.conf", "server 127.0.0.1:50082 max_fails=1 fail_timeout=2s;", "")
    result = run_steps(8, [
        # error_page check against the tutorial's config: the client gets grpcio's HTML-page message.
        _with(GRPC_STATUS, failures.L8_TUTORIAL.path),
        # Retrying a refused connection, with retries turned off: the call that met server1 fails.
        _with(REFUSED, no_retry),
        # Passive health turned off (max_fails=0): nginx tries the dead server for every other call.
        _with(REFUSED, no_health),
        # A kill with nowhere else to go (one server in the upstream): later calls fail too.
        _with(KILLED, alone),
        # 24 concurrent calls against the tutorial's worker_connections 10.
        _with(ENOUGH, failures.L8_TUTORIAL.path),
    ])
    html, no_retry_step, blind, lonely, ten = result.steps
    assert not html.passed and "HTTP error page" in html.diffs[0]
    assert not no_retry_step.passed
    assert any("passive health" in diff for diff in blind.diffs)
    assert any("did not move on" in diff for diff in lonely.diffs)
    assert not ten.passed


def test_check_with_the_tutorial_config_replays_only_the_checkpoint_and_fails() -> None:
    result = checkpoint(8, "lesson-8-tutorial.conf")
    assert [s.key for s in result.steps] == [s.key for s in manifest.get(8).checkpoint_steps]
    assert not result.checkpoint_passed, explain(result)
