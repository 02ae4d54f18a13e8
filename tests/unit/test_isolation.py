"""tests/isolation.py: each test worker in a network namespace of its own, or one process where it cannot."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import conftest  # tests/conftest.py (tests/ is on sys.path)
import isolation
import pytest

TESTS = Path(__file__).resolve().parent.parent


def test_without_root_or_user_namespaces_the_suite_runs_in_one_process_and_says_why(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(isolation, "userns_works", lambda: False)
    assert conftest.pytest_xdist_auto_num_workers(None) == 0  # type: ignore[arg-type]
    assert capsys.readouterr().err == ("tests run in one process: a private network namespace per worker "
                                       "needs root (CAP_SYS_ADMIN) or unprivileged user namespaces, which this"
                                       " kernel does not allow\n")


def test_without_root_but_with_user_namespaces_each_worker_gets_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(isolation, "userns_works", lambda: True)
    assert conftest.pytest_xdist_auto_num_workers(None) > 1  # type: ignore[arg-type]
    config = type("Config", (), {"option": type("Option", (), {"tx": ["popen"] * 3})()})()
    conftest.use_userns_workers(config)  # type: ignore[arg-type]
    assert config.option.tx == [f"popen//python={sys.executable} {TESTS / 'userns_python.py'}"] * 3


USER_CHILD = """
import os, socket, sys, isolation
machine_ns, held = sys.argv[1], int(sys.argv[2])
with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
    ports = tuple(int(p) for p in f.read().split())
with socket.socket() as s:  # the port a listener holds in the machine's (the test's) namespace
    s.bind(("127.0.0.1", held)); s.listen()
print(os.readlink("/proc/self/ns/net") != machine_ns, os.geteuid() == int(sys.argv[3]), isolation.isolated(),
      ports == isolation.EPHEMERAL_PORTS)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="namespaces are Linux only")
def test_an_ordinary_users_worker_starts_in_namespaces_of_its_own() -> None:
    """As `nobody` (the system Python: a learner's own venv stands in for it), userns_python.py starts
    Python in a network namespace of its own, as the same user: a port held outside binds inside."""
    nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"] if os.geteuid() == 0 else []
    uid = 65534 if nobody else os.geteuid()
    python = "/usr/bin/python3" if nobody and os.path.exists("/usr/bin/python3") else sys.executable
    if nobody:
        readable = subprocess.run([*nobody, "test", "-r", str(TESTS / "userns_python.py")], timeout=10)
        if readable.returncode != 0:  # a checkout in a private folder (mktemp -d makes it 0700)
            pytest.skip(f"user nobody cannot read {TESTS}: the check needs a checkout an ordinary user can read")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        out = subprocess.run([*nobody, python, str(TESTS / "userns_python.py"), "-c", USER_CHILD,
                              os.readlink("/proc/self/ns/net"), str(held.getsockname()[1]), str(uid)],
                             cwd="/", capture_output=True, text=True, timeout=30,
                             env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(TESTS)})
    if out.returncode != 0 and "unshare" in out.stderr:
        pytest.skip(f"this kernel does not allow unprivileged user namespaces: {out.stderr.strip()[-200:]}")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True"] * 4, out.stdout


CHILD = """
import os, socket, isolation
def ports():
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        return tuple(int(p) for p in f.read().split())
machine, machine_ports = os.readlink("/proc/thread-self/ns/net"), ports()
isolation.leave_machine_network()
private = os.readlink("/proc/thread-self/ns/net")
with socket.socket() as s:  # the new namespace's loopback is up: a lesson port binds
    s.bind(("127.0.0.1", 8080)); s.listen()
    with socket.create_connection(("127.0.0.1", 8080)) as c:  # its local port: below the lessons' ports
        local = c.getsockname()[1]
    with isolation.machine_network():
        back, ports_back = os.readlink("/proc/thread-self/ns/net"), ports()
    again = os.readlink("/proc/thread-self/ns/net")
print(machine != private, back == machine, again == private, ports() == isolation.EPHEMERAL_PORTS,
      ports_back == machine_ports, local <= isolation.EPHEMERAL_PORTS[1] < 50051)
"""


@pytest.mark.skipif(isolation.why_serial() is not None, reason=str(isolation.why_serial()))
@pytest.mark.skipif(os.geteuid() != 0, reason="a worker leaves the machine's network with unshare(CLONE_NEWNET), as"
                    " root only; an ordinary user's workers start in namespaces of their own (tested above)")
def test_a_worker_leaves_the_machines_network_and_can_step_back() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=TESTS, capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, PYTHONPATH=str(TESTS)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True"] * 6, out.stdout


def test_long_work_is_handed_out_first() -> None:
    ids = ["tests/unit/test_auth.py::test_x",
           "tests/checkpoints/test_mutants.py::test_every_mutant_of_the_checkpoint_config_fails_the_checkpoint[2]",
           "tests/notebooks/test_notebooks.py::test_notebook_runs_top_to_bottom[lesson-11]",
           "tests/checkpoints/test_lesson_3.py::test_y",
           "tests/checkpoints/test_mutants.py::test_every_mutant_of_the_checkpoint_config_fails_the_checkpoint[10]",
           "tests/deploy/test_compose.py::test_z",
           "tests/checkpoints/test_lesson_11.py::test_story"]
    ordered = sorted(ids, key=conftest.start_rank)
    assert [conftest.group_of(i) or i.rsplit("[", 1)[-1] for i in ordered] == [
        "docker", "story-11", "story-11", "10]", "story-3", "2]", "tests/unit/test_auth.py::test_x"]
