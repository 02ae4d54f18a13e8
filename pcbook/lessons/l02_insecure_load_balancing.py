"""Lesson 2: nginx balances the tutorial's plaintext gRPC across two servers, call by call.

Every step runs the tutorial's client and is judged by an Expect (pcbook.stage.model).
"""

from __future__ import annotations

from pcbook.lessons.tutorial import BOTH, PLAIN_PAIR
from pcbook.stage.model import Client, Exercise, Expect, Lesson, Nginx, Step

EXERCISE = Exercise(
    kind="nginx config",
    starter="nginx/exercises/lesson-2.conf",
    answer="nginx/lesson-2.conf",
    steps=("round-robin",),
    hints=(
        'Three TODOs: gRPC is HTTP/2, nginx needs a group of backends, and every call must be passed to that '
        "group. Lesson 2's page (docs/lessons/02-insecure-load-balancing.md) walks through them.",
        '`listen 8080 http2;` makes the listener speak HTTP/2; an `upstream pcbook_services { server '
        '0.0.0.0:50051; server 0.0.0.0:50052; }` block lists the backends: '
        'https://nginx.org/en/docs/http/ngx_http_upstream_module.html#upstream',
        'Inside `location /`: `grpc_pass grpc://pcbook_services;` (grpc:// is plaintext to the backends): '
        'https://nginx.org/en/docs/http/ngx_http_grpc_module.html#grpc_pass',
    ),
)

LESSON = Lesson(
    number=2,
    slug="insecure-load-balancing",
    title="Load balancing insecure gRPC",
    goal="Put nginx on 8080 in front of two plaintext servers and watch the calls alternate.",
    exercise=EXERCISE,
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
