"""Registry values are untrusted input: each bad entry the red-team pass found, put into a real etcd, must be
skipped with one line naming its key by the thick client, nginx_sync and the xDS control plane, while the good
entries keep serving; no watch may die on a value."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pcbook.discovery.xds import ControlPlane, RegistryFeed
from pcbook.paths import NGINX_DIR
from pcbook.service.registry import Members, parse_url
from pcbook.service.thick import DiscoveredChannel
from pcbook.stack.etcd import start_etcd
from pcbook.stack.ports import pick_free_port
from pcbook.stack.specs import Nginx, RegistrySync
from pcbook.stage.stage import Stage

from .conftest import start

# key -> value; each one broke at least one of the three paths before the endpoint parser.
BAD = {
    "huge-port": "127.0.0.1:99999999999",
    "superscript": "127.0.0.1:\u00b2",
    "not-json": "not an address",
    "json-object": '{"host": "127.0.0.1", "port": 50051}',
    "mebibyte": "1" * (1 << 20),
    "newline": "127.0.0.1:50051;\nserver 10.0.0.1:1",
    "port-70000": "127.0.0.1:70000",
    "bare-v6": "[::1]",
    "remote": "10.0.0.1:50051",  # outside loopback: only with --allow-remote
}
BAD_KEY = "evil\nserver 10.0.0.1:1;"  # a key is untrusted too: nginx_sync writes it into a comment


def _until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.02)


def _named(lines: list[str], key: str) -> bool:
    """A line says the entry `key` was skipped (the key as the parser shows it: escaped)."""
    shown = key.encode("unicode_escape").decode()
    return any("skipped" in line and shown in line for line in lines)


def test_a_watch_survives_an_exception_in_its_handler(lab: Stage) -> None:
    seen: list[dict[str, str]] = []
    errors: list[str] = []

    def on_change(members: dict[str, str]) -> None:
        seen.append(members)
        if "boom" in members:
            raise ValueError("a handler that fails on one value")

    with Members(lab.registry, on_change=on_change, on_error=errors.append) as members:
        members.wait(lambda m: m == {}, 5)
        lab.registry.put("/pcbook/boom", "x")
        _until(lambda: any("boom" in m for m in seen), 5, "the handler saw boom")
        lab.registry.delete("/pcbook/boom")
        lab.registry.put("/pcbook/a", "127.0.0.1:1")
        _until(lambda: seen[-1] == {"a": "127.0.0.1:1"}, 5, f"the watch went on after the error: {seen[-3:]}")
    assert any("ValueError" in line and "a handler that fails" in line for line in errors), errors


def test_thick_client_skips_each_bad_entry_and_keeps_calling(lab: Stage) -> None:
    start(lab, "server1")
    start(lab, "server2")
    lines: list[str] = []
    with DiscoveredChannel(lab.registry_url, log=lines.append) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        for key, value in BAD.items():
            generation = channel.generation
            lab.registry.put(f"/pcbook/{key}", value)
            _until(lambda: channel.generation > generation, 5, f"a new channel after {key}")  # noqa: B023
            failed = []
            for _ in range(10):
                try:
                    check(health_pb2.HealthCheckRequest(), timeout=5)
                except grpc.RpcError as err:
                    failed.append(f"{err.code().name}: {err.details()}")
            assert failed == [], (key, failed[:2])
            lab.registry.delete(f"/pcbook/{key}")
    assert all(_named(lines, key) for key in BAD), [line for line in lines if "skipped" in line]


def test_nginx_sync_renders_only_validated_entries(lab: Stage) -> None:
    nginx = lab.start_nginx(Nginx("lesson-11.conf", 8111), NGINX_DIR / "lesson-11.conf", sync=RegistrySync())
    upstream = Path(nginx.prefix) / "upstream.conf"
    lab.registry.put("/pcbook/good", "127.0.0.1:1")
    _until(lambda: "127.0.0.1:1;" in upstream.read_text(), 10, "the good server in upstream.conf")
    expected = upstream.read_text()
    for key, value in [*BAD.items(), (BAD_KEY, "127.0.0.1:2")]:
        mark = lab.stack.mark()
        lab.registry.put(f"/pcbook/{key}", value)
        shown = re.escape(key.encode("unicode_escape").decode())
        lab.stack.wait_for_line("sync", re.compile(f"{shown}.*(reloaded|up to date|rejected)|skipped.*{shown}"),
                                10, since=mark)
        assert upstream.read_text() == expected, (key, upstream.read_text()[:300])
        mark = lab.stack.mark()
        lab.registry.delete(f"/pcbook/{key}")
        lab.stack.wait_for_line("sync", re.compile("reloaded|up to date|rejected"), 10, since=mark)
    lines = lab.stack.lines("sync")
    assert all(_named(lines, key) for key in [*BAD, BAD_KEY]), [line for line in lines if "skipped" in line]
    assert max(map(len, lines)) < 400  # the 1 MiB value is not repeated in a log line


def test_xds_control_plane_skips_each_bad_entry_and_keeps_following(lab: Stage) -> None:
    said: list[str] = []
    plane = ControlPlane(say=said.append)
    feed = RegistryFeed(plane, parse_url(lab.registry_url))
    feed.start(timeout=10)
    try:
        for i, (key, value) in enumerate(BAD.items()):
            lab.registry.put(f"/pcbook/{key}", value)
            lab.registry.put(f"/pcbook/ok{i}", f"127.0.0.1:{1000 + i}")
            _until(lambda: f"ok{i}=127.0.0.1:{1000 + i}" in plane._summary, 5,  # noqa: B023
                   f"the control plane follows the registry after {key}: {plane._summary}")
            assert f"{key}=" not in plane._summary, plane._summary
            lab.registry.delete(f"/pcbook/{key}")
    finally:
        feed.close()
    assert all(_named(said, key) for key in BAD), [line for line in said if "skipped" in line]
    assert max(map(len, said)) < 2000


def test_etcd_killed_and_restarted_the_thick_client_keeps_serving_and_follows_again(lab: Stage) -> None:
    """Fault injection: the registry dies (SIGKILL) and comes back empty on the same port. The client keeps
    the last set meanwhile, says so in one line, and follows the servers that register again."""
    start(lab, "server1")
    lines: list[str] = []
    with DiscoveredChannel(lab.registry_url, log=lines.append) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        channel.members.wait(lambda m: "server1" in m, 5)
        lab.stack.kill(lab.etcd.name)
        _until(lambda: any("keeping the last set (1 members)" in line for line in lines), 10, f"an error line: {lines}")
        for _ in range(5):  # the last set goes on serving
            check(health_pb2.HealthCheckRequest(), timeout=5)
        restarted = start_etcd(lab.stack, name=lab.etcd.name, port=lab.etcd.port, peer_port=pick_free_port())
        lab.etcd = restarted
        start(lab, "server2")
        # server1's keepalive finds its lease gone and registers again; server2 is new
        channel.members.wait(lambda m: m.keys() == {"server1", "server2"}, 3 + 10)
        _until(lambda: "server2=" in lines[-1] or any("server2=" in line for line in lines[-3:]), 5, str(lines[-3:]))
        for _ in range(5):
            check(health_pb2.HealthCheckRequest(), timeout=5)
    assert sum("keeping the last set" in line for line in lines) == 1, lines  # one line, not one per retry
    assert any("etcd had lost the lease; registered /pcbook/server1" in line
               for line in lab.stack.lines("server1")), lab.stack.lines("server1")
