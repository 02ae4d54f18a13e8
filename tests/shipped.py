"""The exercise starters as the project shipped them, whatever a learner did to the working copy or committed."""

from __future__ import annotations

import subprocess

from pcbook.paths import ROOT


def shipped_revision() -> str:
    """The commit that last recorded the shipped starters (pcbook/workbook/starters.json): the project ships a
    starter and its record together; a learner who commits a finished exercise touches neither."""
    done = subprocess.run(["git", "log", "-1", "--format=%H", "--", "pcbook/workbook/starters.json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.strip(), f"no commit records the starters: {done.stderr}"
    return done.stdout.strip()


def shipped_starter(rel: str) -> bytes:
    done = subprocess.run(["git", "show", f"{shipped_revision()}:{rel}"], cwd=ROOT, capture_output=True, timeout=30)
    assert done.returncode == 0, f"cannot read {rel} as shipped: {done.stderr.decode(errors='replace')}"
    return done.stdout
