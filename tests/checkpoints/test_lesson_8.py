"""Lesson 8: a backend fails behind nginx, observed on real servers (ports 50081, 50082, nginx 8081)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pcbook.lessons import failures
from pcbook.stack import procs
from pcbook.stack.ports import find_listener
from pcbook.workbook.runner import ScenarioContext

from .support import explain, story

PORTS = (*failures.SERVERS.values(), failures.NGINX_PORT)


@pytest.fixture(autouse=True)
def _lesson_ports_free() -> Iterator[None]:
    yield
    busy = {port: find_listener(port) for port in PORTS}
    assert not any(busy.values()), f"lesson 8 left ports listening: {busy}"


def test_story_shows_each_failure_and_its_fix() -> None:
    result = story(8)
    assert result.story_passed, explain(result)
    html, grpc, killed, non_idempotent, refused, all_down, ten, enough = result.steps
    assert [s.checkpoint for s in result.steps] == [False, True, True, False, True, False, False, True]

    # No backend: an HTML 502 turned into a status by grpcio, then nginx's own gRPC status.
    assert html.data["seen"] == ["UNAVAILABLE: Received http2 header with status: 502"]
    # Each 502 worded for what happened: nothing to connect to, then every server marked down.
    assert grpc.data["login"] == "UNAVAILABLE: nginx: could not connect to any backend"
    assert grpc.data["seen"] == ["UNAVAILABLE: nginx: no live backend (each failed less than fail_timeout ago)"]
    assert html.data["no_live_upstreams"] and grpc.data["no_live_upstreams"]

    # Killed under load: the calls in flight failed and were received by server1 only.
    for step in (killed, non_idempotent):
        failed = [c for c in step.data["calls"] if c["code"] != "OK"]
        assert failed and all(c["code"] == "UNAVAILABLE" for c in failed)
        assert all("server2" not in c["ran_on"] for c in failed)
        assert all(c["upstream"] == "127.0.0.1:50081" for c in failed)
        # The message says the call reached the backend that dropped it, not "no backend".
        assert {c["details"] for c in failed} == {
            "nginx: the backend closed the connection before answering; not retried"}
        assert step.data["ran_twice"] == []

    # A refused connection is retried; passive health takes the dead server out after one try.
    assert refused.data["codes"] == {"OK": 10}
    assert refused.data["attempts_on_dead_server"] == 1
    assert refused.data["temporarily_disabled"]

    # Both down: nginx answers at once until fail_timeout (2 s) has passed since the last failure.
    assert all_down.data["outage_s"] is not None and all_down.data["outage_s"] >= 1.5
    assert all_down.data["codes"]["UNAVAILABLE"] > 0

    # worker_connections 10: 500s (UNKNOWN) and nginx's alert; 1024: the same load without a failure.
    assert ten.data["codes"].get("UNKNOWN", 0) > 0 and ten.data["alerts"] > 0
    assert enough.data["codes"] == {"OK": 2 * failures.CONCURRENT}


@pytest.fixture
def ctx() -> Iterator[ScenarioContext]:
    with procs.Stack(echo=None) as stack:
        yield ScenarioContext(stack, lambda _line: None, checkpoint_only=True, conf=None)


def _variant(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """lesson-8.conf with one change: a wrong setup for one checkpoint."""
    text = failures.CONF.read_text()
    assert old in text
    path = tmp_path / name
    path.write_text(text.replace(old, new))
    return path


def test_checkpoints_fail_on_wrong_configs(ctx: ScenarioContext, tmp_path: Path) -> None:
    # error_page check against the tutorial's config: the client gets grpcio's HTML-page message.
    html = failures.nginx_errors(ctx, 1, 4, failures.TUTORIAL_CONF)
    assert not html.passed and "HTTP error page" in html.diffs[0]

    # Retrying a refused connection, with retries turned off: the call that met server1 fails.
    no_retry = _variant(tmp_path, "no-retry.conf", "grpc_next_upstream error timeout;", "grpc_next_upstream off;")
    assert not failures.refused_is_retried(ctx, 2, 4, no_retry).passed

    # Passive health turned off (max_fails=0): nginx tries the dead server for every other call.
    no_health = _variant(tmp_path, "no-health.conf", "50081 max_fails=1", "50081 max_fails=0")
    blind = failures.refused_is_retried(ctx, 2, 4, no_health)
    assert any("passive health" in diff for diff in blind.diffs)

    # A kill with nowhere else to go (one server in the upstream): later calls fail too.
    alone = _variant(tmp_path, "alone.conf", "server 127.0.0.1:50082 max_fails=1 fail_timeout=2s;", "")
    lonely = failures.kill_under_load(ctx, 3, 4, alone)
    assert any("did not move on" in diff for diff in lonely.diffs)

    # 24 concurrent calls against the tutorial's worker_connections 10.
    ten = failures.concurrent_calls(ctx, 4, 4, failures.TUTORIAL_CONF)
    assert not ten.passed
