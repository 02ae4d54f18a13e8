"""Lesson 10: the cost of the hop, the gain of scale-out — a short `make bench` that checks itself.

The steps (declared in pcbook/workbook/manifest.py): direct vs through nginx with one call in flight,
in interleaved rounds (checkpoint: nginx's p50 is at least 0.9x direct's, the 0.1 being room for
noise); the backend connections nginx opens with and without upstream keepalive (story only, Linux);
scale-out (checkpoint): servers of a fixed capacity, saturated, two behind nginx deliver at least 1.4x
what one delivers. `make check-10 CONF=...` puts a learner's config in the scale-out step; it must
listen on 8101 and balance over 127.0.0.1:50101 and 127.0.0.1:50102.

Only ratios are checked, never absolute times. `make bench` measures the same things longer and more.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from typing import TYPE_CHECKING

from pcbook.measure import bench
from pcbook.measure.stats import ratio
from pcbook.workbook.results import Connections, Rounds

if TYPE_CHECKING:
    from pcbook.workbook.runner import StepContext

HOP_MIN = 0.9  # nginx p50 / direct p50 must be at least this: a proxy cannot make a call faster
SCALE_MIN = 1.4  # two saturated servers / one: clearly more, with room for a busy machine

SETTINGS = bench.Settings(reps=3, warmup=0.1, latency_window=0.4, scale_window=0.8, scale_warmup=0.3)
SCALE_SETTINGS = replace(SETTINGS, reps=2)  # its rounds are the long ones
HOP_TARGETS = tuple(t for t in bench.HOP_PATHS if t.name in (bench.DIRECT, bench.NGINX_PLAIN))
KEEPALIVE_TARGETS = tuple(t for t in bench.HOP_PATHS if t.name in bench.UPSTREAM_PORT)


def hop(ctx: StepContext) -> Rounds:
    load = ctx.load_generator(1)
    load.open(HOP_TARGETS)
    measured = bench.measure_hop(load, HOP_TARGETS, SETTINGS, ctx.say, {}, throughput=False)
    direct, via = measured.stats[bench.DIRECT], measured.stats[bench.NGINX_PLAIN]
    x = ratio(via.p50_ms.median, direct.p50_ms.median)
    ctx.say(f"p50: direct {direct.p50_ms.median:.3f} ms, nginx {via.p50_ms.median:.3f} ms = {x:.2f}x direct")
    return Rounds("ms", {n: [r["p50_ms"] for r in rounds] for n, rounds in measured.rounds.items()}, x,
                  p99_ms={n: [r["p99_ms"] for r in rounds] for n, rounds in measured.rounds.items()})


def hop_not_faster(result: Rounds) -> list[str]:
    if result.ratio >= HOP_MIN:
        return []
    direct, via = (statistics.median(result.per_path[n]) for n in (bench.DIRECT, bench.NGINX_PLAIN))
    return [f"nginx's p50 ({via:.3f} ms) should be at least {HOP_MIN}x direct's ({direct:.3f} ms) but is "
            f"{result.ratio:.2f}x: was the nginx path really going through nginx?"]


def keepalive(ctx: StepContext) -> Connections:
    load = ctx.load_generator(1)
    load.open(KEEPALIVE_TARGETS)
    counts = bench.count_upstream_connections(load, bench.UPSTREAM_PORT, ctx.say)
    return Connections({n: o for n, (o, _) in counts.items()}, {n: c for n, (_, c) in counts.items()})


def keepalive_judge(result: Connections) -> list[str]:
    diffs = []
    if not result.opened:  # no /proc/net/tcp: nothing to judge
        return diffs
    opened, calls = result.opened[bench.NGINX_KEEPALIVE], result.calls[bench.NGINX_KEEPALIVE]
    if opened > 2:
        diffs.append(f"with keepalive nginx should reuse its connection but opened {opened} for {calls} calls")
    opened, calls = result.opened[bench.NGINX_NO_KEEPALIVE], result.calls[bench.NGINX_NO_KEEPALIVE]
    if opened < 0.9 * calls:
        diffs.append(f"without keepalive nginx should open a connection per call but opened {opened} for {calls} calls")
    return diffs


def scale(ctx: StepContext) -> Rounds:
    s = SCALE_SETTINGS
    load = ctx.load_generator(s.processes)
    load.open(bench.SCALE_PATHS)
    measured = bench.measure_scale(load, bench.SCALE_PATHS, s, ctx.say, {})
    one, two = measured.throughput[bench.ONE], measured.throughput[bench.NGINX_TWO]
    x = ratio(two.median, one.median)
    ctx.say(f"calls/s: 1 server {one.median:.0f}, 2 behind nginx {two.median:.0f} = {x:.2f}x, "
            f"2 with client RR {measured.throughput[bench.RR_TWO].median:.0f}")
    return Rounds("calls/s", dict(measured.rounds), x, capacity=s.capacity)


def scale_gain(result: Rounds) -> list[str]:
    if result.ratio >= SCALE_MIN:
        return []
    one, two = (statistics.median(result.per_path[n]) for n in (bench.ONE, bench.NGINX_TWO))
    return [f"two servers behind nginx should deliver at least {SCALE_MIN}x one server but delivered "
            f"{result.ratio:.2f}x ({two:.0f} vs {one:.0f} calls/s): does the upstream reach two distinct servers?"]
