"""Which processes this test process is answerable for.

Leak checks look at the whole process table, where other test workers (`make test` runs several), a
developer's own `make server1` and other checkouts also run pcbook. A process is this test process's
when it descends from it, or when it was orphaned (re-parented to init): what a leak looks like once
the lesson that started it has ended.
"""

from __future__ import annotations

import os
from pathlib import Path


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def ours(pid: int) -> bool:
    """`pid` descends from this process, or is an orphan (parent 1)."""
    me = os.getpid()
    parent = _ppid(pid)
    if parent == 1:
        return True
    for _ in range(64):  # bounded: a process tree is not deeper than this
        if parent is None or parent <= 1:
            return False
        if parent == me:
            return True
        parent = _ppid(parent)
    return False
