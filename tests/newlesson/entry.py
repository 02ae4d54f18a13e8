"""The sample lesson's manifest entry: what a new lesson adds to LESSONS in pcbook/workbook/manifest.py.

(A shipped lesson's entry goes in that tuple; this one stays in the tests so that learners never see it.)
"""

from __future__ import annotations

from pathlib import Path

from pcbook.stage.model import Client, Driver, Expect, Lesson, Nginx, Server, Step

from . import sample

HERE = Path(__file__).resolve().parent
SERVERS = (Server("server1", 50191), Server("server2", 50192))
NGINX = Nginx(HERE / "lesson-99.conf", 8191)

LESSON = Lesson(
    99,
    "sample",
    "A sample lesson",
    "Show that a lesson is a manifest entry, a module, a config, a notebook, a page and a test.",
    tutorial=False,
    steps=(
        Step(
            "the tutorial's client through nginx on 8191",
            "nginx passes each call to the next server of its upstream.",
            SERVERS,
            NGINX,
            Client(address="0.0.0.0:8191"),
            Expect(ok=True, spread=("server1", "server2"), access_posts=4),
            checkpoint=True,
        ),
        Step(
            "six calls of the load driver reach both servers",
            "Round robin per call: six calls over two servers, three each when nothing fails.",
            SERVERS,
            NGINX,
            Driver("127.0.0.1:8191", calls=6),
            act=sample.send,
            judge=sample.both_served,
            claims=("every call succeeds", "both servers serve calls"),
            checkpoint=True,
        ),
    ),
)
