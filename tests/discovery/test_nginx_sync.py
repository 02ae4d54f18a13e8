"""nginx fed by the registry: nginx_sync rewrites the upstream list and reloads nginx on each change (lesson 11
step 2 runs it: tests/checkpoints/test_lesson_11.py)."""

from __future__ import annotations

from pcbook.discovery.nginx_sync import EMPTY, render_upstream
from pcbook.service.endpoints import Endpoint


def test_render_upstream() -> None:
    assert render_upstream({"b": Endpoint("127.0.0.1", 2), "a": Endpoint("127.0.0.1", 1)}) == (
        "server 127.0.0.1:1;  # a\nserver 127.0.0.1:2;  # b\n")
    assert render_upstream({}) == EMPTY  # nginx refuses an upstream block without a server
