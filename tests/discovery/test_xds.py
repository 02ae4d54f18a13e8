"""The xDS control plane's own logic. Real grpc xDS clients fed by it from the registry are lesson 12's steps
(tests/checkpoints/test_lesson_12.py): following the registry, weights, draining, a restart, a wrong setup."""

from __future__ import annotations

import json

from pcbook.discovery.xds import EDS, Backend, ControlPlane, backends_from, bootstrap
from pcbook.service.endpoints import Endpoint


def test_backends_from_registry_and_knobs() -> None:
    members = {"server1": Endpoint("127.0.0.1", 1), "server2": Endpoint("127.0.0.1", 2),
               "server3": Endpoint("127.0.0.1", 3)}
    knobs = {"weight/server1": "3", "drain/server2": "", "weight/server9": "5", "weight/server3": "99999999999"}
    said: list[str] = []
    assert backends_from(members, knobs, said.append) == [Backend("server1", "127.0.0.1", 1, 3),
                                                           Backend("server2", "127.0.0.1", 2, 1, draining=True),
                                                           Backend("server3", "127.0.0.1", 3, 1)]
    assert said == ["weight/server3 = '99999999999' is not a number from 1 to 1000; using 1"]
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
