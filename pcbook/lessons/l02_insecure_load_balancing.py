"""Lesson 2: nginx balances the tutorial's plaintext gRPC across two servers, call by call.

Every step runs the tutorial's client and is judged by an Expect (pcbook.stage.model).
"""

from __future__ import annotations

from pcbook.lessons.tutorial import BOTH, PLAIN_PAIR
from pcbook.stage.model import Client, Expect, Lesson, Nginx, Step

LESSON = Lesson(
    number=2,
    slug="insecure-load-balancing",
    title="Load balancing insecure gRPC",
    goal="Put nginx on 8080 in front of two plaintext servers and watch the calls alternate.",
    steps=(
        Step(
            key="round-robin",
            title="nginx balances plaintext gRPC across server1 and server2",
            why="nginx accepts HTTP/2 on 8080 and passes each call (Login, then three CreateLaptop) "
                "to the next server of the upstream in turn: round robin per call, not per connection. "
                "The client stays up, and its token refresher logs in again after 2 s: a fifth access-log "
                "line, as in the lecture (whose client refreshes every 30 s).",
            servers=PLAIN_PAIR,
            nginx=Nginx("lesson-2.conf"),
            # Stays up past one token refresh, so that a second Login shows (the lecture's 5th line).
            client=Client(stay=3, refresh_seconds=2),
            expect=Expect(ok=True, spread=BOTH, access_posts=5),
            checkpoint=True,
        ),
    ),
)
