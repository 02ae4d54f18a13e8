"""Lesson 12's knobs file (pcbook.discovery.xds.knobs_from_file): a learner's, so only the operator's knobs
get through to etcd, and a bad line is one message that names it."""

from __future__ import annotations

import pytest

from pcbook.discovery.xds import KnobFileError, knobs_from_file


def test_knobs_are_read_as_etcdctl_put_takes_them() -> None:
    text = "# a comment\n\n/pcbook-lb/weight/server1 3\n  /pcbook-lb/drain/server2   1  \n"
    assert knobs_from_file(text, "/pcbook", "f") == [("/pcbook-lb/weight/server1", "3"),
                                                     ("/pcbook-lb/drain/server2", "1")]


@pytest.mark.parametrize(("line", "says"), [
    ("/pcbook/server1 127.0.0.1:50121", "is not a knob"),  # a server's own key: not the operator's
    ("/etc/passwd 1", "is not a knob"),
    ("/pcbook-lb/weight/../../x 3", "is not a knob"),
    ("/pcbook-lb/retries/server1 3", "is not a knob"),
    ("/pcbook-lb/weight/server1", "expected `KEY VALUE`"),
    ("/pcbook-lb/weight/server1 3 4", "expected `KEY VALUE`"),
    ("/pcbook-lb/weight/server1 " + "9" * 40, "is not a short word"),
])
def test_a_line_that_is_not_a_knob_is_named(line: str, says: str) -> None:
    with pytest.raises(KnobFileError, match=says) as err:
        knobs_from_file(f"# first\n{line}\n", "/pcbook", "lessons/exercises/lesson-12.txt")
    assert str(err.value).startswith("lessons/exercises/lesson-12.txt:2: ") and "\n" not in str(err.value)


def test_a_file_of_too_many_knobs_is_refused() -> None:
    text = "".join(f"/pcbook-lb/weight/s{n} 2\n" for n in range(40))
    with pytest.raises(KnobFileError, match="more than 32 knobs"):
        knobs_from_file(text, "/pcbook", "f")
