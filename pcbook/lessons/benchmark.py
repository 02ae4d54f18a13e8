"""Lesson 10: the cost of the hop, the gain of scale-out — a short `make bench` that checks itself.

Three steps; 1 and 2 share a stack, 3 has its own (ports 50101-50104 and 8101-8104):

1. direct vs through nginx, one call in flight, interleaved rounds (checkpoint): the proxy path is not
   faster than direct — nginx's p50 is at least 0.9x direct's (the 0.1 is room for noise);
2. the backend connections nginx opens, with and without upstream keepalive (story only, Linux);
3. scale-out (checkpoint): servers with a fixed capacity, saturated; two behind nginx deliver at least
   1.4x what one delivers. `make check-10 CONF=...` puts a learner's nginx config here; it must listen
   on 8101 and balance over 127.0.0.1:50101 and 127.0.0.1:50102.

Only ratios are checked, never absolute times. Every Outcome's `data` holds the numbers, per
repetition, for the notebook's chart. `make bench` measures the same things longer and more of them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pcbook.measure import bench
from pcbook.measure.loadgen import LoadGenerator, LoadGenError
from pcbook.measure.stats import ratio
from pcbook.stack import nginx
from pcbook.workbook.runner import Outcome, ScenarioContext

HOP_MIN = 0.9  # nginx p50 / direct p50 must be at least this: a proxy cannot make a call faster
SCALE_MIN = 1.4  # two saturated servers / one: clearly more, with room for a busy machine

SETTINGS = bench.Settings(reps=3, warmup=0.1, latency_window=0.4, scale_window=0.8, scale_warmup=0.3)
SCALE_SETTINGS = replace(SETTINGS, reps=2)  # its rounds are the long ones
HOP_TARGETS = tuple(t for t in bench.HOP_PATHS if t.name in (bench.DIRECT, bench.NGINX_PLAIN))
KEEPALIVE_TARGETS = tuple(t for t in bench.HOP_PATHS if t.name in bench.UPSTREAM_PORT)


def run(ctx: ScenarioContext) -> None:
    total = 2 if ctx.checkpoint_only else 3
    _hop_and_keepalive(ctx, total)
    _scale(ctx, total, total)


def _log_dir(ctx: ScenarioContext) -> Path:
    return ctx.stack.run_dir / "lesson-10"


def _failed(ctx: ScenarioContext, title: str, why: str, err: Exception, checkpoint: bool = True) -> None:
    ctx.record(Outcome(title, why, checkpoint, [f"the measurement could not run: {err}"]))


HOP_TITLE = "one call in flight: direct to server1 vs through nginx"
HOP_WHY = ("nginx receives the call, decodes its HTTP/2 frames, picks a backend and writes the call again on "
           "a second connection: an extra process, two more socket hops and a copy, never less work.")
KEEPALIVE_TITLE = "backend connections nginx opens, with and without upstream keepalive"
KEEPALIVE_WHY = ("With keepalive nginx keeps its connection to the backend (and its TLS session) for the next "
                 "call; with `keepalive_requests 1;` every call pays a new TCP connection and a mutual TLS "
                 "handshake.")


def _hop_and_keepalive(ctx: ScenarioContext, total: int) -> None:
    """Steps 1 and 2 share one stack. All four servers run throughout, which also keeps their ports
    bound: the connections nginx opens and closes take random ports from the kernel's ephemeral range
    (32768-60999 on Linux, which includes 50101-50104), and a port left in TIME_WAIT by such a
    connection could not be listened on for a minute."""
    ctx.step(1, total, HOP_TITLE, [
        "servers: server1 on 50101 (plaintext); server2-4 on 50102-50104 for the next steps",
        f"nginx:   {bench.HOP_CONF.name} on 8101 (plaintext, keepalive to the backend)",
        f"rounds:  {SETTINGS.reps} x (direct, nginx), {SETTINGS.latency_window:g} s each, one call in flight",
        f"expect:  nginx p50 >= {HOP_MIN}x direct p50 (the hop never makes a call faster)",
    ])
    stack, started = ctx.stack, []
    try:
        bench.start_servers(stack, bench.HOP_SERVERS, _log_dir(ctx))
        started += [s.name for s in bench.HOP_SERVERS]
        proxy = bench.start_hop_nginx(stack)
        started.append(proxy.name)
        load = LoadGenerator(stack, 1)
        started += load.names
        load.open(HOP_TARGETS + KEEPALIVE_TARGETS)
        try:
            hop = bench.measure_hop(load, HOP_TARGETS, SETTINGS, ctx.say, {}, throughput=False)
        except (LoadGenError, RuntimeError) as err:
            _failed(ctx, HOP_TITLE, HOP_WHY, err)
        else:
            _judge_hop(ctx, hop)
        if ctx.checkpoint_only:
            return
        ctx.step(2, total, KEEPALIVE_TITLE, [
            "servers: server3 on 50103, server4 on 50104 (mutual TLS)",
            f"nginx:   {bench.HOP_CONF.name}: 8103 keeps connections, 8104 closes each after one call",
            "expect:  8103 opens at most 2 backend connections; 8104 about one per call",
        ])
        try:
            counts = bench.count_upstream_connections(load, bench.UPSTREAM_PORT, ctx.say)
        except (LoadGenError, RuntimeError) as err:
            _failed(ctx, KEEPALIVE_TITLE, KEEPALIVE_WHY, err, checkpoint=False)
        else:
            _judge_keepalive(ctx, counts)
    except (LoadGenError, RuntimeError) as err:  # the stack did not come up
        _failed(ctx, HOP_TITLE, HOP_WHY, err)
    finally:
        bench.stop_all(stack, started)


def _judge_hop(ctx: ScenarioContext, hop: bench.HopResult) -> None:
    direct, via = hop.stats[bench.DIRECT], hop.stats[bench.NGINX_PLAIN]
    x = ratio(via.p50_ms.median, direct.p50_ms.median)
    ctx.say(f"   p50: direct {direct.p50_ms.median:.3f} ms, nginx {via.p50_ms.median:.3f} ms = {x:.2f}x direct")
    diffs = [] if x >= HOP_MIN else [
        f"nginx's p50 ({via.p50_ms.median:.3f} ms) should be at least {HOP_MIN}x direct's "
        f"({direct.p50_ms.median:.3f} ms) but is {x:.2f}x: was the nginx path really going through nginx?"]
    data = {
        "p50_ms": {n: [r["p50_ms"] for r in rounds] for n, rounds in hop.rounds.items()},
        "p99_ms": {n: [r["p99_ms"] for r in rounds] for n, rounds in hop.rounds.items()},
        "ratio_p50": x,
    }
    ctx.record(Outcome(HOP_TITLE, HOP_WHY, True, diffs, data=data))


def _judge_keepalive(ctx: ScenarioContext, counts: dict[str, tuple[int, int]]) -> None:
    diffs = []
    if counts:
        opened, calls = counts[bench.NGINX_KEEPALIVE]
        if opened > 2:
            diffs.append(f"with keepalive nginx should reuse its connection but opened {opened} for {calls} calls")
        opened, calls = counts[bench.NGINX_NO_KEEPALIVE]
        if opened < 0.9 * calls:
            diffs.append(f"without keepalive nginx should open a connection per call but opened {opened} "
                         f"for {calls} calls")
    data = {"connections": {n: {"opened": o, "calls": c} for n, (o, c) in counts.items()}}
    ctx.record(Outcome(KEEPALIVE_TITLE, KEEPALIVE_WHY, False, diffs, data=data))


def _scale(ctx: ScenarioContext, index: int, total: int) -> None:
    conf = ctx.conf or bench.SCALE_CONF
    s = SCALE_SETTINGS
    title = "saturated servers of fixed capacity: one vs two behind nginx"
    why = (f"Each server does at most {s.capacity:.0f} calls/s ({s.workers} threads x {s.work_ms} ms per call); "
           "with more calls waiting than two servers can take, nginx keeps both busy: capacity adds up.")
    ctx.step(index, total, title, [
        f"servers: server1 on 50101, server2 on 50102, each --workers {s.workers} --work-ms {s.work_ms}",
        f"nginx:   {bench.shown(conf)} on 8101",
        f"rounds:  {s.reps} x (1 server direct, 2 behind nginx, 2 with client RR), {s.scale_concurrency} in flight",
        f"expect:  2 servers behind nginx >= {SCALE_MIN}x the calls/s of 1 server",
    ])
    stack, started = ctx.stack, []
    try:
        bench.start_servers(stack, bench.SCALE_SERVERS, _log_dir(ctx), s.workers, s.work_ms)
        started += [srv.name for srv in bench.SCALE_SERVERS]
        proxy = nginx.start_nginx(stack, conf, port=bench.SCALE_NGINX_PORT, timeout=bench.READY_TIMEOUT)
        started.append(proxy.name)
        load = LoadGenerator(stack, s.processes)
        started += load.names
        load.open(bench.SCALE_PATHS)
        scale = bench.measure_scale(load, bench.SCALE_PATHS, s, ctx.say, {})
    except (LoadGenError, RuntimeError) as err:
        _failed(ctx, title, why, err)
        return
    finally:
        bench.stop_all(stack, started)
    one, two = scale.throughput[bench.ONE], scale.throughput[bench.NGINX_TWO]
    x = ratio(two.median, one.median)
    ctx.say(f"   calls/s: 1 server {one.median:.0f}, 2 behind nginx {two.median:.0f} = {x:.2f}x, "
            f"2 with client RR {scale.throughput[bench.RR_TWO].median:.0f}")
    diffs = [] if x >= SCALE_MIN else [
        f"two servers behind nginx should deliver at least {SCALE_MIN}x one server but delivered {x:.2f}x "
        f"({two.median:.0f} vs {one.median:.0f} calls/s): does the upstream reach two distinct servers?"]
    data = {"calls_per_s": dict(scale.rounds), "capacity_per_server": s.capacity, "ratio": x}
    ctx.record(Outcome(title, why, True, diffs, data=data))
