"""Lesson 4: TLS to the backends, broken twice as the tutorial breaks it, then fixed.

Every step runs the tutorial's client and is judged by an Expect (pcbook.stage.model).
"""

from __future__ import annotations

from pcbook.lessons.tutorial import (
    BAD_GATEWAY,
    BOTH,
    DROPPED,
    MTLS_PAIR,
    NO_CERT_NGINX,
    NO_CERT_SERVER,
    SERVER_TLS_PAIR,
    TLS12_REFUSED,
    refusals,
)
from pcbook.stage.model import Client, Exercise, Expect, Lesson, Nginx, Step

EXERCISE = Exercise(
    kind="nginx config",
    starter="nginx/exercises/lesson-4.conf",
    answer="nginx/lesson-4.conf",
    steps=("server-side-tls-backends", "no-client-cert", "foreign-client-cert"),
    hints=(
        'The backends now expect TLS: only the scheme nginx uses to reach them has to change.',
        '`grpc_pass grpcs://pcbook_services;` (grpcs:// is gRPC over TLS to the backends): '
        'https://nginx.org/en/docs/http/ngx_http_grpc_module.html#grpc_pass',
    ),
)

LESSON = Lesson(
    number=4,
    slug="tls-to-backends",
    title="TLS to the backends",
    goal="Turn on TLS on the backends, break nginx twice as the tutorial does, then fix it.",
    exercise=EXERCISE,
    steps=(
        Step(
            key="grpc-to-tls-backends",
            title="TLS backends, nginx still on grpc://",
            why="nginx speaks plaintext HTTP/2 to backends that expect TLS; they close the connection "
                "and nginx answers the client with an HTML 502 Bad Gateway.",
            servers=MTLS_PAIR,
            nginx=Nginx("lesson-3.conf"),
            client=Client(tls=True),
            expect=Expect(
                ok=False,
                client_says=BAD_GATEWAY,
                nginx_error=DROPPED,
            ),
        ),
        Step(
            key="no-cert-for-backends",
            title="grpcs:// against backends that require a client certificate",
            why="nginx now does TLS to the backends but shows no certificate; the backends require one "
                "and drop the connection (the server logs PEER_DID_NOT_RETURN_A_CERTIFICATE). With TLS 1.3, "
                "nginx 1.23.4+'s default, a server checks the client certificate after the handshake, when "
                "nginx has begun sending the call: nginx logs a broken pipe or an upstream that closed "
                "prematurely, and, as it never resends a gRPC call it has sent (lesson 8), answers 502 "
                "after trying one backend. The lecture's two `SSL_do_handshake() failed` lines came from "
                "TLS 1.2: see the aside at the lesson's end.",
            servers=MTLS_PAIR,
            nginx=Nginx("lesson-4.conf"),
            client=Client(tls=True),
            expect=Expect(
                ok=False,
                client_says=BAD_GATEWAY,
                nginx_error=NO_CERT_NGINX,
                server_says=NO_CERT_SERVER,
            ),
        ),
        Step(
            key="server-side-tls-backends",
            title="grpcs:// against backends with server-side TLS only",
            why="The backends no longer ask for a client certificate (`--client-auth none`, the "
                "tutorial's NoClientCert edit), so nginx's TLS handshake succeeds.",
            servers=SERVER_TLS_PAIR,
            nginx=Nginx("lesson-4.conf"),
            client=Client(tls=True),
            expect=Expect(ok=True, spread=BOTH, access_posts=4),
            checkpoint=True,
        ),
        *refusals(SERVER_TLS_PAIR, "lesson-4.conf"),
        Step(
            key="tls12-aside",
            title="aside: backends requiring a certificate again, nginx held to TLS 1.2 as the lecture's nginx was",
            why="Before 1.23.4 nginx left TLS 1.3 out of grpc_ssl_protocols, so the lecture's nginx spoke "
                "TLS 1.2. There the server refuses inside the handshake, before nginx has sent anything: a "
                "connection error, which `grpc_next_upstream error` retries on the next server, so nginx "
                "logs one `... while SSL handshaking to upstream` line per backend, as in the lecture (Go "
                "servers alert `bad certificate`: `SSL_do_handshake() failed`; grpcio servers just close: "
                "`peer closed connection in SSL handshake`). With TLS 1.3 (nginx 1.23.4+'s default) the refusal "
                "comes after nginx has begun sending the call, and nginx never resends a gRPC call: one backend, "
                "one line.",
            servers=MTLS_PAIR,
            nginx=Nginx("lesson-4-tls12.conf"),
            client=Client(tls=True),
            expect=Expect(
                ok=False,
                client_says=BAD_GATEWAY,
                nginx_error=TLS12_REFUSED,
                server_says=NO_CERT_SERVER,
            ),
        ),
    ),
)
