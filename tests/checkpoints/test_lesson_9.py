"""Lesson 9: streams through nginx with mutual TLS on both hops, nginx's limits, L4 versus L7.

One run of the story (module fixture) is observed step by step; then the checkpoint is shown to fail
on two wrong setups: the starting config (no fixes, no L4 port) and an L4-only config.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from ownership import ours  # tests/ is on sys.path

from pcbook.lessons.l09_streams_and_l4_vs_l7 import BIG_IMAGE
from pcbook.stack.ports import find_listener
from pcbook.stage.judge import Observation
from pcbook.stage.results import ProbeRun
from pcbook.workbook import manifest
from pcbook.workbook.runner import LessonResult, Outcome

from .support import checkpoint, explain, story

MY_PORTS = manifest.get(9).ports


@pytest.fixture(autouse=True)
def noleftovers() -> Iterator[None]:
    """Lesson 9 left nothing listening on its own ports and no probe running.

    Replaces the package's check, which also sees other lessons' processes (run in parallel elsewhere)
    on the tutorial's ports; lesson 9 uses only its own.
    """
    yield
    busy = {port: find_listener(port) for port in MY_PORTS}
    assert not any(busy.values()), f"lesson 9 left ports listening: {busy}"
    probes = [p for p in Path("/proc").glob("[0-9]*/cmdline")
              if b"pcbook.measure.stream_probe" in _read(p) and ours(int(p.parent.name))]
    assert not probes, f"lesson 9 left probes running: {probes}"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


@pytest.fixture(scope="module")
def result() -> LessonResult:
    return story(9)


def _step(result: LessonResult, title: str) -> Outcome:
    return next(s for s in result.steps if s.key == title)


def _run(outcome: Outcome) -> ProbeRun:
    assert isinstance(outcome.result, ProbeRun)
    return outcome.result


def _client(outcome: Outcome) -> str:
    return "\n".join(_run(outcome).lines)


def _errors(outcome: Outcome) -> str:
    return "\n".join(_run(outcome).errors)


def test_story_and_checkpoint_pass(result: LessonResult) -> None:
    assert result.story_passed, explain(result)
    assert result.checkpoint_passed, explain(result)
    assert [s.checkpoint for s in result.steps] == [False] * 4 + [True] * 7


def test_three_stream_kinds_go_through_nginx_with_mutual_tls(result: LessonResult) -> None:
    first = _run(result.steps[0])
    served = {m.rsplit("/", 1)[-1] for _, m in first.calls}
    assert {"SearchLaptop", "UploadImage", "RateLaptop"} <= served
    logged = {(p.rsplit("/", 1)[-1], status) for p, status in Observation(access_lines=list(first.access)).posts}
    assert {("SearchLaptop", 200), ("UploadImage", 200), ("RateLaptop", 200)} <= logged


def test_big_upload_works_direct_and_gets_413_through_nginx(result: LessonResult) -> None:
    direct = _step(result, "big-upload-direct")
    assert "UploadImage ok" in _client(direct) and f"{BIG_IMAGE} bytes" in _client(direct)
    refused = _step(result, "upload-413")
    assert re.search(r"UploadImage failed .*code = Unknown desc = Received http2 header with status: 413",
                     _client(refused))
    assert re.search(r"client intended to send too large chunked body: \d+ bytes", _errors(refused))
    fixed = result.steps[4]
    assert "UploadImage ok" in _client(fixed) and fixed.passed


def test_quiet_stream_is_cut_by_the_read_timeout_then_survives(result: LessonResult) -> None:
    cut = _step(result, "quiet-cut")
    assert re.search(r"RateLaptop failed .*code = Internal .*RST_STREAM", _client(cut))
    assert "upstream timed out" in _errors(cut)
    survived = _step(result, "quiet-survives")
    assert survived.passed and "2 replies on one stream quiet" in _client(survived)


def test_l7_balances_per_call_and_l4_per_connection(result: LessonResult) -> None:
    titles = ("l7-one-connection", "l4-one-connection",
              "l4-several-connections")
    l7, l4, many = (_run(_step(result, title)).counts().per_server for title in titles)
    assert all(n > 0 for n in l7.values()), l7
    assert sorted(l4.values())[0] == 0 and sum(l4.values()) == sum(l7.values()), l4
    assert all(n > 0 for n in many.values()), many


def test_checkpoint_fails_on_the_starting_config() -> None:
    failed = checkpoint(9, "lesson-9-defaults.conf")
    assert [s.key for s in failed.steps] == [s.key for s in manifest.get(9).checkpoint_steps]
    assert not failed.checkpoint_passed
    line = failed.checkpoint_line()
    assert "UploadImage should succeed but failed" in line, line
    assert "RateLaptop should succeed but failed" in line, line
    assert "client1" in line, line  # no L4 port: the probe cannot connect to 8092


def test_checkpoint_fails_per_call_step_on_an_l4_only_config() -> None:
    failed = checkpoint(9, "lesson-9-l4-only.conf")
    assert not failed.checkpoint_passed
    wrong = [s for s in failed.steps if not s.passed]
    # At L4 nginx checks no certificate (the backends do, so the refusal is not nginx's 400).
    assert [s.key for s in wrong] == [
        "l7-one-connection",
        "no-client-cert",
        "foreign-client-cert",
    ], explain(failed)
    assert "spread one connection's calls over both servers" in failed.checkpoint_line()
