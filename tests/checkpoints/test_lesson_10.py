"""Lesson 10: the hop is never free, and two saturated servers deliver clearly more than one.

Only ratios are asserted (by the lesson's own checkpoint), never absolute times.
"""

from __future__ import annotations

from pathlib import Path

from pcbook.lessons import benchmark
from pcbook.measure import bench
from pcbook.workbook.results import Connections, Rounds

from .support import checkpoint, conf_variant, explain, lesson_ports_fixture, story

_ports = lesson_ports_fixture(10)


def test_story_passes_and_keeps_the_numbers() -> None:
    result = story(10)
    assert result.story_passed, explain(result)
    hop, keepalive, scale = (s.result for s in result.steps)
    assert isinstance(hop, Rounds) and isinstance(keepalive, Connections) and isinstance(scale, Rounds)
    assert set(hop.per_path) == {bench.DIRECT, bench.NGINX_PLAIN}
    assert all(len(v) == benchmark.SETTINGS.reps for v in hop.per_path.values())
    assert hop.ratio >= benchmark.HOP_MIN
    assert not result.steps[1].checkpoint
    assert set(scale.per_path) == {bench.ONE, bench.NGINX_TWO, bench.RR_TWO}
    assert scale.ratio >= benchmark.SCALE_MIN


def test_checkpoint_fails_when_two_servers_are_one(tmp_path: Path) -> None:
    # The wrong setup: the "two servers" upstream lists server1 twice, so nginx balances over one.
    conf = conf_variant(tmp_path, bench.SCALE_CONF, "one-server-twice.conf", "server 127.0.0.1:50102;",
                        "server 127.0.0.1:50101;")
    result = checkpoint(10, conf)
    assert not result.checkpoint_passed
    line = result.checkpoint_line()
    assert "two servers behind nginx should deliver at least" in line, line
    # The hop step still passed: only the scale-out is wrong.
    assert result.steps[0].passed
