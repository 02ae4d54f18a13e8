"""The report's tables and verdicts, as lines: the hop, the comparisons, h2load, scale-out, the three
architectures, the load generator's check and the targets."""

from __future__ import annotations

from collections.abc import Sequence

from pcbook.bench.phases import added_latency, added_throughput
from pcbook.bench.results import ArchResult, H2Result, HopResult, RoundRecord, ScaleResult
from pcbook.bench.settings import (
    ARCH_LABELS,
    CLIENT_RR,
    COMPARISONS,
    DIRECT,
    LABELS,
    LEVEL,
    LOADGEN_BUSY,
    MACHINE_BUSY,
    NGINX_KEEPALIVE,
    NGINX_PLAIN,
    NGINX_TWO,
    NOISE,
    ONE,
    RR_TWO,
    SCALE_COMPARISONS,
    SERVERS_OF,
    TARGET_HOP,
    TARGET_SCALE,
    Settings,
)
from pcbook.measure.stats import Difference, PathStats, Spread, grid, paired_difference, ratio


def targets_met(hop: dict[str, PathStats], scale: dict[str, Spread],
                rr_vs_nginx: Difference | None = None) -> list[tuple[str, bool, str]]:
    """(target, met, the numbers behind it) for the three targets of issue 7, on this machine."""
    out: list[tuple[str, bool, str]] = []
    direct, keep = hop.get(DIRECT), hop.get(NGINX_KEEPALIVE) or hop.get(NGINX_PLAIN)
    if direct and keep:
        x = ratio(keep.p50_ms.median, direct.p50_ms.median)
        out.append((f"nginx with keepalive within {TARGET_HOP}x of direct p50", x <= TARGET_HOP,
                    f"{keep.name} p50 {keep.p50_ms.median:.3f} ms = {x:.2f}x direct"))
    if ONE in scale and NGINX_TWO in scale:
        x = ratio(scale[NGINX_TWO].median, scale[ONE].median)
        out.append((f"two servers behind nginx >= {TARGET_SCALE}x one server", x >= TARGET_SCALE,
                    f"{scale[NGINX_TWO].median:.0f} vs {scale[ONE].median:.0f} calls/s = {x:.2f}x"))
    rr, plain = hop.get(CLIENT_RR), hop.get(NGINX_PLAIN)
    if rr and plain and RR_TWO in scale and NGINX_TWO in scale:
        if rr_vs_nginx is not None:  # not slower: either resolved faster, or not told apart
            lat_ok = not (rr_vs_nginx.resolved and rr_vs_nginx.interval.median > 0)
            lat = f"client RR - nginx p50 {rr_vs_nginx.verdict()}"
        else:
            lat_ok = rr.p50_ms.median <= plain.p50_ms.median * (1 + NOISE)
            lat = f"p50 {rr.p50_ms.median:.3f} vs {plain.p50_ms.median:.3f} ms"
        tput_ok = scale[RR_TWO].median >= scale[NGINX_TWO].median * (1 - NOISE)
        out.append((f"client-side RR at least as good as nginx (latency not resolved slower; scale-out within "
                    f"{NOISE:.0%})", lat_ok and tput_ok,
                    f"{lat}; {scale[RR_TWO].median:.0f} vs {scale[NGINX_TWO].median:.0f} calls/s"))
    return out


def hop_table(hop: HopResult, labels: dict[str, str], level: float = LEVEL) -> list[str]:
    """p50 and the time added to direct's with its interval, the ratio, p99, calls/s."""
    base = hop.stats[DIRECT]
    header = ("path", "p50 ms", f"added us [{level:.0%} interval]", "", "width us", "x p50", "p99 ms [min-max]",
              "calls/s", "x calls/s")
    body: list[tuple[str, ...]] = []
    for name, row in hop.stats.items():
        if name == DIRECT:
            added, state, width = "(baseline)", "", ""
        else:
            d = added_latency(hop, name, DIRECT, level)
            added, state = d.short(), d.state(more="resolved", less="resolved: faster")
            width = f"{d.interval.width:.0f}"
        tput = f"{row.throughput.median:.0f}" if row.throughput else "-"
        tput_x = (f"{ratio(row.throughput.median, base.throughput.median):.2f}"
                  if row.throughput and base.throughput else "-")
        body.append((labels.get(name, name), f"{row.p50_ms.median:.3f}", added, state.ljust(12), width,
                     f"{ratio(row.p50_ms.median, base.p50_ms.median):.2f}",
                     f"{row.p99_ms.median:.3f} [{row.p99_ms.low:.3f}-{row.p99_ms.high:.3f}]", tput, tput_x))
    return grid(header, body)


def resolving_power(hop: HopResult, level: float = LEVEL) -> str:
    """What the hop table could tell apart, from its intervals' widths: a row is resolved only when its
    median lies further from 0 than from its interval's nearer bound, about half the interval's width."""
    widths = sorted(added_latency(hop, n, DIRECT, level).interval.width for n in hop.stats if n != DIRECT)
    if not widths:
        return ""
    mid = widths[len(widths) // 2]
    return (f"   resolving power: the intervals are {widths[0]:.0f} to {widths[-1]:.0f} us wide (median {mid:.0f}); "
            "a row is resolved only if its median is further from 0 than from its interval's nearer bound, about "
            f"half its width: on this run a difference from direct under about {mid / 2:.0f} us is not resolved")


def comparison_lines(hop: HopResult, labels: dict[str, str], level: float = LEVEL) -> list[str]:
    """Each compared pair: the p50 difference and the calls/s difference, resolved or not."""
    header = ("what differs", "paths", "p50 us [interval]", "", "calls/s [interval]", "")
    body = []
    for name, base, what in COMPARISONS:
        if name not in hop.rounds or base not in hop.rounds:
            continue
        lat = added_latency(hop, name, base, level)
        tput = added_throughput(hop, name, base, level)
        body.append((what, f"{name} - {base}", lat.short(), lat.state().ljust(12),
                     tput.short() if tput else "-", tput.state("more", "fewer").ljust(12) if tput else ""))
    return grid(header, body) if body else []


def load_generator_lines(records: Sequence[RoundRecord], processes: int, cores: int) -> list[str]:
    """The load generator's check over every round: its own CPU per process, and the whole machine's."""
    if not records:
        return []
    if not any("loadgen" in r.cpu for r in records):
        return ["(CPU use unknown: the processes could not be read)"]
    per_process = [(r.cpu.get("loadgen", 0.0) / processes, r) for r in records]
    worst, at = max(per_process, key=lambda x: x[0])
    busy = [r for share, r in per_process if share > LOADGEN_BUSY]
    lines = [f"load generator: at most {worst:.0%} of a core per process over all {len(records)} rounds "
             f"(highest: {at.phase} round of {at.path}, rep {at.rep + 1})"
             + (": not the bottleneck" if not busy else
                f"; {len(busy)} rounds above {LOADGEN_BUSY:.0%}: their load may have been limited by the "
                f"load generator ({', '.join(sorted({f'{r.phase} {r.path}' for r in busy}))})")]
    ours = [(sum(r.cpu.values()), r) for r in records]
    machine = [(r.machine_busy, r) for r in records if r.machine_busy is not None]
    full = [r for busy_cores, r in machine if busy_cores > MACHINE_BUSY * cores]
    top_ours = max(v for v, _ in ours)
    line = f"CPU: our processes used at most {top_ours:.2f} of {cores} cores in a round"
    if machine:
        line += f"; the whole machine (anyone's processes) at most {min(cores, max(v for v, _ in machine)):.2f}"
        if full:
            phases = sorted({r.phase for r in full})
            line += (f"; {len(full)} rounds ({', '.join(phases)}) had more than {MACHINE_BUSY:.0%} of the cores "
                     "busy: their calls/s measure the machine, not the path")
        else:
            line += ": no round was CPU-bound"
    lines.append(line)
    return lines


def scale_lines(scale: ScaleResult, settings: Settings, level: float = LEVEL) -> list[str]:
    lines = [f"one call alone takes {scale.service_ms:.1f} ms (the {settings.work_ms} ms sleep included); "
             "under load, calls waiting = calls/s x (mean latency - that)"]
    for name, waits in scale.waiting.items():
        per_server = Spread.of(waits).median / SERVERS_OF.get(name, 1)
        served = scale.served.get(name, {})
        by_server = ", ".join(f"{srv} {n}" for srv, n in served.items()) if served else ""
        lines.append(f"{name}: {per_server:.1f} calls waiting per server "
                     + ("(saturated)" if per_server >= 1 else "(NOT saturated: more calls in flight needed)")
                     + (f"; calls served: {by_server}" if by_server else ""))
    for name, base in SCALE_COMPARISONS:
        if name in scale.rounds and base in scale.rounds:
            d = paired_difference(name, scale.rounds[name], base, scale.rounds[base], level)
            lines.append(f"{name} - {base}: calls/s {d.short()}: {d.state('more', 'fewer')}")
    return lines


def h2_lines(h2: H2Result | None, hop: HopResult, note: str, level: float = LEVEL) -> list[str]:
    if h2 is None:
        return [f"h2load cross-check: {note}"]
    header = ("path", "h2load p50 ms", "python p50 ms", "the Python client's share")
    body = []
    for name, values in h2.rounds.items():
        native = Spread.of(values).median
        python = hop.stats[name].p50_ms.median
        body.append((LABELS.get(name, name), f"{native:.3f}", f"{python:.3f}", f"{(python - native) * 1000:.0f} us"))
    lines = grid(header, body)
    base, *others = list(h2.rounds)
    for name in others:  # nginx's hop, and each peer proxy's
        d = paired_difference(name, [v * 1000 for v in h2.rounds[name]],
                              base, [v * 1000 for v in h2.rounds[base]], level)
        py = added_latency(hop, name, base, level)
        lines.append(f"   the hop ({name} - {base}, p50 us) measured by h2load: {d.short()} {d.state()}; "
                     f"by the Python generator: {py.short()} {py.state()}")
    lines.append(f"   every h2load call answered: {h2.calls_checked} with HTTP 200, {h2.calls_saved} laptops saved "
                 "by server1 meanwhile (warm-ups included)"
                 + ("" if h2.calls_saved >= h2.calls_checked else ": FEWER saved than answered, check the token"))
    return lines


def architecture_lines(arch: ArchResult, level: float = LEVEL) -> list[str]:
    """Phase 3's two tables: latency as ratios to direct, and what the story's changes cost each client."""
    header = ("path", "p50 ms", "x p50", "p99 ms", "x p99", f"added us [{level:.0%} interval]", "")
    body = []
    for row in arch.latency:
        added, state = (("(baseline)", "") if row.added is None else
                        (row.added.short(), row.added.state(more="resolved", less="resolved: faster")))
        body.append((ARCH_LABELS.get(row.name, row.name), f"{row.p50_ms:.3f}", f"{row.x_p50:.2f}",
                     f"{row.p99_ms:.3f}", f"{row.x_p99:.2f}", added, state))
    lines = grid(header, body)
    lines.append("")
    header = ("client", "calls", "lost: join / graceful stop / kill", "registration to server3's 1st call")
    body = []
    for c in arch.changes:
        first = f"{c.register_to_first_call:.3f} s" if c.register_to_first_call < float("inf") else "never"
        body.append((_kind(c.name), str(c.calls),
                     " / ".join(str(c.failed.get(k, 0)) for k in ("join", "graceful stop", "kill")), first))
    lines += grid(header, body)
    lines.append(f"server2's key left the registry {arch.kill_to_removal:.2f} s after its SIGKILL (its lease's TTL), "
                 "the same registry for all three")
    lines.append("what the three changes (a join, a graceful stop, a lease's expiry) took:")
    lines += [f"  {_kind(c.name)}: {'; '.join(c.redone)}" for c in arch.changes]
    return lines


def _kind(name: str) -> str:
    return ARCH_LABELS.get(name, name).split(":")[0]


def memory_lines(memory: dict[str, tuple[float, int]], labels: dict[str, str]) -> list[str]:
    """Each proxy's resident memory at rest (started, no call yet), its processes summed."""
    if not memory:
        return ["(memory unknown: needs Linux's /proc)"]
    header = ("proxy", "RSS MB at rest", "processes")
    body = [(labels.get(name, name).split(",")[0], f"{mb:.1f}", str(count)) for name, (mb, count) in memory.items()]
    return grid(header, body)
