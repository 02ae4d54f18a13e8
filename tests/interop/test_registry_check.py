"""The interop fixture tells an unreachable npm registry within seconds (no network needed to test it)."""

from __future__ import annotations

import socket
import time

from .test_node_client import REACH_TIMEOUT, unreachable


def test_a_refused_port_is_unreachable_at_once() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    t0 = time.monotonic()
    why = unreachable("127.0.0.1", port)
    assert why is not None and "cannot connect" in why
    assert time.monotonic() - t0 < REACH_TIMEOUT


def test_an_unknown_host_is_unreachable() -> None:
    t0 = time.monotonic()
    why = unreachable("registry.invalid", 443)  # .invalid never resolves (RFC 2606)
    assert why is not None
    assert time.monotonic() - t0 < REACH_TIMEOUT + 5  # resolver timeouts included


def test_a_listening_port_is_reachable() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert unreachable("127.0.0.1", server.getsockname()[1]) is None
