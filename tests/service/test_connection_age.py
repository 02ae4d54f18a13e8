"""--max-connection-age: the server sends GOAWAY on an old connection and the client reconnects (lesson 14)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pcbook.paths import ROOT

AGE = 0.5  # s; gRPC adds up to 10 % of jitter
DEADLINE = 10.0  # s for the GOAWAY to arrive: many times the age


class States:
    """Every connectivity state the channel went through, in order."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.seen: list[grpc.ChannelConnectivity] = []
        self._cond = threading.Condition()
        channel.subscribe(self._add, try_to_connect=False)

    def _add(self, state: grpc.ChannelConnectivity) -> None:
        with self._cond:
            self.seen.append(state)
            self._cond.notify_all()

    def wait_for(self, state: grpc.ChannelConnectivity, after: int, timeout: float) -> bool:
        """Whether `state` shows up after the first `after` states, by the deadline."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while state not in self.seen[after:]:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def count(self) -> int:
        with self._cond:
            return len(self.seen)


def _check(channel: grpc.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status


def test_an_old_connection_gets_goaway_and_the_client_reconnects(start_server) -> None:  # type: ignore[no-untyped-def]
    srv = start_server("--max-connection-age", f"{AGE:g}")
    with srv.channel() as channel:
        states = States(channel)
        assert _check(channel) == health_pb2.HealthCheckResponse.SERVING
        assert states.wait_for(grpc.ChannelConnectivity.READY, 0, DEADLINE)
        ready = states.count()
        # GOAWAY: the channel drops the connection and goes IDLE with no call of ours failing.
        assert states.wait_for(grpc.ChannelConnectivity.IDLE, ready, DEADLINE), states.seen
        idle = states.count()
        assert _check(channel) == health_pb2.HealthCheckResponse.SERVING  # a new connection
        assert states.wait_for(grpc.ChannelConnectivity.READY, idle, DEADLINE), states.seen


def test_without_the_flag_the_connection_stays(start_server) -> None:  # type: ignore[no-untyped-def]
    srv = start_server()
    with srv.channel() as channel:
        states = States(channel)
        assert _check(channel) == health_pb2.HealthCheckResponse.SERVING
        assert states.wait_for(grpc.ChannelConnectivity.READY, 0, DEADLINE)
        ready = states.count()
        # Four times the age of the other test, with calls on it: still the same connection.
        until = time.monotonic() + 4 * AGE
        while time.monotonic() < until:
            assert _check(channel) == health_pb2.HealthCheckResponse.SERVING
        assert states.count() == ready, states.seen


def test_bad_connection_age_is_one_line() -> None:
    for flags in (["--max-connection-age", "0"], ["--max-connection-age-grace", "-1"]):
        res = subprocess.run([sys.executable, "-m", "pcbook.server", "--port", "0", *flags], cwd=ROOT,
                             capture_output=True, text=True, timeout=15)
        assert res.returncode == 2 and "--max-connection-age" in res.stderr.splitlines()[-1], res.stderr
        assert "Traceback" not in res.stderr
