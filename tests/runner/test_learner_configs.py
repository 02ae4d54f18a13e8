"""A learner's config or keystrokes get one clear answer, never a traceback or a lost nginx (issue 11, item 4-5)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from ownership import ours  # tests/ is on sys.path

from pcbook.paths import NGINX_DIR, ROOT
from pcbook.stack import nginx
from pcbook.stack.owners import leftovers
from pcbook.stack.ports import find_listener
from pcbook.stack.procs import Stack

LESSON_2 = (NGINX_DIR / "lesson-2.conf").read_bytes()


def _workbook(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pcbook.workbook", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _conf(tmp_path: Path, data: bytes, name: str = "mine.conf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _assert_one_clear_answer(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert "Traceback" not in said, said
    for text in expected:
        assert text in said, said
    assert find_listener(8080) is None and not _new_leftovers(), "nothing may be left running"


def test_daemon_on_is_refused_not_lost(tmp_path: Path) -> None:
    conf = _conf(tmp_path, b"daemon on;\n" + LESSON_2)
    _assert_one_clear_answer(_workbook("check", "2", "--conf", str(conf)),
                             f"{conf}:1: `daemon on;` would send nginx to the background")


def test_a_config_for_another_port_says_so(tmp_path: Path) -> None:
    done = _workbook("nginx", "2", "--conf", str(NGINX_DIR / "lesson-8.conf"), timeout=30)
    _assert_one_clear_answer(done, "lesson-8.conf listens on 8081, not on 8080, where this lesson's clients connect")
    assert len((done.stdout + done.stderr).strip().splitlines()) == 1


def test_an_unclosed_variable_is_nginxs_error_not_ours(tmp_path: Path) -> None:
    conf = _conf(tmp_path, LESSON_2 + b"\nerror_log ${")
    assert nginx.listen_ports(conf.read_text()) == [8080]  # the parser itself copes
    _assert_one_clear_answer(_workbook("check", "2", "--conf", str(conf)), "rejected", str(conf))


def test_a_latin1_byte_in_a_comment_is_accepted_as_nginx_does(tmp_path: Path) -> None:
    conf = _conf(tmp_path, b"# caf\xe9 (Latin-1)\n" + LESSON_2)
    done = _workbook("check", "2", "--conf", str(conf), "--quiet")
    assert done.returncode == 0 and "checkpoint lesson-2: passed" in done.stdout, done.stdout + done.stderr
    rendered = nginx.render_text(nginx.read_config(conf), (1, 31, 0))
    assert rendered.encode("utf-8", "surrogateescape").startswith(b"# caf\xe9")


def test_the_checkpoint_says_which_access_log_it_read(tmp_path: Path) -> None:
    conf = _conf(tmp_path, LESSON_2.replace(b"access_log logs/access.log;", b"access_log logs/mine.log;"))
    done = _workbook("check", "2", "--conf", str(conf), "--quiet")
    assert done.returncode == 1
    assert "nginx's access log (read from " in done.stdout and "logs/access.log" in done.stdout, done.stdout
    assert "your config writes its access log to logs/mine.log" in done.stdout, done.stdout


def test_key_copies_are_never_readable_by_others(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    # A big key makes the copy last long enough for another thread to see the file while it is written.
    with open(certs / "server-key.pem", "wb") as f:
        f.truncate(256 << 20)
    seen: set[int] = set()
    key = tmp_path / "prefix" / "cert" / "server-key.pem"
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                seen.add(key.stat().st_mode & 0o777)
            except FileNotFoundError:
                pass

    watcher = threading.Thread(target=watch)
    old = os.umask(0o022)
    watcher.start()
    try:
        nginx.render_config(NGINX_DIR / "lesson-3.conf", tmp_path / "prefix", version=(1, 31, 0), certs_dir=certs)
    finally:
        done.set()
        watcher.join()
        os.umask(old)
    assert seen and seen == {0o600}, {oct(m) for m in seen}


def test_a_second_ctrl_c_still_stops_everything_before_saying_so() -> None:
    proc = subprocess.Popen([sys.executable, "-u", "-m", "pcbook.workbook", "lesson", "2", "--keep"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        for line in proc.stdout:  # bounded by the process: it ends, or prints what is waited for
            lines.append(line.rstrip())
            if "the stack stays up" in line:
                proc.send_signal(signal.SIGINT)
            elif line.startswith("stopping ..."):
                proc.send_signal(signal.SIGINT)  # the second Ctrl-C, while the stack is stopping
                break
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines += rest.splitlines()
    said = "\n".join(lines)
    assert "Traceback" not in said, said
    if "interrupted; everything was stopped" in said:
        assert lines[-1] == "interrupted; everything was stopped", said
    assert find_listener(8080) is None and not _new_leftovers(), said


@pytest.fixture(autouse=True)
def _nothing_left() -> Iterator[None]:
    before = {pid for pid, _ in leftovers()}
    _BEFORE.clear()
    _BEFORE.update(before)
    yield
    assert not _new_leftovers(), f"left running: {_new_leftovers()}"


_BEFORE: set[int] = set()


def _new_leftovers() -> list[tuple[int, str]]:
    return [(pid, cmd) for pid, cmd in leftovers() if pid not in _BEFORE and "<defunct>" not in cmd and ours(pid)]


@pytest.mark.parametrize("line", [b"daemon On;", b'daemon "ON";', b"daemon 'on';", b'"daemon" on;', b"daemon\ton ;",
                                  b"daemon o\\n;x", b"include extra/*.conf;"])
def test_daemon_in_any_spelling_is_refused_before_nginx_starts(tmp_path: Path, line: bytes) -> None:
    """nginx reads a flag's value case-insensitively, a quoted name as the name, and an included file as
    if it were written in place: each of these would send nginx to the background."""
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "a.conf").write_bytes(b'# included\n"daemon" ON;\n')
    conf = _conf(tmp_path, line.replace(b"extra/", str(tmp_path).encode() + b"/extra/") + b"\n" + LESSON_2)
    with Stack(echo=None, run_dir=tmp_path / "run") as stack:
        try:
            nginx.start_nginx(stack, conf, port=None)
        except nginx.NginxConfigError as err:
            said = str(err)
        else:
            raise AssertionError(f"{line!r} was started: {stack.lines()}")
    if b"o\\n" in line:  # `o\n` is "o" and a newline for nginx, not "on": nginx -t says so, not our check
        assert "invalid value" in said and "daemon" in said, said
        return
    assert "\n" not in said and "would send nginx to the background" in said, said
    where = f"{tmp_path}/extra/a.conf:2" if b"include" in line else f"{conf}:1"
    assert said.startswith(where), said
