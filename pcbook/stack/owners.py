"""Which processes this checkout started, so that `make stop` stops those and nothing else.

A process is this checkout's when it runs pcbook (`python -m pcbook.<module>`), nginx, etcd or HAProxy, and its
working folder is inside this checkout or its run folder (RUN_DIR): every process the runner starts
inherits the checkout as its folder (nginx runs in its prefix folder under RUN_DIR), and `make server1`
runs from the checkout. The lessons of another checkout on the same machine, or another user's, run
from their own folders and are left alone. Linux only (/proc); elsewhere nothing is found.
Not psutil: the same on Linux (measured) for 5 fewer lines, but ~15 ms more to import and twice the CPU per scan.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pcbook import paths

from .ports import process_command

# The lesson CLI (`python -m pcbook.workbook`) is the learner's own terminal: `make stop` leaves it.
_CLI = "-m pcbook.workbook"
# Ports in the lessons' nginx configs: `listen 8080`, `listen 127.0.0.1:8091`, `server 0.0.0.0:50051`.
_CONF_PORT = re.compile(r"^\s*(?:listen\s+(?:[\d.]+:)?|server\s+[\d.]+:)(\d+)\b", re.MULTILINE)


@dataclass(frozen=True)
class PcbookProcess:
    pid: int
    command: str
    ours: bool | None  # None: its folder cannot be read (another user's process)


def _inside(path: str, folders: tuple[Path, ...]) -> bool:
    p = Path(path)
    return any(p == f or f in p.parents for f in folders)


def _folders() -> tuple[Path, ...]:
    return tuple({paths.ROOT.resolve(), paths.RUN_DIR.resolve()})


def started_here(pid: int) -> bool | None:
    """Does `pid` work inside this checkout (or its run folder)? None if that cannot be read."""
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except PermissionError:
        return None
    except OSError:
        return False
    return _inside(cwd, _folders())


def _is_pcbook(command: str) -> bool:
    if "-m pcbook." in command:
        return _CLI not in command
    # nginx rewrites its command line: "nginx: master process /path/nginx -p ...", "nginx: worker process".
    # etcd (lessons 11-12) runs as its own binary, with its data folder under RUN_DIR; so does the bench's
    # HAProxy, with its config there.
    return command.startswith("nginx:") or Path(command.split(" ", 1)[0]).name in ("nginx", "etcd", "haproxy")


def _ours(pid: int, command: str) -> bool | None:
    # nginx names its prefix folder (under RUN_DIR) on its command line.
    return True if str(paths.RUN_DIR.resolve()) in command else started_here(pid)


def is_ours(pid: int) -> bool:
    """Would `make stop` stop `pid`: pcbook or nginx, started from this checkout?"""
    command = process_command(pid)
    return bool(command) and _is_pcbook(command) and bool(_ours(pid, command))


def pcbook_processes() -> list[PcbookProcess]:
    """Every process on the machine that runs pcbook or nginx, and whether this checkout started it."""
    found: list[PcbookProcess] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    me = os.getpid()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        command = process_command(pid)
        if command and _is_pcbook(command):
            found.append(PcbookProcess(pid, command, _ours(pid, command)))
    return found


def leftovers() -> list[tuple[int, str]]:
    """(pid, command) of the pcbook processes and nginx this checkout started that still run."""
    return [(p.pid, p.command) for p in pcbook_processes() if p.ours]


def lesson_ports() -> list[int]:
    """Every port the lessons' nginx configs listen on or send to (the tutorial's and lessons 7-10)."""
    ports: set[int] = set()
    for conf in sorted(paths.NGINX_DIR.glob("*.conf")):
        ports.update(int(p) for p in _CONF_PORT.findall(conf.read_text(errors="replace")))
    return sorted(ports)
