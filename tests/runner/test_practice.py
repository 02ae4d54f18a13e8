"""`make hint-N`, `make progress` and `make watch-N` (pcbook.workbook.practice), each on its own run folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ownership import ours  # tests/ is on sys.path
from shipped import shipped_starter

from pcbook.paths import ROOT
from pcbook.stack.owners import leftovers
from pcbook.workbook import manifest, practice

SAVE_NOTICED_WITHIN = 2.0  # s from a save to watch's "checking" line (issue 29)


def _env(run_dir: Path) -> dict[str, str]:
    return {**os.environ, "PCBOOK_RUN_DIR": str(run_dir)}


def test_make_hint_gives_each_hint_once_then_says_there_are_no_more(tmp_path: Path) -> None:
    lesson = manifest.get(8)
    assert lesson.exercise is not None
    said = [subprocess.run(["make", "--no-print-directory", "hint-8"], cwd=ROOT, env=_env(tmp_path),
                           capture_output=True, text=True, timeout=60).stdout.strip() for _ in range(4)]
    hints = lesson.exercise.hints
    assert len(hints) == 3
    for n, (line, hint) in enumerate(zip(said, hints, strict=False), 1):
        assert line == f"hint {n}/3 for lesson 8: {hint}", said
    assert len(set(said[:3])) == 3, said
    assert said[3].startswith("no more hints for lesson 8"), said
    every = subprocess.run(["make", "--no-print-directory", "hint-8", "ALL=1"], cwd=ROOT, env=_env(tmp_path),
                           capture_output=True, text=True, timeout=60).stdout.splitlines()
    assert every == said[:3]


def test_a_lesson_without_an_exercise_says_so(tmp_path: Path) -> None:
    said: list[str] = []
    assert practice.hint(manifest.get(1), say=said.append, seen_file=tmp_path / "hints.json") == 1
    assert said == ["lesson 1 has no exercise: make lesson-1 replays it"]


def test_progress_reuses_the_verdict_of_unchanged_content(tmp_path: Path) -> None:
    lesson = manifest.get(2)
    assert lesson.exercise is not None
    mine = tmp_path / "mine.conf"
    mine.write_bytes(lesson.exercise.answer_path.read_bytes())
    verdicts = practice.Verdicts(tmp_path / "progress.json")
    started = time.monotonic()
    first = practice.verdict_of(lesson, mine, verdicts)
    checked = time.monotonic() - started
    assert first.passed and not first.reused, first
    started = time.monotonic()
    again = practice.verdict_of(lesson, mine, practice.Verdicts(tmp_path / "progress.json"))
    reused = time.monotonic() - started
    assert again == practice.Verdict(True, first.line, reused=True)
    assert reused < checked / 10, f"reusing took {reused:.3f} s, checking {checked:.3f} s"
    # One byte more is new content: checked again (a comment changes no verdict, but it is not reused).
    mine.write_bytes(mine.read_bytes() + b"\n")
    assert practice.Verdicts(tmp_path / "progress.json").get(lesson, mine.read_bytes()) is None


def test_the_shipped_starter_is_todo_without_a_run(tmp_path: Path) -> None:
    for lesson in manifest.LESSONS:
        if lesson.exercise is None:
            continue
        blob = practice.shipped()[lesson.exercise.starter]
        # The committed starter's bytes: read by their git id, whatever the learner made of the file.
        data = subprocess.run(["git", "cat-file", "blob", blob], cwd=ROOT, capture_output=True, timeout=30,
                              check=True).stdout
        found = practice.Verdicts(tmp_path / "progress.json").get(lesson, data)
        assert found is not None and not found.passed and found.reused, (lesson.number, found)


def test_watch_rechecks_within_two_seconds_of_a_save_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    lesson = manifest.get(2)
    assert lesson.exercise is not None
    mine = tmp_path / "mine.conf"
    mine.write_bytes(shipped_starter(lesson.exercise.starter))
    before = {pid for pid, _ in leftovers()}
    proc = subprocess.Popen([sys.executable, "-u", "-m", "pcbook.workbook", "watch", "2", "--conf", str(mine)],
                            cwd=ROOT, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        _read_until(proc, lines, "checkpoint lesson-2: failed", 120)
        saved = time.monotonic()
        mine.write_bytes(lesson.exercise.answer_path.read_bytes())
        _read_until(proc, lines, "checking", SAVE_NOTICED_WITHIN + 60)
        noticed = time.monotonic() - saved
        assert noticed < SAVE_NOTICED_WITHIN, f"watch noticed the save after {noticed:.2f} s: {lines}"
        print(f"watch noticed the save after {noticed * 1000:.0f} ms")
        _read_until(proc, lines, "checkpoint lesson-2: passed", 120)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rest = proc.stdout.read() if proc.stdout else ""
    assert "Traceback" not in "".join(lines) + rest, lines + [rest]
    assert proc.returncode == 130, (proc.returncode, lines, rest)
    left = [(pid, cmd) for pid, cmd in leftovers() if pid not in before and ours(pid)]
    assert left == [], f"watch left processes running after Ctrl-C: {left}"


def _read_until(proc: subprocess.Popen[str], lines: list[str], text: str, timeout: float) -> None:
    """Read the watcher's lines until one holds `text` (each readline blocks until a line comes; the
    deadline is checked between lines and by the test's own timeout)."""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"watch exited before saying {text!r}: {lines}")
        lines.append(line.rstrip("\n"))
        if text in line:
            return
    raise AssertionError(f"watch did not say {text!r} within {timeout:g} s: {lines}")
