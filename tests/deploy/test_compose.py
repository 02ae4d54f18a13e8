"""The compose stack for real: build the image, bring lesson 5 up in containers, run the client.

A private Docker daemon (pcbook.stack.dockerd: its own network namespace and state) is started for
the tests of tests/deploy and stopped after them; where none can be started (not root, no docker.io) the tests
skip with the reason. Every stack is brought down in a `finally`, and the tests check that no
container, network or volume of the project is left.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from pcbook.lessons import tutorial
from pcbook.service import certs
from pcbook.stack import dockerd
from pcbook.stage.judge import Observation, calls_in, differences, settled
from pcbook.workbook.deploy import render

from .support import compose

pytestmark = pytest.mark.timeout(900)


# `docker logs -t`: "2026-12-02T17:27:20.575727000Z <line>"
_STAMPED = re.compile(r"^(\S+Z) (.*)$")


def _sortable(stamp: str) -> str:
    """RFC 3339 with the nanoseconds padded: Docker trims their trailing zeros, which breaks string order."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return f"{whole}.{fraction:0<9}"


def _logs(daemon: dockerd.Daemon, project: str, service: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(stamp, stdout line) pairs and stderr lines of a service's container."""
    cid = daemon.docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}",
                        "--filter", f"label=com.docker.compose.service={service}").stdout.split()
    assert len(cid) == 1, f"{service}: containers {cid}"
    out = daemon.docker("logs", "-t", cid[0])
    stdout = [(m.group(1), m.group(2)) for line in out.stdout.splitlines() if (m := _STAMPED.match(line))]
    stderr = [m.group(2) for line in out.stderr.splitlines() if (m := _STAMPED.match(line))]
    return stdout, stderr


_CREATED = re.compile(r"created laptop with id: (\S+)")
_RECEIVED = re.compile(r"receive a create-laptop request with id: (\S+)")


def call_order(client_lines: list[str], server_lines: dict[str, list[str]]) -> list[str]:
    """The servers in call order: the Login's, then each CreateLaptop's in the order the client created
    the laptops, found by laptop id in the servers' logs. (Docker's timestamps order two containers'
    lines as the daemon read them: on a busy machine they swapped two calls a few ms apart once, giving
    server1, server2, server2, server1.)"""
    logins = [name for name, lines in server_lines.items() for line in lines if tutorial.AUTH_LOGIN in line]
    receiver = {m.group(1): name for name, lines in server_lines.items() for line in lines
                if (m := _RECEIVED.search(line))}
    return logins + [receiver.get(m.group(1), "nobody") for line in client_lines if (m := _CREATED.search(line))]


def observe(daemon: dockerd.Daemon, project: str, lesson: int, client: subprocess.CompletedProcess[str],
            wait: bool = True) -> tuple[Observation, list[str]]:
    """What the stack showed, as the lesson runner records it, and the servers in call order.

    Log lines reach Docker's log files a moment after the client exits: poll, with a deadline,
    until the checkpoint's evidence is in.
    """
    expect = render.plan(lesson).step.expect
    deadline = time.monotonic() + 20
    while True:
        seen = Observation(client_ok=client.returncode == 0, client_lines=client.stdout.splitlines())
        stamped: list[tuple[str, tuple[str, str]]] = []
        by_server: dict[str, list[str]] = {}
        for name in ("server1", "server2"):
            lines, errors = _logs(daemon, project, name)
            by_server[name] = [line for _, line in lines]
            seen.server_lines += by_server[name] + errors
            stamped += [(_sortable(stamp), call) for stamp, line in lines for call in calls_in(name, [line])]
        seen.calls = [call for _, call in sorted(stamped)]  # both containers' calls, about in time order
        access, errors = _logs(daemon, project, "nginx")
        seen.access_lines = [line for _, line in access]
        seen.nginx_errors = errors
        if not wait or settled(expect, seen) or time.monotonic() > deadline:
            return seen, call_order(seen.client_lines, by_server)
        time.sleep(0.2)


def leftovers(daemon: dockerd.Daemon, project: str) -> list[str]:
    label = f"label=com.docker.compose.project={project}"
    found = []
    for kind in (["ps", "-aq"], ["network", "ls", "-q"], ["volume", "ls", "-q"]):
        ids = daemon.docker(*kind, "--filter", label).stdout.split()
        found += [f"{kind[0]} {i}" for i in ids]
    return found


def health_report(daemon: dockerd.Daemon, project: str) -> str:
    """Each container's state, its last health checks and log lines: why `up` found one unhealthy."""
    ids = daemon.docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}").stdout.split()
    report = []
    for cid in ids:
        state = daemon.docker("inspect", "--format", "{{.Name}} {{.State.Status}} {{json .State.Health}}", cid)
        logs = daemon.docker("logs", "--tail", "5", cid)
        report += [state.stdout.strip()[-1500:], (logs.stdout + logs.stderr)[-800:]]
    return "\n" + "\n".join(report)


ENVOY_RUNS: dict[str, tuple[subprocess.CompletedProcess[str], list[str]]] = {}  # project -> client, Envoy's log


def run_stack(daemon: dockerd.Daemon, project: str, lesson: int, certs_dir: Path | None = None,
              wait: bool = True, envoy: bool = False,
              ) -> tuple[subprocess.CompletedProcess[str], Observation, list[str]]:
    """compose up (servers and nginx; `envoy`: Envoy too), run the one-shot client (and client-envoy, kept in
    ENVOY_RUNS), read the logs, compose down."""
    try:
        up = compose(daemon, project, "up", "-d", "--no-build", "server1", "server2", "nginx",
                     *(["envoy"] if envoy else []), lesson=lesson, certs_dir=certs_dir)
        assert up.returncode == 0, up.stdout[-3000:] + health_report(daemon, project)
        client = compose(daemon, project, "run", "--rm", "client", lesson=lesson, certs_dir=certs_dir, timeout=150)
        seen, order = observe(daemon, project, lesson, client, wait)
        if envoy:
            via = compose(daemon, project, "run", "--rm", "client-envoy", lesson=lesson, certs_dir=certs_dir,
                          timeout=150)
            deadline = time.monotonic() + 20  # Envoy's access log reaches Docker's log a moment later
            while True:
                lines = [line for _, line in _logs(daemon, project, "envoy")[0]]
                # As many calls as nginx logged for the same client (lesson 2's token refresh: a fifth).
                if sum("POST " in line for line in lines) >= len(seen.posts) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            ENVOY_RUNS[project] = (via, lines)
        return client, seen, order
    finally:
        down = compose(daemon, project, "down", "--volumes", "--remove-orphans", lesson=lesson, certs_dir=certs_dir)
        assert down.returncode == 0, down.stdout[-2000:]
        assert not leftovers(daemon, project), leftovers(daemon, project)


def _assert_envoy_alternates(project: str, lesson: int, seen: Observation) -> None:
    """The same client through Envoy, beside nginx on the same servers (lesson 13's twin step, rendered): it
    succeeds, and Envoy's access log has as many calls as nginx's, each on the other container."""
    plan = render.plan(lesson)
    assert plan.envoy is not None
    via, envoy_lines = ENVOY_RUNS[project]
    assert via.returncode == 0, via.stdout[-2000:]
    assert f"dial server envoy:{plan.envoy.port}, TLS = {str(plan.client.tls).lower()}" in via.stdout
    assert via.stdout.count("created laptop with id: ") == 3
    upstreams = re.findall(r"^POST \S+ 200 grpc=0 upstream=(\S+):\d+ ", "\n".join(envoy_lines), re.M)
    assert len(upstreams) == len(seen.posts) >= 4, envoy_lines
    assert all(a != b for a, b in zip(upstreams, upstreams[1:], strict=False)), envoy_lines


def test_lesson_5_calls_alternate_between_the_containers(daemon: dockerd.Daemon, image: str) -> None:
    project = f"pcbook5-{os.getpid()}"
    client, seen, order = run_stack(daemon, project, 5, envoy=True)
    _assert_envoy_alternates(project, 5, seen)
    assert client.returncode == 0, client.stdout
    assert "dial server nginx:8080, TLS = true" in client.stdout
    assert client.stdout.count("created laptop with id: ") == 3
    expect = render.plan(5).step.expect
    assert not differences(expect, seen), differences(expect, seen)
    # nginx's round robin: Login, then three CreateLaptop calls, each on the other container.
    assert len(order) == 4 and all(a != b for a, b in zip(order, order[1:], strict=False)), order
    assert [path for path, _ in seen.posts] == [tutorial.AUTH_LOGIN] + [tutorial.CREATE_LAPTOP] * 3
    assert {status for _, status in seen.posts} == {200}
    assert all("grpc-python/" in line for line in seen.access_lines if "POST" in line)


def test_lesson_2_in_containers_through_nginx_and_envoy(daemon: dockerd.Daemon, image: str) -> None:
    project = f"pcbook2-{os.getpid()}"
    client, seen, _ = run_stack(daemon, project, 2, envoy=True)
    assert client.returncode == 0, client.stdout
    assert "dial server nginx:8080, TLS = false" in client.stdout
    expect = render.plan(2).step.expect
    assert not differences(expect, seen), differences(expect, seen)  # the lesson's own checkpoint: 5 POSTs
    _assert_envoy_alternates(project, 2, seen)


def test_lesson_6_routes_by_service_in_containers(daemon: dockerd.Daemon, image: str) -> None:
    client, seen, _ = run_stack(daemon, f"pcbook6-{os.getpid()}", 6)
    assert client.returncode == 0, client.stdout
    expect = render.plan(6).step.expect
    assert not differences(expect, seen), differences(expect, seen)
    assert seen.servers_of(tutorial.AUTH_LOGIN) == {"server1"}
    assert seen.servers_of(tutorial.CREATE_LAPTOP) == {"server2"}


def test_the_lectures_certificates_fail_on_service_names(daemon: dockerd.Daemon, image: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Certificates with only the lecture's names: the client's `nginx` is in no SAN, so TLS fails."""
    monkeypatch.setattr(certs, "SERVER_DNS", ("*.pcbook.com", "*.pcbook.org"))
    monkeypatch.setattr(certs, "SERVER_IPS", ("0.0.0.0",))
    lecture = certs.generate_ca_and_certs(tmp_path / "certs")  # 2048 bits: nginx's OpenSSL refuses 1024
    for key in lecture.glob("*-key.pem"):
        key.chmod(0o644)  # the containers read them as root anyway; keeps the test independent of uid
    # The client fails before any call: no evidence is coming, so the logs are read once.
    client, seen, _ = run_stack(daemon, f"pcbookcert-{os.getpid()}", 5, certs_dir=lecture, wait=False)
    assert client.returncode != 0
    assert "cannot create auth interceptor" in client.stdout
    assert re.search(r"Hostname Verification Check failed|CERTIFICATE_VERIFY_FAILED|certificate", client.stdout)
    assert not seen.calls, "no call may reach a server when the client refuses nginx's certificate"


def test_the_call_order_comes_from_the_laptop_ids_not_from_log_times() -> None:
    client = ["... created laptop with id: b", "... created laptop with id: a", "... created laptop with id: c"]
    servers = {"server1": [f"... --> unary interceptor:  {tutorial.AUTH_LOGIN}",  # listed first, in any order
                           "... receive a create-laptop request with id: a"],
               "server2": ["... receive a create-laptop request with id: c",
                           "... receive a create-laptop request with id: b"]}
    assert call_order(client, servers) == ["server1", "server2", "server1", "server2"]
