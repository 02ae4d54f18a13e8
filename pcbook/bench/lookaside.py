"""Everything the bench runs on a registry (a Stage with etcd, the control plane, nginx_sync, the story's
servers and drivers): the hop's xDS path and phase 3, the three architectures on one registry."""

from __future__ import annotations

import re
from pathlib import Path

from pcbook.bench.accounting import Clock, opened_during
from pcbook.bench.phases import architecture_latency
from pcbook.bench.results import ArchResult, ChangeCost
from pcbook.bench.settings import (
    ARCH_CONF,
    ARCH_DIRECT,
    ARCH_FAST,
    ARCH_NGINX_PORT,
    ARCH_STORY,
    STORY_CLIENTS,
    XDS_SERVERS,
    XDS_TARGET,
    Say,
    Settings,
)
from pcbook.measure.placement import LOADGEN, Placement, pinned
from pcbook.stack import procs
from pcbook.stack.specs import REGISTRY_PREFIX, ControlPlane, Driver, Nginx, Registry, RegistrySync
from pcbook.stage.stage import Stage
from pcbook.stage.story import stories


def start_look_aside(stack: procs.Stack, out_dir: Path, placement: Placement | None = None) -> tuple[Stage, Path]:
    """etcd listing XDS_SERVERS (name -> host:port) and lesson 12's control plane fed from it; returns the
    stage (stage.close() stops both) and the bootstrap file an xds:/// client needs in GRPC_XDS_BOOTSTRAP.

    The keys have no lease: the bench's servers do not register themselves, the bench lists them.
    Pinned with nginx (the stage does): like nginx it is the part of the path that is not the client nor
    the server."""
    stage = Stage(stack, out_dir, placement or Placement())
    stage.start_registry(Registry())
    for name, address in XDS_SERVERS.items():
        stage.registry.put(f"{REGISTRY_PREFIX}/{name}", address)
    return stage, stage.start_control_plane(ControlPlane())


def count_lines(stack: procs.Stack, name: str, pattern: str, since: int) -> int:
    return sum(1 for rec in stack.records(name, since=since) if re.search(pattern, rec.text))


def measure_architectures(stack: procs.Stack, settings: Settings, say: Say, out_dir: Path,
                          placement: Placement | None = None, clock: Clock | None = None) -> ArchResult:
    """One etcd, nginx fed by nginx_sync, the xDS control plane; then
    1. latency: fast1 and fast2 registered; the driver's --compare sends the same call direct, through
       nginx, through the thick client and through xDS in turn (rotated), `arch_calls` each;
    2. backend changes: fast1 and fast2 leave; lesson 11's story (server1, server2; server3 joins;
       server1 stops gracefully; server2 is SIGKILLed) with one driver per architecture calling at once.
    """
    clock = clock or Clock()
    where = placement or Placement()
    stage = Stage(stack, out_dir, where, say)
    try:
        stage.apply(ARCH_FAST, nginx=Nginx(ARCH_CONF, ARCH_NGINX_PORT), registry=Registry(), sync=RegistrySync(),
                    control_plane=ControlPlane())
        assert stage.registry_url is not None and stage.bootstrap is not None
        targets = {ARCH_DIRECT: f"127.0.0.1:{ARCH_FAST[0].port}", "nginx": f"127.0.0.1:{ARCH_NGINX_PORT}",
                   "thick": stage.registry_url, "xds": XDS_TARGET}
        compare = Driver(calls=settings.arch_calls, warmup=settings.arch_warmup, run_length=settings.arch_run_length,
                         compare=tuple(f"{name}={target}" for name, target in targets.items()))
        say(f"{clock} latency: {settings.arch_calls} calls per architecture after {settings.arch_warmup} warm-up "
            f"calls, interleaved {settings.arch_run_length} at a time, one in flight (the load driver: sync grpcio, "
            "one process)")
        with pinned(where, LOADGEN):
            run = stage.start_driver(compare, "compare")
        calls = stage.collect(run, timeout=120 + settings.arch_calls * 0.1)
        latency = architecture_latency(calls.samples_ms, ARCH_DIRECT, settings.reps)
        say(f"{clock} backend changes: three clients at once (thick, nginx, xDS) while server3 joins, server1 stops "
            "gracefully and server2 is SIGKILLed")
        # The story's two first servers, registered and applied by nginx and the control plane before
        # the clients start: from here on every reload, rebuild and push is one of the story's changes.
        # fast1 and fast2 leave gracefully first (the stage stops what the new state does not list).
        applied = stack.mark()
        for fast in ARCH_FAST:
            stage.terminate(fast.name)
        for fast in ARCH_FAST:
            stack.proc(fast.name).wait(15)
        for server in ARCH_STORY[:2]:
            stage.start_server(server)
        both = r"server1=[\d.:]+( w1)?, server2=[\d.:]+( w1)?"
        stack.wait_for_line("sync", re.compile(rf"2 server\(s\) \({both}\); nginx reloaded$"), 15, since=applied)
        stack.wait_for_line("xds", re.compile(rf"endpoints v\d+: {both}$"), 15, since=applied)
        mark = stack.mark()
        reconnects, played = opened_during(ARCH_NGINX_PORT, lambda: stories(
            stage, {STORY_CLIENTS[k]: targets[k] for k in STORY_CLIENTS}, ARCH_STORY[2], end_unfollowed=False))
        reloads = count_lines(stack, "sync", r"nginx reloaded$", mark)
        rebuilt = count_lines(stack, STORY_CLIENTS["thick"], r"^discovered \d+ server", mark)
        pushes = count_lines(stack, "xds", r" push EDS ", mark)
        acks = count_lines(stack, "xds", r" ACK EDS ", mark)
        redone = {"nginx": [f"{reloads} nginx reloads by nginx_sync",
                            f"{reconnects} client connections to nginx opened (the first included)"],
                  "thick": [f"{rebuilt} channels built by the client (the first included)"],
                  "xds": [f"{pushes} EDS pushes, {acks} ACKed (the first at subscription included); the client "
                          "kept its one channel"]}
        changes = []
        for arch, client in STORY_CLIENTS.items():
            story = played[client]
            changes.append(ChangeCost(arch, len(story.report.calls), dict(story.failed),
                                      story.register_to_first_call, redone[arch]))
        kill_to_removal = next(iter(played.values())).kill_to_removal
        assert kill_to_removal is not None  # end_unfollowed=False: the kill was played
    finally:
        stage.close()
    return ArchResult(latency, changes, settings.reps, settings.arch_calls, kill_to_removal)
