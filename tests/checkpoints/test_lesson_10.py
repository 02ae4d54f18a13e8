"""Lesson 10: the hop is never free, and two saturated servers deliver clearly more than one.

Only ratios are asserted (by the lesson's own checkpoint), never absolute times.
"""

from __future__ import annotations

from pathlib import Path

from pcbook.lessons import benchmark
from pcbook.measure import bench

from .support import checkpoint, explain, story


def test_story_passes_and_keeps_the_numbers() -> None:
    result = story(10)
    assert result.story_passed, explain(result)
    hop, keepalive, scale = result.steps
    assert set(hop.data["p50_ms"]) == {bench.DIRECT, bench.NGINX_PLAIN}
    assert all(len(v) == benchmark.SETTINGS.reps for v in hop.data["p50_ms"].values())
    assert hop.data["ratio_p50"] >= benchmark.HOP_MIN
    assert not keepalive.checkpoint
    assert set(scale.data["calls_per_s"]) == {bench.ONE, bench.NGINX_TWO, bench.RR_TWO}
    assert scale.data["ratio"] >= benchmark.SCALE_MIN


def test_checkpoint_fails_when_two_servers_are_one(tmp_path: Path) -> None:
    # The wrong setup: the "two servers" upstream lists server1 twice, so nginx balances over one.
    text = bench.SCALE_CONF.read_text()
    wrong = text.replace("server 127.0.0.1:50102;", "server 127.0.0.1:50101;")
    assert wrong != text
    conf = tmp_path / "one-server-twice.conf"
    conf.write_text(wrong)
    result = checkpoint(10, conf)
    assert not result.checkpoint_passed
    line = result.checkpoint_line()
    assert "two servers behind nginx should deliver at least" in line, line
    # The hop step still passed: only the scale-out is wrong.
    assert result.steps[0].passed
