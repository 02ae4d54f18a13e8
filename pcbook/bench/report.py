"""The report: the tables printed section by section, and the same numbers as a dict for results.json."""

from __future__ import annotations

from dataclasses import asdict

from pcbook.bench.phases import added_latency
from pcbook.bench.results import ArchResult, H2Result, HopResult, ScaleResult
from pcbook.bench.settings import ARCH_LABELS, CLIENT_RR, DIRECT, LABELS, LEVEL, NGINX_PLAIN, ONE, Say, Settings
from pcbook.bench.tables import (
    architecture_lines,
    comparison_lines,
    h2_lines,
    hop_table,
    load_generator_lines,
    memory_lines,
    resolving_power,
    scale_lines,
    targets_met,
)
from pcbook.measure.placement import available
from pcbook.measure.stats import Difference, PathStats, throughput_table


def report(hop: HopResult, scale: ScaleResult, settings: Settings, info: dict[str, object],
           say: Say, *, h2: H2Result | None = None, h2_note: str = "",
           arch: ArchResult | None = None) -> dict[str, object]:
    cores = len(available() or ()) or int(info.get("cores") or 1)  # type: ignore[call-overload]
    say("")
    say(f"== the hop: CreateLaptop, p50/p99 with 1 call in flight, calls/s with {settings.load_concurrency} in "
        f"flight; {settings.reps} repetitions in balanced order")
    say(f"   placement: {info.get('placement', '?')}")
    say(f"   added us: p50 minus direct's p50 in the same repetition, median and {LEVEL:.0%} interval "
        "(distribution-free); 'not resolved': the interval includes or touches 0 (a bound shown +0 or -0)")
    for line in hop_table(hop, LABELS):
        say(line)
    if power := resolving_power(hop):
        say(power)
    for name, count in hop.upstream_connections.items():
        say(f"   {LABELS.get(name, name)}: {count.opened} backend connections opened for {count.calls} calls")
    say("")
    say("== memory at rest: resident set (RSS) of each proxy, started and not yet called; nginx: master and worker "
        "summed (pages they share counted in each), with bench-hop.conf's four ports")
    for line in memory_lines(hop.memory, LABELS):
        say(f"   {line}")
    say("")
    say("== what this run resolves: each row is a path minus another, paired by repetition; compare only the "
        "resolved ones")
    comparisons = comparison_lines(hop, LABELS)
    for line in comparisons:
        say(line)
    say("")
    say("== cross-check: the plaintext paths with a native client")
    for line in h2_lines(h2, hop, h2_note):
        say(f"   {line}" if h2 is None else line)
    say("")
    say(f"== scale-out: {settings.scale_concurrency} calls in flight; capacity SIMULATED: each server has "
        f"--workers {settings.workers} threads that sleep --work-ms {settings.work_ms} per call = "
        f"{settings.capacity:.0f} calls/s at most, whatever the CPU")
    for line in throughput_table(list(scale.throughput.items()), ONE):
        say(line)
    for line in scale_lines(scale, settings):
        say(f"   {line}")
    if arch is not None:
        say("")
        say(f"== three architectures, one registry: per-call latency ({arch.calls} calls each, one in flight, "
            f"interleaved {settings.arch_run_length} at a time; added us paired over {arch.blocks} blocks), then "
            "lesson 11's changes with the three "
            "clients calling at once (40 calls/s each, 20 ms of work per call)")
        for line in architecture_lines(arch):
            say(f"   {line}" if line else "")
    say("")
    say("== is the load generator the bottleneck? (every round of the hop and scale-out phases)")
    for line in load_generator_lines(hop.records + scale.records, settings.processes, cores):
        say(f"   {line}")
    say("")
    say("== targets of a two-core machine (reported, not asserted)")
    rr_vs_nginx = (added_latency(hop, CLIENT_RR, NGINX_PLAIN)
                   if CLIENT_RR in hop.rounds and NGINX_PLAIN in hop.rounds else None)
    met = targets_met(hop.stats, scale.throughput, rr_vs_nginx)
    for title, ok, detail in met:
        say(f"   [{'met' if ok else 'NOT met'}] {title}: {detail}")
    if hop.errors or scale.errors:
        say(f"   note: {hop.errors + scale.errors} calls failed during the windows")

    def diff_dict(d: Difference) -> dict[str, object]:
        return {"median": d.interval.median, "low": d.interval.low, "high": d.interval.high,
                "coverage": d.interval.coverage, "resolved": d.resolved}

    return {
        "machine": info,
        "settings": asdict(settings),
        "hop": {n: {"label": LABELS.get(n, n), **_stats_dict(s), "rounds": hop.rounds[n],
                    "cpu_cores": hop.cpu.get(n, {}),
                    "added_us": None if n == DIRECT else diff_dict(added_latency(hop, n, DIRECT))}
                for n, s in hop.stats.items()},
        "comparisons": comparisons,
        "resolving_power": resolving_power(hop).strip(),
        "h2load": ({"p50_ms": h2.rounds, "calls_checked": h2.calls_checked, "calls_saved": h2.calls_saved}
                   if h2 else {"skipped": h2_note}),
        "memory_at_rest": {n: {"rss_mb": round(mb, 1), "processes": c} for n, (mb, c) in hop.memory.items()},
        "upstream_connections": {n: {"opened": c.opened, "calls": c.calls, "rounds": c.rounds}
                                 for n, c in hop.upstream_connections.items()},
        "scale": {n: {**asdict(s), "rounds": scale.rounds[n], "cpu_cores": scale.cpu.get(n, {}),
                      "waiting": scale.waiting.get(n, []), "served": scale.served.get(n, {})}
                  for n, s in scale.throughput.items()},
        "architectures": None if arch is None else {
            "latency": {r.name: {"label": ARCH_LABELS.get(r.name, r.name), "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
                                 "x_p50": r.x_p50, "x_p99": r.x_p99,
                                 "added_us": None if r.added is None else diff_dict(r.added)} for r in arch.latency},
            "calls": arch.calls, "blocks": arch.blocks,
            "changes": {c.name: {"calls": c.calls, "failed": c.failed, "register_to_first_call_s":
                                 c.register_to_first_call if c.register_to_first_call < float("inf") else None,
                                 "redone": c.redone} for c in arch.changes},
            "kill_to_removal_s": arch.kill_to_removal},
        "service_ms": scale.service_ms,
        "capacity_per_server": settings.capacity,
        "targets": [{"target": t, "met": ok, "detail": d} for t, ok, d in met],
    }


def _stats_dict(s: PathStats) -> dict[str, object]:
    return {"p50_ms": asdict(s.p50_ms), "p99_ms": asdict(s.p99_ms),
            "calls_per_s": asdict(s.throughput) if s.throughput else None}
