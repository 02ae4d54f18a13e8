"""nginx fed by the registry: nginx_sync rewrites the upstream list and reloads nginx on each change."""

from __future__ import annotations

from pcbook.discovery.lab import Lab, spread, story
from pcbook.discovery.nginx_sync import EMPTY, render_upstream


def test_render_upstream() -> None:
    assert render_upstream({"b": "127.0.0.1:2", "a": "127.0.0.1:1"}) == (
        "server 127.0.0.1:1;  # a\nserver 127.0.0.1:2;  # b\n")
    assert render_upstream({}) == EMPTY  # nginx refuses an upstream block without a server


def test_nginx_sync_reload_reaches_a_new_server(lab: Lab) -> None:
    lab.server("server1")
    lab.server("server2")
    nginx = lab.nginx()
    assert "# server1" in (nginx.prefix / "upstream.conf").read_text()
    result = story(lab, "127.0.0.1:8080")
    reloads = [line for line in lab.stack.lines("sync") if line.endswith("nginx reloaded")]
    print(f"\nnginx + nginx_sync: register-to-first-call {result.register_to_first_call:.3f} s, kill-to-removal "
          f"{result.kill_to_removal:.2f} s, failed {result.failed}, phases {result.phases}, reloads {len(reloads)}")
    assert spread(result.phases["two"], {"server1", "server2"}), result.phases
    assert spread(result.phases["joined"], {"server1", "server2", "server3"}), result.phases
    assert result.register_to_first_call < 3.0
    assert spread(result.phases["left"], {"server2", "server3"}), result.phases
    assert set(result.phases["killed"]) == {"server3"}, result.phases
    assert result.failed["join"] == 0 and result.failed["graceful stop"] == 0, result.failed
    assert result.failed["kill"] <= 2  # in flight on server2: nginx does not retry a call it has sent
    # one reload per change: the first read (nginx started with an empty list), +server3, -server1, -server2
    assert len(reloads) == 4, reloads
    assert (nginx.prefix / "upstream.conf").read_text() == render_upstream({"server3": lab.registry.range_prefix(
        "/pcbook/server3")[0][0].value})
