"""Lesson 7: client-side load balancing, no proxy in the path: what its steps do and how they are judged.

The client dials both servers itself (target ``ipv4:127.0.0.1:50071,127.0.0.1:50072``) and decides
where each call goes. The steps (declared in pcbook/workbook/manifest.py): pick_first, round_robin,
round_robin with client-side health checking, a server killed mid-run, and the latency of the same call
direct, through nginx and client-side balanced.

Which server served a call is read from the servers' own logs: every CreateLaptop carries a fresh
laptop id, which the server logs (`receive a create-laptop request with id: ...`).
"""

from __future__ import annotations

import signal
from dataclasses import replace
from typing import TYPE_CHECKING

from pcbook.measure import verdicts
from pcbook.stage.model import Driver, Exercise, Lesson, Nginx, Server, Step
from pcbook.stage.results import Calls, Latency, Phases

if TYPE_CHECKING:
    from pcbook.stage.context import StepContext

# How long after a server's health change the client may still pick it (the Watch stream needs a
# moment to deliver the news). Calls that start inside this window are not judged.
HEALTH_GRACE = 0.5  # loaded CI runs sent a call to server2 0.1 s, then 0.25 s, after its change
KILL_GRACE = 0.25  # calls that start this long after the kill must all succeed
FLIPPED = "server2"  # the server set NOT_SERVING, then killed


def _failures(run: Calls) -> list[str]:
    if run.login_error:
        return [f"the client could not log in: {run.login_error}"]
    failed = run.failed()
    if not failed:
        return []
    first = failed[0]
    return [f"{len(failed)} of {len(run.calls)} calls failed, e.g. call {first.number}: {first.code}: {first.details}"]


# -- pick_first vs round_robin ------------------------------------------------------------------------


def send(ctx: StepContext) -> Calls:
    """Send the step's calls with its policy and show how many each server got."""
    run = ctx.run_driver()
    ctx.say(f"calls:   {run.counts()}")
    return run


def one_server(run: Calls) -> list[str]:
    counts = run.counts()
    diffs = _failures(run)
    if len(counts.used()) != 1:
        diffs.append(f"calls reached more than one server ({counts}); pick_first uses one")
    return diffs


def every_server(run: Calls) -> list[str]:
    counts = run.counts()
    diffs = _failures(run)
    idle = [name for name, n in counts.per_server.items() if n == 0]
    if idle:
        diffs.append(f"{' and '.join(idle)} received no call ({counts}); round_robin uses every server")
    return diffs


# -- health-aware round robin -------------------------------------------------------------------------


def health_flip(ctx: StepContext) -> Phases:
    """After 20 calls set server2 NOT_SERVING (SIGUSR1), after 80 SERVING again (SIGUSR2)."""
    run = ctx.start_driver()
    ctx.await_line(run.name, "20 calls done")
    ctx.signal(FLIPPED, signal.SIGUSR1)
    down = ctx.await_line(FLIPPED, "set to NOT_SERVING", 5).t
    ctx.await_line(run.name, "80 calls done")
    ctx.signal(FLIPPED, signal.SIGUSR2)
    up = ctx.await_line(FLIPPED, "set to SERVING", 5).t
    calls = ctx.finish_driver(run, marks=[("NOT_SERVING", down), ("SERVING", up)])
    down_at, up_at = calls.mark("NOT_SERVING"), calls.mark("SERVING")
    # Each call's phase by when it started; the moments right after a change are not judged.
    phases: dict[str, list] = {"serving": [], "not serving": [], "serving again": []}
    for call in calls.calls:
        if call.start < down_at:
            phases["serving"].append(call)
        elif down_at + HEALTH_GRACE <= call.start < up_at:
            phases["not serving"].append(call)
        elif call.start >= up_at + HEALTH_GRACE:
            phases["serving again"].append(call)
    result = Phases(calls, {p: calls.counts(batch) for p, batch in phases.items()},
                    {p: len(batch) for p, batch in phases.items()})
    for phase, counts in result.phases.items():
        ctx.say(f"{phase + ':':<15}{counts}")
    return result


def health_judge(result: Phases) -> list[str]:
    diffs = _failures(result.run)
    serving, down, again = (result.phases[p].per_server for p in ("serving", "not serving", "serving again"))
    if serving[FLIPPED] == 0:
        diffs.append(f"{FLIPPED} got no call before it was set NOT_SERVING")
    if not result.judged["not serving"]:
        diffs.append(f"no call was sent while {FLIPPED} was NOT_SERVING")
    # One stray call is let through: in about one story run in five under pytest (never in 13 runs by hand)
    # one call reached server2 more than 0.5 s after it turned NOT_SERVING; a client that does not watch
    # the servers' health sends it about half the calls of the phase (15 of 30 here).
    if down[FLIPPED] > 1:
        diffs.append(f"{FLIPPED} got {down[FLIPPED]} calls while NOT_SERVING; the client does not watch the "
                     "servers' health")
    if again[FLIPPED] == 0:
        diffs.append(f"{FLIPPED} got no call after it was SERVING again")
    return diffs


# -- a server dies mid-run ----------------------------------------------------------------------------


def kill_one(ctx: StepContext) -> Calls:
    """Kill server2 while it works on a call (each takes --work-ms), so that a call is surely in flight."""
    run = ctx.kill_mid_run(FLIPPED)
    ctx.say("around the kill (t = when the call started, relative to the kill):")
    for call in run.calls:
        if call.ok and not -0.06 < call.start < 0.11:
            continue
        where = ", ".join(call.servers) or "no server logged it"
        ctx.say(f"  call {call.number:>2}  t = {call.start * 1000:+6.0f} ms  {call.said()}  ({where})")
    return run


def dies_judge(run: Calls) -> list[str]:
    failed = run.failed()
    later = [c for c in run.calls if c.start >= KILL_GRACE]
    diffs = [f"the client could not log in: {run.login_error}"] if run.login_error else []
    if not failed:
        diffs.append(f"no call failed, but a call was in flight on {FLIPPED} when it was killed")
    wrong = sorted({c.code for c in failed} - {"UNAVAILABLE"})
    if wrong:
        diffs.append(f"calls failed with {', '.join(wrong)}, expected UNAVAILABLE")
    late_failures = [c.number for c in later if not c.ok]
    if late_failures:
        diffs.append(f"calls {late_failures} failed more than {KILL_GRACE:g} s after the kill")
    survivors = [s for s in run.servers if s != FLIPPED]
    strays = [c.number for c in later if c.servers and not set(c.servers) <= set(survivors)]
    if strays:
        diffs.append(f"calls {strays} did not reach {' or '.join(survivors)} after {FLIPPED} died")
    if not later:
        diffs.append("no call was sent after the kill")
    return diffs


# -- the extra hop, measured --------------------------------------------------------------------------


def latency(ctx: StepContext) -> Latency:
    result = ctx.measure_latency()
    if set(result.samples_ms) != {"direct", "nginx", "client-side"}:
        return result
    differences = verdicts.interleaved_differences(result.samples_ms, "direct")
    hop = differences["nginx"]
    ctx.say(f"nginx - direct: {hop.short()} us per call (median of {hop.interval.n} interleaved pairs, "
            f"{hop.interval.coverage:.0%} interval): {hop.state()}")
    ctx.say(verdicts.client_side_reading(differences["client-side"]))
    return replace(result, minus_direct_us=differences)


def three_medians(result: Latency) -> list[str]:
    if result.error:
        return [f"the measurement failed: {result.error}"]
    medians = result.median_ms
    if set(medians) != {"direct", "nginx", "client-side"} or not all(v > 0 for v in medians.values()):
        return [f"expected three positive medians, got {medians}"]
    return []


# -- the lesson ---------------------------------------------------------------------------------

# Lesson 7: the client dials both servers itself; nginx only for the latency comparison.
L7_TARGET = "ipv4:127.0.0.1:50071,127.0.0.1:50072"
# 20 ms of work per CreateLaptop, so that calls overlap and spread.
L7_WORKING = tuple(Server(n, p, flags=("--work-ms", "20")) for n, p in (("server1", 50071), ("server2", 50072)))
# The server that is killed works 100 ms per call: the runner kills it once its log says a call came in,
# and in a loaded CI run 20 ms of work ended before the SIGKILL did (no call failed).
L7_DYING = (L7_WORKING[0], Server("server2", 50072, flags=("--work-ms", "100")))
L7_IDLE = (Server("server1", 50071), Server("server2", 50072))

# round_robin + healthCheckConfig as a file: the exercise's answer, which a learner's CONF= replaces.
SERVICE_CONFIG = "lessons/service-configs/lesson-7.json"
EXERCISE = Exercise(
    kind="service config",
    starter="lessons/exercises/lesson-7.json",
    answer=SERVICE_CONFIG,
    steps=("health-checking",),
    hints=(
        "Two things are missing. grpcio's default policy, pick_first, sends every call to the first address "
        "that answers; and round robin alone keeps sending calls to a server that says NOT_SERVING.",
        '`"loadBalancingConfig": [{"round_robin": {}}]` picks the policy: '
        "https://github.com/grpc/grpc/blob/master/doc/service_config.md",
        '`"healthCheckConfig": {"serviceName": ""}` makes the channel watch each server\'s grpc.health.v1 status '
        '("" is the whole server\'s): https://github.com/grpc/grpc/blob/master/doc/health-checking.md',
    ),
)

LESSON = Lesson(
    number=7,
    slug="client-side-balancing",
    title="Client-side load balancing",
    goal="Let the client balance by itself: pick_first vs round_robin, health-aware, a dying server.",
    tutorial=False,
    exercise=EXERCISE,
    steps=(
        Step(
            key="pick-first",
            title="pick_first: the client knows both servers, every call goes to one",
            why="pick_first connects to the first address that answers and sends every call there; the "
                "second address is only a fallback. It is grpcio's default policy.",
            servers=L7_WORKING,
            client=Driver(L7_TARGET, calls=10, lb_policy="pick_first"),
            act=send,
            judge=one_server,
            claims=("every call reaches the same server",),
            checkpoint=True,
        ),
        Step(
            key="round-robin",
            title="round_robin: the same client spreads its calls over both servers",
            why="round_robin keeps a connection to every address and picks the next READY one for each "
                "call. The first calls may all land on the server that connected first.",
            servers=L7_WORKING,
            client=Driver(L7_TARGET, calls=10, lb_policy="round_robin"),
            act=send,
            judge=every_server,
            claims=("both servers receive calls",),
            checkpoint=True,
        ),
        Step(
            key="health-checking",
            title="round_robin with health checking: a NOT_SERVING server gets no calls, then gets them back",
            why="With healthCheckConfig the client keeps a grpc.health.v1 Watch stream open to each server; "
                "a NOT_SERVING answer takes that server out of round robin at once, SERVING puts it back. "
                "Nothing was restarted: the server process stayed up the whole time.",
            servers=L7_WORKING,
            client=Driver(L7_TARGET, calls=130, rate=60, concurrency=4, service_config=SERVICE_CONFIG),
            then=("after 20 calls server2 gets SIGUSR1 (NOT_SERVING); after 80 calls SIGUSR2 (SERVING)",),
            act=health_flip,
            judge=health_judge,
            claims=("server2 gets calls, then none while NOT_SERVING, then calls again",),
            checkpoint=True,
        ),
        Step(
            key="server-dies",
            title="a server dies mid-run: its calls in flight fail, round robin moves on",
            why="A call in flight on a server that dies ends with UNAVAILABLE: the connection is gone and "
                "grpcio does not know whether the server ran it, so it does not retry it. The channel sees the "
                "connection drop, cannot reconnect (connection refused), and round robin picks only server1.",
            servers=L7_DYING,
            client=Driver(L7_TARGET, calls=40, rate=40, concurrency=4, lb_policy="round_robin"),
            then=("after 10 calls, while server2 is working on a call, server2 is killed (SIGKILL)",),
            act=kill_one,
            judge=dies_judge,
            claims=("the calls in flight on server2 fail with UNAVAILABLE", "later calls all succeed on server1"),
            checkpoint=True,
        ),
        Step(
            key="cost-of-the-hop",
            title="the cost of the hop: the same call direct, through nginx, and client-side balanced",
            why="Through nginx every call crosses two connections and one more process; client-side balancing "
                "goes straight to a server, like the direct call, and only adds the client's pick. The numbers "
                "are this machine's, now: each difference is shown with its interval, and called one only when "
                "the interval excludes zero.",
            servers=L7_IDLE,
            nginx=Nginx("lesson-7.conf", 8071),
            client=Driver(compare=("direct=127.0.0.1:50071", "nginx=127.0.0.1:8071",
                            f"client-side=round_robin@{L7_TARGET}"), calls=100, warmup=20),
            act=latency,
            judge=three_medians,
            claims=("three medians; the servers do no simulated work here, so the hop is what differs",),
            quiet=True,
        ),
    ),
)
