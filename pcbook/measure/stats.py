"""Statistics and the table of `make bench`: percentiles, medians over repetitions, ratios.

Kept free of gRPC and processes so that the arithmetic is unit-tested on its own. Not `statistics`: its
median and quantiles differ from numpy's linear rule used here in the last digits (measured), and
quantiles takes whole-number cut points of two or more values; not scipy.stats: ~1 s to import.
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
    return grid(header, body)


def throughput_table(rows: Sequence[tuple[str, Spread]], base: str) -> list[str]:
    """Scale-out: calls/s (median [min-max]) per setup and the ratio to `base`."""
    ref = dict(rows).get(base)
    if ref is None:
        raise ValueError(f"no row named {base!r} to compare with")
    body = [(name, _fmt_spread(s, 0), f"{ratio(s.median, ref.median):.2f}") for name, s in rows]
    return grid(("setup", "calls/s [min-max]", f"x {base}"), body)


def grid(header: tuple[str, ...], body: Sequence[tuple[str, ...]]) -> list[str]:
    """A table as lines: the first column left-aligned, the others right-aligned, a rule under the header."""
    widths = [max(len(row[i]) for row in (header, *body)) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        first = row[0].ljust(widths[0])
        rest = (cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True))
        return "  ".join((first, *rest)).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(row) for row in body)]


# --- resolution: intervals of the median, paired differences, balanced orders -------------------------

def _binom_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n


@dataclass(frozen=True)
class Interval:
    """A distribution-free confidence interval of a median: [low, high] at `coverage` (exact)."""

    median: float
    low: float
    high: float
    coverage: float  # the interval's exact coverage, 0..1 (binomial, no distribution assumed)
    n: int

    def clear_of_zero(self, margin: float) -> bool:
        """Both bounds on one side of 0, the nearer at least `margin` from it: a bound of -0.3 shown as
        "+0" touches 0 (margin 0.5), and an interval that touches 0 does not exclude it."""
        return self.low >= margin or self.high <= -margin

    @property
    def width(self) -> float:
        return self.high - self.low


def median_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """The median and the order-statistic interval [x(k), x(n+1-k)] for the largest k whose coverage,
    1 - 2 P(Bin(n, 1/2) <= k-1), still reaches `level` (the sign-test interval: no distribution assumed).

    With fewer values than that needs (n < 6 at 95 %), the interval is the whole range and its coverage
    is what it is (94 % for 5 values, 75 % for 3): `coverage` says so, and the caller must not call
    a difference resolved on it.
    """
    if not values:
        raise ValueError("interval of no values")
    ordered = sorted(values)
    n = len(ordered)
    k = 1
    while k + 1 <= n // 2 and 1 - 2 * _binom_cdf_half(k, n) >= level:
        k += 1
    coverage = 1 - 2 * _binom_cdf_half(k - 1, n)
    return Interval(median(ordered), ordered[k - 1], ordered[n - k], coverage, n)


@dataclass(frozen=True)
class Difference:
    """`name` minus `base`, paired by repetition (same moment of the machine), with an interval."""

    name: str
    base: str
    interval: Interval  # of the per-repetition differences, in the unit of the values
    level: float = 0.95
    # The step the values are shown in (1 us, 1 call/s: short() prints whole units): a bound nearer 0 than
    # half of it is printed "+0" or "-0" and touches 0.
    step: float = 1.0

    @property
    def clear_of_zero(self) -> bool:
        return self.interval.clear_of_zero(self.step / 2)

    @property
    def resolved(self) -> bool:
        """The interval excludes 0, not touching it, at the level asked for: the run tells the two apart."""
        return self.interval.coverage >= self.level and self.clear_of_zero

    def short(self, digits: int = 0) -> str:
        i = self.interval

        def f(x: float) -> str:
            return f"{round(x, digits) + 0.0:+.{digits}f}"  # + 0.0: no "-0"

        return f"{f(i.median)} [{f(i.low)}, {f(i.high)}]"

    def state(self, more: str = "slower", less: str = "faster") -> str:
        """'slower'/'faster' (resolved), 'not resolved', or 'too few repetitions' for the level."""
        if self.interval.coverage < self.level:
            return f"not resolved ({self.interval.n} reps: {self.interval.coverage:.0%} interval)"
        if not self.clear_of_zero:
            return "not resolved"
        return more if self.interval.median > 0 else less

    def verdict(self, unit: str = "us", more: str = "slower", less: str = "faster") -> str:
        i = self.interval
        shown = f"{i.median:+.0f} {unit} [{i.low:+.0f} .. {i.high:+.0f}]"
        if not self.resolved:
            why = "" if i.coverage >= self.level else f", only {i.coverage:.0%} coverage with {i.n} repetitions"
            return f"{shown}: not resolved{why}"
        return f"{shown}: {more if i.median > 0 else less}"


def paired_difference(name: str, values: Sequence[float], base: str, base_values: Sequence[float],
                      level: float = 0.95) -> Difference:
    """Differences value[i] - base[i] of the same repetition, and the interval of their median."""
    if len(values) != len(base_values):
        raise ValueError(f"{name} has {len(values)} repetitions, {base} has {len(base_values)}")
    diffs = [a - b for a, b in zip(values, base_values, strict=True)]
    return Difference(name, base, median_interval(diffs, level), level)


def balanced_orders(names: Sequence[str], reps: int) -> list[list[str]]:
    """`reps` visiting orders in which every path follows every other path equally often.

    A Williams design: for an even number of paths, n rows of a balanced Latin square; for an odd
    number, those rows and their mirror images (2n rows). A plain rotation keeps the cyclic order, so
    one path would always follow the same other one (and, say, its TIME_WAIT sockets). With fewer
    repetitions than rows, the balance is partial; the rows repeat after a full square.
    """
    n = len(names)
    if n == 0:
        return [[] for _ in range(reps)]
    first = [0]
    low, high = 1, n - 1
    while len(first) < n:
        first.append(low)
        low += 1
        if len(first) < n:
            first.append(high)
            high -= 1
    rows = [[(x + i) % n for x in first] for i in range(n)]
    if n % 2:
        rows += [row[::-1] for row in rows]
    return [[names[j] for j in rows[r % len(rows)]] for r in range(reps)]


def block_percentiles(values: Sequence[float], blocks: int, q: float = 50) -> list[float]:
    """The q-th percentile of each of `blocks` consecutive slices of `values` (sizes differ by one at most).

    Calls interleaved over several paths, cut into the same blocks for each path, give per-block values
    that felt the same moment of the machine: paired repetitions for paired_difference."""
    if blocks < 1 or len(values) < blocks:
        raise ValueError(f"cannot cut {len(values)} values into {blocks} blocks")
    size, extra = divmod(len(values), blocks)
    out, start = [], 0
    for i in range(blocks):
        end = start + size + (1 if i < extra else 0)
        out.append(percentile(values[start:end], q))
        start = end
    return out


def queued_calls(throughput: float, mean_latency_s: float, service_s: float) -> float:
    """Calls waiting on average (Little's law): throughput x (time in system - time in service).

    A server with more calls waiting than zero is saturated: its workers never run dry.
    """
    return max(0.0, throughput * (mean_latency_s - service_s))
