"""What a learner reads must be what the stack does: claims in configs and pages, checked against the
files and the code they describe (the lessons' checkpoint tests measure the stack itself)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NGINX = ROOT / "nginx"
DOCS = ROOT / "docs"


def _directives(path: Path) -> list[str]:
    """The config without comments or blank lines."""
    lines = (re.sub(r"#.*$", "", line).rstrip() for line in path.read_text().splitlines())
    return [line for line in lines if line.strip()]


def _header(path: Path) -> str:
    lines = path.read_text().splitlines()
    end = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    return " ".join(line.lstrip("# ") for line in lines[:end])


def test_non_idempotent_counter_example_is_one_line_and_says_it_changes_nothing() -> None:
    # Lesson 8 step 4 measures that non_idempotent retries nothing behind grpc_pass; the file must say so.
    base, other = _directives(NGINX / "lesson-8.conf"), _directives(NGINX / "lesson-8-non-idempotent.conf")
    changed = [(a, b) for a, b in zip(base, other, strict=True) if a != b]
    assert changed == [("            grpc_next_upstream error timeout;",
                        "            grpc_next_upstream error timeout non_idempotent;")]
    header = _header(NGINX / "lesson-8-non-idempotent.conf")
    assert "changes nothing" in header and "no CreateLaptop runs twice" in header
    assert not re.search(r"can run twice|now retries|DANGEROUS", (NGINX / "lesson-8-non-idempotent.conf").read_text())


def test_lesson_8_page_quotes_the_configs_grpc_messages() -> None:
    # Every `nginx: ...` message the page shows is one the config really sends.
    conf = (NGINX / "lesson-8.conf").read_text()
    sent = set(re.findall(r'"(nginx: [^"]+)"', conf))
    page = (DOCS / "lessons" / "08-when-a-backend-fails.md").read_text()
    shown = set(re.findall(r"(?:UNAVAILABLE|DEADLINE_EXCEEDED|INTERNAL): (nginx: [^`|]+?)(?:`|  \()", page))
    assert shown and shown <= sent, shown - sent
