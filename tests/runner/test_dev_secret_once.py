"""The development-JWT-secret notice shows once per lesson (per Stack), not at every server start."""

from __future__ import annotations

import sys

from pcbook.stack.procs import Stack

NOTICE = "using the development JWT secret"


def _server(stack: Stack, name: str) -> list[str]:
    mark = stack.mark()
    stack.start(name, [sys.executable, "-u", "-m", "pcbook.server", "--port", "0"])
    stack.wait_for_line(name, "server is listening", 30, since=mark)
    lines = stack.lines_since(mark, name)
    stack.stop(name)
    return lines


def test_only_the_first_server_of_a_stack_tells_about_the_dev_secret(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("PCBOOK_JWT_SECRET", raising=False)
    monkeypatch.delenv("PCBOOK_DEV_SECRET_NOTED", raising=False)
    with Stack(echo=None, run_dir=tmp_path, replace=False) as stack:
        first, second, restarted = _server(stack, "server1"), _server(stack, "server2"), _server(stack, "server1")
    assert any(NOTICE in line for line in first)
    assert not any(NOTICE in line or "JWT secret" in line for line in second + restarted), second + restarted
    with Stack(echo=None, run_dir=tmp_path, replace=False) as stack:  # the next lesson tells again
        assert any(NOTICE in line for line in _server(stack, "server1"))
