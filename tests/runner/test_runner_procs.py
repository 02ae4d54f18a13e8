"""Stack: prefixed capture, foreground runs, stopping, waiting on lines and readiness."""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from pcbook.stack.ports import PortBusyError, check_port_free, pick_free_port
from pcbook.stack.procs import NotReadyError, Stack, wait_port

from .conftest import LISTENER, PY, eventually, pid_gone, port_free


def test_lines_are_prefixed_with_a_fixed_width_and_captured(stack: Stack, echoed: list[str]) -> None:
    stack.start("a", [PY, "-c", "import sys; print('one'); print('two', file=sys.stderr)"])
    stack.wait_for_line("a", "two", 5)
    stack.start("longname1", [PY, "-c", "print('hi')"])
    stack.wait_for_line("longname1", "hi", 5)

    assert "a       | one" in echoed  # at least 7 wide, like docker-compose
    assert "a       | two" in echoed  # stderr is merged
    assert "longname1 | hi" in echoed
    assert stack.lines("a") == ["one", "two"]
    assert stack.lines() == ["a         | one", "a         | two", "longname1 | hi"]  # width grew
    times = [r.t for r in stack.records() if r.source == "out"]
    assert times == sorted(times) and abs(times[0] - time.time()) < 30


def test_mark_and_lines_since_show_one_step(stack: Stack) -> None:
    stack.run("step1", [PY, "-c", "print('first')"], timeout=10)
    mark = stack.mark()
    stack.run("step2", [PY, "-c", "print('second')"], timeout=10)
    assert stack.lines_since(mark) == ["step2   | second"]
    assert stack.lines_since(mark, "step1") == []


def test_run_returns_code_and_lines(stack: Stack, echoed: list[str]) -> None:
    result = stack.run("client", [PY, "-c", "print('calling'); raise SystemExit(3)"], timeout=10)
    assert (result.returncode, result.lines, result.timed_out, result.ok) == (3, ["calling"], False, False)
    assert "client  | [exited with code 3]" in echoed


def test_run_kills_a_client_on_timeout_and_says_so(stack: Stack, echoed: list[str]) -> None:
    t0 = time.monotonic()
    result = stack.run("client", [PY, "-c", "import time; print('waiting'); time.sleep(60)"], timeout=0.5)
    assert result.timed_out and not result.ok
    assert result.returncode is not None and result.returncode < 0
    assert result.lines == ["waiting"]
    assert "client  | [timed out after 0.5 s: killing it]" in echoed
    assert time.monotonic() - t0 < 5
    assert pid_gone(stack.proc("client").pid)


def test_stop_sends_sigterm_then_sigkill(stack: Stack, echoed: list[str]) -> None:
    polite = stack.start("polite", [PY, "-c", "import time; print('up'); time.sleep(60)"])
    stubborn = stack.start("stubborn", [PY, "-c", (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up'); time.sleep(60)")])
    stack.wait_for_line("polite", "up", 5)
    stack.wait_for_line("stubborn", "up", 5)

    assert stack.stop("polite") == -signal.SIGTERM
    t0 = time.monotonic()
    assert stack.stop("stubborn", timeout=0.3) == -signal.SIGKILL
    assert time.monotonic() - t0 < 3
    assert any("sending SIGKILL" in line for line in echoed)
    assert pid_gone(polite.pid) and pid_gone(stubborn.pid)


def test_kill_crashes_a_backend_which_can_be_started_again(stack: Stack) -> None:
    port = pick_free_port()
    first = stack.start("server1", [PY, "-c", LISTENER, str(port)])
    stack.wait_ready("server1", port=port)
    assert stack.kill("server1") == -signal.SIGKILL
    assert pid_gone(first.pid) and eventually(lambda: port_free(port))

    second = stack.start("server1", [PY, "-c", LISTENER, str(port)])
    stack.wait_ready("server1", port=port)
    assert second.pid != first.pid and stack.proc("server1") is second
    with pytest.raises(ValueError, match="already running"):
        stack.start("server1", [PY, "-c", LISTENER, str(port)])


def test_wait_for_line_substring_regex_and_since(stack: Stack) -> None:
    stack.start("ticker", [PY, "-c", (
        "import time\nfor i in range(1000):\n    print('tick', i)\n    time.sleep(0.02)")])
    assert stack.wait_for_line("ticker", "tick 3", 5) == "tick 3"
    mark = stack.mark()
    line = stack.wait_for_line("ticker", re.compile(r"tick (\d+)"), 5, since=mark)
    assert int(line.split()[1]) > 3  # older lines are not matched again
    with pytest.raises(NotReadyError, match="did not print 'never'"):
        stack.wait_for_line("ticker", "never", 0.2)


def test_wait_for_line_fails_fast_when_the_process_ends(stack: Stack) -> None:
    stack.start("quitter", [PY, "-c", "print('bye'); raise SystemExit(4)"])
    t0 = time.monotonic()
    with pytest.raises(NotReadyError) as err:
        stack.wait_for_line("quitter", "ready", 10)
    assert time.monotonic() - t0 < 3
    assert "quitter exited with code 4" in str(err.value) and "quitter | bye" in str(err.value)


def test_wait_ready_reports_an_early_exit_with_its_output(stack: Stack) -> None:
    port = pick_free_port()
    stack.start("server1", [PY, "-c", "import sys; print('cannot load TLS credentials: boom'); sys.exit(3)"])
    t0 = time.monotonic()
    with pytest.raises(NotReadyError) as err:
        stack.wait_ready("server1", port=port, timeout=10)
    assert time.monotonic() - t0 < 3  # did not wait out the deadline
    message = str(err.value)
    assert f"server1 exited with code 3 before port {port} accepted connections" in message
    assert "server1 | cannot load TLS credentials: boom" in message
    assert err.value.returncode == 3


def test_wait_ready_on_a_port(stack: Stack) -> None:
    port = pick_free_port()
    stack.start("server1", [PY, "-c", "import time; time.sleep(0.3)\n" + LISTENER, str(port)])
    stack.wait_ready("server1", port=port, timeout=10)
    assert not port_free(port)


def test_wait_port_names_the_port_at_the_deadline() -> None:
    port = pick_free_port()
    with pytest.raises(NotReadyError, match=f"127.0.0.1:{port} does not accept connections"):
        wait_port("127.0.0.1", port, timeout=0.3)


HEALTH_SERVER = (
    "import sys, time\n"
    "from concurrent import futures\n"
    "import grpc\n"
    "from grpc_health.v1 import health, health_pb2, health_pb2_grpc\n"
    "server = grpc.server(futures.ThreadPoolExecutor(2))\n"
    "h = health.HealthServicer()\n"
    "health_pb2_grpc.add_HealthServicer_to_server(h, server)\n"
    "server.add_insecure_port('127.0.0.1:' + sys.argv[1])\n"
    "h.set('', health_pb2.HealthCheckResponse.NOT_SERVING)\n"
    "server.start(); print('started, not serving yet')\n"
    "time.sleep(0.3); print('serving from', time.time(), flush=True)\n"
    "h.set('', health_pb2.HealthCheckResponse.SERVING)\n"
    "server.wait_for_termination()\n"
)


def test_wait_ready_on_grpc_health(stack: Stack) -> None:
    port = pick_free_port()
    stack.start("server1", [PY, "-c", HEALTH_SERVER, str(port)])
    stack.wait_ready("server1", port=port, health=True, timeout=10)
    ready_at = time.time()
    # Not the line itself (the reader thread may get it a moment after wait_ready returns): its time,
    # taken before the health status turned SERVING, which wait_ready must have waited for.
    line = stack.wait_for_line("server1", "serving from", 5)
    assert ready_at >= float(line.split()[-1]), (ready_at, line)


def test_children_outlive_the_thread_that_started_them(stack: Stack) -> None:
    # PDEATHSIG fires when the forking *thread* exits; the Stack forks from its own thread.
    started = []
    ticker = [PY, "-c", "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.02)"]
    worker = threading.Thread(target=lambda: started.append(stack.start("ticker", ticker)))
    worker.start()
    worker.join()
    for _ in range(3):
        stack.wait_for_line("ticker", "tick", 5, since=stack.mark())
    assert started[0].running


def test_a_new_stack_closes_the_earlier_one(tmp_path: Path) -> None:
    old = Stack(echo=None, run_dir=tmp_path)
    server = old.start("server1", [PY, "-c", "import time; print('up'); time.sleep(60)"])
    old.wait_for_line("server1", "up", 5)
    notes: list[str] = []
    with Stack(echo=notes.append, run_dir=tmp_path):  # a notebook cell run a second time
        assert pid_gone(server.pid)
        assert notes == ["closing the earlier stack first (still running: server1)"]
    with pytest.raises(RuntimeError, match="closed"):
        old.start("server1", [PY, "-c", "pass"])


def test_busy_port_is_named_with_its_owner_and_the_way_out() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(PortBusyError) as err:
            check_port_free(port)
    message = str(err.value)
    # This test process holds it: not a pcbook process, so `make stop` would not free it, and says so.
    assert message.startswith(f"port {port} is already in use by a process this checkout did not start (pid ")
    assert err.value.pid is not None and f"kill {err.value.pid}" in message and "leaves alone" in message


@pytest.mark.timeout(30)
def test_starting_children_after_grpc_was_used_does_not_hang(stack: Stack) -> None:
    # grpc registers fork handlers that can block forever when fork() runs them (as preexec_fn
    # would make subprocess do); children must still start after a health check in this process.
    for n in range(2):
        port = pick_free_port()
        stack.start(f"server{n}", [PY, "-c", HEALTH_SERVER, str(port)])
        stack.wait_ready(f"server{n}", port=port, health=True, timeout=10)
        stack.run(f"client{n}", [PY, "-c", "print('ok')"], timeout=10)
