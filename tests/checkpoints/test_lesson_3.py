"""Lesson 3: mutual TLS between client and nginx, plaintext to the backends."""

from __future__ import annotations

from .support import checkpoint, explain, story


def test_plaintext_client_fails_tls_client_succeeds() -> None:
    result = story(3)
    assert result.checkpoint_passed, explain(result)
    plain, tls, no_cert, foreign_cert = result.steps
    assert not plain.seen.client_ok
    assert any("code = Unavailable" in line for line in plain.seen.client_lines)
    assert plain.seen.calls == []  # nothing reached a backend
    assert tls.seen.client_ok
    assert {server for server, _ in tls.seen.calls} == {"server1", "server2"}
    # nginx itself refuses a client without a certificate and one whose certificate another CA signed.
    for refused in (no_cert, foreign_cert):
        assert not refused.seen.client_ok and refused.seen.calls == []
        assert any("status: 400" in line for line in refused.seen.client_lines)


def test_checkpoint_fails_without_ssl_verify_client(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pcbook.paths import NGINX_DIR

    conf = tmp_path / "no-verify.conf"
    conf.write_text((NGINX_DIR / "lesson-3.conf").read_text().replace("ssl_verify_client on;", ""))
    result = checkpoint(3, conf)
    assert not result.checkpoint_passed
    assert "the client should fail but succeeded" in result.checkpoint_line()


def test_checkpoint_fails_against_lesson_2_config() -> None:
    # Without TLS at nginx the plaintext client succeeds and the TLS client fails.
    result = checkpoint(3, "lesson-2.conf")
    assert not result.checkpoint_passed
    line = result.checkpoint_line()
    assert "the client should fail but succeeded" in line
    assert "the client should succeed but failed" in line
