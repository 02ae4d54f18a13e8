"""Everything the bench runs on a registry (pcbook.discovery.lab: etcd, the control plane, nginx_sync, the
story's servers and drivers): the hop's xDS path and phase 3, the three architectures on one registry.

The only module of the bench that uses the lab, so that a change of the lab's API lands here alone.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from pcbook.bench.accounting import Clock, opened_during
from pcbook.bench.phases import architecture_latency
from pcbook.bench.results import ArchResult, ChangeCost
from pcbook.bench.settings import (
    ARCH_CONF,
    ARCH_DIRECT,
    ARCH_FAST,
    ARCH_NGINX_PORT,
    STORY_CLIENTS,
    XDS_SERVERS,
    XDS_TARGET,
    Say,
    Settings,
)
from pcbook.discovery import lab as discovery_lab
from pcbook.discovery.lab import PREFIX, Lab
from pcbook.measure import driver
from pcbook.measure.placement import LOADGEN, NGINX, SERVERS, Placement, pinned
from pcbook.stack import procs
from pcbook.stack.ports import wait_bindable


def start_look_aside(stack: procs.Stack, placement: Placement | None = None) -> tuple[Lab, Path]:
    """etcd listing XDS_SERVERS (name -> host:port) and lesson 12's control plane fed from it; returns the
    lab (lab.close() stops both) and the bootstrap file an xds:/// client needs in GRPC_XDS_BOOTSTRAP.

    The keys have no lease: the bench's servers do not register themselves, the bench lists them.
    Pinned with nginx: like nginx it is the part of the path that is not the client nor the server."""
    with pinned(placement or Placement(), NGINX):
        lab = Lab(stack, work_ms=0)
        for name, address in XDS_SERVERS.items():
            lab.registry.put(f"{PREFIX}/{name}", address)
        return lab, lab.control_plane()


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
    for port in ARCH_FAST.values():
        wait_bindable(port, say)
    with pinned(where, NGINX):
        lab = Lab(stack)  # its servers do 20 ms of work per call (the story's), unless told otherwise
    try:
        with pinned(where, SERVERS):
            for name, port in ARCH_FAST.items():
                lab.server(name, port, work_ms=0)
        with pinned(where, NGINX):
            lab.nginx(ARCH_CONF, ARCH_NGINX_PORT)
            bootstrap = lab.control_plane()
        env = {"GRPC_XDS_BOOTSTRAP": str(bootstrap)}
        targets = {ARCH_DIRECT: f"127.0.0.1:{ARCH_FAST['fast1']}", "nginx": f"127.0.0.1:{ARCH_NGINX_PORT}",
                   "thick": lab.url, "xds": XDS_TARGET}
        report_file = out_dir / "architectures-calls.json"
        argv = [sys.executable, "-u", "-m", "pcbook.measure.driver", "--calls", str(settings.arch_calls),
                "--warmup", str(settings.arch_warmup), "--json", str(report_file)]
        for name, target in targets.items():
            argv += ["--compare", f"{name}={target}"]
        say(f"{clock} latency: {settings.arch_calls} calls per architecture after {settings.arch_warmup} warm-up "
            "calls, interleaved, one in flight (the load driver: sync grpcio, one process)")
        with pinned(where, LOADGEN):
            stack.start("compare", argv, env=env)
        calls = driver.collect(stack, "compare", report_file, timeout=120 + settings.arch_calls * 0.1)
        latency = architecture_latency(calls.samples_ms, ARCH_DIRECT, settings.reps)
        for name in ARCH_FAST:  # they leave gracefully before the story's clients start
            lab.terminate(name)
        for name in ARCH_FAST:
            stack.proc(name).wait(15)
        say(f"{clock} backend changes: three clients at once (thick, nginx, xDS) while server3 joins, server1 stops "
            "gracefully and server2 is SIGKILLed")
        # The story's two first servers, registered and applied by nginx and the control plane before
        # the clients start: from here on every reload, rebuild and push is one of the story's changes.
        applied = stack.mark()
        for name in ("server1", "server2"):
            lab.server(name)
        both = r"server1=[\d.:]+( w1)?, server2=[\d.:]+( w1)?"
        stack.wait_for_line("sync", re.compile(rf"2 server\(s\) \({both}\); nginx reloaded$"), 15, since=applied)
        stack.wait_for_line("xds", re.compile(rf"endpoints v\d+: {both}$"), 15, since=applied)
        mark = stack.mark()
        reconnects, stories = opened_during(ARCH_NGINX_PORT, lambda: discovery_lab.stories(
            lab, {STORY_CLIENTS[k]: targets[k] for k in STORY_CLIENTS}, end_unfollowed=False))
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
            story = stories[client]
            changes.append(ChangeCost(arch, len(story.report.calls), dict(story.failed),
                                      story.register_to_first_call, redone[arch]))
        kill_to_removal = next(iter(stories.values())).kill_to_removal
        assert kill_to_removal is not None  # end_unfollowed=False: the kill was played
    finally:
        lab.close()
    return ArchResult(latency, changes, settings.reps, settings.arch_calls, kill_to_removal)
