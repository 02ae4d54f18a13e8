"""Lesson 5: mutual TLS on both hops: nginx shows the backends a certificate.

Every step runs the tutorial's client and is judged by an Expect (pcbook.stage.model).
"""

from __future__ import annotations

from pcbook.lessons.tutorial import (
    BOTH,
    MTLS_PAIR,
    NO_CERT_NGINX,
    NO_CERT_SERVER,
    refusals,
)
from pcbook.stage.model import Client, Exercise, Expect, Lesson, Nginx, Step

EXERCISE = Exercise(
    kind="nginx config",
    starter="nginx/exercises/lesson-5.conf",
    answer="nginx/lesson-5.conf",
    steps=("mutual-tls-backends", "no-client-cert", "foreign-client-cert"),
    hints=(
        'The backends require a client certificate: nginx itself is their client now, so it must show one.',
        '`grpc_ssl_certificate cert/server-cert.pem;` and `grpc_ssl_certificate_key cert/server-key.pem;` in '
        '`location /`: https://nginx.org/en/docs/http/ngx_http_grpc_module.html#grpc_ssl_certificate',
    ),
)

LESSON = Lesson(
    number=5,
    slug="mutual-tls-to-backends",
    title="Mutual TLS between nginx and the backends",
    goal="Give nginx a client certificate so the backends can require one again.",
    exercise=EXERCISE,
    steps=(
        Step(
            key="backends-require-cert",
            title="backends require a client certificate again, nginx shows none",
            why="Back to mutual TLS on the backends: lesson 4's config fails as before.",
            servers=MTLS_PAIR,
            nginx=Nginx("lesson-4.conf"),
            client=Client(tls=True),
            expect=Expect(ok=False, nginx_error=NO_CERT_NGINX, server_says=NO_CERT_SERVER),
        ),
        Step(
            key="mutual-tls-backends",
            title="nginx shows its certificate to the backends",
            why="grpc_ssl_certificate and grpc_ssl_certificate_key give nginx a certificate signed by "
                "the CA the backends trust: both hops are mutual TLS.",
            servers=MTLS_PAIR,
            nginx=Nginx("lesson-5.conf"),
            client=Client(tls=True),
            expect=Expect(ok=True, spread=BOTH, access_posts=4),
            checkpoint=True,
        ),
        *refusals(MTLS_PAIR, "lesson-5.conf"),
    ),
)
