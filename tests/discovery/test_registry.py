"""etcd in the Stack, the gateway client, and servers that register and deregister themselves."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from pcbook.service.registry import Etcd, Members, RegistryError, parse_url, prefix_end
from pcbook.stack.etcd import EtcdError, find_etcd, start_etcd
from pcbook.stack.procs import Stack
from pcbook.stage.stage import Stage

from .conftest import start


def test_parse_url() -> None:
    assert parse_url("etcd://127.0.0.1:2379").prefix == "/pcbook"
    url = parse_url("etcd://127.0.0.1:23790/lab/")
    assert (url.host, url.port, url.prefix) == ("127.0.0.1", 23790, "/lab")
    for bad in ("http://127.0.0.1:2379", "127.0.0.1:2379", "etcd://127.0.0.1:x"):
        with pytest.raises(ValueError, match="etcd://"):
            parse_url(bad)
    assert prefix_end("/pcbook/") == b"/pcbook0"


def test_missing_etcd_binary_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCD", "/nonexistent/etcd")
    with pytest.raises(EtcdError, match=r"^ETCD=/nonexistent/etcd is not an executable etcd"):
        find_etcd()


def test_etcd_runs_in_the_run_folder_and_stops_with_the_stack(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with Stack(echo=None, run_dir=tmp_path) as stack:
        etcd = start_etcd(stack, port=_free(), peer_port=_free())
        assert etcd.data_dir.parent == tmp_path and (etcd.data_dir / "member").is_dir()
        client = Etcd(etcd.url + "/t")
        lease = client.grant(5)
        client.put("/t/a", "1", lease=lease.id)
        client.put("/t/b", "2")
        client.put("/u/c", "3")  # another prefix
        kvs, revision = client.range_prefix("/t/")
        assert [(kv.key, kv.value) for kv in kvs] == [("/t/a", "1"), ("/t/b", "2")] and revision >= 4
        assert kvs[0].lease == lease.id and client.keepalive(lease.id) == 5
        client.revoke(lease.id)
        assert client.keepalive(lease.id) == 0 and [kv.key for kv in client.range_prefix("/t/")[0]] == ["/t/b"]
        pid = etcd.proc.pid
    assert etcd.proc.poll() is not None and not os.path.exists(f"/proc/{pid}/status")
    with pytest.raises(RegistryError, match="cannot reach etcd"):
        client.put("/t/x", "1")


def _free() -> int:
    from pcbook.stack.ports import pick_free_port

    return pick_free_port()


def test_members_follow_puts_deletes_and_lease_expiry(lab: Stage) -> None:
    with Members(lab.registry) as members:
        members.wait(lambda m: m == {}, 5)
        lease = lab.registry.grant(2)
        lab.registry.put("/pcbook/a", "127.0.0.1:1", lease=lease.id)
        lab.registry.put("/pcbook/b", "127.0.0.1:2")
        lab.registry.put("/pcbookish/c", "no")  # a sibling prefix is not ours
        members.wait(lambda m: m == {"a": "127.0.0.1:1", "b": "127.0.0.1:2"}, 5)
        lab.registry.delete("/pcbook/b")
        members.wait(lambda m: m == {"a": "127.0.0.1:1"}, 5)
        t = time.monotonic()
        members.wait(lambda m: m == {}, 6)  # nobody keeps the lease alive: etcd expires it
        assert 0.5 < time.monotonic() - t < 4.5


def test_server_registers_and_a_graceful_stop_revokes_first(lab: Stage) -> None:
    registered = start(lab, "server1")
    kvs, _ = lab.registry.range_prefix("/pcbook/")
    assert [kv.key for kv in kvs] == ["/pcbook/server1"] and kvs[0].value.startswith("127.0.0.1:")
    assert kvs[0].lease != 0  # under a lease, so a crash cannot leave it behind
    with Members(lab.registry) as members:
        members.wait(lambda m: "server1" in m, 5)
        sent = lab.terminate("server1")
        members.wait(lambda m: m == {}, 5)
        removed = time.time()
        # Gone from the registry while the server still serves (it drains for --drain-seconds).
        assert lab.stack.proc("server1").running
        lab.stack.proc("server1").wait(10)
    lines = lab.stack.proc("server1").lines()
    order = [i for i, text in enumerate(lines) for word in ("shutting down", "deregistered", "server stopped")
             if word in text]
    assert len(order) == 3 and order == sorted(order), lines
    assert removed - sent < 1.0 and registered < sent


def test_a_killed_server_leaves_when_its_lease_expires(lab: Stage) -> None:
    start(lab, "server1")
    with Members(lab.registry) as members:
        members.wait(lambda m: "server1" in m, 5)
        killed = time.time()
        lab.stack.kill("server1")
        members.wait(lambda m: m == {}, 3 + 3)
        gone = time.time() - killed
    # no revoke: etcd deletes the key only when the TTL runs out (checked every 0.5 s by its leader)
    assert 3 - 1.0 < gone < 3 + 2.0, gone


def _server(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pcbook.server", *args], capture_output=True, text=True, timeout=30)


def test_bad_register_flags_are_one_line() -> None:
    out = _server("--port", "50999", "--register", "http://127.0.0.1:2379")
    assert out.returncode == 2 and "--register:" in out.stderr and "Traceback" not in out.stderr
    out = _server("--port", "50999", "--name", "x")
    assert out.returncode == 2 and "--name, --advertise and --allow-remote go with --register" in out.stderr
    # what a server would register is parsed as its readers parse it: one line, nothing registered
    for advertise, why in (("10.0.0.1", "outside loopback"), ("127.0.0.1\nserver 10.0.0.1:1", "control characters"),
                           ("[::1", "in brackets")):
        out = _server("--port", "50999", "--register", "etcd://127.0.0.1:9", "--advertise", advertise)
        error = out.stderr.strip().splitlines()[-1]
        assert out.returncode == 2 and error.startswith("python -m pcbook.server: error: --advertise") and why in error
        assert "Traceback" not in out.stderr, out.stderr


def test_no_etcd_is_one_line() -> None:
    out = _server("--port", str(_free()), "--register", f"etcd://127.0.0.1:{_free()}")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and "cannot register in etcd://" in out.stderr, out.stderr
