"""Lesson 4: TLS to the backends, with the tutorial's two failures."""

from __future__ import annotations

import re

from pcbook.lessons.tutorial import UPSTREAM_DROPPED

from .support import checkpoint, explain, story


def test_502_then_bad_certificate_then_success() -> None:
    result = story(4)
    assert result.story_passed, explain(result)
    grpc_to_tls, no_client_cert, server_side_tls, no_cert, foreign_cert, tls12 = result.steps
    assert any("502" in line for line in grpc_to_tls.seen.client_lines)
    # The backend drops nginx's plaintext connection; nginx notices reading or still writing.
    assert any(re.search(UPSTREAM_DROPPED, line) for line in grpc_to_tls.seen.nginx_errors)
    assert any("WRONG_VERSION_NUMBER" in line for line in grpc_to_tls.seen.server_lines)
    assert any("PEER_DID_NOT_RETURN_A_CERTIFICATE" in line for line in no_client_cert.seen.server_lines)
    assert any("upstream" in line for line in no_client_cert.seen.nginx_errors)
    assert server_side_tls.seen.client_ok

    # The TLS version decides nginx's line: with TLS 1.2 the refusal is a handshake error, retried on the
    # next server (one line per backend, as in the lecture); with TLS 1.3 the call was already on its way
    # to the first backend, and nginx tried no other (pinned nginx; 1.22 leaves TLS 1.3 out by default).
    handshake = [line for line in tls12.seen.nginx_errors if "while SSL handshaking to upstream" in line]
    assert {re.search(r':(5005\d)"', line).group(1) for line in handshake} == {"50051", "50052"}
    if not any("while SSL handshaking to upstream" in line for line in no_client_cert.seen.nginx_errors):
        tried = {m.group(1) for line in no_client_cert.seen.nginx_errors if (m := re.search(r':(5005\d)"', line))}
        assert len(tried) == 1, no_client_cert.seen.nginx_errors


def test_checkpoint_fails_against_lesson_3_config() -> None:
    result = checkpoint(4, "lesson-3.conf")
    assert not result.checkpoint_passed
    assert "502" in result.checkpoint_line()
