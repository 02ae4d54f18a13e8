"""Lesson 99, the sample: what a new lesson's module holds (its declaration, its acts and its judges).

A shipped lesson's module lives in pcbook/lessons/ and has one line in pcbook/workbook/manifest.py's
MODULES; this one stays in the tests so that learners never see it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pcbook.stage.model import Client, Driver, Expect, Lesson, Nginx, Server, Step
from pcbook.stage.results import Calls

if TYPE_CHECKING:
    from pcbook.stage.context import StepContext

HERE = Path(__file__).resolve().parent
SERVERS = (Server("server1", 50191), Server("server2", 50192))
NGINX = Nginx(HERE / "lesson-99.conf", 8191)


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


LESSON = Lesson(
    number=99,
    slug="sample",
    title="A sample lesson",
    goal="Show that a lesson is a module, a config, a notebook, a page and a test.",
    tutorial=False,
    steps=(
        Step(
            key="through-nginx",
            title="the tutorial's client through nginx on 8191",
            why="nginx passes each call to the next server of its upstream.",
            servers=SERVERS,
            nginx=NGINX,
            client=Client(address="0.0.0.0:8191"),
            expect=Expect(ok=True, spread=("server1", "server2"), access_posts=4),
            checkpoint=True,
        ),
        Step(
            key="six-calls",
            title="six calls of the load driver reach both servers",
            why="Round robin per call: six calls over two servers, three each when nothing fails.",
            servers=SERVERS,
            nginx=NGINX,
            client=Driver("127.0.0.1:8191", calls=6),
            act=send,
            judge=both_served,
            claims=("every call succeeds", "both servers serve calls"),
            checkpoint=True,
        ),
    ),
)
