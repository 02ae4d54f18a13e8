"""Docs name a lesson's steps by key; the hook renders the number and title from the model (issue 26,
item 5). No page of docs/lessons and no step's prose types a step's number by hand."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docs" / "hooks"))
import generate  # noqa: E402  (the MkDocs hook)

from pcbook.workbook import manifest  # noqa: E402

NUMBER_WORDS = "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|both"
# A step's number, or a count of steps, written out: "step 4", "Steps 1-4", "both steps", "three steps".
TYPED = re.compile(rf"\bsteps? \d+|\b(?:{NUMBER_WORDS}) (?:of the )?(?:\w+ )?steps\b|\bsteps? (?:{NUMBER_WORDS})\b",
                   re.I)
GENERATED = re.compile(rf"{generate.STEP_REF.pattern}|{generate.CHECKPOINT_STEPS.pattern}|<!--\s*steps:\s*\d+\s*-->")


def typed_step_numbers(text: str) -> list[str]:
    """Each line (numbered) that types a step's number or a count of steps outside a placeholder."""
    return [f"{i}: {line.strip()}" for i, line in enumerate(text.splitlines(), 1)
            if TYPED.search(GENERATED.sub("", line))]


def test_the_check_finds_what_issue_26_found() -> None:
    assert typed_step_numbers("### Aside: TLS 1.2, the lecture's line (step 4)")
    assert typed_step_numbers("Both steps are checkpoints: the plaintext client is refused")
    assert typed_step_numbers("make check-9   # the checkpoint only (steps 5-9)")
    assert typed_step_numbers("Each of the last three steps keeps its probe run")
    assert not typed_step_numbers("The aside (<!-- step-no: 4 tls12-aside -->) and <!-- checkpoint-steps: 9 -->")
    assert not typed_step_numbers("<!-- steps: 4 -->")


@pytest.mark.parametrize("page", sorted((ROOT / "docs" / "lessons").glob("*.md")), ids=lambda p: p.name)
def test_no_lesson_page_types_a_step_number(page: Path) -> None:
    typed = typed_step_numbers(page.read_text())
    assert not typed, f"{page.name} types step numbers; name the step by key (<!-- step: N key -->):\n" + \
        "\n".join(typed)


def test_no_steps_prose_types_a_step_number() -> None:
    """The title, why, claims and `then` lines a step prints (runner, notebook, the docs' step table)."""
    typed = [f"lesson {lesson.number} {step.key}: {text}"
             for lesson in manifest.LESSONS for step in lesson.steps
             for text in (step.title, step.why, *step.must_show(), *step.then)
             if TYPED.search(text)]
    assert not typed, "\n".join(typed)


def test_a_reference_renders_number_and_title_from_the_model() -> None:
    lesson = manifest.get(4)
    aside = lesson.step("tls12-aside")
    assert generate.render_step_refs("the aside, <!-- step: 4 tls12-aside -->.") == \
        f"the aside, step {lesson.number_of('tls12-aside')} (*{aside.title}*)."
    assert generate.render_step_refs("<!-- Step-no: 4 tls12-aside --> runs") == "Step 6 runs"
    keys = " ".join(s.key for s in manifest.get(3).steps)
    assert generate.render_step_refs(f"<!-- Steps: 3 {keys} --> are") == "Steps 1-4 are"
    assert generate.render_step_refs("<!-- steps: 8 worker-connections-10 enough-worker-connections -->") == \
        "steps 7 and 8"
    assert generate.render_step_refs("<!-- checkpoint-steps: 8 -->") == "steps 2, 3, 5 and 8"
    assert generate.render_step_refs("<!-- checkpoint-steps: 9 -->") == "steps 5-11"
    assert generate.render_step_refs("<!-- steps: 4 -->") == "<!-- steps: 4 -->"  # the table's, untouched


@pytest.mark.parametrize("text", ["<!-- step: 4 no-such-step -->", "<!-- step: 99 tls -->",
                                  "<!-- step: 4 tls12-aside no-client-cert -->", "<!-- steps: 4 tls12-aside x -->"])
def test_a_wrong_reference_fails_the_build(text: str) -> None:
    with pytest.raises(PluginError):
        generate.render_step_refs(text)
