"""The practice around the exercises: `make progress`, `make hint-N`, `make watch-N`.

Each lesson's exercise is declared with the lesson (pcbook.stage.model.Exercise). A check here runs
the steps the exercise's file stands in for (its `steps`), stopping at the first that differs; `make
check-N CONF=` runs the whole checkpoint. Verdicts are remembered in .run/ by the file's content (its
git blob id, so that a starter as shipped is known without git or a run: pcbook/workbook/starters.json,
which the tests keep equal to the committed starters, each of which fails).
Watching is plain polling of the file's mtime: a save is noticed within one 0.1 s poll, and no
file-watching library (with its threads and platform backends) is needed for one file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import time
from collections.abc import Callable
from pathlib import Path

from pcbook.paths import RUN_DIR, shown
from pcbook.stage.model import Lesson
from pcbook.workbook.runner import LessonResult, run_lesson

STARTERS = Path(__file__).with_name("starters.json")
POLL = 0.1  # s between two looks at the watched file's mtime


def blob_id(data: bytes) -> str:
    """git's id of a file with this content (`git hash-object`), computed without git."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def shipped() -> dict[str, str]:
    """Starter path (relative to the checkout) -> the blob id of the starter as committed."""
    return json.loads(STARTERS.read_text())


def fingerprint(lesson: Lesson) -> str:
    """What a verdict depends on besides the learner's file: the lesson's module and its answer."""
    from pcbook.workbook import manifest

    module = manifest.MODULES[manifest.LESSONS.index(lesson)]
    parts = [Path(inspect.getsourcefile(module) or "").read_bytes()]
    if lesson.exercise is not None:
        parts.append(lesson.exercise.answer_path.read_bytes())
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


# -- verdicts, remembered by content ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Verdict:
    passed: bool
    line: str  # the checkpoint line: `checkpoint lesson-N: passed` or `... failed: what differs`
    reused: bool = False  # from an earlier check of the same content (no stack was started)


class Verdicts:
    """Verdicts by (lesson, content, fingerprint) in .run/progress.json."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or RUN_DIR / "progress.json"
        try:
            self.known: dict[str, dict[str, object]] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.known = {}

    @staticmethod
    def key(lesson: Lesson, data: bytes) -> str:
        return f"{lesson.number}:{blob_id(data)}:{fingerprint(lesson)}"

    def get(self, lesson: Lesson, data: bytes) -> Verdict | None:
        found = self.known.get(self.key(lesson, data))
        if found is not None:
            return Verdict(bool(found["passed"]), str(found["line"]), reused=True)
        assert lesson.exercise is not None
        if shipped().get(lesson.exercise.starter) == blob_id(data):
            return Verdict(False, f"checkpoint {lesson.target}: failed: the starter as shipped (its TODOs are "
                                  "not filled yet)", reused=True)
        return None

    def put(self, lesson: Lesson, data: bytes, verdict: Verdict) -> None:
        self.known[self.key(lesson, data)] = {"passed": verdict.passed, "line": verdict.line}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.known, indent=1))
        tmp.replace(self.path)


def exercise_steps(lesson: Lesson) -> Lesson:
    """The lesson reduced to the steps its exercise's file stands in for."""
    assert lesson.exercise is not None
    return dataclasses.replace(lesson, steps=tuple(s for s in lesson.steps if s.key in lesson.exercise.steps))


def check(lesson: Lesson, conf: Path) -> LessonResult:
    return run_lesson(exercise_steps(lesson), conf=conf, checkpoint_only=True, stop_at_failure=True, echo=None)


def verdict_of(lesson: Lesson, conf: Path, verdicts: Verdicts) -> Verdict:
    data = conf.read_bytes()
    if (known := verdicts.get(lesson, data)) is not None:
        return known
    result = check(lesson, conf)
    verdict = Verdict(result.checkpoint_passed, result.checkpoint_line())
    verdicts.put(lesson, data, verdict)
    return verdict


# -- make progress ---------------------------------------------------------------------------------------

def progress(lessons: tuple[Lesson, ...], say: Callable[[str], None] = print) -> int:
    verdicts = Verdicts()
    say("Your exercises (each checked once per content; edit one, then run this again):")
    rows: list[tuple[Lesson, Path, Verdict]] = []
    for lesson in lessons:
        if lesson.exercise is None:
            say(f"  [    ] lesson {lesson.number:<2} {lesson.title:<45} no exercise: make {lesson.target} replays it")
            continue
        path = lesson.exercise.path
        if not path.is_file():
            say(f"  [    ] lesson {lesson.number:<2} {lesson.title:<45} {shown(path)} is missing: "
                f"git checkout -- {lesson.exercise.starter}")
            continue
        verdict = verdict_of(lesson, path, verdicts)
        rows.append((lesson, path, verdict))
        mark = "done" if verdict.passed else "todo"
        say(f"  [{mark}] lesson {lesson.number:<2} {lesson.title:<45} {shown(path)}")
    done = sum(1 for _, _, v in rows if v.passed)
    say(f"{done}/{len(rows)} exercises done")
    for lesson, path, verdict in rows:
        if not verdict.passed:
            say(f"next: lesson {lesson.number} — {verdict.line.split(': ', 2)[-1]}")
            say(f"      edit {shown(path)}; make watch-{lesson.number} checks it on each save, "
                f"make hint-{lesson.number} gives a hint")
            break
    return 0


# -- make hint-N -----------------------------------------------------------------------------------------

HINTS_SEEN = RUN_DIR / "hints.json"


def hint(lesson: Lesson, *, show_all: bool = False, say: Callable[[str], None] = print,
         seen_file: Path | None = None) -> int:
    """The next hint for the lesson's exercise (how many were shown is kept in .run/hints.json)."""
    if lesson.exercise is None:
        say(f"lesson {lesson.number} has no exercise: make {lesson.target} replays it")
        return 1
    seen_file = seen_file or HINTS_SEEN
    try:
        seen: dict[str, int] = json.loads(seen_file.read_text())
    except (OSError, ValueError):
        seen = {}
    hints = lesson.exercise.hints
    shown_so_far = seen.get(str(lesson.number), 0)
    if show_all:
        for n, text in enumerate(hints, 1):
            say(f"hint {n}/{len(hints)} for lesson {lesson.number}: {text}")
        shown_so_far = len(hints)
    elif shown_so_far >= len(hints):
        say(f"no more hints for lesson {lesson.number}: all {len(hints)} were shown "
            f"(make hint-{lesson.number} ALL=1 shows them again)")
        return 0
    else:
        say(f"hint {shown_so_far + 1}/{len(hints)} for lesson {lesson.number}: {hints[shown_so_far]}")
        shown_so_far += 1
    seen[str(lesson.number)] = shown_so_far
    seen_file.parent.mkdir(parents=True, exist_ok=True)
    seen_file.write_text(json.dumps(seen))
    return 0


# -- make watch-N ----------------------------------------------------------------------------------------

def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def watch(lesson: Lesson, conf: Path, say: Callable[[str], None] = print, polls: int | None = None) -> int:
    """Check `conf` now and after every save, until Ctrl-C (or `polls` looks, for the tests)."""
    say(f"watching {shown(conf)} for lesson {lesson.number} (checked on each save; Ctrl-C stops)")
    verdicts = Verdicts()
    last: bytes | None = None
    stamp: tuple[int, int] | None = None
    looked = 0
    while polls is None or looked < polls:
        now = _stamp(conf)
        if now is not None and now != stamp:
            stamp = now
            data = conf.read_bytes()
            if data != last:
                last = data
                started = time.monotonic()
                say(f"{time.strftime('%H:%M:%S')} checking {shown(conf)} ...")
                result = check(lesson, conf)
                verdicts.put(lesson, data, Verdict(result.checkpoint_passed, result.checkpoint_line()))
                say(f"  {result.checkpoint_line()} ({time.monotonic() - started:.1f} s)")
                if result.checkpoint_passed:
                    say(f"  the whole checkpoint: make check-{lesson.number} CONF={shown(conf)}")
        looked += 1
        time.sleep(POLL)  # polling the file's mtime (see the module's docstring), not synchronisation
    return 0

