"""Lesson 10: what holds by construction on any machine, and the hop's time shown as a measurement.

The checkpoint counts calls in nginx's log, backend connections in the kernel's table and calls
served per server; it never asserts a latency or a latency ratio.
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
    assert all(step.checkpoint for step in result.steps)
    assert set(hop.data["p50_ms"]) == {bench.DIRECT, bench.NGINX_PLAIN}
    assert all(len(v) == benchmark.SETTINGS.reps for v in hop.data["p50_ms"].values())
    calls = hop.data["calls"]
    assert calls["through_nginx"] == calls["in_nginx_log"] > 0 and calls["direct"] > 0
    added = hop.data["added_us"]
    assert added["low"] <= added["median"] <= added["high"] and added["coverage"] >= 0.95
    conns = keepalive.data["connections"]
    assert conns[bench.NGINX_KEEPALIVE]["opened"] <= 1 < conns[bench.NGINX_KEEPALIVE]["calls"]
    assert conns[bench.NGINX_NO_KEEPALIVE]["opened"] >= 0.9 * conns[bench.NGINX_NO_KEEPALIVE]["calls"]
    assert set(scale.data["calls_per_s"]) == {bench.ONE, bench.NGINX_TWO, bench.RR_TWO}
    assert scale.data["ratio"] >= benchmark.SCALE_MIN
    assert all(n > 0 for n in scale.data["served"][bench.NGINX_TWO].values())
    assert scale.data["served"][bench.ONE]["server2"] == 0  # "1 server" is server1 alone


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
    assert "server2 served no call through nginx" in line, line
    # The hop and keepalive steps still passed: only the scale-out is wrong.
    assert result.steps[0].passed and result.steps[1].passed
