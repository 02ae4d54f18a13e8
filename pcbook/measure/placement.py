"""Where the bench's processes run: servers, nginx and the load generator on separate cores.

On two cores, free placement lets the scheduler put the load generator and the server it loads on
the same core now and then; measured on the workbook's machine, that halved the load generator's
throughput and inflated the hop. A child process inherits the CPU affinity of the thread that
starts it, so `pinned()` sets the starting thread's affinity around `Stack.start` and restores it:
no wrapper process, and nginx's workers and gRPC's threads inherit it too.

Where the OS has no `sched_setaffinity` (macOS) or a single core is available, the plan is free
placement, and says why.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pcbook.stack.procs import on_cpus

SERVERS = "servers"
NGINX = "nginx"
LOADGEN = "loadgen"
ROLES = (SERVERS, NGINX, LOADGEN)


@dataclass(frozen=True)
class Placement:
    """The cores of each role; empty for every role means free placement (`note` says why)."""

    cores: dict[str, frozenset[int]] = field(default_factory=dict)
    note: str = ""

    @property
    def pinned(self) -> bool:
        return bool(self.cores)

    def of(self, role: str) -> frozenset[int] | None:
        return self.cores.get(role) if self.cores else None

    def describe(self) -> str:
        if not self.pinned:
            return f"free placement ({self.note})" if self.note else "free placement"
        parts = [f"{role} on {_cpus(self.cores[role])}" for role in ROLES if role in self.cores]
        return "pinned: " + ", ".join(parts) + (f" ({self.note})" if self.note else "")


def _cpus(cpus: frozenset[int]) -> str:
    return ("core " if len(cpus) == 1 else "cores ") + ",".join(map(str, sorted(cpus)))


def available() -> frozenset[int] | None:
    """The cores this process may run on, or None where the OS cannot tell or pin."""
    if not hasattr(os, "sched_getaffinity") or not hasattr(os, "sched_setaffinity"):
        return None
    try:
        return frozenset(os.sched_getaffinity(0))
    except OSError:
        return None


def plan(cpus: frozenset[int] | None, *, free: bool = False) -> Placement:
    """Split `cpus` between the roles (pure: no process is touched).

    Three or more cores: the servers on the first, nginx on the second, the load generator on the
    rest. Two: the servers alone on one; nginx and the load generator share the other (with one call
    in flight they take turns: the load generator waits while nginx works). One, or no affinity
    support: free placement.
    """
    if free:
        return Placement(note="asked for with --free-placement")
    if cpus is None:
        return Placement(note="this OS has no sched_setaffinity")
    ordered = sorted(cpus)
    if len(ordered) < 2:
        return Placement(note=f"only {len(ordered)} core available")
    if len(ordered) == 2:
        return Placement({SERVERS: frozenset(ordered[:1]), NGINX: frozenset(ordered[1:]),
                          LOADGEN: frozenset(ordered[1:])}, note="2 cores: nginx shares the load generator's")
    return Placement({SERVERS: frozenset(ordered[:1]), NGINX: frozenset(ordered[1:2]),
                      LOADGEN: frozenset(ordered[2:])})


@contextmanager
def pinned(placement: Placement, role: str) -> Iterator[None]:
    """Processes started inside run on `role`'s cores (inherited from this thread); restored after."""
    with on_cpus(placement.of(role)):
        yield


def affinity_of(pid: int) -> frozenset[int] | None:
    """The cores `pid` may run on (to check that a placement took), or None if unknown."""
    try:
        return frozenset(os.sched_getaffinity(pid))
    except (OSError, AttributeError):
        return None
