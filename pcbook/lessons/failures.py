"""Lesson 8: when a backend fails, through nginx.

Steps (the checkpoint ones run with `nginx/lesson-8.conf`, or with a learner's config):

1. No backend at all, the tutorial's config: nginx answers with an HTML 502 page.
2. The same with lesson-8.conf: `error_page` answers with a gRPC status instead (checkpoint).
3. server1 killed while calls are in flight: those calls fail and are not retried; every other call
   succeeds (checkpoint).
4. The same with `non_idempotent`: nothing changes, because grpc_pass streams the request body and
   keeps no copy to send again.
5. server1 dead, a fresh nginx: the refused connection is retried on server2, and passive health
   (max_fails / fail_timeout) stops nginx from trying the dead server for every call (checkpoint).
6. server2 dies too: `no live upstreams`; it comes back, and nginx tries again after fail_timeout.
7. The tutorial's `worker_connections 10` under 24 concurrent calls: failures and nginx's alert.
8. The same load with lesson-8.conf: no failure (checkpoint).

Every call carries its number in the `x-call-id` header; lesson 8's log format writes it next to the
backend(s) nginx tried (`upstream=`) and their answers (`upstream_status=`). Which server ran a
CreateLaptop is read from the servers' logs (each call has a fresh laptop id).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pcbook.measure import driver
from pcbook.paths import NGINX_DIR, shown
from pcbook.stack import nginx
from pcbook.workbook.runner import Outcome, ScenarioContext

SERVERS = {"server1": 50081, "server2": 50082}
NAMES = tuple(SERVERS)
NGINX_PORT = 8081
ADDRESS = f"127.0.0.1:{NGINX_PORT}"
CONF = NGINX_DIR / "lesson-8.conf"
TUTORIAL_CONF = NGINX_DIR / "lesson-8-tutorial.conf"
NON_IDEMPOTENT_CONF = NGINX_DIR / "lesson-8-non-idempotent.conf"
# 50 ms of work per CreateLaptop keeps calls in flight (a kill hits some, 24 calls overlap); 32
# workers let a server take all 24 concurrent calls at once.
SERVER_ARGS = ("--work-ms", "50", "--workers", "32")
KILL_GRACE = 0.25  # calls that start this long after a kill must all succeed
CONCURRENT = 24  # "20+ concurrent calls" for worker_connections
HTML_STATUS = re.compile(r"Received http2 header with status: (\d{3})")
_ACCESS = re.compile(r'"POST (?P<path>\S+) HTTP/2\.0" (?P<status>\d{3}) upstream=(?P<upstream>.*?) '
                     r"upstream_status=(?P<upstream_status>.*?) call=(?P<call>\S+)")
SETTLE = 3.0  # seconds to wait for log lines that follow the client's last answer

Step = Callable[[int, int], Outcome]


def run(ctx: ScenarioContext) -> None:
    conf = ctx.conf or CONF
    plan: list[tuple[bool, Step]] = [
        (False, lambda i, n: nginx_errors(ctx, i, n, TUTORIAL_CONF, checkpoint=False)),
        (True, lambda i, n: nginx_errors(ctx, i, n, conf)),
        (True, lambda i, n: kill_under_load(ctx, i, n, conf)),
        (False, lambda i, n: kill_under_load(ctx, i, n, NON_IDEMPOTENT_CONF, checkpoint=False)),
        (True, lambda i, n: refused_is_retried(ctx, i, n, conf)),
        (False, lambda i, n: all_down(ctx, i, n, conf)),
        (False, lambda i, n: concurrent_calls(ctx, i, n, TUTORIAL_CONF, checkpoint=False)),
        (True, lambda i, n: concurrent_calls(ctx, i, n, conf)),
    ]
    steps = [step for checkpoint, step in plan if checkpoint or not ctx.checkpoint_only]
    for index, step in enumerate(steps, 1):
        step(index, len(steps))


# -- the stack --------------------------------------------------------------------------------------------


def servers(ctx: ScenarioContext, up: Sequence[str]) -> None:
    """Bring the servers to a state: those in `up` running, the others stopped."""
    for name, port in SERVERS.items():
        running = name in ctx.stack and ctx.stack.proc(name).running
        if name in up and not running:
            driver.start_server(ctx.stack, name, port, SERVER_ARGS, ctx.say)
        elif name not in up and running:
            ctx.stack.stop(name)


def fresh_nginx(ctx: ScenarioContext, conf: Path) -> nginx.NginxProcess:
    """A new nginx: it remembers nothing about failed backends."""
    if "nginx" in ctx.stack and ctx.stack.proc("nginx").running:
        ctx.stack.stop("nginx")
    return nginx.start_nginx(ctx.stack, conf, port=NGINX_PORT)


def _describe(conf: Path, up: Sequence[str], client: str, expect: str, then: str | None = None) -> list[str]:
    servers = ", ".join(f"{name} on {port}" + ("" if name in up else " (down)") for name, port in SERVERS.items())
    lines = [f"servers: {servers}", f"nginx:   {shown(conf)} on {NGINX_PORT}",
             f"client:  python -m pcbook.measure.driver "
             f"--address {ADDRESS} {client}"]
    if then:
        lines.append(f"then:    {then}")
    return [*lines, f"expect:  {expect}"]


@dataclass
class Access:
    """One line of lesson 8's access log: what nginx did with one call."""

    path: str
    status: int
    upstream: str  # e.g. "127.0.0.1:50081, 127.0.0.1:50082": tried server1, then server2
    upstream_status: str  # e.g. "502, 200"
    call: int | None  # the client's x-call-id (None: Login, or a log format without it)


def access_entries(ng: nginx.NginxProcess) -> list[Access]:
    out = []
    for line in ng.access_log_lines():
        if m := _ACCESS.search(line):
            call = int(m["call"]) if m["call"].isdigit() else None
            out.append(Access(m["path"], int(m["status"]), m["upstream"], m["upstream_status"], call))
    return out


def settle_access(ctx: ScenarioContext, ng: nginx.NginxProcess, calls: int) -> dict[int, Access]:
    """Call number -> its access-log entry, once nginx has logged them all (or at a deadline).

    A config without lesson 8's log format gives an empty map: the checks then rely on the servers'
    and the client's own evidence."""
    deadline = time.monotonic() + SETTLE
    while True:
        lines = ng.access_log_lines()
        entries = {e.call: e for e in access_entries(ng) if e.call is not None}
        if len(entries) >= calls or time.monotonic() > deadline or (lines and not _ACCESS.search(lines[0])):
            return entries
        ctx.stack.wait_for_output(0.05)


def settle_error_log(ctx: ScenarioContext, ng: nginx.NginxProcess, pattern: str) -> list[str]:
    """nginx's error-log lines matching `pattern`, waiting a moment for the first one to appear."""
    deadline = time.monotonic() + SETTLE
    while True:
        found = [line for line in ng.error_log_lines() if re.search(pattern, line)]
        if found or time.monotonic() > deadline:
            return found
        ctx.stack.wait_for_output(0.05)


def _login(report: driver.Report) -> list[str]:
    if not report.login_error:
        return []
    return [f"the client could not even log in: {report.login_error}"]


def _said(call: driver.Call) -> str:
    return "OK" if call.ok else f"{call.code}: {call.details}"


# -- steps 1 and 2: nginx's own errors ----------------------------------------------------------------------


def nginx_errors(ctx: ScenarioContext, index: int, total: int, conf: Path, checkpoint: bool = True,
                 calls: int = 3) -> Outcome:
    grpc_status = checkpoint
    title = ("no backend, error_page: nginx answers with a gRPC status" if grpc_status
             else "no backend, the tutorial's config: nginx answers with an HTML 502 page")
    expect = ("every call fails with UNAVAILABLE and nginx's own message (grpc-status 14 / grpc-message)"
              if grpc_status else "every call fails with UNAVAILABLE: `Received http2 header with status: 502`")
    ctx.step(index, total, title, _describe(conf, (), f"--calls {calls} --login-optional", expect))
    servers(ctx, ())
    ng = fresh_nginx(ctx, conf)
    mark = ctx.stack.mark()
    report = driver.run_load(ctx.stack, ADDRESS, calls=calls, login_optional=True)
    login = next((m["said"] for line in ctx.stack.lines_since(mark, "client")
                  if (m := re.search(r"cannot log in \((?P<said>.*)\); sending", line))), None)
    no_live = settle_error_log(ctx, ng, r"no live upstreams")
    ctx.stack.stop("nginx")
    seen = sorted({_said(c) for c in report.calls})
    if login:
        ctx.say(f"   the Login sees: {login}")
    for said in seen:
        ctx.say(f"   the calls see: {said}")
    if no_live:
        ctx.say("   nginx's error log: ... no live upstreams while connecting to upstream ...")
    diffs = []
    if any(c.ok for c in report.calls):
        diffs.append("a call succeeded although no backend is running")
    wrong = sorted({c.code for c in report.failed()} - {"UNAVAILABLE"})
    if wrong:
        diffs.append(f"calls failed with {', '.join(wrong)}; no backend should mean UNAVAILABLE")
    html = [c for c in report.calls if HTML_STATUS.search(c.details)]
    if grpc_status and html:
        diffs.append(f"the client got an HTTP error page, not a gRPC status: {html[0].details!r} "
                     "(no error_page answering with grpc-status?)")
    if not grpc_status and len(html) != len(report.calls):
        diffs.append("expected grpcio's message for an HTML 502 page on every call")
    if not no_live:
        diffs.append("nginx's error log shows no `no live upstreams` line")
    if grpc_status:
        why = ("`error_page 502 = @grpc_unavailable` sends the error to a named location that answers "
               "204 with the headers grpc-status: 14 and grpc-message; grpcio reads the status from them, "
               "so the client gets nginx's own words and a status it can act on (UNAVAILABLE: try again). "
               "The message says which 502 it was: the Login found no server to connect to, the calls after "
               "it found every server marked down (no live upstreams).")
    else:
        why = ("With no backend, nginx answers 502 Bad Gateway with an HTML body. grpcio finds no grpc-status, "
               "so it makes one up from the HTTP status (502 -> UNAVAILABLE) and can only say "
               "`Received http2 header with status: 502`. The first call tried both servers (connection "
               "refused twice); after that both are marked down and nginx says `no live upstreams`.")
    data = {"seen": seen, "login": login, "codes": dict(report.codes()),
            "no_live_upstreams": len(no_live)}
    return ctx.record(Outcome(title, why, checkpoint, diffs, data=data))


# -- steps 3 and 4: a backend dies under load ------------------------------------------------------------


def kill_under_load(ctx: ScenarioContext, index: int, total: int, conf: Path, checkpoint: bool = True,
                    calls: int = 30, rate: float = 40.0, concurrency: int = 4) -> Outcome:
    if checkpoint:
        title = "server1 dies with calls in flight: those calls fail, the others go to server2"
        expect = ("the calls in flight on server1 fail with UNAVAILABLE and are not retried; "
                  "every call started after the kill succeeds")
    else:
        title = "the same with `non_idempotent`: nginx still cannot retry a call it has sent"
        expect = "the same as before: non_idempotent does not make nginx retry a gRPC call"
    ctx.step(index, total, title, _describe(
        conf, NAMES, f"--calls {calls} --rate {rate:g} --concurrency {concurrency}", expect,
        then="after 10 calls, while server1 works on a call, server1 is killed (SIGKILL)"))
    servers(ctx, NAMES)
    ng = fresh_nginx(ctx, conf)
    stack = ctx.stack
    mark = stack.mark()
    # Paced, so that calls keep coming well after the kill; server1 is killed while it works on a call
    # (each takes 50 ms), so that call has surely been sent.
    report, killed_at = driver.kill_mid_run(stack, "server1", ADDRESS, calls=calls, rate=rate,
                                          concurrency=concurrency)
    receivers = driver.settle(stack, mark, NAMES, report.calls)
    access = settle_access(ctx, ng, len(report.calls))
    stack.stop("nginx")

    ctx.say("   around the kill (t = when the call started, relative to the kill):")
    for call in report.calls:
        if call.ok and not -0.06 < call.t0 - killed_at < 0.11:
            continue
        ran = ", ".join(receivers.get(call.laptop_id, [])) or "no server logged it"
        entry = access.get(call.number)
        tried = f"; nginx tried {entry.upstream} -> {entry.upstream_status}" if entry else ""
        ctx.say(f"     call {call.number:>2}  t = {(call.t0 - killed_at) * 1000:+5.0f} ms  {_said(call)}  "
                f"(received by: {ran}{tried})")
    failed = report.failed()
    twice = [c.number for c in report.calls if len(receivers.get(c.laptop_id, [])) > 1]
    retried = [c.number for c in failed if "server2" in receivers.get(c.laptop_id, [])
               or (c.number in access and "50082" in access[c.number].upstream)]
    late = [c.number for c in report.calls if c.t0 >= killed_at + KILL_GRACE and not c.ok]
    diffs = _login(report)
    if not failed:
        diffs.append("no call failed, but calls were in flight on server1 when it was killed: were they retried?")
    wrong = sorted({c.code for c in failed} - {"UNAVAILABLE"})
    if wrong:
        diffs.append(f"calls failed with {', '.join(wrong)}, expected UNAVAILABLE")
    if retried:
        diffs.append(f"failed calls {retried} were also sent to server2")
    if twice:
        diffs.append(f"calls {twice} ran on both servers")
    if late:
        diffs.append(f"calls {late} failed more than {KILL_GRACE:g} s after the kill: nginx did not move on to server2")
    if checkpoint:
        why = ("A gRPC call is a POST whose body nginx streams to the backend as it arrives. Once a call has "
               "been sent, nginx cannot know whether server1 ran it, and has no copy of the body to send "
               "again: the call fails (upstream prematurely closed connection -> 502 -> UNAVAILABLE). "
               "The failure also marks server1 down (max_fails=1), so later calls go straight to server2.")
    else:
        why = ("`non_idempotent` lets nginx retry POSTs it has already sent, but only when it kept the request "
               "body; grpc_pass never does (it streams the body, for client streams), so a sent gRPC call is "
               "never retried. Good: for CreateLaptop a retry could run it twice, one laptop saved on each "
               "server while the client sees one answer. A client that retries must make the call "
               "idempotent itself, e.g. with the client-chosen laptop id the server refuses twice.")
    data = {
        "calls": [{"call": c.number, "t_ms": round((c.t0 - killed_at) * 1000, 1), "code": c.code,
                   "details": c.details, "ran_on": receivers.get(c.laptop_id, []),
                   "upstream": access[c.number].upstream if c.number in access else None}
                  for c in report.calls],
        "codes": dict(report.codes()),
        "failed": [c.number for c in failed],
        "ran_twice": twice,
    }
    return ctx.record(Outcome(title, why, checkpoint, diffs, data=data))


# -- steps 5 and 6: passive health ---------------------------------------------------------------------------


def refused_is_retried(ctx: ScenarioContext, index: int, total: int, conf: Path, calls: int = 10) -> Outcome:
    title = "server1 is down, nginx is new: a refused connection is retried, then server1 is left alone"
    ctx.step(index, total, title, _describe(
        conf, ("server2",), f"--calls {calls}",
        "every call succeeds; nginx tries server1 once (refused), retries that call on server2, "
        "and sends the next calls straight to server2"))
    servers(ctx, ("server2",))
    ng = fresh_nginx(ctx, conf)
    report = driver.run_load(ctx.stack, ADDRESS, calls=calls)
    settle_access(ctx, ng, len(report.calls))
    port = SERVERS["server1"]
    refused = settle_error_log(
        ctx, ng, rf"connect\(\) failed \(111: Connection refused\).*upstream: \"grpcs?://127\.0\.0\.1:{port}\"")
    disabled = [line for line in ng.error_log_lines() if "upstream server temporarily disabled" in line]
    requests = len(access_entries(ng)) or calls + 1  # the calls and the Login
    ctx.stack.stop("nginx")
    for line in ng.access_log_lines():
        if "50081" in line:
            ctx.say(f"   access log: {line}")
    ctx.say(f"   nginx tried server1 {len(refused)} time(s) for {requests} requests (Login included)")
    if disabled:
        ctx.say("   nginx's error log: ... upstream server temporarily disabled while connecting to upstream ...")
    diffs = _login(report) + [f"call {c.number} failed: {_said(c)} (a refused connection should be retried "
                              "on server2)" for c in report.failed()][:3]
    if not refused:
        diffs.append("nginx's error log shows no refused connection to server1: it never tried it")
    elif 2 * len(refused) >= requests:
        diffs.append(f"nginx tried the dead server1 for {len(refused)} of {requests} requests: passive health "
                     "(max_fails) did not take it out of rotation")
    why = ("Connection refused means the call never left nginx, so nginx may try the next server "
           "(grpc_next_upstream error). The failure counts against server1: with max_fails=1 it is out "
           "of rotation for fail_timeout, so nginx does not pay a refused connection on every other call.")
    data = {"attempts_on_dead_server": len(refused), "requests": requests, "codes": dict(report.codes()),
            "temporarily_disabled": bool(disabled)}
    return ctx.record(Outcome(title, why, True, diffs, data=data))


def all_down(ctx: ScenarioContext, index: int, total: int, conf: Path, calls: int = 35,
             rate: float = 10.0) -> Outcome:
    title = "server2 dies too: no live upstreams, then nginx waits fail_timeout before trying again"
    ctx.step(index, total, title, _describe(
        conf, ("server2",), f"--calls {calls} --rate {rate:g}",
        "calls fail with UNAVAILABLE (no live upstreams) until fail_timeout after the last failure",
        then="after 5 calls server2 is killed and started again at once"))
    servers(ctx, ("server2",))
    ng = fresh_nginx(ctx, conf)
    stack = ctx.stack
    mark = stack.mark()
    path = driver.report_path(stack)
    stack.start("client", driver.driver_argv(ADDRESS, path, calls=calls, rate=rate, progress_every=5))
    stack.wait_for_line("client", "5 calls done", 15, since=mark)
    killed_at = time.time()
    stack.kill("server2")
    driver.start_server(stack, "server2", SERVERS["server2"], SERVER_ARGS, ctx.say)
    back_at = time.time()
    report = driver.collect(stack, "client", path, 30)
    no_live = settle_error_log(ctx, ng, r"no live upstreams")
    stack.stop("nginx")
    after = [c for c in report.calls if c.t0 >= killed_at]
    first_ok = next((c for c in after if c.ok), None)
    outage = first_ok.t0 - killed_at if first_ok else None
    ctx.say(f"   server2 was back {back_at - killed_at:.2f} s after the kill; "
            + (f"the first call to succeed again started {outage:.2f} s after the kill" if outage is not None
               else "no call succeeded again"))
    diffs = _login(report)
    if not report.failed():
        diffs.append("no call failed while both servers were down")
    if not no_live:
        diffs.append("nginx's error log shows no `no live upstreams` line")
    if first_ok is None:
        diffs.append("no call succeeded after server2 came back")
    why = ("With every server marked down, nginx does not even try: it answers at once (`no live upstreams`, "
           "502, here as UNAVAILABLE through error_page). It tries a server again only when fail_timeout has "
           "passed since that server's last failure, even if the server is back sooner. Active health checks, "
           "which would notice sooner, are NGINX Plus only.")
    start = report.calls[0].t0 if report.calls else killed_at
    data = {
        "timeline": [{"call": c.number, "t": round(c.t0 - start, 3), "code": c.code} for c in report.calls],
        "killed_at": round(killed_at - start, 3), "back_at": round(back_at - start, 3),
        "outage_s": round(outage, 3) if outage is not None else None, "codes": dict(report.codes()),
    }
    return ctx.record(Outcome(title, why, False, diffs, data=data))


# -- steps 7 and 8: worker_connections ---------------------------------------------------------------------


def concurrent_calls(ctx: ScenarioContext, index: int, total: int, conf: Path, checkpoint: bool = True,
                     calls: int = 2 * CONCURRENT, channels: int = 4) -> Outcome:
    if checkpoint:
        title = f"the same {CONCURRENT} concurrent calls with enough worker connections"
        expect = "every call succeeds"
    else:
        title = f"the tutorial's worker_connections 10 under {CONCURRENT} concurrent calls"
        expect = "calls fail; nginx logs `worker_connections are not enough`"
    ctx.step(index, total, title, _describe(
        conf, NAMES, f"--calls {calls} --concurrency {CONCURRENT} --channels {channels}", expect))
    servers(ctx, NAMES)
    ng = fresh_nginx(ctx, conf)
    report = driver.run_load(ctx.stack, ADDRESS, calls=calls, concurrency=CONCURRENT, channels=channels)
    alerts = (settle_error_log(ctx, ng, r"worker_connections are not enough") if report.failed()
              else [line for line in ng.error_log_lines() if "worker_connections are not enough" in line])
    ctx.stack.stop("nginx")
    codes = report.codes()
    for said in sorted({_said(c) for c in report.failed()}):
        ctx.say(f"   the client sees: {said}")
    if alerts:
        ctx.say(f"   nginx's error log ({len(alerts)} lines): {alerts[0].split('] ', 1)[-1][:110]} ...")
    diffs = _login(report)
    if checkpoint:
        diffs += [f"{n} calls failed with {code}" for code, n in sorted(codes.items()) if code != "OK"]
        if alerts:
            diffs.append("nginx's error log says `worker_connections are not enough`")
        why = ("Each call in flight holds one upstream connection of its own (nginx does not multiplex "
               "calls on a backend connection), and worker_connections counts those, the clients' "
               "connections and the listening socket. 1024 leaves room for this load and much more.")
    else:
        if not report.failed():
            diffs.append("no call failed with 10 worker connections")
        if not alerts:
            diffs.append("nginx's error log has no `worker_connections are not enough` line")
        why = ("The 10 connections must hold the listening socket, the 4 client connections and one upstream "
               "connection per call in flight: a handful of calls use them up. A call that finds none left is "
               "answered 500 (grpcio: UNKNOWN, `Received http2 header with status: 500`); a client connection "
               "nginx cannot accept is closed at once (UNAVAILABLE: `Socket closed`).")
    data = {"codes": dict(codes), "concurrency": CONCURRENT, "channels": channels, "alerts": len(alerts)}
    return ctx.record(Outcome(title, why, checkpoint, diffs, data=data))

