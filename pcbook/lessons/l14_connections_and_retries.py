"""Lesson 14: connections that live too long, and the client's own retries.

The steps, on servers 50141-50143 and nginx/lesson-14.conf (8141 L4 `stream`, 8142 L7 `grpc_pass`,
8143 L7 with no retry at nginx): the load driver with several channels through the L4 balancer while
server3 joins, without and with the servers' --max-connection-age (and with no grace: calls cut), the
same through L7; server1 SIGKILLed under load with no retry anywhere, with the client's retryPolicy on a
channel to nginx, and with retryPolicy + client-side round robin; a call with and without wait_for_ready
while no server is up, and the deadline that bounds the wait.

Which server ran a call is read from the servers' own lines (each CreateLaptop has a fresh laptop id);
a call lost is one the driver's report gives a status other than OK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pcbook.stage.model import Driver, Exercise, Lesson, Nginx, Server, Step
from pcbook.stage.results import Calls, Joined

if TYPE_CHECKING:
    from pcbook.stage.context import StepContext

JOINER = "server3"
VICTIM = "server1"
AGE_S = 1.0  # --max-connection-age: each connection is re-made about once a second (gRPC adds up to 10 %)
GRACE_S = 5.0  # long enough for any call in flight (20 ms of work) to finish after the GOAWAY
JOIN_AFTER = 100  # calls done before server3 is started
AFTER_JOIN_S = 3  # whole seconds of load the judge needs after server3 served: 3 times the age
CONVERGED = 0.15  # server3's share (1/3 when even) in the last seconds of a run that must have converged
FAST_FAIL_S = 1.0  # a call with no server and no wait_for_ready fails well within this
DEADLINE_S = 1.5  # the deadline of the wait_for_ready call that no server answers
KILL_GRACE = 0.25


def _servers(*flags: str, work_ms: int = 20) -> tuple[Server, Server, Server]:
    base = ("--host", "127.0.0.1", "--work-ms", str(work_ms), "--workers", "32")
    s1, s2, s3 = (Server(n, p, flags=(*base, *flags)) for n, p in (("server1", 50141), ("server2", 50142),
                                                                   ("server3", 50143)))
    return s1, s2, s3


PLAIN = _servers()
AGED = _servers("--max-connection-age", f"{AGE_S:g}", "--max-connection-age-grace", f"{GRACE_S:g}")
NO_GRACE = _servers("--max-connection-age", f"{AGE_S:g}", "--max-connection-age-grace", "0", work_ms=100)
NGINX = Nginx("lesson-14.conf", 8141, more_ports=(8142, 8143))
L4, L7, L7_NO_RETRY = "127.0.0.1:8141", "127.0.0.1:8142", "127.0.0.1:8143"
DIRECT = "ipv4:127.0.0.1:50141,127.0.0.1:50142"
# 8 client connections, 8 calls in flight at most, 100 calls/s. The driver is stopped once it has sent calls
# for AFTER_JOIN_S + 1 s after server3 served (how long server3 takes to start depends on the machine: up to
# 4.6 s on a loaded one); JOIN_CALLS (14 s) is only its bound.
JOIN_RATE, JOIN_CALLS = 100, 1400
JOIN_LOAD = Driver(L4, calls=JOIN_CALLS, rate=JOIN_RATE, concurrency=8, channels=8, progress_every=50)
KILL_LOAD = Driver(L7_NO_RETRY, calls=40, rate=40, concurrency=4)
RETRY = ("UNAVAILABLE",)


def _lost(run: Calls) -> list[str]:
    if run.login_error:
        return [f"the client could not log in: {run.login_error}"]
    failed = run.failed()
    if not failed:
        return []
    first = failed[0]
    return [f"{len(failed)} of {len(run.calls)} calls were lost, e.g. call {first.number}: {first.said()}"]


# -- a server joins ---------------------------------------------------------------------------------------


def per_second(run: Calls) -> tuple[dict[str, int], ...]:
    """Calls per server in each whole second of the run (by when each call started)."""
    if not run.calls:
        return ()
    seconds = [dict.fromkeys(run.servers, 0) for _ in range(int(max(c.start for c in run.calls)) + 1)]
    for call in run.calls:
        for server in call.servers:
            seconds[int(call.start)][server] = seconds[int(call.start)].get(server, 0) + 1
    return tuple(seconds)


def join(ctx: StepContext) -> Joined:
    """Once JOIN_AFTER calls are done, start server3; stop the load once it has run AFTER_JOIN_S whole
    seconds after server3 served (and the partial second the judge leaves out)."""
    run = ctx.start_driver()
    ctx.await_line(run.name, f"{JOIN_AFTER} calls done", 30)
    joined = ctx.start_server(JOINER)
    # Calls are paced, so a progress line read this late means calls were still being sent then: the
    # stop's last call leaves after it. JOIN_CALLS is reached first only on a machine too slow to judge.
    enough, seen = joined + AFTER_JOIN_S + 1.3, 0.0
    while seen < enough and run.progress() < JOIN_CALLS:
        seen = run.wait_more(run.driver.progress_every, timeout=30)
    calls = ctx.finish_driver(run, marks=[("joined", joined)], stop=True)
    result = Joined(calls, calls.mark("joined"), per_second(calls))
    ctx.say(f"{JOINER} served {result.joined:.1f} s after the first call; its share of each second's calls:")
    ctx.say("  " + " ".join(f"{share:.0%}" for share in result.shares(JOINER)))
    ctx.say(f"calls: {calls.counts()}; lost: {len(calls.failed())}")
    for said in sorted({c.said() for c in calls.failed()}):
        ctx.say(f"  lost: {said}")
    return result


def _after_join(result: Joined) -> range:
    """The whole seconds that started after server3 served (the run's last, partial second left out)."""
    return range(int(result.joined) + 1, len(result.per_second) - 1)


def _enough_after(result: Joined) -> list[str]:
    seconds = len(_after_join(result))
    if seconds < AFTER_JOIN_S:
        return [f"only {seconds} whole seconds of load after {JOINER} joined; the judge needs {AFTER_JOIN_S}"]
    return []


def _spread_before(result: Joined) -> list[str]:
    """Before server3 served, the calls reached both first servers (the balancer lists them both)."""
    before = {name for second in result.per_second[:int(result.joined)] for name, n in second.items() if n}
    missing = sorted({"server1", "server2"} - before)
    return [f"before {JOINER} joined no call reached {' or '.join(missing)} (is it in the upstream?)"] if missing \
        else []


def stays_at_zero(result: Joined) -> list[str]:
    diffs = _lost(result.run) + _enough_after(result) + _spread_before(result)
    got = sum(result.per_second[i].get(JOINER, 0) for i in _after_join(result))
    if got:
        diffs.append(f"{JOINER} got {got} calls: connections were re-made (do the servers have a connection age?)")
    return diffs


def _last_share(result: Joined) -> float:
    last = [result.per_second[i] for i in _after_join(result)][-2:]
    total = sum(sum(c.values()) for c in last)
    return sum(c.get(JOINER, 0) for c in last) / total if total else 0.0


def converges(result: Joined) -> list[str]:
    diffs = _lost(result.run) + _enough_after(result) + _spread_before(result)
    share = _last_share(result)
    if share < CONVERGED:
        diffs.append(f"{JOINER}'s share of the last two seconds is {share:.0%} (at least {CONVERGED:.0%} expected): "
                     "the clients kept their connections (do the servers send GOAWAY: --max-connection-age?)")
    return diffs


def cut_in_flight(result: Joined) -> list[str]:
    run = result.run
    diffs = [f"the client could not log in: {run.login_error}"] if run.login_error else []
    failed = run.failed()
    if not failed:
        diffs.append("no call was lost, but with no grace a call in flight when its connection is closed should be")
    wrong = sorted({c.code for c in failed} - {"UNAVAILABLE"})
    if wrong:
        diffs.append(f"calls were lost with {', '.join(wrong)}, expected UNAVAILABLE")
    return diffs


def at_once(result: Joined) -> list[str]:
    diffs = _lost(result.run) + _enough_after(result) + _spread_before(result)
    first = int(result.joined) + 1
    if first < len(result.per_second) and not result.per_second[first].get(JOINER):
        diffs.append(f"{JOINER} got no call in the first whole second after it joined: nginx balances per call")
    share = _last_share(result)
    if share < CONVERGED:
        diffs.append(f"{JOINER}'s share of the last two seconds is {share:.0%}, at least {CONVERGED:.0%} expected")
    return diffs


# -- a server killed under load -------------------------------------------------------------------------


def kill(ctx: StepContext) -> Calls:
    """After 10 calls, while server1 works on one, SIGKILL it; show the calls lost and those run twice."""
    run = ctx.kill_mid_run(VICTIM)
    twice = [c.number for c in run.calls if len(c.servers) > 1]
    ctx.say(f"calls lost: {len(run.failed())} of {len(run.calls)}; run on both servers (retried): {twice or 'none'}")
    for said in sorted({c.said() for c in run.failed()}):
        ctx.say(f"  lost: {said}")
    return run


def loses_calls(run: Calls) -> list[str]:
    diffs = [f"the client could not log in: {run.login_error}"] if run.login_error else []
    if not run.failed():
        diffs.append(f"no call was lost, but calls were in flight on {VICTIM} when it was killed: who retried them?")
    return diffs


def none_lost(run: Calls) -> list[str]:
    diffs = _lost(run)
    if diffs and not run.login_error:
        diffs.append("the client's retryPolicy must name UNAVAILABLE (what a dead backend's calls end with)")
    if not any(c.start >= KILL_GRACE for c in run.calls):
        diffs.append("no call was sent after the kill")
    return diffs


# -- wait_for_ready and deadlines ------------------------------------------------------------------------


def no_server(ctx: StepContext) -> Calls:
    """No server is up: the driver's Login is its first call."""
    run = ctx.run_driver()
    ctx.say(f"the Login ended after {run.login_s:.2f} s: {run.login_error or 'OK'}")
    return run


def comes_up(ctx: StepContext) -> Calls:
    """The driver waits (its Login with wait_for_ready); then server1 is started."""
    run = ctx.start_driver()
    waiting = ctx.await_line(run.name, "waiting for a connection", 20).t
    up = ctx.start_server(VICTIM)
    calls = ctx.finish_driver(run, origin=waiting, marks=[("up", up)], origin_label="the driver's wait")
    ctx.say(f"server1 served {calls.mark('up'):.2f} s after the driver began to wait; the Login took "
            f"{calls.login_s:.2f} s; calls: {calls.codes()['OK']} OK of {len(calls.calls)}")
    return calls


def fails_at_once(run: Calls) -> list[str]:
    if not run.login_error.startswith("UNAVAILABLE"):
        return [f"the Login should fail with UNAVAILABLE at once, got {run.login_error or 'OK'}"]
    if run.login_s > FAST_FAIL_S:
        return [f"the Login took {run.login_s:.2f} s to fail; without wait_for_ready it fails at once"]
    return []


def waited(run: Calls) -> list[str]:
    diffs = _lost(run)
    up = next((m.at for m in run.marks if m.label == "up"), None)
    if not diffs and up is not None and run.login_s < up:
        diffs.append(f"the Login took {run.login_s:.2f} s, but server1 was up only {up:.2f} s after the wait began")
    if not run.calls and not run.login_error:
        diffs.append("no call was sent")
    return diffs


def bounded(run: Calls) -> list[str]:
    if not run.login_error.startswith("DEADLINE_EXCEEDED"):
        return [f"with wait_for_ready and no server the Login should end with DEADLINE_EXCEEDED, got "
                f"{run.login_error or 'OK'}"]
    if not DEADLINE_S * 0.9 <= run.login_s <= DEADLINE_S + 1.5:
        return [f"the Login ended after {run.login_s:.2f} s, not at its {DEADLINE_S:g} s deadline"]
    return []


# -- the lesson ---------------------------------------------------------------------------------

_JOIN_WHY = ("The load driver keeps 8 HTTP/2 connections open and multiplexes every call on them; nginx's "
             "stream module picked a backend for each connection when it opened, and never again.")

EXERCISE = Exercise(
    kind="nginx config",
    starter="nginx/exercises/lesson-14.conf",
    answer="nginx/lesson-14.conf",
    steps=("l4-join-with-age", "l7-join", "kill-client-retry"),
    hints=(
        "server3 is down when the stack starts, so nginx's first connect to it is refused. After a failed "
        "connect nginx leaves a server out for fail_timeout (10 s by default): longer than the L7 join step waits.",
        "`max_fails=0` on each server of `upstream pcbook_three` (`server 127.0.0.1:50143 max_fails=0;`) "
        "turns that off: https://nginx.org/en/docs/http/ngx_http_upstream_module.html#max_fails",
    ),
)

LESSON = Lesson(
    number=14,
    slug="connections-and-retries",
    title="Connections that live too long, and the client's own retries",
    goal="See a joining server get nothing behind an L4 balancer until connections age out, then lose calls "
         "to a killed backend with and without the client's retryPolicy and wait_for_ready.",
    tutorial=False,
    exercise=EXERCISE,
    steps=(
        Step(
            key="l4-join",
            title="L4: server3 joins and gets nothing",
            why=_JOIN_WHY + " server3 is listed in the upstream, but no client opens a new connection, so "
                "no call ever reaches it.",
            servers=PLAIN[:2],
            standby=PLAIN[2:],
            nginx=NGINX,
            client=JOIN_LOAD,
            then=(f"after {JOIN_AFTER} calls server3 is started",),
            act=join,
            judge=stays_at_zero,
            claims=("no call is lost", "server3's share stays 0 for every second after it joined"),
            quiet=True,
        ),
        Step(
            key="l4-join-with-age",
            title="L4 with --max-connection-age: server3's share converges",
            why=f"Each server sends GOAWAY on a connection {AGE_S:g} s old (plus up to 10 % of jitter); the client "
                "finishes its calls on it, opens a new connection, and nginx places that one round robin, also on "
                f"server3. The grace ({GRACE_S:g} s) lets the calls in flight end: none is lost.",
            servers=AGED[:2],
            standby=AGED[2:],
            nginx=NGINX,
            client=JOIN_LOAD,
            then=(f"after {JOIN_AFTER} calls server3 is started",),
            act=join,
            judge=converges,
            claims=("no call is lost", f"server3's share of the last two seconds is at least {CONVERGED:.0%}"),
            checkpoint=True,
            quiet=True,
        ),
        Step(
            key="goaway-no-grace",
            title="connection age with no grace: the calls in flight are cut",
            why="With --max-connection-age-grace 0 the server closes the connection as soon as it has said GOAWAY; "
                "a call still running on it (100 ms of work here) ends with UNAVAILABLE. gRPC's default grace is "
                "unlimited; set one longer than your longest call.",
            servers=NO_GRACE[:2],
            standby=NO_GRACE[2:],
            nginx=NGINX,
            client=JOIN_LOAD,
            then=(f"after {JOIN_AFTER} calls server3 is started",),
            act=join,
            judge=cut_in_flight,
            claims=("calls in flight when a connection is closed are lost with UNAVAILABLE",),
            quiet=True,
        ),
        Step(
            key="l7-join",
            title="L7 (grpc_pass): server3 gets calls at once",
            why="nginx reads every call and picks a backend for each; the clients' connections end at nginx, so "
                "their age does not matter: server3 gets its share as soon as it answers.",
            servers=PLAIN[:2],
            standby=PLAIN[2:],
            nginx=NGINX,
            client=Driver(L7, calls=JOIN_CALLS, rate=JOIN_RATE, concurrency=8, channels=8, progress_every=50),
            then=(f"after {JOIN_AFTER} calls server3 is started",),
            act=join,
            judge=at_once,
            claims=("no call is lost", "server3 gets calls in the first whole second after it joined"),
            checkpoint=True,
            quiet=True,
        ),
        Step(
            key="kill-no-retry",
            title="server1 killed under load, no retry anywhere: calls are lost",
            why="Port 8143 says grpc_next_upstream off, and the client has no retryPolicy: the call in flight on "
                "server1 fails (nginx could not have retried it anyway: it was sent, lesson 8). That failure marks "
                "server1 down (max_fails=1), so the later calls go to server2.",
            servers=PLAIN[:2],
            nginx=NGINX,
            client=KILL_LOAD,
            then=("after 10 calls, while server1 works on a call, server1 is killed (SIGKILL)",),
            act=kill,
            judge=loses_calls,
            claims=("calls fail with UNAVAILABLE",),
        ),
        Step(
            key="kill-client-retry",
            title="the same with the client's retryPolicy: no call is lost",
            why="The channel's service config retries a call that ended UNAVAILABLE (up to 4 attempts, 50 ms "
                "backoff doubling): nginx's answer to the dead backend is such a status, and the new attempt goes "
                "to server2. The call may run twice: the killed server had received it.",
            servers=PLAIN[:2],
            nginx=NGINX,
            client=Driver(L7_NO_RETRY, calls=40, rate=40, concurrency=4, retry=RETRY),
            then=("after 10 calls, while server1 works on a call, server1 is killed (SIGKILL)",),
            act=kill,
            judge=none_lost,
            claims=("no call is lost",),
            checkpoint=True,
        ),
        Step(
            key="kill-client-retry-round-robin",
            title="retryPolicy with client-side round robin, no proxy: no call is lost",
            why="The same policy on a round_robin channel to both servers: the call in flight on the dead "
                "connection fails UNAVAILABLE inside the client, which retries it on the other subchannel.",
            servers=PLAIN[:2],
            client=Driver(DIRECT, calls=40, rate=40, concurrency=4, lb_policy="round_robin", retry=RETRY),
            then=("after 10 calls, while server1 works on a call, server1 is killed (SIGKILL)",),
            act=kill,
            judge=none_lost,
            claims=("no call is lost",),
            checkpoint=True,
        ),
        Step(
            key="fail-fast",
            title="no server, no wait_for_ready: UNAVAILABLE at once",
            why="By default a call on a channel that cannot connect fails at once (connection refused) instead of "
                "waiting for a server.",
            servers=(),
            client=Driver("127.0.0.1:50141", calls=1),
            act=no_server,
            judge=fails_at_once,
            claims=(f"the Login fails with UNAVAILABLE within {FAST_FAIL_S:g} s",),
        ),
        Step(
            key="wait-for-ready",
            title="wait_for_ready: the call waits until a server comes",
            why="waitForReady in the service config makes a call wait while the channel connects (retrying "
                "with backoff), until its deadline; the Login started before server1 and succeeded once it served.",
            servers=(),
            standby=PLAIN[:1],
            client=Driver("127.0.0.1:50141", calls=5, wait_for_ready=True, timeout=15),
            then=("once the driver waits, server1 is started",),
            act=comes_up,
            judge=waited,
            claims=("the Login waits for server1 and every call succeeds",),
            checkpoint=True,
        ),
        Step(
            key="wait-for-ready-deadline",
            title="wait_for_ready and no server: the deadline ends the wait",
            why="wait_for_ready never waits longer than the call's deadline: with no server at all the call ends "
                "with DEADLINE_EXCEEDED, not UNAVAILABLE.",
            servers=(),
            client=Driver("127.0.0.1:50141", calls=1, wait_for_ready=True, timeout=DEADLINE_S),
            act=no_server,
            judge=bounded,
            claims=(f"the Login ends with DEADLINE_EXCEEDED after {DEADLINE_S:g} s",),
        ),
    ),
)
