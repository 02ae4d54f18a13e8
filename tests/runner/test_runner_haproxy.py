"""The HAProxy runner on a real HAProxy: the bench's config proxies a real pcbook call, a bad config is one
error with HAProxy's words, and nothing is left running."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import grpc
import pytest

from pcbook.bench.settings import HAPROXY_CONF, HAPROXY_PORT
from pcbook.service.laptop_client import AuthClient
from pcbook.stack import haproxy
from pcbook.stack.ports import pick_free_port
from pcbook.stack.procs import Stack

from .conftest import eventually, pid_gone, port_free

pytestmark = pytest.mark.skipif(
    shutil.which("haproxy") is None, reason=f"haproxy is not installed ({haproxy.INSTALL})")


def bench_config_on(tmp_path: Path, front: int, back: int) -> Path:
    """The bench's config with free ports in place of 8107 and 50101."""
    text = HAPROXY_CONF.read_text()
    assert f"127.0.0.1:{HAPROXY_PORT} " in text and "127.0.0.1:50101 " in text
    conf = tmp_path / "bench-hop.cfg"
    conf.write_text(text.replace(f"127.0.0.1:{HAPROXY_PORT} ", f"127.0.0.1:{front} ")
                    .replace("127.0.0.1:50101 ", f"127.0.0.1:{back} "))
    return conf


def test_haproxy_proxies_a_real_pcbook_call_and_leaves_nothing_behind(tmp_path: Path) -> None:
    front, back = pick_free_port(), pick_free_port()
    echoed: list[str] = []
    with Stack(echo=echoed.append, run_dir=tmp_path / "run") as stack:
        stack.start("server1", [sys.executable, "-u", "-m", "pcbook.server", "--port", str(back),
                                "--host", "127.0.0.1"])
        stack.wait_ready("server1", port=back, health=True, timeout=20)
        proxy = haproxy.start_haproxy(stack, bench_config_on(tmp_path, front, back), port=front)
        assert proxy.folder.parent == tmp_path / "run" and proxy.rendered.read_text() == proxy.conf.read_text()
        mark = stack.mark()
        with grpc.insecure_channel(f"127.0.0.1:{front}") as channel:
            token = AuthClient(channel, "admin1", "secret").login()
        assert token.count(".") == 2  # a JWT, signed by the server behind HAProxy
        stack.wait_for_line("server1", "/techschool_pcbook.AuthService/Login", 5, since=mark)
        pid = proxy.pid
    assert eventually(lambda: pid_gone(pid)) and port_free(front) and port_free(back)
    assert not any("[ALERT]" in line for line in echoed), echoed


def test_a_rejected_config_is_one_error_naming_the_file(tmp_path: Path) -> None:
    front = pick_free_port()
    conf = tmp_path / "bad.cfg"
    conf.write_text(f"frontend f\n    bind 127.0.0.1:{front} proto h2\n    bogus_keyword on\n")
    with Stack(echo=None, run_dir=tmp_path / "run") as stack:
        with pytest.raises(haproxy.HaproxyConfigError) as err:
            haproxy.start_haproxy(stack, conf, port=front)
        assert "haproxy" not in stack
    message = str(err.value)
    assert message.startswith(f"haproxy rejected {conf}:") and "bogus_keyword" in message
    assert "haproxy.cfg" not in message and "[NOTICE]" not in message  # the learner's file, not the copy
    assert f"[ALERT] config : parsing [{conf}:3] : unknown keyword 'bogus_keyword'" in message
    assert port_free(front)


def test_make_stop_knows_the_bench_s_haproxy(tmp_path: Path) -> None:
    from pcbook.stack import owners

    front = pick_free_port()
    conf = tmp_path / "idle.cfg"
    conf.write_text(f"defaults\n    mode http\n    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\n"
                    f"frontend f\n    bind 127.0.0.1:{front} proto h2\n")
    with Stack(echo=None) as stack:  # the default run folder: this checkout's RUN_DIR
        proxy = haproxy.start_haproxy(stack, conf, port=front)
        assert owners.is_ours(proxy.pid)
