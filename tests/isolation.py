"""Parallel test workers, each in a network namespace of its own.

The lessons listen on fixed ports (the tutorial's 8080, 50051, 50052, ...): two lessons at once on one
loopback would take each other's ports. `make test` runs pytest-xdist workers; where this process may
create a network namespace (root on Linux), each worker leaves the machine's namespace for a private one
with only its own loopback, before any test runs. Its servers, nginx, etcd and dockerd, and every port
check (/proc/net/tcp is per namespace), then see only that worker's lesson.

The few steps that need the machine's network (npm and pip from their registries, debootstrap from
Debian's mirror) enter the machine's namespace for as long as they run: `machine_network()`.

Where namespaces are not allowed (a learner's machine without root), the suite runs in one process.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import sys
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
# A worker's connections take their local ports from this range, below the lessons' servers (50051-50192):
# from Linux's default range (32768-60999) a closed connection could leave one of those ports in TIME_WAIT,
# and the next lesson on that worker waited for it (40 s in one suite run: lesson 10's server2 on 50102).
EPHEMERAL_PORTS = (32768, 49999)
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1

_machine: int | None = None  # the machine's network namespace, held open by a worker that left it
_private: int | None = None


def why_serial() -> str | None:
    """Why the tests cannot run in parallel here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "a private network namespace per worker needs root (CAP_SYS_ADMIN)"
    return None


def _libc_call(name: str, *args: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def _loopback_up() -> None:
    """`ip link set lo up`, without needing iproute2: a new namespace's loopback starts down."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sh", fcntl.ioctl(s, _SIOCGIFFLAGS, struct.pack("16sh", b"lo", 0)))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | _IFF_UP))


def leave_machine_network() -> None:
    """Move the calling thread (pytest runs tests on the main thread) into a new network namespace.

    Processes started from it afterwards inherit it. Call before any test starts a thread that opens
    sockets: a thread keeps the namespace it was created in."""
    global _machine, _private
    _machine = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    _libc_call("unshare", CLONE_NEWNET)
    _loopback_up()
    _private = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as f:  # this namespace's own setting
        f.write("{} {}\n".format(*EPHEMERAL_PORTS))


def isolated() -> bool:
    return _private is not None


@contextmanager
def machine_network() -> Iterator[None]:
    """Run the body (and what it starts) in the machine's network namespace: for registries and mirrors.

    A no-op in a process that never left it. The body must not listen on lesson ports: other workers'
    lessons do not see them, but the machine's other users do."""
    if _machine is None or _private is None:
        yield
        return
    _libc_call("setns", _machine, CLONE_NEWNET)
    try:
        yield
    finally:
        _libc_call("setns", _private, CLONE_NEWNET)
