"""What `make lesson-N` prints: a step's bulk traffic summarised beyond the tutorial, its finding last,
and what stopping its processes prints before the next step's header (real servers and load driver)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from pcbook.stage.model import Lesson
from pcbook.workbook import manifest
from pcbook.workbook.runner import line_kind, run_lesson

RECEIVED = "receive a create-laptop request with id:"
SUMMARY = re.compile(r"^   \(repeated lines captured, not shown: (.+); the first line of each kind is above, "
                     r"every line is in (\S+)\)$")


def _two_steps() -> Lesson:
    """Lesson 7's round robin over both servers, then pick_first on server1 alone (server2 stops)."""
    seven = manifest.get(7)
    spread, one = seven.steps[1], seven.steps[0]
    return dataclasses.replace(seven, steps=(spread, dataclasses.replace(one, servers=one.servers[:1])))


def _blocks(lines: list[str]) -> list[list[str]]:
    """The lines of each step, from its header to the next header (or the end)."""
    starts = [i for i, line in enumerate(lines) if line.startswith("-- step ")]
    return [lines[a:b] for a, b in zip(starts, [*starts[1:], len(lines)], strict=True)]


def test_a_line_kind_ignores_what_changes_per_call_but_not_statuses_or_ports() -> None:
    a = "2026/12/03 06:52:48 receive a create-laptop request with id: 328c12af-ddd5-4a26-9401-fda087981faf"
    b = "2026/12/03 06:52:49 receive a create-laptop request with id: 6404b21a-f562-4487-9219-2043443f0945"
    assert line_kind(a) == line_kind(b)
    ok = '127.0.0.1 [03/Dec/2026:06:52:48 +0000] "POST /x HTTP/2.0" 200 upstream=127.0.0.1:50081 call=2'
    assert line_kind(ok) == line_kind(ok.replace("call=2", "call=17").replace(":48 +", ":51 +"))
    assert line_kind(ok) != line_kind(ok.replace(" 200 ", " 502 "))
    assert line_kind(ok) != line_kind(ok.replace("50081", "50082"))
    failed = "call 6: UNAVAILABLE after 3.4 ms: nginx: no live backend"
    assert line_kind(failed) == line_kind(failed.replace("6", "9").replace("3.4", "1.2"))
    # grpc's C core, as lesson 14's clients print it at each GOAWAY: time and thread id vary.
    goaway = "I1207 15:38:24.071034   27599 chttp2_transport.cc:1403] ipv4:127.0.0.1:8141: Got goaway [2]"
    assert line_kind(goaway) == line_kind(goaway.replace("24.071034   27599", "25.267529   27600"))


def test_bulk_lines_are_summarised_the_finding_is_last_and_stops_come_before_the_next_header() -> None:
    echoed: list[str] = []
    result = run_lesson(_two_steps(), echo=echoed.append)
    assert result.story_passed, [o.diffs for o in result.steps]
    first, second = _blocks(echoed)

    # Every call of round robin was received (the record has them all), each kind is shown once per server.
    assert sum(len(call.servers) for call in result.steps[0].result.calls) == 10
    for block in (first, second):
        for server in ("server1", "server2"):
            assert sum(1 for line in block if line.startswith(server) and RECEIVED in line) <= 1, block
    summaries = [m for line in first if (m := SUMMARY.match(line))]
    assert len(summaries) == 1 and "server1" in summaries[0].group(1), first
    # What the terminal was spared is in the file the summary names, in the order it came.
    transcript = Path(summaries[0].group(2)).read_text().splitlines()
    assert sum(1 for line in transcript if RECEIVED in line) == 20
    assert transcript[transcript.index(first[0]):][:len(first[:3])] == first[:3]

    # The step's own lines end with its finding; only the processes' stop lines may follow it.
    for block in (first, second):
        own = [i for i, line in enumerate(block) if line.startswith("   ")]
        assert block[own[-1]].startswith("   ok: "), block
        assert all(" | " in line or not line for line in block[own[-1] + 1:]), block
    # server2 is not in step 2: it stops before step 2's header, not under it.
    assert any(line.startswith("server2") and "server stopped" in line for line in first), first
    assert not any(line.startswith("server2") for line in second), second


def test_the_tutorials_lessons_show_every_line() -> None:
    echoed: list[str] = []
    lesson = dataclasses.replace(_two_steps(), tutorial=True)
    result = run_lesson(dataclasses.replace(lesson, steps=lesson.steps[:1]), echo=echoed.append)
    assert result.story_passed
    assert sum(1 for line in echoed if RECEIVED in line) == 10
    assert not any(SUMMARY.match(line) for line in echoed)
