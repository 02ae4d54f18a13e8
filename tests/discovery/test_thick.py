"""The thick client: the tutorial's client with --discover. Lesson 11's story (tests/checkpoints/test_lesson_11.py)
shows it following the registry, and that a fixed address list does not."""

from __future__ import annotations

from pcbook.stage.stage import Stage

from .conftest import start


def test_the_tutorial_client_discovers_too(lab: Stage) -> None:
    import subprocess
    import sys

    start(lab, "server1")
    start(lab, "server2")
    out = subprocess.run([sys.executable, "-m", "pcbook.client", "--discover", lab.registry_url, "--laptops", "4",
                          "--search"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = lab.receivers_of_lines()  # stores are per server (as behind nginx): upload/rate would miss
    assert got.keys() == {"server1", "server2"}, got
    bad = subprocess.run([sys.executable, "-m", "pcbook.client", "--discover", "http://x"], capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 2 and "--discover:" in bad.stderr and "Traceback" not in bad.stderr


def test_allow_remote_goes_with_discover() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "pcbook.client", "--address", "127.0.0.1:1", "--allow-remote"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].endswith("--allow-remote goes with --discover")
