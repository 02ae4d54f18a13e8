"""TCP port helpers: is a port free, who holds it, and a free port for tests.

A busy port is the most common reason a lesson cannot start (a forgotten nginx, a server from an
earlier run). `check_port_free` says which port and, on Linux, which process holds it.
Not psutil: its net_connections names one process per socket, the last in /proc order (an nginx worker,
not the master a learner should stop; measured), and it has no TIME_WAIT timers (`tcp_sockets`).
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

# What the learner should do about a busy port; the Makefile provides the target.
STOP_HINT = "make stop"

_LISTEN = "0A"  # TCP state code of a listening socket in /proc/net/tcp


class PortBusyError(RuntimeError):
    """The port a process needs is already taken by another process."""

    def __init__(self, port: int, pid: int | None = None, command: str | None = None):
        self.port = port
        self.pid = pid
        self.command = command
        super().__init__(f"port {port} is already in use by {holder(pid, command)}, then run again")


def holder(pid: int | None, command: str | None) -> str:
    """Who holds a port and what the learner can do about it, e.g. for a PortBusyError."""
    from .owners import is_ours  # owners imports this module

    if pid is None:
        return "a process this user cannot see (another user's?) — free the port"
    what = f"pid {pid}: {command}" if command else f"pid {pid}"
    if is_ours(pid):
        return f"a process this checkout started ({what}) — stop it ({STOP_HINT})"
    return (f"a process this checkout did not start ({what}), which `{STOP_HINT}` leaves alone"
            f" — stop it yourself (kill {pid}) or free the port")


def check_port_free(port: int, host: str = "0.0.0.0") -> None:
    """Raise PortBusyError if `port` cannot be bound on `host`.

    SO_REUSEADDR mirrors what servers and nginx do, so sockets lingering in TIME_WAIT after a
    previous run do not count as busy; only a live listener (or a conflicting bind) does.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise
            owner = find_listener(port)
            pid, command = owner if owner else (None, None)
            raise PortBusyError(port, pid, command) from None


def pick_free_port(host: str = "127.0.0.1") -> int:
    """A port that is free right now (the kernel picks it); for tests and ad-hoc stacks."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def find_listener(port: int) -> tuple[int, str] | None:
    """(pid, command line) of a process listening on `port`, or None if it cannot be found.

    Linux only: /proc/net/tcp{,6} maps the port to a socket inode, /proc/PID/fd maps the inode
    to a process. Processes of other users are invisible without privileges; that is fine.
    """
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            for fd in (pid_dir / "fd").iterdir():
                if os.readlink(fd) in targets:
                    return int(pid_dir.name), process_command(int(pid_dir.name))
        except OSError:
            continue  # the process exited or is not ours
    return None


def process_command(pid: int) -> str:
    """The command line of `pid` as `ps` shows it ('' if unknown)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    # nginx rewrites its argv into one string padded with NULs ("nginx: master process ...").
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)


class TcpSocket(NamedTuple):
    local_port: int
    remote_port: int
    state: str  # kernel code: "0A" listening, "01" established, "06" TIME_WAIT, ...
    inode: str
    time_wait_left: float = 0.0  # seconds until a TIME_WAIT socket is gone (0 in other states)


_CLOCK_TICKS = 100  # /proc/net/tcp gives timers in USER_HZ, 100 on Linux


def tcp_sockets() -> Iterator[TcpSocket]:
    """Every IPv4 and IPv6 TCP socket the kernel lists in /proc/net/tcp{,6} (Linux; none elsewhere)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 10:
                continue
            local, remote = (int(addr.rsplit(":", 1)[1], 16) for addr in fields[1:3])
            timer, _, left = fields[5].partition(":")  # "03:0000175c": timer 3 (TIME_WAIT), ticks left
            wait = int(left, 16) / _CLOCK_TICKS if timer == "03" and left else 0.0
            yield TcpSocket(local, remote, fields[3], fields[9], wait)


def _listening_inodes(port: int) -> set[str]:
    return {s.inode for s in tcp_sockets() if s.state == _LISTEN and s.local_port == port}


BIND_TIMEOUT = 65.0  # a connection that holds a port as its local end frees it within a minute (TIME_WAIT)


def wait_bindable(port: int, say: Callable[[str], None], timeout: float = BIND_TIMEOUT) -> None:
    """Wait until `port` can be bound. A live listener is an error at once (PortBusyError); a port
    held only by a closing connection (TIME_WAIT, e.g. another program's client that happened to
    get this port as its local port) frees itself within a minute."""
    deadline = time.monotonic() + timeout
    told = False
    while True:
        try:
            check_port_free(port)
            return
        except PortBusyError as err:
            if err.pid is not None or find_listener(port) is not None or time.monotonic() > deadline:
                raise
            if not told:
                say(f"   (port {port} is held by a closing connection; waiting up to {timeout:g} s for it)")
                told = True
        time.sleep(0.2)  # the kernel frees the port; nothing to wake up on


@contextmanager
def hold_ports(ports: Sequence[int], host: str = "127.0.0.1") -> Iterator[None]:
    """Keep `ports` bound (not listening) while the block runs.

    Server ports such as 50101-50104 lie in Linux's ephemeral range: a connection opened while one of
    them is free may get it as its local port, and once closed that connection holds it in TIME_WAIT for
    a minute, so the next server could not listen on it. The kernel never picks a bound port for a
    connection. A connect() to a bound port that does not listen is refused, as to a free one.
    """
    held: list[socket.socket] = []
    try:
        for port in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                continue  # someone else's, or in TIME_WAIT: nothing to hold
            held.append(sock)
        yield
    finally:
        for sock in held:
            sock.close()

