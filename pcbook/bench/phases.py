"""The measuring phases: the hop's rounds and its backend connections, scale-out's saturated rounds,
h2load's cross-check, and phase 3's latency arithmetic."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from pcbook.bench.accounting import Clock, LogCounter, median_cpu, opened_during
from pcbook.bench.results import ArchLatency, H2Result, HopResult, RoundRecord, ScaleResult
from pcbook.bench.settings import LEVEL, Say, Settings
from pcbook.measure import h2load, verdicts
from pcbook.measure.loadgen import LoadGenerator, Round, Target
from pcbook.measure.placement import LOADGEN, Placement, pinned
from pcbook.measure.stats import (
    Difference,
    Spread,
    balanced_orders,
    block_percentiles,
    paired_difference,
    percentile,
    queued_calls,
    ratio,
    summarize,
)


def _check(r: Round) -> None:
    if r.calls == 0:
        raise RuntimeError(f"{r.target}: no call succeeded in the window ({r.errors} errors: {r.first_error})")


def _record(records: list[RoundRecord], phase: str, path: str, rep: int, r: Round) -> None:
    records.append(RoundRecord(phase, path, rep, dict(r.cpu), r.machine_busy))


def measure_hop(load: LoadGenerator, targets: Sequence[Target], settings: Settings, say: Say,
                watch: dict[str, list[int]], *, throughput: bool = True, clock: Clock | None = None) -> HopResult:
    """Rounds over `targets` (the first is the baseline) in balanced orders, after one warm-up round each.

    Every path follows every other equally often (stats.balanced_orders), so neither a drift of the
    machine nor the TIME_WAIT sockets of the no-keepalive path weigh on one path more than another.
    """
    clock = clock or Clock()
    names = [t.name for t in targets]
    for name in names:  # warm-up: connections, TLS sessions, the servers' code paths; not recorded
        load.run(name, concurrency=settings.load_concurrency if throughput else 1, window=0.3, warmup=0.1)
    latencies: dict[str, list[list[int]]] = {n: [] for n in names}
    rates: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    rounds: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    records: list[RoundRecord] = []
    errors = 0
    for rep, order in enumerate(balanced_orders(names, settings.reps)):
        for name in order:
            lat = load.run(name, concurrency=1, window=settings.latency_window, warmup=settings.warmup, watch=watch)
            _check(lat)
            _record(records, "latency", name, rep, lat)
            latencies[name].append(lat.latencies_ns)
            errors += lat.errors
            row = summarize(name, [lat.latencies_ns])
            shown = f"p50 {row.p50_ms.median:.3f} ms  p99 {row.p99_ms.median:.3f} ms"
            entry = {"p50_ms": row.p50_ms.median, "p99_ms": row.p99_ms.median}
            if throughput:
                busy = load.run(name, concurrency=settings.load_concurrency, window=settings.load_window,
                                warmup=settings.warmup, watch=watch)
                _check(busy)
                _record(records, "load", name, rep, busy)
                rates[name].append(busy.throughput)
                cpu[name].append(busy.cpu)
                errors += busy.errors
                shown += f"  {busy.throughput:7.0f} calls/s"
                entry["calls_per_s"] = busy.throughput
            rounds[name].append(entry)
            say(f"{clock} rep {rep + 1}/{settings.reps}  {name:<24} {shown}")
    stats = {n: summarize(n, latencies[n], rates[n]) for n in names}
    return HopResult(stats, rounds, cpu={n: median_cpu(c) for n, c in cpu.items() if c}, errors=errors,
                     records=records)


def added_latency(hop: HopResult, name: str, base: str, level: float = LEVEL) -> Difference:
    """p50 of `name` minus p50 of `base`, in microseconds, paired by repetition."""
    return paired_difference(name, [r["p50_ms"] * 1000 for r in hop.rounds[name]],
                             base, [r["p50_ms"] * 1000 for r in hop.rounds[base]], level)


def added_throughput(hop: HopResult, name: str, base: str, level: float = LEVEL) -> Difference | None:
    a, b = hop.rounds[name], hop.rounds[base]
    if not a or "calls_per_s" not in a[0]:
        return None
    return paired_difference(name, [r["calls_per_s"] for r in a], base, [r["calls_per_s"] for r in b], level)


def count_upstream_connections(load: LoadGenerator, paths_: dict[str, int], say: Say, window: float = 0.3,
                               min_calls: int = verdicts.KEEPALIVE_MIN_CALLS,
                               deadline: float = 10.0) -> dict[str, verdicts.ConnectionCount]:
    """For each nginx path: how many backend connections nginx opened for how many calls (every call
    made in the round, failed or not, stragglers included). Rounds of `window` s repeat until the path has
    `min_calls` calls (for at most `deadline` s): how many fit in one round depends on the machine
    (measured on a busy 2-core machine: 16 calls in 0.5 s without keepalive, against 68 with it)."""
    if not Path("/proc/net/tcp").exists():
        say("(connection counting needs Linux's /proc/net/tcp: skipped)")
        return {}
    counts: dict[str, verdicts.ConnectionCount] = {}
    for name, port in paths_.items():
        opened = calls = rounds = 0
        give_up = time.monotonic() + deadline
        while True:
            # A snapshot per round: a port reused in a later round is counted again (opened_between).
            new, r = opened_during(port, partial(load.run, name, concurrency=1, window=window, warmup=0.0))
            opened += new
            rounds += 1
            # A call that failed opened its backend connection too: "one per call" counts every call made.
            calls += r.completed + r.errors
            # No call got through: more rounds would not help (the judge says so).
            if r.completed == 0 or calls >= min_calls or time.monotonic() >= give_up:
                break
        counts[name] = verdicts.ConnectionCount(opened, calls, rounds)
        say(f"  {name}: {opened} new backend connections for {calls} calls in {rounds} round(s)")
    return counts


def measure_scale(load: LoadGenerator, targets: Sequence[Target], settings: Settings, say: Say,
                  watch: dict[str, list[int]], clock: Clock | None = None,
                  server_logs: dict[str, Path] | None = None,
                  decided: Callable[[dict[str, dict[str, int]]], str] | None = None) -> ScaleResult:
    """Saturated rounds in balanced orders. Per round: calls/s, the mean latency (for the queue) and,
    given the servers' log files, how many calls each server served. `decided(served)`, after each whole
    repetition (every path has as many rounds): a reason to stop there, or "" to go on."""
    clock = clock or Clock()
    names = [t.name for t in targets]
    for name in names:
        load.run(name, concurrency=settings.scale_concurrency, window=0.2, warmup=settings.scale_warmup)
    # The time one call takes with nothing waiting: the work plus the path's own cost.
    alone = load.run(names[0], concurrency=1, window=settings.scale_window / 2, warmup=0.1)
    _check(alone)
    service_s = alone.mean_latency_s
    counters = {srv: LogCounter(path) for srv, path in (server_logs or {}).items()}
    rates: dict[str, list[float]] = {n: [] for n in names}
    waiting: dict[str, list[float]] = {n: [] for n in names}
    served: dict[str, dict[str, int]] = {n: dict.fromkeys(counters, 0) for n in names}
    cpu: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    records: list[RoundRecord] = []
    errors = 0
    for rep, order in enumerate(balanced_orders(names, settings.reps)):
        for name in order:
            for c in counters.values():
                c.take()
            r = load.run(name, concurrency=settings.scale_concurrency, window=settings.scale_window,
                         warmup=settings.scale_warmup, watch=watch)
            _check(r)
            _record(records, "scale", name, rep, r)
            for srv, c in counters.items():
                served[name][srv] += c.take()
            rates[name].append(r.throughput)
            waiting[name].append(queued_calls(r.throughput, r.mean_latency_s, service_s))
            cpu[name].append(r.cpu)
            errors += r.errors
            used = "  ".join(f"{role} {cores:.2f}" for role, cores in r.cpu.items())
            say(f"{clock} rep {rep + 1}/{settings.reps}  {name:<22} {r.throughput:7.0f} calls/s  "
                f"{waiting[name][-1]:4.1f} waiting" + (f"   cores: {used}" if used else ""))
        if rep + 1 < settings.reps and decided and (why := decided(served)):
            say(f"{clock} stopped after repetition {rep + 1}: {why}")
            break
    return ScaleResult({n: Spread.of(v) for n, v in rates.items()}, rates,
                       cpu={n: median_cpu(c) for n, c in cpu.items()}, errors=errors,
                       waiting=waiting, service_ms=service_s * 1000, served=served, records=records)


def measure_h2load(binary: str, targets: dict[str, str], token: str, settings: Settings, out_dir: Path,
                   say: Say, server_log: Path, placement: Placement, clock: Clock | None = None) -> H2Result:
    """The plaintext paths with h2load, one call in flight, in balanced orders."""
    clock = clock or Clock()
    body = out_dir / "create-laptop.grpc"
    body.write_bytes(h2load.request_body())
    names = list(targets)
    rounds: dict[str, list[float]] = {n: [] for n in names}
    counter = LogCounter(server_log)
    sent = 0
    with pinned(placement, LOADGEN):
        for name in names:  # warm-up
            r = h2load.run(binary, targets[name], token, body, out_dir / "h2load.log", window=0.2, warmup=0.1)
        for rep, order in enumerate(balanced_orders(names, settings.reps)):
            for name in order:
                r = h2load.run(binary, targets[name], token, body, out_dir / "h2load.log",
                               window=settings.latency_window, warmup=settings.warmup)
                if not r.latencies_ns or r.non_200:
                    raise RuntimeError(f"h2load on {name}: {len(r.latencies_ns)} calls with status 200, "
                                       f"{r.non_200} other")
                sent += len(r.latencies_ns)
                rounds[name].append(percentile(r.latencies_ns, 50) / 1e6)
                say(f"{clock} h2load rep {rep + 1}/{settings.reps}  {name:<24} p50 {rounds[name][-1]:.3f} ms")
    saved = counter.take()
    return H2Result(rounds, calls_checked=sent, calls_saved=saved)


def architecture_latency(samples: dict[str, list[float]], base: str, blocks: int,
                         level: float = LEVEL) -> list[ArchLatency]:
    """p50/p99 over every call of each path (ms) and their ratios to `base`; the p50 added to base's
    per block of calls (paired: block i of every path was sent at the same time), in microseconds."""
    ref = samples[base]
    ref_p50, ref_p99 = percentile(ref, 50), percentile(ref, 99)
    ref_blocks = [v * 1000 for v in block_percentiles(ref, blocks)]
    rows = []
    for name, values in samples.items():
        p50, p99 = percentile(values, 50), percentile(values, 99)
        added = None if name == base else paired_difference(
            name, [v * 1000 for v in block_percentiles(values, blocks)], base, ref_blocks, level)
        rows.append(ArchLatency(name, p50, p99, ratio(p50, ref_p50), ratio(p99, ref_p99), added))
    return rows
