"""Starting the bench's stacks: servers, nginx and the load generator, each pinned where the placement says
and waited for until it answers."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from pcbook.bench.settings import HOP_CONF, HOP_NGINX_PORTS, READY_TIMEOUT, BenchServer, Say
from pcbook.measure.loadgen import LoadGenerator
from pcbook.measure.placement import LOADGEN, NGINX, SERVERS, Placement, pinned
from pcbook.service import tls
from pcbook.stack import nginx, procs
from pcbook.stack.ports import wait_bindable


def server_argv(server: BenchServer, log_file: Path, workers: int | None = None, work_ms: int = 0) -> list[str]:
    """The server's command line, its stdout (a log line per call) sent to `log_file`.

    Through the Stack's pipe those lines would cost the runner more CPU than the calls being measured;
    stderr (a fatal error, a traceback) still reaches the Stack.
    """
    argv = [sys.executable, "-u", "-m", "pcbook.server", "--port", str(server.port), "--host", "127.0.0.1"]
    if server.mtls:
        argv += ["--tls", "--client-auth", "require"]
    if workers is not None:
        argv += ["--workers", str(workers)]
    if work_ms:
        argv += ["--work-ms", str(work_ms)]
    return ["/bin/sh", "-c", f'exec "$@" >> {shlex.quote(str(log_file))}', "sh", *argv]


def start_servers(stack: procs.Stack, servers: Sequence[BenchServer], log_dir: Path,
                  workers: int | None = None, work_ms: int = 0, placement: Placement | None = None,
                  say: Say | None = None) -> None:
    """Start all at once (their imports overlap), then wait until each answers its health check.

    A port held only by a closing connection (TIME_WAIT, another program's) is waited for, up to a
    minute; a live listener fails at once with its owner named."""
    log_dir.mkdir(parents=True, exist_ok=True)
    for server in servers:
        wait_bindable(server.port, say or (lambda _line: None))
    with pinned(placement or Placement(), SERVERS):
        for server in servers:
            stack.start(server.name, server_argv(server, log_dir / f"{server.name}.log", workers, work_ms))
    for server in servers:
        stack.wait_ready(server.name, port=server.port, health=f"127.0.0.1:{server.port}",
                         credentials=tls.client_credentials() if server.mtls else None, timeout=READY_TIMEOUT)


def stop_all(stack: procs.Stack, names: Sequence[str]) -> None:
    for name in reversed(names):
        if name in stack and stack.proc(name).running:
            stack.stop(name)


def start_nginx(stack: procs.Stack, conf: Path, port: int, placement: Placement | None = None) -> nginx.NginxProcess:
    with pinned(placement or Placement(), NGINX):
        return nginx.start_nginx(stack, conf, port=port, timeout=READY_TIMEOUT)


def start_load(stack: procs.Stack, processes: int, placement: Placement | None = None,
               env: dict[str, str] | None = None) -> LoadGenerator:
    with pinned(placement or Placement(), LOADGEN):
        return LoadGenerator(stack, processes, env=env)


def start_hop_nginx(stack: procs.Stack, placement: Placement | None = None) -> nginx.NginxProcess:
    """nginx with bench-hop.conf, waited for on each of the hop's ports."""
    proc = start_nginx(stack, HOP_CONF, HOP_NGINX_PORTS[0], placement)
    for port in HOP_NGINX_PORTS[1:]:
        procs.wait_port("127.0.0.1", port, READY_TIMEOUT, proc=proc.proc)
    return proc
