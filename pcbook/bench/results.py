"""The bench's results, phase by phase: what the report prints and results.json keeps."""

from __future__ import annotations

from dataclasses import dataclass, field

from pcbook.measure.stats import Difference, PathStats, Spread
from pcbook.measure.verdicts import ConnectionCount


@dataclass
class RoundRecord:
    """One measured round, for the load generator's check: which, and the CPU it took."""

    phase: str  # "latency", "load" (the hop), "scale"
    path: str
    rep: int
    cpu: dict[str, float]  # role -> cores (our processes)
    machine_busy: float | None  # cores busy machine-wide, anyone's processes


@dataclass
class HopResult:
    stats: dict[str, PathStats]
    rounds: dict[str, list[dict[str, float]]]  # per path, per repetition: p50/p99 ms, calls/s
    upstream_connections: dict[str, ConnectionCount] = field(default_factory=dict)  # path -> connections, calls
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)  # path -> role -> cores (median)
    errors: int = 0
    records: list[RoundRecord] = field(default_factory=list)
    memory: dict[str, tuple[float, int]] = field(default_factory=dict)  # proxy -> (MB resident at rest, processes)


@dataclass
class ScaleResult:
    throughput: dict[str, Spread]
    rounds: dict[str, list[float]]
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    errors: int = 0
    waiting: dict[str, list[float]] = field(default_factory=dict)  # per setup, per round: calls waiting (mean)
    service_ms: float = 0.0  # one call alone, work included: what a call costs with nothing waiting
    served: dict[str, dict[str, int]] = field(default_factory=dict)  # setup -> server -> calls in its rounds
    records: list[RoundRecord] = field(default_factory=list)


@dataclass
class ArchLatency:
    """Phase 3: one architecture's per-call latency over all its calls, and its ratios to direct's."""

    name: str
    p50_ms: float
    p99_ms: float
    x_p50: float
    x_p99: float
    added: Difference | None  # p50 minus direct's, per block of interleaved calls, in microseconds


@dataclass
class ChangeCost:
    """Phase 3: what lesson 11's story of backend changes cost one client."""

    name: str
    calls: int
    failed: dict[str, int]  # event -> calls failed around it
    register_to_first_call: float  # s; inf: server3 never got a call from this client
    redone: list[str]  # what had to be reloaded, rebuilt or reconnected, counted


@dataclass
class ArchResult:
    latency: list[ArchLatency]
    changes: list[ChangeCost]
    blocks: int
    calls: int  # per architecture, in the latency rounds
    kill_to_removal: float  # s from server2's SIGKILL to its key's expiry (the same registry for all)


@dataclass
class H2Result:
    rounds: dict[str, list[float]]  # path -> p50 ms per repetition
    calls_checked: int = 0  # calls h2load saw answered with HTTP 200 in its windows
    calls_saved: int = 0  # laptops the server saved meanwhile (warm-ups included): >= calls_checked
