"""Lesson 10: the cost of the hop, the gain of scale-out — a short `make bench` that checks itself.

Three steps; 1 and 2 share a stack, 3 has its own (ports 50101-50104 and 8101-8104):

1. direct vs through nginx, one call in flight, in balanced rounds (checkpoint): every call of the nginx
   path is in nginx's log and no other is; the hop's added time is shown with its interval, measured;
2. the backend connections nginx opens, with and without upstream keepalive (checkpoint, Linux): one
   for all calls with keepalive, one per call without;
3. scale-out (checkpoint): servers with a fixed (simulated) capacity, saturated; two behind nginx each
   serve calls and together deliver at least 1.4x what one delivers. `make check-10 CONF=...` puts a
   learner's nginx config here; it must listen on 8101 and balance over 127.0.0.1:50101 and :50102.

The judgements are pcbook.measure.verdicts' pure functions; this module gathers their evidence. Every
Outcome's `data` holds the numbers, per repetition, for the notebook's chart.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path

from pcbook.measure import bench, verdicts
from pcbook.measure.loadgen import LoadGenError
from pcbook.measure.placement import available, plan
from pcbook.measure.stats import Spread, ratio
from pcbook.stack import nginx
from pcbook.workbook.runner import Outcome, ScenarioContext

SCALE_MIN = verdicts.SCALE_MIN
# 6 repetitions of (direct, nginx) in balanced order: enough for a 97 % interval of the median.
SETTINGS = bench.Settings(reps=6, warmup=0.1, latency_window=0.4, scale_window=0.8, scale_warmup=0.3)
SCALE_SETTINGS = replace(SETTINGS, reps=2)  # its rounds are the long ones, and capacity barely varies
HOP_TARGETS = tuple(t for t in bench.HOP_PATHS if t.name in (bench.DIRECT, bench.NGINX_PLAIN))
KEEPALIVE_TARGETS = tuple(t for t in bench.HOP_PATHS if t.name in bench.UPSTREAM_PORT)
NGINX_PORT = 8101
CALL_LINE = re.compile(rf"^{NGINX_PORT} /techschool_pcbook\.LaptopService/CreateLaptop 200 0$")
LOG_FLUSH = 5.0  # nginx writes its buffered log every second: wait this long at most for the last lines


def run(ctx: ScenarioContext) -> None:
    total = 3
    where = plan(available())
    ctx.say(f"placement: {where.describe()}")
    _hop_and_keepalive(ctx, total, where)
    _scale(ctx, 3, total, where)


def _log_dir(ctx: ScenarioContext) -> Path:
    return ctx.stack.run_dir / "lesson-10"


def _failed(ctx: ScenarioContext, title: str, why: str, err: Exception, checkpoint: bool = True) -> None:
    ctx.record(Outcome(title, why, checkpoint, [f"the measurement could not run: {err}"]))


HOP_TITLE = "one call in flight: direct to server1 vs through nginx"
HOP_WHY = ("nginx receives the call, decodes its HTTP/2 frames, picks a backend and writes the call again on "
           "a second connection. Every call of the nginx path is in nginx's log; the time the hop adds is "
           "measured, and only called a difference when its interval excludes zero.")
KEEPALIVE_TITLE = "backend connections nginx opens, with and without upstream keepalive"
KEEPALIVE_WHY = ("With keepalive nginx keeps its connection to the backend (and its TLS session) for the next "
                 "call; with `keepalive_requests 1;` every call pays a new TCP connection and a mutual TLS "
                 "handshake.")


def _logged_calls(proxy: nginx.NginxProcess, expected: int) -> int:
    """CreateLaptop lines of 8101 in nginx's call log, once it has `expected` or at the deadline."""
    log = proxy.prefix / "logs" / "calls.log"
    deadline = time.monotonic() + LOG_FLUSH
    while True:
        try:
            count = sum(1 for line in log.read_text().splitlines() if CALL_LINE.match(line))
        except OSError:
            count = 0
        if count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.1)


def _hop_and_keepalive(ctx: ScenarioContext, total: int, where: bench.Placement) -> None:
    """Steps 1 and 2 share one stack. All four servers run throughout, which also keeps their ports
    bound: the connections nginx opens and closes take random ports from the kernel's ephemeral range
    (32768-60999 on Linux, which includes 50101-50104), and a port left in TIME_WAIT by such a
    connection could not be listened on for a minute."""
    ctx.step(1, total, HOP_TITLE, [
        "servers: server1 on 50101 (plaintext); server2-4 on 50102-50104 for the next steps",
        f"nginx:   {bench.HOP_CONF.name} on {NGINX_PORT} (plaintext, keepalive to the backend)",
        f"rounds:  {SETTINGS.reps} x (direct, nginx) in balanced order, {SETTINGS.latency_window:g} s each, "
        "one call in flight",
        "expect:  every call through nginx in nginx's log, no other; the hop's added time, measured",
    ])
    stack, started = ctx.stack, []
    try:
        bench.start_servers(stack, bench.HOP_SERVERS, _log_dir(ctx), placement=where, say=ctx.say)
        started += [s.name for s in bench.HOP_SERVERS]
        proxy = bench.start_hop_nginx(stack, placement=where)
        started.append(proxy.name)
        load = bench.start_load(stack, 1, where)
        started += load.names
        load.open(HOP_TARGETS + KEEPALIVE_TARGETS)
        try:
            hop = bench.measure_hop(load, HOP_TARGETS, SETTINGS, ctx.say, {}, throughput=False)
        except (LoadGenError, RuntimeError) as err:
            _failed(ctx, HOP_TITLE, HOP_WHY, err)
        else:
            sent = load.completed(bench.NGINX_PLAIN)
            evidence = verdicts.HopEvidence(NGINX_PORT, sent, _logged_calls(proxy, sent),
                                            load.completed(bench.DIRECT),
                                            bench.added_latency(hop, bench.NGINX_PLAIN, bench.DIRECT))
            _judge_hop(ctx, hop, evidence)
        ctx.step(2, total, KEEPALIVE_TITLE, [
            "servers: server3 on 50103, server4 on 50104 (mutual TLS)",
            f"nginx:   {bench.HOP_CONF.name}: 8103 keeps connections, 8104 closes each after one call",
            "expect:  8103 opens at most 1 backend connection for all its calls; 8104 one per call",
        ])
        try:
            counts = bench.count_upstream_connections(load, bench.UPSTREAM_PORT, ctx.say, window=0.5)
        except (LoadGenError, RuntimeError) as err:
            _failed(ctx, KEEPALIVE_TITLE, KEEPALIVE_WHY, err)
        else:
            _judge_keepalive(ctx, counts)
    except (LoadGenError, RuntimeError) as err:  # the stack did not come up: both steps say so
        _failed(ctx, HOP_TITLE, HOP_WHY, err)
        _failed(ctx, KEEPALIVE_TITLE, KEEPALIVE_WHY, err)
    finally:
        bench.stop_all(stack, started)


def _judge_hop(ctx: ScenarioContext, hop: bench.HopResult, evidence: verdicts.HopEvidence) -> None:
    direct, via = hop.stats[bench.DIRECT], hop.stats[bench.NGINX_PLAIN]
    x = ratio(via.p50_ms.median, direct.p50_ms.median)
    ctx.say(f"   calls: {evidence.nginx_calls} through nginx, {evidence.logged_calls} in nginx's log for "
            f"{NGINX_PORT}; {evidence.direct_calls} direct")
    ctx.say(f"   p50: direct {direct.p50_ms.median:.3f} ms, nginx {via.p50_ms.median:.3f} ms ({x:.2f}x, this "
            "machine's ratio)")
    ctx.say(f"   {verdicts.hop_reading(evidence.added)}")
    d = evidence.added.interval
    data = {
        "p50_ms": {n: [r["p50_ms"] for r in rounds] for n, rounds in hop.rounds.items()},
        "p99_ms": {n: [r["p99_ms"] for r in rounds] for n, rounds in hop.rounds.items()},
        "ratio_p50": x,
        "added_us": {"median": d.median, "low": d.low, "high": d.high, "coverage": d.coverage,
                     "resolved": evidence.added.resolved},
        "calls": {"through_nginx": evidence.nginx_calls, "in_nginx_log": evidence.logged_calls,
                  "direct": evidence.direct_calls},
    }
    ctx.record(Outcome(HOP_TITLE, HOP_WHY, True, verdicts.judge_hop(evidence), data=data))


def _judge_keepalive(ctx: ScenarioContext, counts: dict[str, tuple[int, int]]) -> None:
    if not counts:  # not Linux: nothing to count with
        ctx.record(Outcome(KEEPALIVE_TITLE, KEEPALIVE_WHY, True, [],
                           data={"connections": {}, "skipped": "needs Linux's /proc/net/tcp"}))
        return
    keep = verdicts.ConnectionCount(*counts[bench.NGINX_KEEPALIVE])
    no_keep = verdicts.ConnectionCount(*counts[bench.NGINX_NO_KEEPALIVE])
    data = {"connections": {n: {"opened": o, "calls": c} for n, (o, c) in counts.items()}}
    ctx.record(Outcome(KEEPALIVE_TITLE, KEEPALIVE_WHY, True, verdicts.judge_keepalive(keep, no_keep), data=data))


def _scale(ctx: ScenarioContext, index: int, total: int, where: bench.Placement) -> None:
    conf = ctx.conf or bench.SCALE_CONF
    s = SCALE_SETTINGS
    title = "saturated servers of fixed capacity: one vs two behind nginx"
    why = (f"Each server does at most {s.capacity:.0f} calls/s ({s.workers} threads x {s.work_ms} ms of simulated "
           "work per call); with more calls waiting than two servers can take, nginx keeps both busy: capacity "
           "adds up.")
    ctx.step(index, total, title, [
        f"servers: server1 on 50101, server2 on 50102, each --workers {s.workers} --work-ms {s.work_ms} "
        "(capacity simulated: sleeping threads)",
        f"nginx:   {bench.shown(conf)} on 8101",
        f"rounds:  {s.reps} x (1 server direct, 2 behind nginx, 2 with client RR), {s.scale_concurrency} in flight",
        f"expect:  calls waiting at 1 server; both servers serve through nginx; >= {SCALE_MIN}x the calls/s",
    ])
    stack, started = ctx.stack, []
    logs = {srv.name: _log_dir(ctx) / f"{srv.name}.log" for srv in bench.SCALE_SERVERS}
    try:
        with bench.hold_ports(bench.UNUSED_IN_SCALE):  # no connection of this step may take them
            bench.start_servers(stack, bench.SCALE_SERVERS, _log_dir(ctx), s.workers, s.work_ms, placement=where,
                                say=ctx.say)
            started += [srv.name for srv in bench.SCALE_SERVERS]
            proxy = bench.start_nginx(stack, conf, bench.SCALE_NGINX_PORT, where)
            started.append(proxy.name)
            load = bench.start_load(stack, s.processes, where)
            started += load.names
            load.open(bench.SCALE_PATHS)
            scale = bench.measure_scale(load, bench.SCALE_PATHS, s, ctx.say, {}, server_logs=logs)
            bench.stop_all(stack, started)
    except (LoadGenError, RuntimeError) as err:
        _failed(ctx, title, why, err)
        return
    finally:
        bench.stop_all(stack, started)
    evidence = verdicts.ScaleEvidence(
        scale.rounds[bench.ONE], scale.rounds[bench.NGINX_TWO], Spread.of(scale.waiting[bench.ONE]).median,
        scale.served[bench.NGINX_TWO], s.capacity)
    one, two = scale.throughput[bench.ONE], scale.throughput[bench.NGINX_TWO]
    x = ratio(two.median, one.median)
    ctx.say(f"   calls/s: 1 server {one.median:.0f} ({evidence.waiting_one:.1f} calls waiting), 2 behind nginx "
            f"{two.median:.0f} = {x:.2f}x, 2 with client RR {scale.throughput[bench.RR_TWO].median:.0f}")
    ctx.say("   served through nginx: " + ", ".join(f"{k} {v}" for k, v in evidence.served_through_nginx.items()))
    data = {"calls_per_s": dict(scale.rounds), "capacity_per_server": s.capacity, "ratio": x,
            "waiting": dict(scale.waiting), "served": scale.served}
    ctx.record(Outcome(title, why, True, verdicts.judge_scale(evidence), data=data))
