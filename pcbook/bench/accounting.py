"""Accounting: the TCP connections opened to a port (from /proc/net/tcp), the calls a server logged, the
CPU a round took, the run's clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pcbook.measure.stats import Spread
from pcbook.stack.ports import tcp_sockets

_TIME_WAIT = "06"  # the state column of /proc/net/tcp


def peer_ports(port: int) -> dict[int, float | None]:
    """Ephemeral port -> seconds left in TIME_WAIT (0.0: past its timer, not yet reaped by the kernel), or
    None for a connection in any other state (but LISTEN), of the TCP connections to local `port` (Linux
    only). Both ends of a loopback connection have the same ephemeral port: an end in use counts first.

    A connection closed by nginx stays in TIME_WAIT for a minute, so comparing two snapshots counts
    the connections opened in between: see opened_between.
    """
    peers: dict[int, float | None] = {}
    for sock in tcp_sockets():
        if sock.state == "0A":
            continue
        if sock.remote_port == port:
            peer = sock.local_port
        elif sock.local_port == port:
            peer = sock.remote_port
        else:
            continue
        left = sock.time_wait_left if sock.state == _TIME_WAIT else None
        if peer not in peers or left is None:
            peers[peer] = left
        elif peers[peer] is not None:
            peers[peer] = max(peers[peer], left)
    return peers


def opened_between(before: dict[int, float | None], after: dict[int, float | None], elapsed: float) -> int:
    """Connections opened between two peer_ports() snapshots, `elapsed` the seconds from the end of the first
    read to the start of the second: no socket's two readings can be closer in time than that.

    A new port is a new connection. So is a port that was in TIME_WAIT before and is again in use, or in
    a TIME_WAIT that ends later than the old one would have: on loopback Linux reuses a TIME_WAIT port
    for a new connection to the same address (net.ipv4.tcp_tw_reuse), which a set of ports alone misses
    (measured: 119 of 133 connections seen after earlier rounds had left TIME_WAIT ports behind). An old
    TIME_WAIT that ran out in between may still be listed, its timer at 0: the same connection, not a new
    one (a lesson 10 run right after three others counted 314 connections for 217 calls that way).
    """
    opened = 0
    for peer, left in after.items():
        if peer not in before:
            opened += 1
            continue
        was = before[peer]
        if was is None:
            continue  # in use before: the same connection, or one that closed and is in TIME_WAIT now
        # The old socket's timer runs down with the clock (to 0, and it may linger there a moment), by at
        # least `elapsed`; a reused port's starts afresh.
        if left is None or left > max(was - elapsed, 0.0) + 0.05:
            opened += 1
    return opened


T = TypeVar("T")


def opened_during(port: int, action: Callable[[], T]) -> tuple[int, T]:
    """The connections to local `port` opened while `action` ran, and what it returned.

    The clock runs from the end of the first /proc/net/tcp read to the start of the second: reading one
    takes tens of ms on a busy machine, so a socket read late in the first and early in the second is only
    that far apart, and with a longer span its old TIME_WAIT timer looked reused (beside three CPU hogs:
    174 connections counted for 131 calls, each false one 0.005-0.06 s over the span's expectation)."""
    before = peer_ports(port)
    t1 = time.monotonic()
    result = action()
    elapsed = time.monotonic() - t1
    return opened_between(before, peer_ports(port), elapsed), result


class Clock:
    """Seconds since the run started, as a log prefix."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __str__(self) -> str:
        return f"[{time.monotonic() - self.t0:5.1f}s]"


def median_cpu(samples: list[dict[str, float]]) -> dict[str, float]:
    roles = {role for s in samples for role in s}
    return {role: Spread.of([s[role] for s in samples if role in s]).median for role in sorted(roles)}


class LogCounter:
    """Counts a server's "saved laptop" lines (one per CreateLaptop it served) appended to its log file."""

    MARK = b"saved laptop with id"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def take(self) -> int:
        """Lines since the last take() (or since the counter was made)."""
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return 0
        end = chunk.rfind(b"\n") + 1  # a line still being written is counted next time
        self.offset += end
        return chunk[:end].count(self.MARK)


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (Linux /proc: each thread's `children` file), `pid` first; [] if it is gone."""
    if not Path(f"/proc/{pid}").exists():
        return []
    found, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo += [int(child) for child in task.read_text().split()]
            except OSError:
                continue
    return found


def resident_kb(pid: int) -> int:
    """VmRSS of one process in kB (0 if it is gone or /proc cannot say)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def memory_at_rest(pid: int) -> tuple[float, int]:
    """(MB resident, processes) of `pid`'s tree, summed: nginx's master and its worker, HAProxy's one process.
    Pages the processes share (the binary's code) count once per process, as `ps` shows them."""
    tree = process_tree(pid)
    return sum(resident_kb(p) for p in tree) / 1024, len(tree)
