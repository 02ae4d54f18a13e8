"""Lesson 10: the cost of the hop, the gain of scale-out — a short `make bench` that checks itself.

The steps (declared in pcbook/workbook/manifest.py), all checkpoints:

1. direct vs through nginx, one call in flight, in balanced rounds: every call of the nginx path is in
   nginx's log and no other is; the hop's added time is shown with its interval, measured;
2. the backend connections nginx opens, with and without upstream keepalive (Linux): one for all calls
   with keepalive, one per call without;
3. scale-out: servers with a fixed (simulated) capacity, saturated; two behind nginx each serve calls and
   together deliver at least 1.4x what one delivers (a repetition in which nginx reaches only one of them
   ends the measurement: the step has failed). `make check-10 CONF=...` puts a learner's nginx
   config here; it must listen on 8101 and balance over 127.0.0.1:50101 and 127.0.0.1:50102.

The judgements are pcbook.measure.verdicts' pure functions; this module gathers their evidence.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING

from pcbook.bench import phases, settings
from pcbook.measure import verdicts
from pcbook.measure.stats import Spread, ratio
from pcbook.stage.model import Exercise, Lesson, Nginx, Step
from pcbook.stage.results import Connections, HopRun, Rounds, ScaleRun

if TYPE_CHECKING:
    from pcbook.stage.context import StepContext

SCALE_MIN = verdicts.SCALE_MIN
KEEPALIVE_MIN_CALLS = verdicts.KEEPALIVE_MIN_CALLS
# 6 repetitions of (direct, nginx) in balanced order: enough for a 97 % interval of the median.
# A round of 0.3 s holds a few hundred calls: plenty for a p50; the repetitions make the interval.
SETTINGS = settings.Settings(reps=6, warmup=0.1, latency_window=0.3, scale_window=0.6, scale_warmup=0.3)
# Its rounds are the long ones, and capacity barely varies: 2 repetitions. 40 ms per call (100 calls/s a
# server, half `make bench`'s): in a CI run beside the rest of the suite, two servers of 200 calls/s behind
# nginx delivered 257 calls/s against one's 188 (1.36x): the machine was the limit, not the servers.
SCALE_SETTINGS = replace(SETTINGS, reps=2, work_ms=40)
HOP_TARGETS = tuple(t for t in settings.HOP_PATHS if t.name in (settings.DIRECT, settings.NGINX_PLAIN))
KEEPALIVE_TARGETS = tuple(t for t in settings.HOP_PATHS if t.name in settings.UPSTREAM_PORT)
NGINX_PORT = 8101
CALL_LINE = re.compile(rf"^{NGINX_PORT} /techschool_pcbook\.LaptopService/CreateLaptop 200 0$")
LOG_FLUSH = 5.0  # nginx writes its buffered log every second: wait this long at most for the last lines


def _logged_calls(ctx: StepContext, expected: int) -> int:
    """CreateLaptop lines of 8101 in nginx's call log, once it has `expected` or at the deadline."""
    log = ctx.nginx.prefix / "logs" / "calls.log"

    def count() -> int:
        try:
            return sum(1 for line in log.read_text().splitlines() if CALL_LINE.match(line))
        except OSError:
            return 0

    ctx.settle(lambda: count() >= expected, LOG_FLUSH)
    return count()


def hop(ctx: StepContext) -> HopRun:
    load = ctx.load_generator(1)
    load.open(HOP_TARGETS)
    measured = phases.measure_hop(load, HOP_TARGETS, SETTINGS, ctx.say, {}, throughput=False)
    sent = load.completed(settings.NGINX_PLAIN)
    evidence = verdicts.HopEvidence(NGINX_PORT, sent, _logged_calls(ctx, sent), load.completed(settings.DIRECT),
                                    phases.added_latency(measured, settings.NGINX_PLAIN, settings.DIRECT))
    direct, via = measured.stats[settings.DIRECT], measured.stats[settings.NGINX_PLAIN]
    x = ratio(via.p50_ms.median, direct.p50_ms.median)
    ctx.say(f"calls: {evidence.nginx_calls} through nginx, {evidence.logged_calls} in nginx's log for "
            f"{NGINX_PORT}; {evidence.direct_calls} direct")
    ctx.say(f"p50: direct {direct.p50_ms.median:.3f} ms, nginx {via.p50_ms.median:.3f} ms ({x:.2f}x, this "
            "machine's ratio)")
    ctx.say(verdicts.hop_reading(evidence.added))
    rounds = Rounds("ms", {n: [r["p50_ms"] for r in rs] for n, rs in measured.rounds.items()}, x,
                    p99_ms={n: [r["p99_ms"] for r in rs] for n, rs in measured.rounds.items()})
    return HopRun(rounds, evidence)


def hop_judge(result: HopRun) -> list[str]:
    return verdicts.judge_hop(result.evidence)


def keepalive(ctx: StepContext) -> Connections:
    load = ctx.load_generator(1)
    load.open(KEEPALIVE_TARGETS)
    counts = phases.count_upstream_connections(load, settings.UPSTREAM_PORT, ctx.say, window=0.5)
    if not counts:
        return Connections({}, {}, skipped="needs Linux's /proc/net/tcp")
    return Connections({n: c.opened for n, c in counts.items()}, {n: c.calls for n, c in counts.items()},
                       rounds={n: c.rounds for n, c in counts.items()})


def keepalive_judge(result: Connections) -> list[str]:
    if result.skipped:  # not Linux: nothing to count with
        return []
    keep, no_keep = (verdicts.ConnectionCount(result.opened[n], result.calls[n], result.rounds.get(n, 1))
                     for n in (settings.NGINX_KEEPALIVE, settings.NGINX_NO_KEEPALIVE))
    return verdicts.judge_keepalive(keep, no_keep)


def _idle(served: dict[str, dict[str, int]]) -> str:
    """A server that nginx never reached in a whole repetition fails the step whatever comes next."""
    idle = verdicts.idle_servers(served[settings.NGINX_TWO])
    return f"{', '.join(idle)} served no call through nginx" if idle else ""


def scale(ctx: StepContext) -> ScaleRun:
    s = SCALE_SETTINGS
    logs = {name: ctx.log_dir / f"{name}.log" for name in ctx.server_names}
    load = ctx.load_generator(s.processes)
    load.open(settings.SCALE_PATHS)
    measured = phases.measure_scale(load, settings.SCALE_PATHS, s, ctx.say, {}, server_logs=logs, decided=_idle)
    evidence = verdicts.ScaleEvidence(
        measured.rounds[settings.ONE], measured.rounds[settings.NGINX_TWO],
        Spread.of(measured.waiting[settings.ONE]).median, measured.served[settings.NGINX_TWO], s.capacity)
    one, two = measured.throughput[settings.ONE], measured.throughput[settings.NGINX_TWO]
    x = ratio(two.median, one.median)
    ctx.say(f"calls/s: 1 server {one.median:.0f} ({evidence.waiting_one:.1f} calls waiting), 2 behind nginx "
            f"{two.median:.0f} = {x:.2f}x, 2 with client RR {measured.throughput[settings.RR_TWO].median:.0f}")
    ctx.say("served through nginx: " + ", ".join(f"{k} {v}" for k, v in evidence.served_through_nginx.items()))
    return ScaleRun(Rounds("calls/s", dict(measured.rounds), x, capacity=s.capacity), evidence,
                    dict(measured.waiting), measured.served)


def scale_judge(result: ScaleRun) -> list[str]:
    return verdicts.judge_scale(result.evidence)


# -- the lesson ---------------------------------------------------------------------------------

# The bench's own servers (their per-call lines go to files: through the pipe they would cost more CPU
# than the calls measured). The hop's four stay up for steps 1 and 2.
L10_HOP = settings.HOP_SERVERS
L10_HOP_NGINX = Nginx("bench-hop.conf", 8101, more_ports=(8102, 8103, 8104))
L10_SCALE = settings.saturated(settings.SCALE_SERVERS, SCALE_SETTINGS.workers, SCALE_SETTINGS.work_ms)

EXERCISE = Exercise(
    kind="nginx config",
    starter="nginx/exercises/lesson-10.conf",
    answer="nginx/bench-scale.conf",
    steps=("scale-out",),
    hints=(
        "nginx spreads calls only over the servers its upstream lists: with one, \"two behind nginx\" is one "
        "saturated server behind a proxy, and the step stops at its first round.",
        "`server 127.0.0.1:50102;` next to server1's line in `upstream two_servers`: "
        "https://nginx.org/en/docs/http/ngx_http_upstream_module.html#server",
    ),
)

LESSON = Lesson(
    number=10,
    slug="cost-of-the-hop",
    title="The cost of the hop, the gain of scale-out",
    goal="Measure the proxy's latency and two backends' throughput on your own machine.",
    tutorial=False,
    exercise=EXERCISE,
    steps=(
        Step(
            key="hop",
            title="one call in flight: direct to server1 vs through nginx",
            why="nginx receives the call, decodes its HTTP/2 frames, picks a backend and writes the call again on "
                "a second connection. Every call of the nginx path is in nginx's log; the time the hop adds is "
                "measured, and only called a difference when its interval excludes zero.",
            servers=L10_HOP,
            nginx=L10_HOP_NGINX,
            then=(f"{SETTINGS.reps} rounds of (direct, nginx) in balanced order, "
             f"{SETTINGS.latency_window:g} s each, one call in flight, from a load generator",),
            act=hop,
            judge=hop_judge,
            claims=("every call of the nginx path appears in nginx's log, and no direct call does",
             "the hop's added time, shown with its interval (measured, not asserted)"),
            checkpoint=True,
        ),
        Step(
            key="keepalive",
            title="backend connections nginx opens, with and without upstream keepalive",
            why="With keepalive nginx keeps its connection to the backend (and its TLS session) for the next "
                "call; with `keepalive_requests 1;` every call pays a new TCP connection and a mutual TLS "
                "handshake.",
            servers=L10_HOP,
            nginx=L10_HOP_NGINX,
            then=(f"calls, in rounds of 0.5 s until each path has {KEEPALIVE_MIN_CALLS}, through "
             "8103 (keepalive) and 8104 (a connection per call) to server3 and server4; the backend "
             "connections are counted in /proc/net/tcp",),
            act=keepalive,
            judge=keepalive_judge,
            claims=("with upstream keepalive nginx opens one backend connection for all calls; without, "
             "one per call",),
            checkpoint=True,
        ),
        Step(
            key="scale-out",
            title="saturated servers of fixed capacity: one vs two behind nginx",
            why=f"Each server does at most {SCALE_SETTINGS.capacity:.0f} calls/s "
                f"({SCALE_SETTINGS.workers} threads x {SCALE_SETTINGS.work_ms} ms of simulated "
                "work per call); with more calls waiting than two servers can take, nginx keeps both busy: capacity "
                "adds up.",
            servers=L10_SCALE,
            nginx=Nginx("bench-scale.conf", 8101, more_ports=(8105,)),
            then=(f"{SCALE_SETTINGS.reps} rounds of (1 server direct, 2 behind nginx, 2 with client "
             f"RR), {SCALE_SETTINGS.scale_concurrency} calls in flight",
             "a round of them in which nginx reaches only one server ends the measurement"),
            act=scale,
            judge=scale_judge,
            claims=("calls wait at the one server (it is saturated)",
             f"two saturated servers behind nginx both serve calls and deliver at least "
             f"{SCALE_MIN}x the calls of one"),
            checkpoint=True,
        ),
    ),
)
