"""Starting the bench's stacks: servers, nginx and the load generator, each pinned where the placement says
and waited for until it answers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pcbook.bench.settings import (
    ENVOY,
    ENVOY_ADMIN_PORT,
    ENVOY_CONF,
    ENVOY_PORT,
    HAPROXY,
    HAPROXY_CONF,
    HAPROXY_PORT,
    HOP_CONF,
    HOP_NGINX_PORTS,
    READY_TIMEOUT,
    Say,
)
from pcbook.measure.loadgen import LoadGenerator
from pcbook.measure.placement import LOADGEN, NGINX, Placement, pinned
from pcbook.stack import envoy, haproxy, nginx, procs
from pcbook.stack.specs import Server
from pcbook.stage.stage import Stage


def start_servers(stack: procs.Stack, servers: Sequence[Server], log_dir: Path, placement: Placement | None = None,
                  say: Say | None = None) -> Stage:
    """Start all at once (their imports overlap), then wait until each answers its health check; returns
    the stage they run on (stage.close() stops them).

    A port held only by a closing connection (TIME_WAIT, another program's) is waited for, up to a
    minute; a live listener fails at once with its owner named."""
    stage = Stage(stack, log_dir, placement or Placement(), say or (lambda _line: None))
    stage.apply(servers)
    return stage


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


def start_peers(stack: procs.Stack, placement: Placement | None = None,
                say: Say | None = None) -> dict[str, haproxy.HaproxyProcess | envoy.EnvoyProcess]:
    """The peer proxies of nginx's plaintext hop that this machine has (HAProxy, Envoy), pinned where nginx
    is; a missing one is one line saying so and how to get it (its rows are left out)."""
    say = say or (lambda _line: None)
    # (label, key, find the binary, its not-found error, start it with that binary)
    kinds: tuple[tuple[str, str, Callable[[], Path], type[Exception], Callable[[Path], Any]], ...] = (
        ("HAProxy", HAPROXY, haproxy.find_haproxy, haproxy.HaproxyNotFoundError,
         lambda binary: haproxy.start_haproxy(stack, HAPROXY_CONF, port=HAPROXY_PORT, timeout=READY_TIMEOUT,
                                              binary=binary)),
        # One worker thread, as nginx runs one worker: the bench pins both to the same core.
        ("Envoy", ENVOY, envoy.find_envoy, envoy.EnvoyNotFoundError,
         lambda binary: envoy.start_envoy(stack, ENVOY_CONF, name=ENVOY, port=ENVOY_PORT, admin_port=ENVOY_ADMIN_PORT,
                                          concurrency=1, timeout=READY_TIMEOUT, binary=binary)),
    )
    peers: dict[str, haproxy.HaproxyProcess | envoy.EnvoyProcess] = {}
    for label, key, find, not_found, start in kinds:
        try:
            binary = find()
        except not_found as err:
            say(f"{label}: skipped, {err}")
            continue
        with pinned(placement or Placement(), NGINX):
            peers[key] = start(binary)
    return peers
