"""Lesson 1: the TLS flag. The server and the client with and without TLS, and what a mismatch looks like.

Every step runs the tutorial's client and is judged by an Expect (pcbook.stage.model).
"""

from __future__ import annotations

from pcbook.lessons.tutorial import (
    CREATED,
    NGINX_PORT,
    UNAVAILABLE,
    mtls,
    plain,
)
from pcbook.stage.model import Client, Expect, Lesson, Step

LESSON = Lesson(
    number=1,
    slug="tls-flag",
    title="The TLS flag",
    goal="Run the server and the client with and without TLS, and see what a mismatch looks like.",
    steps=(
        Step(
            key="plaintext",
            title="server and client without TLS",
            why="Both sides speak plaintext HTTP/2, so every call goes through.",
            servers=(plain("server", NGINX_PORT),),
            client=Client(),
            expect=Expect(ok=True, client_says=CREATED),
        ),
        Step(
            key="tls-mismatch",
            title="server with TLS, client without",
            why="The client sends a plaintext HTTP/2 preface to a port that expects a TLS handshake; "
                "the server closes the connection and the first call, Login, fails.",
            servers=(mtls("server", NGINX_PORT),),
            client=Client(),
            expect=Expect(ok=False, client_says=UNAVAILABLE),
        ),
        Step(
            key="tls",
            title="server and client with TLS",
            why="The client verifies the server's certificate against the CA and shows its own "
                "certificate, which the server requires (mutual TLS).",
            servers=(mtls("server", NGINX_PORT),),
            client=Client(tls=True),
            expect=Expect(ok=True, client_says=CREATED),
            checkpoint=True,
        ),
    ),
)
