"""Statistics and the table of `make bench`: percentiles, medians over repetitions, ratios.

Kept free of gRPC and processes so that the arithmetic is unit-tested on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default).

    Raises ValueError on an empty sequence: a round without a single call is a failed round.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be between 0 and 100, not {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


@dataclass(frozen=True)
class Spread:
    """One measure over several repetitions: the median, and the lowest and highest repetition."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(median(values), min(values), max(values), len(values))

    @property
    def relative_range(self) -> float:
        """(high - low) / median: how much the repetitions disagree."""
        return (self.high - self.low) / self.median if self.median else math.inf


@dataclass(frozen=True)
class PathStats:
    """What `make bench` reports for one path: latency at one call in flight, throughput under load."""

    name: str
    p50_ms: Spread
    p99_ms: Spread
    throughput: Spread | None = None  # calls/s; None when the path was not measured under load


def summarize(name: str, latency_rounds: Sequence[Sequence[int]], throughputs: Sequence[float] = ()) -> PathStats:
    """Per-repetition p50/p99 (latencies in ns), then the median and range over repetitions."""
    p50 = [percentile(r, 50) / 1e6 for r in latency_rounds]
    p99 = [percentile(r, 99) / 1e6 for r in latency_rounds]
    return PathStats(name, Spread.of(p50), Spread.of(p99), Spread.of(throughputs) if throughputs else None)


def ratio(value: float, base: float) -> float:
    return value / base if base else math.inf


def _fmt_spread(s: Spread, digits: int) -> str:
    return f"{s.median:.{digits}f} [{s.low:.{digits}f}-{s.high:.{digits}f}]"


def latency_table(rows: Sequence[PathStats], base: str, labels: dict[str, str] | None = None) -> list[str]:
    """A plain-text table: p50, p99, throughput (median [min-max]) and their ratios to `base`."""
    labels = labels or {}
    ref = next((r for r in rows if r.name == base), None)
    if ref is None:
        raise ValueError(f"no row named {base!r} to compare with")
    header = ("path", "p50 ms [min-max]", "x p50", "p99 ms [min-max]", "x p99", "calls/s [min-max]", "x calls/s")
    body: list[tuple[str, ...]] = []
    for r in rows:
        tput = _fmt_spread(r.throughput, 0) if r.throughput else "-"
        tput_x = (f"{ratio(r.throughput.median, ref.throughput.median):.2f}"
                  if r.throughput and ref.throughput else "-")
        body.append((
            labels.get(r.name, r.name),
            _fmt_spread(r.p50_ms, 3), f"{ratio(r.p50_ms.median, ref.p50_ms.median):.2f}",
            _fmt_spread(r.p99_ms, 3), f"{ratio(r.p99_ms.median, ref.p99_ms.median):.2f}",
            tput, tput_x,
        ))
    return _grid(header, body)


def throughput_table(rows: Sequence[tuple[str, Spread]], base: str) -> list[str]:
    """Scale-out: calls/s (median [min-max]) per setup and the ratio to `base`."""
    ref = dict(rows).get(base)
    if ref is None:
        raise ValueError(f"no row named {base!r} to compare with")
    body = [(name, _fmt_spread(s, 0), f"{ratio(s.median, ref.median):.2f}") for name, s in rows]
    return _grid(("setup", "calls/s [min-max]", f"x {base}"), body)


def _grid(header: tuple[str, ...], body: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in (header, *body)) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        first = row[0].ljust(widths[0])
        rest = (cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True))
        return "  ".join((first, *rest)).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(row) for row in body)]
