"""Lesson 6: routing by gRPC service, one upstream per service.

Every step runs the tutorial's client and is judged by an Expect (pcbook.stage.model).
"""

from __future__ import annotations

from pcbook.lessons.tutorial import (
    AUTH_LOGIN,
    CREATE_LAPTOP,
    MTLS_PAIR,
    refusals,
)
from pcbook.stage.model import Client, Expect, Lesson, Nginx, Step

LESSON = Lesson(
    number=6,
    slug="routing-by-service",
    title="Routing by service",
    goal="Send the auth service to server1 and the laptop service to server2, whatever the run.",
    steps=(
        Step(
            key="routes",
            title="one upstream per service, two client runs",
            why="Every gRPC call is a POST to /package.Service/Method, so a location per service "
                "prefix picks the upstream; repeated runs keep the split.",
            servers=MTLS_PAIR,
            nginx=Nginx("lesson-6.conf"),
            client=Client(tls=True, runs=2),
            expect=Expect(
                ok=True,
                routes={AUTH_LOGIN: ("server1",), CREATE_LAPTOP: ("server2",)},
            ),
            checkpoint=True,
        ),
        *refusals(MTLS_PAIR, "lesson-6.conf"),
    ),
)
