"""Lesson 13: Envoy, the lecture's other proxy: lessons 2, 5, 6 on Envoy, then what nginx open source lacks
(active health checks, retries of a call already sent), each beside nginx under the same load and events.

Envoy's configs are in envoy/ (one per step, each teaching one thing), nginx's in nginx/lesson-13.conf.
Every call carries its number in `x-call-id`; both proxies' access logs write it next to the backend they
sent it to (Envoy also the number of tries). Envoy's admin endpoint (/clusters) says which backends its
health checks keep in rotation. The judges read those, the servers' lines and the driver's report.
"""

from __future__ import annotations

import re
import signal
import time
from typing import TYPE_CHECKING

from pcbook.lessons.l11_service_discovery import discovered, judge_story, play, registered, say_story
from pcbook.lessons.tutorial import AUTH_LOGIN, CREATE_LAPTOP
from pcbook.stage.model import (
    Client,
    ControlPlane,
    Driver,
    Envoy,
    Exercise,
    Expect,
    Lesson,
    Nginx,
    Registry,
    Server,
    Step,
    Text,
)
from pcbook.stage.results import Calls, Discovered, ProxyRun

if TYPE_CHECKING:
    from pcbook.stage.context import StepContext
    from pcbook.stage.stage import DriverRun

ENVOY_PORT, ENVOY_TLS_PORT, NGINX_PORT, ADMIN_PORT = 8131, 8132, 8133, 9131
PORTS = {"server1": 50131, "server2": 50132}
FLIPPED = "server2"  # set NOT_SERVING, then killed (health); killed under load (retries)
SURVIVOR = "server1"
REMOVAL_TIMEOUT = 3.0  # s for /clusters to show the NOT_SERVING server failing (checks run every 200 ms)
# Envoy's access-log format (envoy/*.yaml) and nginx's (nginx/lesson-13.conf), each giving the call number.
_ENVOY_LINE = re.compile(r"^POST (?P<path>\S+) (?P<status>\d{3}) grpc=\S+ upstream=(?P<upstream>\S+) "
                         r"attempts=(?P<attempts>\d+) call=(?P<call>\S+)$")
_NGINX_LINE = re.compile(r'"POST (?P<path>\S+) HTTP/2\.0" (?P<status>\d{3}) upstream=(?P<upstream>.*?) '
                         r"upstream_status=\S.*? call=(?P<call>\S+)$")


def plain(name: str) -> Server:
    # 50 ms of work per CreateLaptop keeps calls in flight: a kill under load hits one.
    return Server(name, PORTS[name], flags=("--work-ms", "50"))


PLAIN = (plain("server1"), plain("server2"))
MTLS = tuple(Server(name, port, tls=True) for name, port in PORTS.items())
BOTH = ("server1", "server2")
LOAD = Driver(f"127.0.0.1:{ENVOY_PORT}", calls=400, rate=40, concurrency=4)
NGINX_LOAD = Driver(f"127.0.0.1:{NGINX_PORT}", calls=400, rate=40, concurrency=4)
# Envoy ends the handshake: grpcio never gets a connection (its TLS layer says TSI_DATA_CORRUPTED).
ENVOY_REFUSED = Text(r"cannot create auth interceptor: rpc error: code = Unavailable desc = failed to connect",
                     "that the Login failed with `code = Unavailable desc = failed to connect to all addresses`")


# The step of this lesson that runs a tutorial lesson on Envoy: deploy/compose.yaml's envoy service runs it
# beside nginx (pcbook.workbook.deploy.roles). Not lesson 6: its servers use TLS, the routes step's do not.
ON_ENVOY = {2: "round-robin", 5: "mutual-tls"}


def envoy(conf: str, port: int = ENVOY_PORT) -> Envoy:
    return Envoy(f"lesson-13-{conf}.yaml", port, admin_port=ADMIN_PORT)


# -- what the proxies logged ----------------------------------------------------------------------------


def access(ctx: StepContext, calls: int) -> tuple[dict[int, str], dict[int, int]]:
    """Call number -> the backend(s) the proxy sent it to, and (Envoy) -> its tries, once the proxy has
    logged `calls` calls (or at the deadline)."""
    def read() -> tuple[dict[int, str], dict[int, int]]:
        proxy = ctx.stage.envoy or ctx.stage.nginx
        upstreams, attempts = {}, {}
        for line in proxy.access_log_lines() if proxy else []:
            m = _ENVOY_LINE.search(line) if ctx.stage.envoy else _NGINX_LINE.search(line)
            if m and m["call"].isdigit():
                upstreams[int(m["call"])] = m["upstream"]
                if "attempts" in m.groupdict():
                    attempts[int(m["call"])] = int(m["attempts"])
        return upstreams, attempts

    ctx.settle(lambda: len(read()[0]) >= calls)
    return read()


def _proxy(ctx: StepContext) -> str:
    return "envoy" if ctx.stage.envoy else "nginx"


def _login(run: Calls) -> list[str]:
    return [f"the client could not even log in: {run.login_error}"] if run.login_error else []


def _host(name: str) -> str:
    return f"127.0.0.1:{PORTS[name]}"


# -- round robin ---------------------------------------------------------------------------------------


def round_robin(ctx: StepContext) -> ProxyRun:
    run = ctx.run_driver()
    upstreams, attempts = access(ctx, len(run.calls))
    for call in run.calls[:4]:
        ctx.say(f"call {call.number}: {call.said()}, access log: upstream={upstreams.get(call.number, '?')}")
    return ProxyRun(_proxy(ctx), run, upstreams, attempts, lost=len(run.failed()))


def alternates(result: ProxyRun) -> list[str]:
    run = result.run
    diffs = _login(run) + ([f"{result.lost} calls failed"] if result.lost else [])
    hosts = [result.upstreams.get(c.number) for c in run.calls]
    if None in hosts:
        diffs.append(f"Envoy's access log has no line for calls "
                     f"{[c.number for c, h in zip(run.calls, hosts, strict=True) if h is None]}")
    elif len(set(hosts)) < 2 or any(a == b for a, b in zip(hosts, hosts[1:], strict=False)):
        diffs.append(f"the calls did not alternate between the servers; Envoy's access log says {hosts}")
    idle = [name for name, n in run.counts().per_server.items() if n == 0]
    if idle:
        diffs.append(f"{' and '.join(idle)} received no call")
    return diffs


# -- active health checking ----------------------------------------------------------------------------


def _advance(ctx: StepContext, load: DriverRun, calls: int) -> bool:
    """Wait until `calls` more calls are done; False if the driver ended first (it could not log in)."""
    every = load.driver.progress_every
    target = (load.progress() // every + -(-calls // every)) * every
    return ctx.sees_line(load.name, f"{target} calls done", 30, since=load.mark)


def health_change(ctx: StepContext) -> ProxyRun:
    """Under load: after 20 calls server2 turns NOT_SERVING (SIGUSR1); 20 calls later it is killed (a
    planned stop that a health check should have seen coming); 20 calls later the driver stops."""
    load = ctx.start_driver()
    if not _advance(ctx, load, 20):
        return ProxyRun(_proxy(ctx), ctx.finish_driver(load))
    ctx.signal(FLIPPED, signal.SIGUSR1)
    down = ctx.await_line(FLIPPED, "set to NOT_SERVING", 5).t
    removed, flags = None, ""
    if ctx.stage.envoy is not None:
        envoy, host = ctx.stage.envoy, _host(FLIPPED)

        def flags_now() -> str:
            return envoy.clusters().get("pcbook_services", {}).get(host, {}).get("health_flags", "")

        if ctx.settle(lambda: "failed_active_hc" in flags_now(), REMOVAL_TIMEOUT):
            removed = time.time()  # an upper bound: when /clusters first said so
        flags = flags_now()
    _advance(ctx, load, 20)
    # nginx: the kill hits a call in flight (server2 still gets calls); Envoy: server2 gets none to hit.
    killed = ctx.kill_working(FLIPPED) if ctx.stage.envoy is None else ctx.kill(FLIPPED)
    _advance(ctx, load, 20)
    marks = [("killed", killed)] + ([("removed", removed)] if removed else [])
    run = ctx.finish_driver(load, origin=down, marks=marks, origin_label="NOT_SERVING", stop=True)
    since = (removed or down) - down
    after = sum(1 for c in run.calls if c.start >= since and FLIPPED in c.servers)
    upstreams, attempts = access(ctx, len(run.calls))
    result = ProxyRun(_proxy(ctx), run, upstreams, attempts, lost=len(run.failed()), after_change=after,
                      removed_after=round(removed - down, 3) if removed else None, health_flags=flags)
    if ctx.stage.envoy is not None:
        ctx.say(f"/clusters: {FLIPPED} health_flags::{flags or '?'}"
                + (f", {result.removed_after:.2f} s after NOT_SERVING" if removed else ""))
    ctx.say(f"{FLIPPED} received {after} calls after it turned NOT_SERVING"
            + (" and Envoy's check saw it" if removed else ""))
    ctx.say(f"calls lost: {result.lost} of {len(run.calls)}"
            + "".join(f"; call {c.number}: {c.said()}" for c in run.failed()[:3]))
    return result


def left_before_failing(result: ProxyRun) -> list[str]:
    diffs = _login(result.run)
    if result.removed_after is None:
        diffs.append(f"Envoy's /clusters never showed {FLIPPED} failing its health check (health_flags: "
                     f"{result.health_flags or 'none'}): no active gRPC health check?")
    if result.after_change:
        diffs.append(f"{FLIPPED} received {result.after_change} calls after Envoy's check saw it NOT_SERVING")
    if result.lost:
        diffs.append(f"{result.lost} calls were lost ({result.run.failed()[0].said()}); a health check takes a "
                     f"NOT_SERVING server out before it is stopped")
    return diffs


def nginx_keeps_sending(result: ProxyRun) -> list[str]:
    diffs = _login(result.run)
    if not result.after_change:
        diffs.append(f"nginx sent {FLIPPED} no call after it turned NOT_SERVING; nginx does not read health")
    if not result.lost:
        diffs.append(f"no call was lost when {FLIPPED} was killed with a call in flight")
    return diffs


# -- retries -------------------------------------------------------------------------------------------


def kill_under_load(ctx: StepContext) -> ProxyRun:
    """Under load, server2 is SIGKILLed while it works on a call (so a call is surely in flight there)."""
    load = ctx.start_driver()
    if not _advance(ctx, load, 20):
        return ProxyRun(_proxy(ctx), ctx.finish_driver(load))
    killed = ctx.kill_working(FLIPPED)
    _advance(ctx, load, 20)
    run = ctx.finish_driver(load, origin=killed, marks=[("killed", killed)], origin_label="the kill", stop=True)
    upstreams, attempts = access(ctx, len(run.calls))
    result = ProxyRun(_proxy(ctx), run, upstreams, attempts, lost=len(run.failed()))
    twice = [c for c in run.calls if len(c.servers) > 1]
    retried = {n: a for n, a in attempts.items() if a > 1}
    ctx.say(f"calls lost: {result.lost} of {len(run.calls)}"
            + "".join(f"; call {c.number}: {c.said()}" for c in run.failed()[:3]))
    if ctx.stage.envoy is not None:
        counters = ctx.stage.envoy.stats("cluster.pcbook_services.upstream_rq_retry")
        ctx.say("/stats: " + ", ".join(f"{k.rsplit('.', 1)[-1]} {v}" for k, v in sorted(counters.items())))
        ctx.say(f"tried more than once (access log attempts=): "
                f"{', '.join(f'call {n} x{a} -> {upstreams.get(n)}' for n, a in sorted(retried.items())) or 'none'}")
    for call in twice:
        ctx.say(f"call {call.number} ran on {' and then '.join(call.servers)}: CreateLaptop is not idempotent")
    return result


def retried(result: ProxyRun) -> list[str]:
    run = result.run
    diffs = _login(run)
    if result.lost:
        diffs.append(f"{result.lost} calls were lost ({run.failed()[0].said()}); no retry on another backend?")
    again = [n for n, a in result.attempts.items() if a > 1 and result.upstreams.get(n) == _host(SURVIVOR)]
    if not again:
        diffs.append(f"Envoy's access log shows no call tried again on {SURVIVOR} after the kill")
    elif not any(c.servers == (FLIPPED, SURVIVOR) for c in run.calls):
        diffs.append(f"no call ran on {FLIPPED} and then again on {SURVIVOR}: the call in flight at the kill "
                     "was not retried")
    return diffs


def not_retried(result: ProxyRun) -> list[str]:
    diffs = _login(result.run)
    if not result.lost:
        diffs.append(f"no call was lost, but a call was in flight on {FLIPPED} when it was killed")
    twice = [c.number for c in result.run.failed() if SURVIVOR in c.servers]
    if twice:
        diffs.append(f"failed calls {twice} were also sent to {SURVIVOR}")
    return diffs


# -- Envoy over xDS ------------------------------------------------------------------------------------


def over_xds(ctx: StepContext) -> Discovered:
    """Lesson 11's story (server3 joins, server1 stops gracefully, server2 is killed) through Envoy, whose
    cluster and endpoints come from lesson 12's control plane."""
    result = discovered("Envoy + xDS", play(ctx, f"127.0.0.1:{ENVOY_PORT}"))
    say_story(ctx, result)
    pushes = [line for line in ctx.lines("xds") if "push EDS" in line and "envoy-lesson-13" in line]
    ctx.say(f"the control plane pushed new endpoints (EDS) to Envoy {len(pushes)} times during the story; "
            f"Envoy ran on, never reloaded")
    return result


# -- the lesson ---------------------------------------------------------------------------------

XDS_SERVERS = registered(50130)  # server1-3 on 50131-50133, each registering itself in etcd

NGINX = Nginx("lesson-13.conf", NGINX_PORT)

EXERCISE = Exercise(
    kind="envoy config",
    starter="envoy/exercises/lesson-13.yaml",
    answer="envoy/lesson-13-retries.yaml",
    steps=("retries-envoy",),
    hints=(
        "Envoy sends a call again only where the route's retry_policy says so. The kill resets the connection "
        "of the calls in flight on server2 (`reset`); the calls sent to it after that are refused "
        "(`connect-failure`).",
        "Under the route: `retry_policy: {retry_on: \"reset,connect-failure,unavailable\", num_retries: 2}`: "
        "https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/route/v3/route_components.proto"
        "#config-route-v3-retrypolicy",
        "Round robin may pick the dead server again for the retry: a `retry_host_predicate` of "
        "`envoy.retry_host_predicates.previous_hosts` sends it elsewhere: "
        "https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/http/http_connection_management"
        "#retry-plugin-configuration",
    ),
)

LESSON = Lesson(
    number=13,
    slug="envoy",
    title="Envoy, side by side with nginx",
    goal="Run lessons 2, 5 and 6 on Envoy, then see what its active health checks and retries change.",
    tutorial=False,
    exercise=EXERCISE,
    steps=(
        Step(
            key="round-robin",
            title="lesson 2 on Envoy: round robin, call by call",
            why="A ROUND_ROBIN cluster with HTTP/2 to the backends: Envoy sends each call to the next backend, "
                "as nginx's upstream does (the Login included). Its access log (a format of our own, as lesson "
                "8's for nginx) names the backend of each call.",
            servers=PLAIN,
            envoy=envoy("round-robin"),
            client=Driver(f"127.0.0.1:{ENVOY_PORT}", calls=10),
            act=round_robin,
            judge=alternates,
            claims=("every call succeeds", "Envoy's access log shows the calls alternating between the servers"),
            checkpoint=True,
        ),
        Step(
            key="mutual-tls",
            title="lesson 5 on Envoy: TLS at the edge with a client certificate, mutual TLS to the backends",
            why="The listener's DownstreamTlsContext requires a client certificate signed by the CA; the "
                "cluster's UpstreamTlsContext shows the backends Envoy's own, so they can require one.",
            servers=MTLS,
            envoy=envoy("mtls", ENVOY_TLS_PORT),
            client=Client(tls=True, address=f"0.0.0.0:{ENVOY_TLS_PORT}"),
            expect=Expect(ok=True, spread=BOTH),
            checkpoint=True,
        ),
        *(Step(
            key=key,
            title=f"a TLS client {who} is refused by Envoy",
            why="require_client_certificate: Envoy ends the handshake (the client sees UNAVAILABLE), where nginx "
                "completes it and answers 400; no backend sees the call either way.",
            servers=MTLS,
            envoy=envoy("mtls", ENVOY_TLS_PORT),
            client=Client(tls=True, address=f"0.0.0.0:{ENVOY_TLS_PORT}", cert=cert),
            expect=Expect(ok=False, client_says=ENVOY_REFUSED, no_calls=True),
            checkpoint=True,
        ) for key, who, cert in (("no-client-cert", "without a certificate", "none"),
                                 ("foreign-client-cert", "with another CA's certificate", "foreign"))),
        Step(
            key="routes",
            title="lesson 6 on Envoy: one cluster per gRPC service",
            why="Every gRPC call is a POST to /package.Service/Method: a route per service prefix picks the "
                "cluster, as nginx's location per prefix picks the upstream.",
            servers=PLAIN,
            envoy=envoy("routes"),
            client=Client(address=f"0.0.0.0:{ENVOY_PORT}", runs=2),
            expect=Expect(ok=True, routes={AUTH_LOGIN: ("server1",), CREATE_LAPTOP: ("server2",)}),
            checkpoint=True,
        ),
        Step(
            key="health-envoy",
            title="Envoy's active health check: a NOT_SERVING server leaves before it is stopped",
            why="Envoy asks each backend's grpc.health.v1 service every 200 ms: the NOT_SERVING answer takes "
                "server2 out of the rotation within one interval, so it gets no call by the time it is killed, "
                "and no call is lost.",
            servers=PLAIN,
            envoy=envoy("health"),
            client=LOAD,
            then=("after 20 calls server2 turns NOT_SERVING (SIGUSR1); 20 calls later it is killed",),
            act=health_change,
            judge=left_before_failing,
            claims=("/clusters shows server2 `failed_active_hc`", "server2 gets no call after that",
                    "no call is lost when it is killed"),
            checkpoint=True,
        ),
        Step(
            key="health-nginx",
            title="the same on nginx: it keeps sending calls until one fails",
            why="nginx open source has passive health only (max_fails): it never asks the health service, "
                "so server2 gets calls until it is killed, and the calls in flight then are lost. Only the "
                "failed attempts after it take server2 out of rotation.",
            servers=PLAIN,
            nginx=NGINX,
            client=NGINX_LOAD,
            then=("after 20 calls server2 turns NOT_SERVING (SIGUSR1); 20 calls later it is killed mid-call",),
            act=health_change,
            judge=nginx_keeps_sending,
            claims=("server2 still gets calls while NOT_SERVING", "the calls in flight at the kill are lost"),
        ),
        Step(
            key="retries-envoy",
            title="Envoy's retry_policy: a backend killed under load, its calls tried again elsewhere",
            why="retry_on reset sends a call whose connection broke before an answer to another backend "
                "(previous_hosts); connect-failure the calls refused after it. No call is lost, but the call that "
                "was running on server2 runs again on server1: CreateLaptop is not idempotent, so a retry may "
                "do its work twice.",
            servers=PLAIN,
            envoy=envoy("retries"),
            client=LOAD,
            then=("after 20 calls server2 is killed while it works on a call",),
            act=kill_under_load,
            judge=retried,
            claims=("no call is lost", "Envoy's access log shows calls tried twice, the second time on server1",
                    "the call in flight at the kill ran on server2, then again on server1"),
            checkpoint=True,
        ),
        Step(
            key="retries-nginx",
            title="the same on nginx: grpc_next_upstream does not retry a call already sent",
            why="nginx tries the next server only when connecting failed (error, timeout); a call it has sent "
                "is never sent again, `non_idempotent` or not (lesson 8): the calls in flight are lost.",
            servers=PLAIN,
            nginx=NGINX,
            client=NGINX_LOAD,
            then=("after 20 calls server2 is killed while it works on a call",),
            act=kill_under_load,
            judge=not_retried,
            claims=("the calls in flight on server2 fail with UNAVAILABLE", "none is sent again"),
        ),
        Step(
            key="xds",
            title="Envoy fed by lesson 12's control plane: server3 registers and gets calls, with no reload",
            why="Envoy is an ADS client of the same control plane as grpc's xDS clients: the cluster `pcbook` "
                "(CDS) and its endpoints (EDS) come from etcd and change under it, where nginx is re-rendered "
                "and reloaded (lesson 11). A graceful stop loses nothing; the kill loses the calls in flight.",
            servers=XDS_SERVERS[:2],
            standby=XDS_SERVERS[2:],
            registry=Registry(),
            control_plane=ControlPlane(),
            envoy=envoy("xds"),
            client=Driver(f"127.0.0.1:{ENVOY_PORT}"),
            then=("server3 registers; server1 stops gracefully (SIGTERM: deregister, drain); server2 is killed",),
            act=over_xds,
            judge=judge_story,
            claims=("server3 gets calls within 3 s of registering", "no call fails at the join or the graceful stop",
                    "at most the 2 calls in flight fail at the kill"),
            checkpoint=True,
        ),
    ),
)
