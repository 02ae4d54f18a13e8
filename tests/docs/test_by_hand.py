"""The by-hand blocks of lessons 2-6, typed as the pages say: one terminal per process (issue 26).

Each lesson page has a tab "By hand, as in the lecture" with the `make` lines a learner types. This test
reads that block from the page and types it: `make nginx-N` in the nginx terminal, `make server1...` and
`make server2...` in one terminal each, the client in a fourth. A line for a terminal whose process still
runs is typed after a Ctrl-C there, as a learner must. Each client line must do what its comment
promises: "fails" or "502" (with 502 in its output), otherwise it succeeds; "run it several times: the
split never changes" runs it twice and checks lesson 6's split both times. The page is the input, so an
edited page is what gets tested.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from terminal import Shell

from pcbook.lessons import tutorial
from pcbook.paths import ROOT

pytestmark = pytest.mark.timeout(240)
LESSONS = (2, 3, 4, 5, 6)
READY = {"nginx": r"nginx is up on 8080", "server1": r"server is listening on", "server2": r"server is listening on"}


@dataclass(frozen=True)
class Line:
    command: str  # `make ...` as typed
    comment: str  # what the page says after `#`

    @property
    def terminal(self) -> str | None:
        """The terminal of a long-running process (nginx, server1, server2); None: a client run to its end."""
        target = self.command.split()[1]
        if target.startswith("nginx-"):
            return "nginx"
        if target.startswith(("server1", "server2")):
            return target[:7]
        return None


def by_hand(number: int) -> list[Line]:
    """The `make` lines of lesson `number`'s by-hand tab, in order."""
    (page,) = (ROOT / "docs" / "lessons").glob(f"{number:02d}-*.md")
    text = page.read_text()
    tab = text.index('=== "By hand, as in the lecture"')
    block = re.search(r"```bash\n(.*?)```", text[tab:], re.S)
    assert block, f"{page.name}: no bash block under its by-hand tab"
    lines = []
    for raw in block.group(1).splitlines():
        command, _, comment = raw.strip().partition("#")
        if command.strip():
            assert command.startswith("make "), f"{page.name}: a by-hand line that is not a make target: {raw!r}"
            lines.append(Line(command.strip(), comment.strip()))
    return lines


def test_every_by_hand_block_has_nginx_servers_and_a_client() -> None:
    for number in LESSONS:
        terminals = {line.terminal for line in by_hand(number)}
        assert {"nginx", "server1", "server2", None} <= terminals, (number, terminals)


@pytest.fixture
def terminals() -> Iterator[dict[str, Shell]]:
    running: dict[str, Shell] = {}
    yield running
    for shell in running.values():
        shell.stop()


@pytest.mark.parametrize("number", LESSONS)
def test_the_by_hand_block_does_what_its_comments_say(number: int, terminals: dict[str, Shell]) -> None:
    for line in by_hand(number):
        where = f"lesson {number}, `{line.command}`"
        if line.terminal is not None:
            if line.terminal in terminals:
                terminals.pop(line.terminal).stop()  # Ctrl-C in that terminal first
            shell = terminals[line.terminal] = Shell(line.command)
            try:
                shell.wait_for(READY[line.terminal])
            except AssertionError as e:
                raise AssertionError(f"{where} did not start: {e}") from None
            continue
        runs = 2 if "several times" in line.comment else 1
        for _ in range(runs):
            marks = {name: len(shell.seen) for name, shell in terminals.items()}
            client = Shell(line.command)
            said = "\n".join(client.rest(timeout=60))
            code = client.proc.wait(10)
            if "fails" in line.comment or "502" in line.comment:
                assert code != 0, f"{where} should fail ({line.comment}), but succeeded:\n{said}"
                if "502" in line.comment:
                    assert "502" in said, f"{where} failed, but not with 502:\n{said}"
            else:
                assert code == 0, f"{where} should work ({line.comment or 'no comment'}), but failed:\n{said}"
                assert "created laptop with id:" in said, said
            if "split never changes" in line.comment:
                _assert_the_split(terminals, marks, said.count("created laptop with id:"), where)


def _assert_the_split(terminals: dict[str, Shell], marks: dict[str, int], creates: int, where: str) -> None:
    """Lesson 6: this client run's Login reached server1 and all its `creates` CreateLaptop calls server2.
    (A call on the wrong server leaves the right one short: the counts are the whole check.)"""
    for name, path, count in (("server1", tutorial.AUTH_LOGIN, 1), ("server2", tutorial.CREATE_LAPTOP, creates)):
        shell = terminals[name]
        while sum(path in seen for seen in shell.seen[marks[name]:]) < count:
            try:
                shell.wait_for(re.escape(path), timeout=20)
            except AssertionError:
                raise AssertionError(f"{where}: {name} logged fewer than {count} {path} calls this run:\n"
                                     + "\n".join(shell.seen[marks[name]:])) from None
