"""The thick client: --discover watches the registry and keeps round robin over the live set."""

from __future__ import annotations

import math

from pcbook.discovery.lab import Lab, judge_story, spread, story
from pcbook.stack.ports import pick_free_port


def test_the_discovering_client_follows_the_live_set(lab: Lab) -> None:
    result = story(lab, lab.url)
    print(f"\nthick client: register-to-first-call {result.register_to_first_call:.3f} s, kill-to-removal "
          f"{result.kill_to_removal:.2f} s, failed {result.failed}, phases {result.phases}")
    assert judge_story(result, first_call_within=2.0) == []


def test_a_client_that_does_not_watch_never_reaches_the_new_server(lab: Lab) -> None:
    """The wrong setup the first test must catch: a fixed address list (lesson 7's client)."""
    p1, p2 = pick_free_port(), pick_free_port()
    lab.server("server1", port=p1)
    lab.server("server2", port=p2)
    result = story(lab, f"ipv4:127.0.0.1:{p1},127.0.0.1:{p2}")
    assert math.isinf(result.register_to_first_call)
    assert not spread(result.phases["joined"], {"server1", "server2", "server3"})
    assert any("is the client watching?" in d for d in judge_story(result))


def test_the_tutorial_client_discovers_too(lab: Lab) -> None:
    import subprocess
    import sys

    lab.server("server1")
    lab.server("server2")
    out = subprocess.run([sys.executable, "-m", "pcbook.client", "--discover", lab.url, "--laptops", "4",
                          "--search"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = lab.receivers_of_lines()  # stores are per server (as behind nginx): upload/rate would miss
    assert got.keys() == {"server1", "server2"}, got
    bad = subprocess.run([sys.executable, "-m", "pcbook.client", "--discover", "http://x"], capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 2 and "--discover:" in bad.stderr and "Traceback" not in bad.stderr
