"""Lesson 10: what holds by construction on any machine, and the hop's time shown as a measurement.

The checkpoint counts calls in nginx's log, backend connections in the kernel's table and calls
served per server; it never asserts a latency or a latency ratio.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pcbook.bench.settings import (
    DIRECT,
    HOP_CONF,
    NGINX_KEEPALIVE,
    NGINX_NO_KEEPALIVE,
    NGINX_PLAIN,
    NGINX_TWO,
    ONE,
    RR_TWO,
    SCALE_CONF,
)
from pcbook.lessons import l10_cost_of_the_hop as benchmark
from pcbook.stage.results import Connections, HopRun, ScaleRun
from pcbook.workbook import manifest
from pcbook.workbook.runner import conf_for, run_checkpoints

from .support import conf_variant, explain, lesson_ports_fixture, story

_ports = lesson_ports_fixture(10)


def test_story_passes_and_keeps_the_numbers() -> None:
    result = story(10)
    assert result.story_passed, explain(result)
    hop, keepalive, scale = (s.result for s in result.steps)
    assert isinstance(hop, HopRun) and isinstance(keepalive, Connections) and isinstance(scale, ScaleRun)
    assert all(step.checkpoint for step in result.steps)
    assert set(hop.rounds.per_path) == {DIRECT, NGINX_PLAIN}
    assert all(len(v) == benchmark.SETTINGS.reps for v in hop.rounds.per_path.values())
    e = hop.evidence
    assert e.nginx_calls == e.logged_calls > 0 and e.direct_calls > 0
    added = e.added.interval
    assert added.low <= added.median <= added.high and added.coverage >= 0.95
    keep, no_keep = NGINX_KEEPALIVE, NGINX_NO_KEEPALIVE
    assert keepalive.opened[keep] <= 1 < keepalive.calls[keep]
    assert keepalive.opened[no_keep] >= 0.9 * keepalive.calls[no_keep]
    assert set(scale.rounds.per_path) == {ONE, NGINX_TWO, RR_TWO}
    assert scale.rounds.ratio >= benchmark.SCALE_MIN
    assert all(n > 0 for n in scale.served[NGINX_TWO].values())
    assert scale.served[ONE]["server2"] == 0  # "1 server" is server1 alone


def test_checkpoint_fails_when_two_servers_are_one(tmp_path: Path) -> None:
    # The wrong setup: the "two servers" upstream lists server1 twice, so nginx balances over one.
    conf = conf_variant(tmp_path, SCALE_CONF, "one-server-twice.conf", "server 127.0.0.1:50102;",
                        "server 127.0.0.1:50101;")
    lesson = manifest.get(10)
    # `make check-10 CONF=...` puts the learner's config in the scale-out step only: the hop and keepalive
    # steps keep bench-hop.conf, so they run as in the story (test_story_passes_and_keeps_the_numbers), and
    # only the scale-out step is run again here.
    assert [conf_for(lesson, s, conf) for s in lesson.steps] == [HOP_CONF, HOP_CONF, conf]
    (result,) = run_checkpoints(dataclasses.replace(lesson, steps=lesson.steps[2:]), [conf])
    assert not result.checkpoint_passed
    line = result.checkpoint_line()
    # The decisive cause; whether the one repetition played also fell short of 1.4x depends on the machine.
    assert "server2 served no call through nginx" in line, line
