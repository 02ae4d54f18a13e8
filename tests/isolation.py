"""Parallel test workers, each in a network namespace of its own.

The lessons listen on fixed ports (the tutorial's 8080, 50051, 50052, ...): two lessons at once on one
loopback would take each other's ports. `make test` runs pytest-xdist workers; where this process may
create a network namespace (root on Linux), each worker leaves the machine's namespace for a private one
with only its own loopback, before any test runs. Its servers, nginx, etcd and dockerd, and every port
check (/proc/net/tcp is per namespace), then see only that worker's lesson.

The few steps that need the machine's network (npm and pip from their registries, debootstrap from
Debian's mirror) enter the machine's namespace for as long as they run: `machine_network()`.

A learner who is not root gets the same isolation where the kernel allows unprivileged user namespaces
(`unshare -rn` as an ordinary user): each worker is then started through tests/userns_python.py, which
makes a user namespace (the learner's uid mapped to itself) with a network namespace of its own before
the worker's Python starts: a user namespace can only be made by a single-threaded process, and an
xdist worker has threads by the time a conftest runs. Such a worker cannot step back into the machine's
network (that needs CAP_SYS_ADMIN over it), so `machine_network()` skips the test that asks, saying why.
Where neither works, the suite runs in one process.
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
CLONE_NEWUSER = 0x10000000
USERNS_ENV = "PCBOOK_USERNS_WORKER"  # set in a worker started by userns_python.py
WRAPPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "userns_python.py")
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
    if os.geteuid() != 0 and not userns_works():
        return ("a private network namespace per worker needs root (CAP_SYS_ADMIN) or unprivileged user"
                " namespaces, which this kernel does not allow")
    return None


def uses_userns() -> bool:
    """Workers get their namespaces through userns_python.py (not root, but the kernel allows it)."""
    return sys.platform.startswith("linux") and os.geteuid() != 0 and userns_works()


_userns_works: bool | None = None


def userns_works() -> bool:
    """Can this user make a user + network namespace? (tried once, in a child process)"""
    global _userns_works
    if _userns_works is None:
        import subprocess

        try:
            done = subprocess.run([sys.executable, WRAPPER, "-c", "pass"], capture_output=True, timeout=30)
            _userns_works = done.returncode == 0
        except (OSError, subprocess.SubprocessError):
            _userns_works = False
    return _userns_works


def worker_spec(python: str = sys.executable) -> str:
    """The xdist `--tx` spec of a worker started inside its own user + network namespace."""
    return f"popen//python={python} {WRAPPER}"


def enter_user_network() -> None:
    """Make this (single-threaded) process a new user namespace with its own network namespace: the uid
    and gid map to themselves, so the process stays the same user, with the capabilities that bring its
    loopback up and set its port range."""
    uid, gid = os.getuid(), os.getgid()
    _libc_call("unshare", CLONE_NEWUSER | CLONE_NEWNET)
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    _private_setup()


def _private_setup() -> None:
    _loopback_up()
    with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as f:  # this namespace's own setting
        f.write("{} {}\n".format(*EPHEMERAL_PORTS))


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
    if os.environ.get(USERNS_ENV):
        return  # started in a namespace of its own (userns_python.py): nothing to leave
    _machine = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    _libc_call("unshare", CLONE_NEWNET)
    _private = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    _private_setup()


def isolated() -> bool:
    return _private is not None or bool(os.environ.get(USERNS_ENV))


@contextmanager
def machine_network() -> Iterator[None]:
    """Run the body (and what it starts) in the machine's network namespace: for registries and mirrors.

    A no-op in a process that never left it. The body must not listen on lesson ports: other workers'
    lessons do not see them, but the machine's other users do."""
    if os.environ.get(USERNS_ENV):
        import pytest

        pytest.skip("this test needs the machine's network, and this worker's user namespace cannot step back"
                    " into it (run it alone: pytest without -n, or as root)")
    if _machine is None or _private is None:
        yield
        return
    _libc_call("setns", _machine, CLONE_NEWNET)
    try:
        yield
    finally:
        _libc_call("setns", _private, CLONE_NEWNET)
