"""Lesson 13: Envoy beside nginx (ports 50131, 50132, Envoy 8131/8132 with admin 9131, nginx 8133)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pcbook.stage.model import Envoy
from pcbook.stage.results import Discovered, ProxyRun
from pcbook.workbook import manifest

from .support import explain, lesson_ports_fixture, run_steps, story, variant

_ports = lesson_ports_fixture(13)


@pytest.mark.timeout(300)  # ten steps, four of them under load; 118 s in one CI run, past 120 s in another
def test_story_envoy_keeps_every_call_where_nginx_loses_some() -> None:
    result = story(13)
    assert result.story_passed, explain(result)
    assert [s.key for s in result.steps if s.checkpoint] == [
        "round-robin", "mutual-tls", "no-client-cert", "foreign-client-cert", "routes", "health-envoy",
        "retries-envoy", "xds"]
    rr = result.step("round-robin").result
    assert isinstance(rr, ProxyRun) and len(set(rr.upstreams.values())) == 2

    health_envoy, health_nginx = result.step("health-envoy").result, result.step("health-nginx").result
    assert isinstance(health_envoy, ProxyRun) and isinstance(health_nginx, ProxyRun)
    # Envoy: out of the rotation within a few 200 ms intervals, nothing lost at the kill.
    assert health_envoy.removed_after is not None and health_envoy.removed_after < 1.0
    assert "failed_active_hc" in health_envoy.health_flags
    assert health_envoy.lost == 0 and health_envoy.after_change == 0
    # nginx: server2 kept getting calls while NOT_SERVING; the calls in flight at the kill were lost.
    assert health_nginx.after_change > 0 and health_nginx.lost >= 1
    assert {c.code for c in health_nginx.run.failed()} == {"UNAVAILABLE"}

    retries_envoy, retries_nginx = result.step("retries-envoy").result, result.step("retries-nginx").result
    assert isinstance(retries_envoy, ProxyRun) and isinstance(retries_nginx, ProxyRun)
    assert retries_envoy.lost == 0 and any(a > 1 for a in retries_envoy.attempts.values())
    # The call in flight at the kill ran twice: CreateLaptop is not idempotent.
    assert any(c.servers == ("server2", "server1") for c in retries_envoy.run.calls)
    assert retries_nginx.lost >= 1 and not any(len(c.servers) > 1 for c in retries_nginx.run.failed())

    # Envoy over xDS: server3's first call soon after it registered, nothing lost but the kill's calls in flight.
    xds = result.step("xds").result
    assert isinstance(xds, Discovered) and xds.register_to_first_call is not None
    assert xds.register_to_first_call < 3.0 and xds.phases["joined"].per_server["server3"] > 0
    assert xds.failed["join"] == 0 and xds.failed["graceful stop"] == 0 and xds.failed["kill"] <= 2


def _without(text: str, start: str, end: str) -> str:
    """`text` without the lines from the one that contains `start` up to (not including) the one with `end`."""
    lines = text.splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if start in line)
    last = next(i for i in range(first + 1, len(lines)) if end in lines[i])
    return "".join(lines[:first] + lines[last:])


def _envoy(step: str, tmp_path: Path, name: str, text: str) -> Envoy:
    spec = manifest.get(13).step(step).envoy
    assert spec is not None
    path = tmp_path / name
    path.write_text(text)
    return Envoy(path, spec.port, admin_port=spec.admin_port)


def test_checkpoint_fails_without_health_checks_retries_or_a_required_client_cert(tmp_path: Path) -> None:
    lesson = manifest.get(13)
    health = lesson.step("health-envoy").envoy.path.read_text()  # type: ignore[union-attr]
    retries = lesson.step("retries-envoy").envoy.path.read_text()  # type: ignore[union-attr]
    mtls = lesson.step("no-client-cert").envoy.path.read_text()  # type: ignore[union-attr]
    assert "require_client_certificate: true" in mtls
    result = run_steps(13, [
        variant(13, "health-envoy", envoy=_envoy("health-envoy", tmp_path, "no-hc.yaml",
                                                 _without(health, "health_checks:", "load_assignment:"))),
        variant(13, "retries-envoy", envoy=_envoy("retries-envoy", tmp_path, "no-retry.yaml",
                                                  _without(retries, "retry_policy:", "  clusters:"))),
        variant(13, "no-client-cert", envoy=_envoy("no-client-cert", tmp_path, "optional-cert.yaml", mtls.replace(
            "require_client_certificate: true", "require_client_certificate: false"))),
    ])
    no_hc, no_retry, optional = result.steps
    assert not no_hc.passed and any("never showed server2 failing its health check" in d for d in no_hc.diffs)
    assert any(re.search(r"\d+ calls were lost", d) for d in no_hc.diffs), no_hc.diffs
    assert not no_retry.passed and any(re.search(r"\d+ calls were lost", d) for d in no_retry.diffs)
    assert not optional.passed and "the client should fail but succeeded" in optional.diffs, optional.diffs
