"""Look-aside balancing: real grpc xDS clients (xds:///pcbook) fed by our control plane from the registry."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from pcbook.discovery.lab import Lab, restart_control_plane, share_after, spread, story
from pcbook.discovery.xds import EDS, Backend, ControlPlane, backends_from, bootstrap

CALLS = 200  # per measured phase: the 3:1 split's standard deviation is then about 3 points


def test_backends_from_registry_and_knobs() -> None:
    members = {"server1": "127.0.0.1:1", "server2": "127.0.0.1:2", "junk": "nothing"}
    knobs = {"weight/server1": "3", "drain/server2": "", "weight/server9": "5"}
    assert backends_from(members, knobs) == [Backend("server1", "127.0.0.1", 1, 3),
                                              Backend("server2", "127.0.0.1", 2, 1, draining=True)]
    assert bootstrap("127.0.0.1:18000", "n")["xds_servers"][0]["server_uri"] == "127.0.0.1:18000"
    json.dumps(bootstrap("127.0.0.1:18000"))


def test_only_changed_types_are_pushed() -> None:
    said: list[str] = []
    plane = ControlPlane(say=said.append)
    before = dict(plane._versions)
    plane.set_backends([Backend("a", "127.0.0.1", 1)])
    assert plane._versions[EDS] == before[EDS] + 1 and sum(plane._versions.values()) == sum(before.values()) + 1
    plane.set_backends([Backend("a", "127.0.0.1", 1)])  # same content: no new version, nothing pushed
    assert plane._versions[EDS] == before[EDS] + 1 and said == ["endpoints v2: a=127.0.0.1:1 w1"]


def _xds_lab(lab: Lab, *args: str) -> None:
    lab.server("server1")
    lab.server("server2")
    lab.control_plane(None, *args)


def test_xds_clients_follow_the_registry(lab: Lab) -> None:
    _xds_lab(lab)
    result = story(lab, "xds:///pcbook")
    acks = [line for line in lab.stack.lines("xds") if " ACK " in f" {line}"]
    print(f"\nxDS: register-to-first-call {result.register_to_first_call:.3f} s, kill-to-removal "
          f"{result.kill_to_removal:.2f} s, failed {result.failed}, phases {result.phases}")
    assert spread(result.phases["two"], {"server1", "server2"}), result.phases
    assert spread(result.phases["joined"], {"server1", "server2", "server3"}), result.phases
    assert result.register_to_first_call < 2.0
    assert spread(result.phases["left"], {"server2", "server3"}), result.phases
    assert set(result.phases["killed"]) == {"server3"}, result.phases
    assert result.failed["join"] == 0 and result.failed["graceful stop"] == 0, result.failed
    assert result.failed["kill"] <= 2
    assert sum("ACK EDS" in line for line in acks) >= 4, acks  # first list, +server3, -server1, -server2


def _share_after(lab: Lab, change: Callable[[], object], ack_version: str) -> dict[str, float]:
    share, acked, report = share_after(lab, change, ack_version, CALLS, say=print)
    assert report.failed() == []
    return share


def test_locality_weights_shift_traffic_and_endpoint_weights_do_not(lab: Lab) -> None:
    _xds_lab(lab)
    share = _share_after(lab, lambda: lab.registry.put("/pcbook-lb/weight/server1", "3"), "v3")
    print(f"locality weights 3:1 -> {share}")
    assert 0.65 <= share["server1"] <= 0.85, share


def test_round_robin_ignores_endpoint_weights(lab: Lab) -> None:
    _xds_lab(lab, "--weights", "endpoint")
    share = _share_after(lab, lambda: lab.registry.put("/pcbook-lb/weight/server1", "3"), "v3")
    print(f"endpoint weights 3:1 -> {share}")
    assert 0.4 <= share["server1"] <= 0.6, share  # round robin: even, whatever the weights


def test_draining_a_backend_loses_no_call(lab: Lab) -> None:
    _xds_lab(lab)
    share = _share_after(lab, lambda: lab.registry.put("/pcbook-lb/drain/server2", "1"), "v3")
    assert share == {"server1": 1.0}, share


def test_clients_keep_the_last_config_when_the_control_plane_dies(lab: Lab) -> None:
    _xds_lab(lab)
    r = restart_control_plane(lab)
    print(f"\ncontrol plane down {r.down_s:.2f} s: {r.failed} failed calls; restart -> server3's first call "
          f"{r.restart_to_first_call:.2f} s")
    assert r.failed == 0 and not r.reached_new_server_while_down and r.spread_while_down


@pytest.fixture(autouse=True)
def _quiet_grpc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRPC_VERBOSITY", "ERROR")


def test_a_control_plane_that_never_pushes_fails_the_story(lab: Lab) -> None:
    """The wrong setup test_xds_clients_follow_the_registry must catch: endpoints read once, never updated."""
    _xds_lab(lab, "--no-follow")
    result = story(lab, "xds:///pcbook")
    assert result.register_to_first_call == float("inf")
    assert not spread(result.phases["joined"], {"server1", "server2", "server3"})
