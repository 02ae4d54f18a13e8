"""What a step measured, typed: the same objects feed the judges, the notebooks' charts and the tests."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from pcbook.measure import verdicts
from pcbook.measure.stats import Difference


@dataclass(frozen=True)
class Call:
    """One call as the client saw it, and which server(s) logged it."""

    number: int  # 1-based, in the order the calls were started
    code: str  # grpc.StatusCode name: OK, UNAVAILABLE, ...
    details: str = ""
    start: float = 0.0  # seconds, relative to the run's origin (see Calls.origin)
    servers: tuple[str, ...] = ()  # empty: no server logged it; two: it ran twice
    upstream: str | None = None  # the backend(s) nginx tried, from lesson 8's access log

    @property
    def ok(self) -> bool:
        return self.code == "OK"

    @property
    def server(self) -> str:
        return self.servers[0] if self.servers else "none"

    def said(self) -> str:
        return "OK" if self.ok else f"{self.code}: {self.details}"


@dataclass(frozen=True)
class Mark:
    """A moment of a run on the calls' clock: a kill, a health change."""

    label: str
    at: float


@dataclass(frozen=True)
class Calls:
    """Every call of a load-driver run."""

    calls: tuple[Call, ...]
    servers: tuple[str, ...]  # the servers of the step, in order
    login_error: str = ""  # the first Login failed and no call was sent: its status and details
    marks: tuple[Mark, ...] = ()
    origin: str = "the first call"  # what start = 0 is
    login_s: float = 0.0  # how long the driver's Login took (until its answer or failure)

    def codes(self) -> Counter[str]:
        return Counter(c.code for c in self.calls)

    def failed(self) -> list[Call]:
        return [c for c in self.calls if not c.ok]

    def counts(self, calls: Sequence[Call] | None = None) -> Counts:
        """Calls per server (of `calls`, default all); a call no server logged counts for none."""
        per = dict.fromkeys(self.servers, 0)
        for call in self.calls if calls is None else calls:
            for server in call.servers:
                per[server] = per.get(server, 0) + 1
        return Counts(per)

    def mark(self, label: str) -> float:
        return next(m.at for m in self.marks if m.label == label)


@dataclass(frozen=True)
class Counts:
    """Calls per backend."""

    per_server: dict[str, int]

    def used(self) -> list[str]:
        return [name for name, n in self.per_server.items() if n]

    def __str__(self) -> str:
        return ", ".join(f"{name} {n}" for name, n in self.per_server.items())


@dataclass(frozen=True)
class Phases:
    """Lesson 7's health step: the run, and calls per server in each health phase."""

    run: Calls
    phases: dict[str, Counts]  # "serving", "not serving", "serving again"
    judged: dict[str, int]  # phase -> how many calls started in it (the moments after a change excluded)


@dataclass(frozen=True)
class Latency:
    """The same call on several paths: median and p90, ms."""

    median_ms: dict[str, float]
    p90_ms: dict[str, float]
    calls: int = 0
    error: str = ""  # the measurement failed: its last line
    samples_ms: dict[str, list[float]] = field(default_factory=dict)  # every measured call, interleaved
    # Each path minus "direct", call i against call i, in microseconds, with the interval of the median.
    minus_direct_us: dict[str, Difference] = field(default_factory=dict)


@dataclass(frozen=True)
class NginxRun:
    """A driver run through nginx, with what nginx logged about it (lesson 8)."""

    run: Calls
    error_lines: tuple[str, ...] = ()  # nginx's error-log lines that matter to the step
    login: str | None = None  # what the driver's Login saw when it could not log in (status: details)
    requests: int = 0  # requests nginx logged (Login included)
    attempts_on_dead_server: int = 0
    temporarily_disabled: bool = False
    outage_s: float | None = None  # from the kill until the first call that succeeded again

    def seen(self) -> list[str]:
        return sorted({c.said() for c in self.run.calls})


@dataclass(frozen=True)
class ProbeRun:
    """One run of the stream probe (lesson 9): its output and what the servers and nginx logged."""

    ok: bool
    returncode: int | None
    lines: tuple[str, ...]
    calls: tuple[tuple[str, str], ...] = ()  # (server, method) from the servers' interceptor lines
    access: tuple[str, ...] = ()  # nginx's access-log lines of this run
    errors: tuple[str, ...] = ()  # nginx's error-log lines of this run
    port: int = 0
    servers: tuple[str, ...] = ()  # the step's servers, in order

    def said(self, name: str) -> str | None:
        """The probe's verdict on `name` ('ok ...' or 'failed ...'), or None."""
        for line in self.lines:
            m = re.search(rf"result: {name} (.*)$", line)
            if m:
                return m.group(1)
        return None

    def counts(self) -> Counts:
        per = dict.fromkeys(self.servers, 0)
        for server, _ in self.calls:
            per[server] = per.get(server, 0) + 1
        return Counts(per)


@dataclass(frozen=True)
class Rounds:
    """A measurement repeated in rounds: one value per round and path (lesson 10)."""

    unit: str  # "ms" (p50 latency) or "calls/s"
    per_path: dict[str, list[float]]
    ratio: float  # the judged ratio of two paths' medians
    capacity: float | None = None  # calls/s one server can do, for scale-out
    p99_ms: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Connections:
    """Backend connections nginx opened for how many calls, per path (lesson 10)."""

    opened: dict[str, int]
    calls: dict[str, int]
    skipped: str = ""  # why nothing was counted (no /proc/net/tcp)
    rounds: dict[str, int] = field(default_factory=dict)  # the rounds the calls were made in


@dataclass(frozen=True)
class HopRun:
    """Lesson 10's hop: p50 per round and path, and what the judge reads (calls logged, time added)."""

    rounds: Rounds
    evidence: verdicts.HopEvidence


@dataclass(frozen=True)
class ScaleRun:
    """Lesson 10's scale-out: calls/s per round and setup, and what the judge reads."""

    rounds: Rounds
    evidence: verdicts.ScaleEvidence
    waiting: dict[str, list[float]]  # setup -> calls waiting per round
    served: dict[str, dict[str, int]]  # setup -> server -> calls it served


@dataclass(frozen=True)
class Discovered:
    """Lessons 11-12: a run whose backends came from the registry, with the story's events as marks."""

    path: str  # "thick client", "nginx + nginx_sync", "xDS"
    run: Calls
    phases: dict[str, Counts]  # "two", "joined", "left", "killed" (or a step's own phases)
    register_to_first_call: float | None = None  # s; inf: the new server never got a call
    kill_to_removal: float | None = None  # s from a SIGKILL to the registry's DELETE (the lease's expiry)
    failed: dict[str, int] = field(default_factory=dict)  # event -> calls that failed around it
    share: dict[str, float] = field(default_factory=dict)  # server -> share of the measured calls
    notes: dict[str, float] = field(default_factory=dict)  # other measured figures: times in s, counts
    upstream_lists: tuple[str, ...] = ()  # nginx + nginx_sync: upstream.conf as nginx started, and at the end


@dataclass(frozen=True)
class Joined:
    """Lesson 14: a load run during which a server joined, with each server's calls per second."""

    run: Calls
    joined: float  # when the new server was serving, s on the run's clock
    per_second: tuple[dict[str, int], ...]  # second i of the run (calls that started in it) -> calls per server

    def share(self, server: str, second: int) -> float:
        counts = self.per_second[second]
        total = sum(counts.values())
        return counts.get(server, 0) / total if total else 0.0

    def shares(self, server: str) -> list[float]:
        return [round(self.share(server, i), 3) for i in range(len(self.per_second))]


@dataclass(frozen=True)
class ProxyRun:
    """Lesson 13: a driver run through Envoy or nginx, with what the proxy logged and counted."""

    proxy: str  # "envoy" or "nginx"
    run: Calls
    upstreams: dict[int, str] = field(default_factory=dict)  # call number -> the backend(s) the proxy tried
    attempts: dict[int, int] = field(default_factory=dict)  # call number -> tries (Envoy's access log)
    lost: int = 0  # calls that failed
    after_change: int = 0  # calls the flipped server received after its health changed (or it was removed)
    removed_after: float | None = None  # s from NOT_SERVING until /clusters showed it failing its check
    health_flags: str = ""  # the flipped server's health_flags on Envoy's /clusters after the change
