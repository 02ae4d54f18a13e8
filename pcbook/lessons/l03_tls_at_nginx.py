"""Lesson 3: mutual TLS terminated at nginx, plaintext to the backends.

Every step runs the tutorial's client and is judged by an Expect (pcbook.stage.model).
"""

from __future__ import annotations

from pcbook.lessons.tutorial import (
    BOTH,
    HTTP1_400,
    PLAIN_PAIR,
    refusals,
)
from pcbook.stage.model import Client, Exercise, Expect, Lesson, Nginx, Step

EXERCISE = Exercise(
    kind="nginx config",
    starter="nginx/exercises/lesson-3.conf",
    answer="nginx/lesson-3.conf",
    steps=("plaintext-refused", "tls-at-nginx", "no-client-cert", "foreign-client-cert"),
    hints=(
        'nginx must speak TLS to the client, show it a certificate, and require one back signed by the CA; the '
        'backends stay plaintext (grpc:// does not change).',
        '`listen 8080 ssl http2;` with `ssl_certificate cert/server-cert.pem;` and `ssl_certificate_key '
        'cert/server-key.pem;`: https://nginx.org/en/docs/http/ngx_http_ssl_module.html#ssl_certificate',
        '`ssl_client_certificate cert/ca-cert.pem;` names the CA, `ssl_verify_client on;` refuses a client without '
        'a certificate it signed: https://nginx.org/en/docs/http/ngx_http_ssl_module.html#ssl_verify_client',
    ),
)

LESSON = Lesson(
    number=3,
    slug="tls-at-nginx",
    title="TLS at nginx",
    goal="Terminate mutual TLS at nginx while the backends stay plaintext.",
    exercise=EXERCISE,
    steps=(
        Step(
            key="plaintext-refused",
            title="plaintext client against nginx with TLS",
            why="nginx now expects a TLS handshake on 8080. It takes the client's plaintext HTTP/2 preface "
                "for an HTTP request sent to its HTTPS port and answers with an HTTP/1.1 400 page (access log: "
                '`"PRI * HTTP/2.0" 400`); grpcio, expecting HTTP/2 frames, reports `Trying to connect an '
                "http1.x server (HTTP status 400)` and the first call, Login, fails.",
            servers=PLAIN_PAIR,
            nginx=Nginx("lesson-3.conf"),
            client=Client(),
            expect=Expect(ok=False, client_says=HTTP1_400),
            checkpoint=True,
        ),
        Step(
            key="tls-at-nginx",
            title="TLS client against nginx with TLS",
            why="The client and nginx verify each other's certificates; nginx decrypts and forwards "
                "each call in plaintext to the backends.",
            servers=PLAIN_PAIR,
            nginx=Nginx("lesson-3.conf"),
            client=Client(tls=True),
            expect=Expect(ok=True, spread=BOTH, access_posts=4),
            checkpoint=True,
        ),
        *refusals(PLAIN_PAIR, "lesson-3.conf"),
    ),
)
