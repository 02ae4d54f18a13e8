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
from pcbook.stage.model import Client, Exercise, Expect, Lesson, Nginx, Step

EXERCISE = Exercise(
    kind="nginx config",
    starter="nginx/exercises/lesson-6.conf",
    answer="nginx/lesson-6.conf",
    steps=("routes", "no-client-cert", "foreign-client-cert"),
    hints=(
        'A gRPC call is a POST to /<package>.<Service>/<Method>: nginx can route on the path prefix, one upstream '
        'per service.',
        'Two upstreams (`auth_services` with 0.0.0.0:50051, `laptop_services` with 0.0.0.0:50052) and two '
        'locations, `location /techschool_pcbook.AuthService { ... }` and `location '
        '/techschool_pcbook.LaptopService { ... }`: '
        'https://nginx.org/en/docs/http/ngx_http_core_module.html#location',
        "Each location needs its own `grpc_pass grpcs://...;` and, for the backends' mutual TLS, the "
        '`grpc_ssl_certificate` and `grpc_ssl_certificate_key` lines: '
        'https://nginx.org/en/docs/http/ngx_http_grpc_module.html#grpc_ssl_certificate',
    ),
)

LESSON = Lesson(
    number=6,
    slug="routing-by-service",
    title="Routing by service",
    goal="Send the auth service to server1 and the laptop service to server2, whatever the run.",
    exercise=EXERCISE,
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
