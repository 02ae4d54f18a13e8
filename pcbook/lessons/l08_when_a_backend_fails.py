"""Lesson 8: when a backend fails, through nginx: what its steps do and how they are judged.

The steps (declared in pcbook/workbook/manifest.py): no backend with the tutorial's config (an HTML
502) and with lesson-8.conf (a gRPC status); a backend killed under load, with and without
`non_idempotent`; a refused connection retried and passive health; every backend down; the tutorial's
`worker_connections 10` under 24 concurrent calls, and enough of them.

Every call carries its number in the `x-call-id` header; lesson 8's log format writes it next to the
backend(s) nginx tried (`upstream=`) and their answers (`upstream_status=`). Which server ran a
CreateLaptop is read from the servers' logs (each call has a fresh laptop id).
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

from pcbook.stage.model import Driver, Exercise, Lesson, Nginx, Server, Step
from pcbook.stage.results import Calls, NginxRun

if TYPE_CHECKING:
    from pcbook.stage.context import StepContext

KILL_GRACE = 0.25  # calls that start this long after a kill must all succeed
CONCURRENT = 24  # "20+ concurrent calls" for worker_connections
VICTIM = "server1"  # killed under load, down while a fresh nginx tries it
SURVIVOR = "server2"
# nginx counts fail_timeout in whole seconds (a server is skipped while `now - checked <= fail_timeout`, `now`
# in seconds): lesson 8's 2 s keep a failed server out for 2 to 3 s. Twice that, and a restart to wait for.
BACK_WITHIN = 8.0
HTML_STATUS = re.compile(r"Received http2 header with status: (\d{3})")
NO_LIVE = r"no live upstreams"
NOT_ENOUGH = "worker_connections are not enough"
_ACCESS = re.compile(r'"POST (?P<path>\S+) HTTP/2\.0" (?P<status>\d{3}) upstream=(?P<upstream>.*?) '
                     r"upstream_status=(?P<upstream_status>.*?) call=(?P<call>\S+)")


@dataclasses.dataclass(frozen=True)
class Access:
    """One line of lesson 8's access log: what nginx did with one call."""

    path: str
    status: int
    upstream: str  # e.g. "127.0.0.1:50081, 127.0.0.1:50082": tried server1, then server2
    upstream_status: str  # e.g. "502, 200"
    call: int | None  # the client's x-call-id (None: Login, or a log format without it)


def access_entries(lines: list[str]) -> list[Access]:
    out = []
    for line in lines:
        if m := _ACCESS.search(line):
            call = int(m["call"]) if m["call"].isdigit() else None
            out.append(Access(m["path"], int(m["status"]), m["upstream"], m["upstream_status"], call))
    return out


def settled_access(ctx: StepContext, calls: int) -> dict[int, Access]:
    """Call number -> its access-log entry, once nginx has logged them all (or at the deadline).

    A config without lesson 8's log format gives an empty map: the judges then rely on the servers'
    and the client's own evidence."""
    def entries() -> dict[int, Access]:
        return {e.call: e for e in access_entries(ctx.nginx.access_log_lines()) if e.call is not None}

    def arrived() -> bool:
        lines = ctx.nginx.access_log_lines()
        return len(entries()) >= calls or bool(lines and not _ACCESS.search(lines[0]))

    ctx.settle(arrived)
    return entries()


# lesson-8.conf's grpc-message for each kind of 502 (its map $grpc_502_message).
CONNECT_FAILED = "nginx: could not connect to any backend"
NO_LIVE_BACKEND = "nginx: no live backend"
CLOSED_BEFORE_ANSWER = "the backend closed the connection before answering; not retried"


def _login(run: Calls) -> list[str]:
    return [f"the client could not even log in: {run.login_error}"] if run.login_error else []


# -- nginx's own errors -----------------------------------------------------------------------------------


def no_backend(ctx: StepContext) -> NginxRun:
    run = ctx.run_driver()
    login = next((m["said"] for line in ctx.lines("client")
                  if (m := re.search(r"cannot log in \((?P<said>.*)\); sending", line))), None)
    result = NginxRun(run, tuple(ctx.nginx_errors(NO_LIVE)), login=login)
    if login:
        ctx.say(f"the Login sees: {login}")
    for said in result.seen():
        ctx.say(f"the calls see: {said}")
    if result.error_lines:
        ctx.say("nginx's error log: ... no live upstreams while connecting to upstream ...")
    return result


def _no_backend_common(result: NginxRun) -> list[str]:
    run = result.run
    diffs = _login(run)
    if any(c.ok for c in run.calls):
        diffs.append("a call succeeded although no backend is running")
    wrong = sorted({c.code for c in run.failed()} - {"UNAVAILABLE"})
    if wrong:
        diffs.append(f"calls failed with {', '.join(wrong)}; no backend should mean UNAVAILABLE")
    if not result.error_lines:
        diffs.append("nginx's error log shows no `no live upstreams` line")
    return diffs


def html_502(result: NginxRun) -> list[str]:
    diffs = _no_backend_common(result)
    if not result.run.calls or any(not HTML_STATUS.search(c.details) for c in result.run.calls):
        diffs.append("expected grpcio's message for an HTML 502 page on every call")
    return diffs


def grpc_status(result: NginxRun) -> list[str]:
    diffs = _no_backend_common(result)
    html = [c for c in result.run.calls if HTML_STATUS.search(c.details)]
    if html:
        diffs.append(f"the client got an HTTP error page, not a gRPC status: {html[0].details!r} "
                     "(no error_page answering with grpc-status?)")
    if not result.run.calls:
        diffs.append("the driver sent no call")
    # The words the claims promise: which 502 it was (the config's map), not only its status.
    if not html and result.login is not None and CONNECT_FAILED not in result.login:
        diffs.append(f"the Login should see `{CONNECT_FAILED}`, saw {result.login!r}")
    if not html and any(NO_LIVE_BACKEND not in c.details for c in result.run.failed()):
        diffs.append(f"the calls should see `{NO_LIVE_BACKEND}`, saw {result.run.failed()[0].details!r}")
    return diffs


# -- a backend dies under load ------------------------------------------------------------------------------


def kill_under_load(ctx: StepContext) -> NginxRun:
    """Paced calls; server1 is killed while it works on one (so that call has surely been sent)."""
    run = ctx.kill_mid_run(VICTIM)
    access = settled_access(ctx, len(run.calls))
    run = dataclasses.replace(run, calls=tuple(
        dataclasses.replace(c, upstream=access[c.number].upstream if c.number in access else None)
        for c in run.calls))
    ctx.say("around the kill (t = when the call started, relative to the kill):")
    for call in run.calls:
        if call.ok and not -0.06 < call.start < 0.11:
            continue
        ran = ", ".join(call.servers) or "no server logged it"
        entry = access.get(call.number)
        tried = f"; nginx tried {entry.upstream} -> {entry.upstream_status}" if entry else ""
        ctx.say(f"  call {call.number:>2}  t = {call.start * 1000:+5.0f} ms  {call.said()}  "
                f"(received by: {ran}{tried})")
    return NginxRun(run, requests=len(access))


def not_retried(result: NginxRun) -> list[str]:
    run = result.run
    failed = run.failed()
    twice = [c.number for c in run.calls if len(c.servers) > 1]
    retried = [c.number for c in failed if SURVIVOR in c.servers or (c.upstream and "," in c.upstream)]
    late = [c.number for c in run.calls if c.start >= KILL_GRACE and not c.ok]
    diffs = _login(run)
    if not failed:
        diffs.append(f"no call failed, but calls were in flight on {VICTIM} when it was killed: were they retried?")
    wrong = sorted({c.code for c in failed} - {"UNAVAILABLE"})
    if wrong:
        diffs.append(f"calls failed with {', '.join(wrong)}, expected UNAVAILABLE")
    unsaid = [c.number for c in failed if c.code == "UNAVAILABLE" and CLOSED_BEFORE_ANSWER not in c.details]
    if unsaid:
        diffs.append(f"failed calls {unsaid} do not say `{CLOSED_BEFORE_ANSWER}` (the config's grpc-message)")
    if retried:
        diffs.append(f"failed calls {retried} were also sent to {SURVIVOR}")
    if twice:
        diffs.append(f"calls {twice} ran on both servers")
    if late:
        diffs.append(f"calls {late} failed more than {KILL_GRACE:g} s after the kill: nginx did not move on to "
                     f"{SURVIVOR}")
    return diffs


# -- passive health -------------------------------------------------------------------------------------------


def refused(ctx: StepContext) -> NginxRun:
    """server1 is down and nginx is new: count nginx's tries of it."""
    run = ctx.run_driver()
    settled_access(ctx, len(run.calls))
    port = ctx.lesson_ports[VICTIM]
    tries = ctx.nginx_errors(
        rf"connect\(\) failed \(111: Connection refused\).*upstream: \"grpcs?://127\.0\.0\.1:{port}\"")
    disabled = any("upstream server temporarily disabled" in line for line in ctx.nginx.error_log_lines())
    requests = len(access_entries(ctx.nginx.access_log_lines())) or len(run.calls) + 1  # the calls and the Login
    for line in ctx.nginx.access_log_lines():
        if f":{port}" in line:
            ctx.say(f"access log: {line}")
    ctx.say(f"nginx tried {VICTIM} {len(tries)} time(s) for {requests} requests (Login included)")
    if disabled:
        ctx.say("nginx's error log: ... upstream server temporarily disabled while connecting to upstream ...")
    return NginxRun(run, tuple(tries), requests=requests, attempts_on_dead_server=len(tries),
                    temporarily_disabled=disabled)


def refused_is_retried(result: NginxRun) -> list[str]:
    diffs = _login(result.run) + [f"call {c.number} failed: {c.said()} (a refused connection should be retried "
                                  f"on {SURVIVOR})" for c in result.run.failed()][:3]
    if not result.attempts_on_dead_server:
        diffs.append(f"nginx's error log shows no refused connection to {VICTIM}: it never tried it")
    elif 2 * result.attempts_on_dead_server >= result.requests:
        diffs.append(f"nginx tried the dead {VICTIM} for {result.attempts_on_dead_server} of {result.requests} "
                     "requests: passive health (max_fails) did not take it out of rotation")
    return diffs


def all_down(ctx: StepContext) -> NginxRun:
    """After 5 calls server2 (the only one up) is killed and started again at once; the driver stops once
    server2 has saved a laptop again, or BACK_WITHIN s after the restart."""
    run = ctx.start_driver()
    ctx.await_line(run.name, "5 calls done")
    killed_at = ctx.kill(SURVIVOR)
    back_at = ctx.restart(SURVIVOR)
    # From here on only the new server2 prints; a success before this mark (a restart slower than
    # fail_timeout) is followed by more, and the judge finds the first one in the driver's report.
    mark = ctx.stack.mark()
    ctx.sees_line(SURVIVOR, "saved laptop with id", BACK_WITHIN, since=mark)  # if not, the judge says so
    calls = ctx.finish_driver(run, marks=[("killed", killed_at), ("back", back_at)], stop=True)
    no_live = ctx.nginx_errors(NO_LIVE)
    killed, back = calls.mark("killed"), calls.mark("back")
    first_ok = next((c for c in calls.calls if c.start >= killed and c.ok), None)
    outage = round(first_ok.start - killed, 3) if first_ok else None
    ctx.say(f"{SURVIVOR} was back {back - killed:.2f} s after the kill; "
            + (f"the first call to succeed again started {outage:.2f} s after the kill" if outage is not None
               else "no call succeeded again"))
    return NginxRun(calls, tuple(no_live), outage_s=outage)


def no_live_upstreams(result: NginxRun) -> list[str]:
    diffs = _login(result.run)
    if not result.run.failed():
        diffs.append("no call failed while both servers were down")
    if not result.error_lines:
        diffs.append("nginx's error log shows no `no live upstreams` line")
    if result.outage_s is None:
        diffs.append(f"no call succeeded after {SURVIVOR} came back")
    return diffs


# -- worker_connections ---------------------------------------------------------------------------------------


def concurrent(ctx: StepContext) -> NginxRun:
    run = ctx.run_driver()
    alerts = ctx.nginx_errors(NOT_ENOUGH, settle_first=bool(run.failed()))
    for said in sorted({c.said() for c in run.failed()}):
        ctx.say(f"the client sees: {said}")
    if alerts:
        ctx.say(f"nginx's error log ({len(alerts)} lines): {alerts[0].split('] ', 1)[-1][:110]} ...")
    return NginxRun(run, tuple(alerts))


def too_few_connections(result: NginxRun) -> list[str]:
    diffs = _login(result.run)
    if not result.run.failed():
        diffs.append("no call failed with 10 worker connections")
    if not result.error_lines:
        diffs.append(f"nginx's error log has no `{NOT_ENOUGH}` line")
    return diffs


def enough_connections(result: NginxRun) -> list[str]:
    codes = result.run.codes()
    diffs = _login(result.run) + [f"{n} calls failed with {code}" for code, n in sorted(codes.items()) if code != "OK"]
    if result.error_lines:
        diffs.append(f"nginx's error log says `{NOT_ENOUGH}`")
    return diffs


# -- the lesson ---------------------------------------------------------------------------------

# Lesson 8: 50 ms of work per CreateLaptop keeps calls in flight (a kill hits some, 24 calls overlap);
# 32 workers let a server take all 24 concurrent calls at once.
L8_BOTH = tuple(Server(n, p, flags=("--work-ms", "50", "--workers", "32"))
                for n, p in (("server1", 50081), ("server2", 50082)))
L8_ADDRESS = "127.0.0.1:8081"
L8_TUTORIAL = Nginx("lesson-8-tutorial.conf", 8081)
L8_FINAL = Nginx("lesson-8.conf", 8081)

EXERCISE = Exercise(
    kind="nginx config",
    starter="nginx/exercises/lesson-8.conf",
    answer="nginx/lesson-8.conf",
    steps=("grpc-status", "kill-under-load", "refused-retried", "enough-worker-connections"),
    hints=(
        "Two things fail the checkpoint: nginx's 502 reaches the client as an HTML page, and 10 worker connections "
        'cannot hold the concurrent calls. The map $grpc_502_message already says which 502 it was.',
        '`error_page 502 = @grpc_unavailable;` next to the 500 and 504 ones, and `location @grpc_unavailable { '
        'default_type application/grpc; add_header grpc-status 14; add_header grpc-message $grpc_502_message; '
        'return 204; }`: https://nginx.org/en/docs/http/ngx_http_core_module.html#error_page',
        "`worker_connections 1024;` in `events`: it counts the client's connections and one upstream connection "
        'per call in flight: https://nginx.org/en/docs/ngx_core_module.html#worker_connections',
    ),
)

LESSON = Lesson(
    number=8,
    slug="when-a-backend-fails",
    title="When a backend fails",
    goal="Kill a backend under load, see what nginx retries and what it cannot, and answer in gRPC.",
    tutorial=False,
    exercise=EXERCISE,
    steps=(
        Step(
            key="html-502",
            title="no backend, the tutorial's config: nginx answers with an HTML 502 page",
            why="With no backend, nginx answers 502 Bad Gateway with an HTML body. grpcio finds no grpc-status, "
                "so it makes one up from the HTTP status (502 -> UNAVAILABLE) and can only say "
                "`Received http2 header with status: 502`. The first call tried both servers (connection "
                "refused twice); after that both are marked down and nginx says `no live upstreams`.",
            servers=(),
            nginx=L8_TUTORIAL,
            client=Driver(L8_ADDRESS, calls=3, login_optional=True),
            act=no_backend,
            judge=html_502,
            claims=("every call fails with UNAVAILABLE: `Received http2 header with status: 502`",),
        ),
        Step(
            key="grpc-status",
            title="no backend, error_page: nginx answers with a gRPC status",
            why="`error_page 502 = @grpc_unavailable` sends the error to a named location that answers "
                "204 with the headers grpc-status: 14 and grpc-message; grpcio reads the status from them, "
                "so the client gets nginx's own words and a status it can act on (UNAVAILABLE: try again). "
                "The message says which 502 it was: the Login found no server to connect to, the calls after "
                "it found every server marked down (no live upstreams).",
            servers=(),
            nginx=L8_FINAL,
            client=Driver(L8_ADDRESS, calls=3, login_optional=True),
            act=no_backend,
            judge=grpc_status,
            claims=("every call fails with UNAVAILABLE and nginx's own message (grpc-status 14 / grpc-message)",
             "the Login: `nginx: could not connect to any backend`; the calls after it: "
             "`nginx: no live backend (each failed less than fail_timeout ago)`"),
            checkpoint=True,
        ),
        Step(
            key="kill-under-load",
            title="server1 dies with calls in flight: those calls fail, the others go to server2",
            why="A gRPC call is a POST whose body nginx streams to the backend as it arrives. Once a call has "
                "been sent, nginx cannot know whether server1 ran it, and has no copy of the body to send "
                "again: the call fails (upstream prematurely closed connection -> 502 -> UNAVAILABLE). "
                "The failure also marks server1 down (max_fails=1), so later calls go straight to server2.",
            servers=L8_BOTH,
            nginx=L8_FINAL,
            client=Driver(L8_ADDRESS, calls=30, rate=40, concurrency=4),
            then=("after 10 calls, while server1 works on a call, server1 is killed (SIGKILL)",),
            act=kill_under_load,
            judge=not_retried,
            claims=("the calls in flight on server1 fail with UNAVAILABLE (`nginx: the backend closed the "
             "connection before answering; not retried`) and are not retried",
             "every call started after the kill succeeds"),
            checkpoint=True,
        ),
        Step(
            key="non-idempotent",
            title="the same with `non_idempotent`: nginx still cannot retry a call it has sent",
            why="`non_idempotent` lets nginx retry POSTs it has already sent, but only when it kept the request "
                "body; grpc_pass never does (it streams the body, for client streams), so a sent gRPC call is "
                "never retried. Good: for CreateLaptop a retry could run it twice, one laptop saved on each "
                "server while the client sees one answer. A client that retries must make the call "
                "idempotent itself, e.g. with the client-chosen laptop id the server refuses twice.",
            servers=L8_BOTH,
            nginx=Nginx("lesson-8-non-idempotent.conf", 8081),
            client=Driver(L8_ADDRESS, calls=30, rate=40, concurrency=4),
            then=("after 10 calls, while server1 works on a call, server1 is killed (SIGKILL)",),
            act=kill_under_load,
            judge=not_retried,
            claims=("the same as before: non_idempotent does not make nginx retry a gRPC call",),
        ),
        Step(
            key="refused-retried",
            title="server1 is down, nginx is new: a refused connection is retried, then server1 is left alone",
            why="Connection refused means the call never left nginx, so nginx may try the next server "
                "(grpc_next_upstream error). The failure counts against server1: with max_fails=1 it is out "
                "of rotation for fail_timeout, so nginx does not pay a refused connection on every other call.",
            servers=L8_BOTH[1:],
            nginx=L8_FINAL,
            client=Driver(L8_ADDRESS, calls=10),
            act=refused,
            judge=refused_is_retried,
            claims=("every call succeeds", "nginx tries server1 once (refused) and retries that call on server2",
             "the next calls go straight to server2"),
            checkpoint=True,
        ),
        Step(
            key="all-down",
            title="server2 dies too: no live upstreams, then nginx waits fail_timeout before trying again",
            why="With every server marked down, nginx does not even try: it answers at once (`no live upstreams`, "
                "502, here as UNAVAILABLE through error_page). It tries a server again only when fail_timeout has "
                "passed since that server's last failure (counted in whole seconds: 2 to 3 s for 2s), even if the "
                "server is back sooner. Active health checks, which would notice sooner, are NGINX Plus only.",
            servers=L8_BOTH[1:],
            nginx=L8_FINAL,
            client=Driver(L8_ADDRESS, calls=100, rate=10, progress_every=5),
            then=("after 5 calls server2 is killed and started again at once",
             f"the client stops once server2 has saved a laptop again ({BACK_WITHIN:g} s at most)"),
            act=all_down,
            judge=no_live_upstreams,
            claims=("calls fail with UNAVAILABLE (no live upstreams) until fail_timeout after the last failure",),
        ),
        Step(
            key="worker-connections-10",
            title=f"the tutorial's worker_connections 10 under {CONCURRENT} concurrent calls",
            why="The 10 connections must hold the listening socket, the 4 client connections and one upstream "
                "connection per call in flight: a handful of calls use them up. A call that finds none left is "
                "answered 500 (grpcio: UNKNOWN, `Received http2 header with status: 500`); a client connection "
                "nginx cannot accept is closed at once (UNAVAILABLE: `Socket closed`).",
            servers=L8_BOTH,
            nginx=L8_TUTORIAL,
            client=Driver(L8_ADDRESS, calls=2 * CONCURRENT, concurrency=CONCURRENT, channels=4),
            act=concurrent,
            judge=too_few_connections,
            claims=("calls fail; nginx logs `worker_connections are not enough`",),
        ),
        Step(
            key="enough-worker-connections",
            title=f"the same {CONCURRENT} concurrent calls with enough worker connections",
            why="Each call in flight holds one upstream connection of its own (nginx does not multiplex "
                "calls on a backend connection), and worker_connections counts those, the clients' "
                "connections and the listening socket. 1024 leaves room for this load and much more.",
            servers=L8_BOTH,
            nginx=L8_FINAL,
            client=Driver(L8_ADDRESS, calls=2 * CONCURRENT, concurrency=CONCURRENT, channels=4),
            act=concurrent,
            judge=enough_connections,
            claims=("every call succeeds",),
            checkpoint=True,
        ),
    ),
)
