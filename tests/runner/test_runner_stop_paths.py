"""No child outlives its runner: Ctrl-C, SIGTERM, SIGKILL of the runner, a failing client."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from pcbook.paths import ROOT
from pcbook.stack.ports import pick_free_port
from pcbook.stack.procs import Stack

from .conftest import LISTENER, PY, eventually, pid_gone, port_free

# A runner like `make lesson-N KEEP=1`: a Stack with a listening child, then it blocks as KEEP=1 does, in
# timed waits. (An untimed threading.Event().wait() hung 1 suite run in 8 here: Linux may deliver the Ctrl-C
# to another thread, and Python then raises KeyboardInterrupt only when the main thread's wait ends.)
RUNNER = f"""
import sys
from pathlib import Path
from pcbook.stack.procs import Stack
LISTENER = {LISTENER!r}
port, pid_file = int(sys.argv[1]), Path(sys.argv[2])
with Stack(run_dir=pid_file.parent) as stack:
    child = stack.start("server1", [sys.executable, "-c", LISTENER, str(port)])
    stack.wait_ready("server1", port=port, timeout=10)
    pid_file.write_text(str(child.pid))
    stack.wait_forever()
"""


def start_runner(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    """Start the runner script; return it, its child's pid and the child's port once listening."""
    port = pick_free_port()
    pid_file = tmp_path / "child.pid"
    runner = subprocess.Popen([PY, "-c", RUNNER, str(port), str(pid_file)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
                              stdout=(tmp_path / "runner.log").open("wb"), stderr=subprocess.STDOUT)
    if not eventually(lambda: pid_file.exists() and pid_file.read_text() != "", timeout=10):
        runner.kill()
        pytest.fail("the runner did not start its child: " + (tmp_path / "runner.log").read_text())
    child = int(pid_file.read_text())
    assert not pid_gone(child) and not port_free(port)
    return runner, child, port


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_runner_leaves_no_child_and_no_port(tmp_path: Path, sig: signal.Signals) -> None:
    runner, child, port = start_runner(tmp_path)
    runner.send_signal(sig)
    try:
        # A bound, not a pace: it exits within a second when idle; a learner's `make test` beside lesson 14's
        # mutants once took longer than 10 s (ctrl-c, 5 workers on 2 cores).
        code = runner.wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the runner still ran 30 s after {sig.name}:\n" + (tmp_path / "runner.log").read_text())
    finally:
        if runner.poll() is None:  # a hung runner fails the test, but must not outlive it
            runner.kill()
            runner.wait(5)
    assert code != 0
    if sig == signal.SIGTERM:
        assert code == 128 + signal.SIGTERM  # close() ran, then the runner exited
    log = (tmp_path / "runner.log").read_text()
    assert "server1 | [killed by SIGTERM]" in log  # stopped by the runner, in order
    assert pid_gone(child) and port_free(port)


def test_sigkilled_runner_takes_its_child_along(tmp_path: Path) -> None:
    runner, child, port = start_runner(tmp_path)
    runner.kill()  # no cleanup code runs: only PR_SET_PDEATHSIG can stop the child
    runner.wait(10)
    assert eventually(lambda: pid_gone(child), timeout=5)
    assert eventually(lambda: port_free(port), timeout=5)


def test_failing_client_still_stops_everything_on_close(tmp_path: Path) -> None:
    port = pick_free_port()
    with Stack(echo=None, run_dir=tmp_path) as stack:
        server = stack.start("server1", [PY, "-c", LISTENER, str(port)])
        stack.wait_ready("server1", port=port)
        result = stack.run("client", [PY, "-c", "raise SystemExit('rpc error: code = Unavailable')"],
                           timeout=10)
        assert result.returncode == 1 and not result.ok
    assert pid_gone(server.pid) and port_free(port)


def test_an_exception_inside_the_stack_stops_everything(tmp_path: Path) -> None:
    port = pick_free_port()
    with pytest.raises(RuntimeError, match="lesson step failed"):
        with Stack(echo=None, run_dir=tmp_path) as stack:
            server = stack.start("server1", [PY, "-c", LISTENER, str(port)])
            stack.wait_ready("server1", port=port)
            raise RuntimeError("lesson step failed")
    assert pid_gone(server.pid) and port_free(port)
