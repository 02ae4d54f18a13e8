"""Lesson 7: client-side load balancing, no proxy in the path.

The client dials both servers itself (target ``ipv4:127.0.0.1:50071,127.0.0.1:50072``) and decides
where each call goes. Steps:

1. pick_first (grpcio's default): every call goes to one server.
2. round_robin: calls alternate between the servers.
3. round_robin + client-side health checking: a server set NOT_SERVING (SIGUSR1) gets no calls, and
   gets calls again once SERVING (SIGUSR2), all within one client run.
4. A server killed mid-run: the calls in flight on it fail, round robin moves on to the other one.
5. Latency of the same call direct, through nginx, and client-side balanced (not a checkpoint).

Which server served a call is read from the servers' own logs: every CreateLaptop carries a fresh
laptop id, which the server logs (`receive a create-laptop request with id: ...`).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

from pcbook.measure import driver, verdicts
from pcbook.paths import NGINX_DIR, shown
from pcbook.stack import nginx, procs
from pcbook.workbook.runner import Outcome, ScenarioContext

SERVERS = {"server1": 50071, "server2": 50072}
NAMES = tuple(SERVERS)
NGINX_PORT = 8071
TARGET = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in SERVERS.values())
CONF = NGINX_DIR / "lesson-7.conf"
# Each CreateLaptop takes 20 ms on the server, so that a call is in flight when step 4 kills one.
WORK_MS = 20
# How long after a server's health change the client may still pick it (the Watch stream needs a
# moment to deliver the news). Calls that start inside this window are not judged.
HEALTH_GRACE = 0.1
KILL_GRACE = 0.25  # calls that start this long after the kill must all succeed
CHECKPOINT_STEPS = 4


def run(ctx: ScenarioContext) -> None:
    total = CHECKPOINT_STEPS if ctx.checkpoint_only else CHECKPOINT_STEPS + 1
    if ctx.conf is not None and ctx.checkpoint_only:
        ctx.say("note: lesson 7's checkpoint runs without nginx; your config is used by the latency step"
                " of `make lesson-7`")
    start_servers(ctx)
    pick_first(ctx, 1, total)
    round_robin(ctx, 2, total)
    health_aware(ctx, 3, total)
    server_dies(ctx, 4, total)
    if not ctx.checkpoint_only:
        latency(ctx, 5, total)


def start_servers(ctx: ScenarioContext, work_ms: int = WORK_MS) -> None:
    for name, port in SERVERS.items():
        driver.start_server(ctx.stack, name, port, ["--work-ms", str(work_ms)], ctx.say)


def _describe(details: Sequence[str]) -> list[str]:
    servers = ", ".join(f"{name} on {port} (plaintext)" for name, port in SERVERS.items())
    return [f"servers: {servers}", *details]


def _failures(report: driver.Report) -> list[str]:
    if report.login_error:
        return [f"the client could not log in: {report.login_error}"]
    failed = report.failed()
    if not failed:
        return []
    first = failed[0]
    return [f"{len(failed)} of {len(report.calls)} calls failed, e.g. call {first.number}: "
            f"{first.code}: {first.details}"]


def _share(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items())


# -- steps 1 and 2: pick_first vs round_robin -----------------------------------------------------------


def pick_first(ctx: ScenarioContext, index: int, total: int, policy: str = "pick_first",
               calls: int = 10) -> Outcome:
    title = "pick_first: the client knows both servers, every call goes to one"
    report, counts = _calls_under_policy(ctx, index, total, title, policy, calls,
                                         "every call reaches the same server")
    diffs = _failures(report)
    if sum(1 for n in counts.values() if n) != 1:
        diffs.append(f"calls reached more than one server ({_share(counts)}); pick_first uses one")
    why = ("pick_first connects to the first address that answers and sends every call there; the "
           "second address is only a fallback. It is grpcio's default policy.")
    return ctx.record(Outcome(title, why, True, diffs, data={"policy": policy, "calls_per_server": counts}))


def round_robin(ctx: ScenarioContext, index: int, total: int, policy: str = "round_robin",
                calls: int = 10) -> Outcome:
    title = "round_robin: the same client spreads its calls over both servers"
    report, counts = _calls_under_policy(ctx, index, total, title, policy, calls, "both servers receive calls")
    diffs = _failures(report)
    idle = [name for name, n in counts.items() if n == 0]
    if idle:
        diffs.append(f"{' and '.join(idle)} received no call ({_share(counts)}); round_robin uses every server")
    why = ("round_robin keeps a connection to every address and picks the next READY one for each call. "
           "The first calls may all land on the server that connected first.")
    return ctx.record(Outcome(title, why, True, diffs, data={"policy": policy, "calls_per_server": counts}))


def _calls_under_policy(ctx: ScenarioContext, index: int, total: int, title: str, policy: str, calls: int,
                        expect: str) -> tuple[driver.Report, dict[str, int]]:
    """Announce the step, send `calls` calls with `policy`, and count them per server."""
    ctx.step(index, total, title, _describe([
        f"client:  python -m pcbook.measure.driver --address {TARGET} --lb-policy {policy} --calls {calls}",
        f"expect:  {expect}",
    ]))
    mark = ctx.stack.mark()
    report = driver.run_load(ctx.stack, TARGET, calls=calls, lb_policy=policy)
    counts = driver.per_server(report.calls, driver.settle(ctx.stack, mark, NAMES, report.calls), NAMES)
    ctx.say(f"   calls:   {_share(counts)}")
    return report, counts


# -- step 3: health-aware round robin -------------------------------------------------------------------


def _line_time(stack: procs.Stack, name: str, text: str, since: int) -> float:
    for rec in stack.records(name, since=since):
        if text in rec.text:
            return rec.t
    raise procs.NotReadyError(f"{name} never printed {text!r}", name=name)


def health_aware(ctx: ScenarioContext, index: int, total: int, health_check: bool = True,
                 calls: int = 70, rate: float = 60.0) -> Outcome:
    title = "round_robin with health checking: a NOT_SERVING server gets no calls, then gets them back"
    flag = " --health-check" if health_check else ""
    ctx.step(index, total, title, _describe([
        f"client:  python -m pcbook.measure.driver --address {TARGET} --lb-policy round_robin{flag} "
        f"--calls {calls} --rate {rate:g}",
        "then:    after 20 calls server2 gets SIGUSR1 (NOT_SERVING); after 40 calls SIGUSR2 (SERVING)",
        "expect:  server2 gets calls, then none while NOT_SERVING, then calls again",
    ]))
    stack = ctx.stack
    mark = stack.mark()
    path = driver.report_path(stack)
    stack.start("client", driver.driver_argv(TARGET, path, calls=calls, rate=rate, concurrency=4,
                                           lb_policy="round_robin", health_check=health_check))
    stack.wait_for_line("client", "20 calls done", 15, since=mark)
    stack.signal("server2", signal.SIGUSR1)
    stack.wait_for_line("server2", "set to NOT_SERVING", 5, since=mark)
    stack.wait_for_line("client", "40 calls done", 15, since=mark)
    stack.signal("server2", signal.SIGUSR2)
    stack.wait_for_line("server2", "set to SERVING", 5, since=mark)
    report = driver.collect(stack, "client", path, 30)
    down = _line_time(stack, "server2", "set to NOT_SERVING", mark)
    up = _line_time(stack, "server2", "set to SERVING", mark)

    # Each call's phase by when it started; the moments right after a change are not judged.
    phases: dict[str, list[driver.Call]] = {"serving": [], "not serving": [], "serving again": []}
    for call in report.calls:
        if call.t0 < down:
            phases["serving"].append(call)
        elif down + HEALTH_GRACE <= call.t0 < up:
            phases["not serving"].append(call)
        elif call.t0 >= up + HEALTH_GRACE:
            phases["serving again"].append(call)
    receivers = driver.settle(stack, mark, NAMES, report.calls)
    counts = {phase: driver.per_server(batch, receivers, NAMES) for phase, batch in phases.items()}
    for phase, split in counts.items():
        ctx.say(f"   {phase + ':':<15}{_share(split)}")
    diffs = _failures(report)
    if counts["serving"]["server2"] == 0:
        diffs.append("server2 got no call before it was set NOT_SERVING")
    if not phases["not serving"]:
        diffs.append("no call was sent while server2 was NOT_SERVING")
    if counts["not serving"]["server2"]:
        diffs.append(f"server2 got {counts['not serving']['server2']} calls while NOT_SERVING; "
                     "the client does not watch the servers' health")
    if counts["serving again"]["server2"] == 0:
        diffs.append("server2 got no call after it was SERVING again")
    why = ("With healthCheckConfig the client keeps a grpc.health.v1 Watch stream open to each server; "
           "a NOT_SERVING answer takes that server out of round robin at once, SERVING puts it back. "
           "Nothing was restarted: the server process stayed up the whole time.")
    timeline = [{"call": c.number, "t": round(c.t0 - report.calls[0].t0, 4),
                 "server": (receivers.get(c.laptop_id) or ["none"])[0]} for c in report.calls]
    data = {"policy": "round_robin with health checking", "calls_per_server": counts, "timeline": timeline,
            "not_serving_at": round(down - report.calls[0].t0, 4), "serving_at": round(up - report.calls[0].t0, 4)}
    return ctx.record(Outcome(title, why, True, diffs, data=data))


# -- step 4: a server dies mid-run ----------------------------------------------------------------------


def server_dies(ctx: ScenarioContext, index: int, total: int, calls: int = 40, rate: float = 40.0) -> Outcome:
    title = "a server dies mid-run: its calls in flight fail, round robin moves on"
    ctx.step(index, total, title, _describe([
        f"client:  python -m pcbook.measure.driver --address {TARGET} --lb-policy round_robin --calls {calls} "
        f"--rate {rate:g} --concurrency 4",
        "then:    after 10 calls, while server2 is working on a call, server2 is killed (SIGKILL)",
        "expect:  the calls in flight on server2 fail with UNAVAILABLE; later calls all succeed on server1",
    ]))
    stack = ctx.stack
    mark = stack.mark()
    # Killed while it works on a call (each takes WORK_MS), so that a call is surely in flight.
    report, killed_at = driver.kill_mid_run(stack, "server2", TARGET, calls=calls, rate=rate, concurrency=4,
                                          lb_policy="round_robin")
    receivers = driver.settle(stack, mark, NAMES, report.calls)

    around = [c for c in report.calls if not c.ok or -0.06 < c.t0 - killed_at < 0.11]
    ctx.say("   around the kill (t = when the call started, relative to the kill):")
    for call in around:
        where = ", ".join(receivers.get(call.laptop_id, [])) or "no server logged it"
        said = f"{call.code}: {call.details}" if not call.ok else "OK"
        ctx.say(f"     call {call.number:>2}  t = {(call.t0 - killed_at) * 1000:+6.0f} ms  {said}  ({where})")
    failed = report.failed()
    later = [c for c in report.calls if c.t0 >= killed_at + KILL_GRACE]
    diffs = [f"the client could not log in: {report.login_error}"] if report.login_error else []
    if not failed:
        diffs.append("no call failed, but a call was in flight on server2 when it was killed")
    wrong = sorted({c.code for c in failed} - {"UNAVAILABLE"})
    if wrong:
        diffs.append(f"calls failed with {', '.join(wrong)}, expected UNAVAILABLE")
    late_failures = [c.number for c in later if not c.ok]
    if late_failures:
        diffs.append(f"calls {late_failures} failed more than {KILL_GRACE:g} s after the kill")
    strays = [c.number for c in later if "server1" not in receivers.get(c.laptop_id, ["server1"])]
    if strays:
        diffs.append(f"calls {strays} did not reach server1 after server2 died")
    if not later:
        diffs.append("no call was sent after the kill")
    why = ("A call in flight on a server that dies ends with UNAVAILABLE: the connection is gone and "
           "grpcio does not know whether the server ran it, so it does not retry it. The channel sees the "
           "connection drop, cannot reconnect (connection refused), and round robin picks only server1.")
    data = {
        "calls": [{"call": c.number, "t_ms": round((c.t0 - killed_at) * 1000, 1), "code": c.code,
                   "details": c.details, "server": (receivers.get(c.laptop_id) or ["none"])[0]}
                  for c in report.calls],
        "policy": "round_robin",
        "codes": dict(report.codes()),
        "failed_in_flight": [c.number for c in failed],
    }
    return ctx.record(Outcome(title, why, True, diffs, data=data))


# -- step 5: the extra hop, measured --------------------------------------------------------------------


def latency(ctx: ScenarioContext, index: int, total: int, calls: int = 100, warmup: int = 20) -> Outcome:
    conf = ctx.conf or CONF
    title = "the cost of the hop: the same call direct, through nginx, and client-side balanced"
    ctx.step(index, total, title, _describe([
        f"nginx:   {shown(conf)} on {NGINX_PORT} (in front of both servers)",
        f"client:  python -m pcbook.measure.driver --compare direct=127.0.0.1:{SERVERS['server1']} "
        f"--compare nginx=127.0.0.1:{NGINX_PORT} --compare client-side=round_robin@{TARGET} "
        f"--calls {calls} --warmup {warmup}",
        "expect:  three medians; the servers do no simulated work here, so the hop is what differs",
    ]))
    # Fresh servers without simulated work, in a quiet stack: 360 calls would print over 1000 lines.
    for name in NAMES:
        if name in ctx.stack:
            ctx.stack.stop(name)
    with procs.Stack(echo=None, replace=False) as quiet:
        for name, port in SERVERS.items():
            driver.start_server(quiet, name, port, [], ctx.say)
        nginx.start_nginx(quiet, conf, port=NGINX_PORT)
        path = driver.report_path(quiet)
        argv = [sys.executable, "-u", "-m", "pcbook.measure.driver", "--json", str(path), "--calls", str(calls),
                "--warmup", str(warmup), "--compare", f"direct=127.0.0.1:{SERVERS['server1']}",
                "--compare", f"nginx=127.0.0.1:{NGINX_PORT}", "--compare", f"client-side=round_robin@{TARGET}"]
        result = quiet.run("compare", argv, timeout=90)
        ctx.say(f"   (servers and nginx ran quietly: {len(quiet.lines())} lines captured, not shown)")
        for line in result.lines:
            ctx.say(f"   client | {line}")
        report = driver.read_report(path) if result.ok and path.exists() else driver.Report()
        path.unlink(missing_ok=True)
    medians = {name: round(stats["median"], 3) for name, stats in report.latency_ms.items()}
    diffs = []
    if not result.ok:
        diffs.append(f"the measurement failed: {result.lines[-1] if result.lines else 'no output'}")
    elif set(medians) != {"direct", "nginx", "client-side"} or not all(v > 0 for v in medians.values()):
        diffs.append(f"expected three positive medians, got {medians}")
    differences = {}
    if set(report.samples_ms) == {"direct", "nginx", "client-side"}:
        differences = verdicts.interleaved_differences(report.samples_ms, "direct")
        hop = differences["nginx"]
        ctx.say(f"   nginx - direct: {hop.short()} us per call (median of {hop.interval.n} interleaved pairs, "
                f"{hop.interval.coverage:.0%} interval): {hop.state()}")
        ctx.say(f"   {verdicts.client_side_reading(differences['client-side'])}")
    why = ("Through nginx every call crosses two connections and one more process; client-side balancing "
           "goes straight to a server, like the direct call, and only adds the client's pick. The numbers "
           "are this machine's, now: each difference is shown with its interval, and called one only when "
           "the interval excludes zero.")
    data = {"latency_ms": medians,
            "minus_direct_us": {name: {"median": d.interval.median, "low": d.interval.low, "high": d.interval.high,
                                       "resolved": d.resolved} for name, d in differences.items()},
            "p90_ms": {name: round(stats["p90"], 3) for name, stats in report.latency_ms.items()},
            "calls": calls, "warmup": warmup}
    return ctx.record(Outcome(title, why, False, diffs, data=data))

