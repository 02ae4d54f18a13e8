"""The sample lesson's module: the act and judge of its one act/judge step."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pcbook.stage.results import Calls

if TYPE_CHECKING:
    from pcbook.workbook.runner import StepContext


def send(ctx: StepContext) -> Calls:
    run = ctx.run_driver()
    ctx.say(f"calls:   {run.counts()}")
    return run


def both_served(run: Calls) -> list[str]:
    diffs = [f"call {c.number} failed: {c.said()}" for c in run.failed()]
    idle = [name for name, n in run.counts().per_server.items() if n == 0]
    if idle:
        diffs.append(f"{' and '.join(idle)} served no call ({run.counts()})")
    return diffs
