"""The whole run: the machine's description, the three phases on one Stack, the report, results.json and
the chart."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import time
from pathlib import Path

from pcbook.bench.accounting import Clock, memory_at_rest
from pcbook.bench.chart import draw_chart
from pcbook.bench.lookaside import measure_architectures, start_look_aside
from pcbook.bench.phases import count_upstream_connections, measure_h2load, measure_hop, measure_scale
from pcbook.bench.report import report
from pcbook.bench.settings import (
    ARCH_NGINX_PORT,
    BENCH_SCALE_PATHS,
    DIRECT,
    H2_PATHS,
    H2_PEERS,
    HOP_CONF,
    HOP_SERVERS,
    NGINX_PLAIN,
    PEER_UPSTREAM_PORT,
    SCALE_CONF,
    SCALE_NGINX_PORT,
    SCALE_SERVERS,
    UNUSED_IN_SCALE,
    UPSTREAM_PORT,
    Say,
    Settings,
    hop_paths,
    saturated,
)
from pcbook.bench.stacks import start_hop_nginx, start_load, start_nginx, start_peers, start_servers, stop_all
from pcbook.measure import h2load
from pcbook.measure.loadgen import KIND
from pcbook.measure.placement import NGINX, SERVERS, Placement, affinity_of, available, plan
from pcbook.paths import shown
from pcbook.stack import envoy, haproxy, nginx, procs
from pcbook.stack.ports import hold_ports


def say_flushed(line: str) -> None:
    print(line, flush=True)  # progress must show as it happens, also through a pipe (make | tee)


# Per-call lines of the servers and the drivers: kept in the Stack (the story reads them), not echoed.
QUIET = re.compile(r"receive a create-laptop request|saved laptop with id|--> unary interceptor: |"
                   r"\| \d+ calls done: ")


def quiet(say: Say) -> Say:
    """`say` without the lines a process prints per call."""
    return lambda line: None if QUIET.search(line) else say(line)


def machine() -> dict[str, object]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor()
    try:
        nginx_version = ".".join(map(str, nginx.nginx_version(nginx.find_nginx())))
    except nginx.NginxError:
        nginx_version = "?"
    import grpc

    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "nginx": nginx_version,
        "haproxy": _haproxy_version(),
        "envoy": _envoy_version(),
        "load_generator": KIND,
    }


def run_bench(settings: Settings, out_dir: Path, say: Say = say_flushed, *, chart: bool = True) -> dict[str, object]:
    """The three phases, the report, results.json and (with `chart`) bench.png in `out_dir`."""
    clock = Clock()
    out_dir.mkdir(parents=True, exist_ok=True)
    info = machine()
    where = plan(available(), free=settings.free_placement)
    info["placement"] = where.describe()
    say(f"machine: {info['cores']} cores, {info['cpu'] or info['platform']}; nginx {info['nginx']}, "
        f"HAProxy {info['haproxy']}, Envoy {info['envoy']}, grpcio {info['grpcio']}")
    say(f"placement: {where.describe()}")
    say(f"load generator: {settings.processes} Python processes ({KIND}, one asyncio loop and one channel "
        "per target each); h2load, where installed, cross-checks the plaintext paths")
    h2 = None
    arch = None
    with procs.Stack(echo=quiet(say)) as stack:
        say(f"{clock} phase 1/3: the hop — starting 4 servers, nginx ({HOP_CONF.name}), etcd and the xDS control "
            "plane, and the load generator")
        servers = start_servers(stack, HOP_SERVERS, out_dir, placement=where, say=say)
        hop_nginx = start_hop_nginx(stack, placement=where)
        peers = start_peers(stack, placement=where, say=say)
        _check_placement(where, {"server1": stack.proc("server1").pid, "nginx": hop_nginx.pid,
                                 **{n: p.pid for n, p in peers.items()}}, say)
        memory = rest_memory({NGINX_PLAIN: (hop_nginx.pid, 2), **{n: (p.pid, 1) for n, p in peers.items()}})
        look_aside, bootstrap = start_look_aside(stack, out_dir, placement=where)
        load = start_load(stack, settings.processes, where, env={"GRPC_XDS_BOOTSTRAP": str(bootstrap)})
        paths = hop_paths(list(peers))
        load.open(paths)
        say(f"{clock} counting the backend connections the proxies open (keepalive vs not):")
        conns = count_upstream_connections(load, {**UPSTREAM_PORT, **{n: PEER_UPSTREAM_PORT[n] for n in peers}}, say)
        watch = {"servers": [stack.proc(s.name).pid for s in HOP_SERVERS], "nginx": [hop_nginx.pid],
                 "xds": [stack.proc("xds").pid], **{n: [p.pid] for n, p in peers.items()}}
        hop = measure_hop(load, paths, settings, say, watch, clock=clock)
        hop.upstream_connections = conns
        hop.memory = memory
        load.close()
        binary = h2load.find() if settings.cross_check else None
        if binary:
            say(f"{clock} cross-check: the plaintext paths with {binary}")
            token = h2load.login_token(H2_PATHS[DIRECT])
            h2 = measure_h2load(binary, {**H2_PATHS, **{n: H2_PEERS[n] for n in peers}}, token, settings, out_dir,
                                say, out_dir / "server1.log", where, clock)
        for peer in peers.values():
            peer.stop()
        hop_nginx.stop()
        look_aside.close()
        servers.close()

        say(f"{clock} phase 2/3: scale-out — 2 servers, each --workers {settings.workers} --work-ms "
            f"{settings.work_ms} (capacity {settings.capacity:.0f} calls/s each, simulated), nginx ({SCALE_CONF.name})")
        with hold_ports(UNUSED_IN_SCALE):
            servers = start_servers(stack, saturated(SCALE_SERVERS, settings.workers, settings.work_ms), out_dir,
                                    placement=where, say=say)
            scale_nginx = start_nginx(stack, SCALE_CONF, SCALE_NGINX_PORT, where)
            load = start_load(stack, settings.processes, where)
            load.open(BENCH_SCALE_PATHS)
            watch = {"servers": [stack.proc(s.name).pid for s in SCALE_SERVERS], "nginx": [scale_nginx.pid]}
            logs = {s.name: out_dir / f"{s.name}.log" for s in SCALE_SERVERS}
            scale = measure_scale(load, BENCH_SCALE_PATHS, settings, say, watch, clock=clock, server_logs=logs)
            load.close()
            stop_all(stack, [*load.names, scale_nginx.name])
            servers.close()

        if settings.architectures:
            say(f"{clock} phase 3/3: three architectures on one registry — etcd, nginx fed by nginx_sync "
                f"(:{ARCH_NGINX_PORT}), the thick client, the xDS control plane")
            arch = measure_architectures(stack, settings, say, out_dir, where, clock)
    results = report(hop, scale, settings, info, say, h2=h2, h2_note=_h2_note(settings), arch=arch)
    results["seconds"] = round(time.monotonic() - clock.t0, 1)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    if chart:
        png = out_dir / "bench.png"
        draw_chart(results, png)
        say(f"chart: {shown(png)}   numbers: {shown(out_dir / 'results.json')}")
    say(f"done in {results['seconds']:.0f} s; everything it started is stopped")
    return results


def _check_placement(where: Placement, pids: dict[str, int], say: Say) -> None:
    """Say so if a pinned process does not run where the plan put it (it once did not: the Stack forked
    from a thread the pinning never reached)."""
    if not where.pinned:
        return
    roles = {"server1": SERVERS}
    for name, pid in pids.items():
        planned, actual = where.of(roles.get(name, NGINX)), affinity_of(pid)
        if actual is not None and planned is not None and actual != planned:
            say(f"placement did not take: {name} runs on cores {sorted(actual)}, planned {sorted(planned)}")


def _envoy_version() -> str:
    try:
        return ".".join(map(str, envoy.envoy_version(envoy.find_envoy())))
    except envoy.EnvoyNotFoundError:
        return "not installed"


def _haproxy_version() -> str:
    try:
        return haproxy.haproxy_version(haproxy.find_haproxy())
    except haproxy.HaproxyNotFoundError:
        return "not installed"


def rest_memory(procs_: dict[str, tuple[int, int]], timeout: float = 5.0) -> dict[str, tuple[float, int]]:
    """Each proxy's resident memory before its first call: name -> (MB, processes), given name -> (pid, the
    processes it runs once up). nginx forks its worker after its port accepts: waited for, up to `timeout`."""
    out = {}
    deadline = time.monotonic() + timeout
    for name, (pid, expected) in procs_.items():
        while True:
            mb, count = memory_at_rest(pid)
            if count >= expected or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        out[name] = (mb, count)
    return out


def _h2_note(settings: Settings) -> str:
    if not settings.cross_check:
        return "skipped (--no-h2load)"
    if h2load.find() is None:
        return "skipped: h2load is not installed (Debian/Ubuntu: apt install nghttp2-client)"
    return ""
