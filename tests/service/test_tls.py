"""Mutual TLS: who gets in and who does not."""

from __future__ import annotations

import grpc
import pytest

from pcbook.pb import auth_service_pb2, auth_service_pb2_grpc

from .conftest import tls_credentials


def _login(port: int, credentials: grpc.ChannelCredentials | None) -> str:
    target = f"127.0.0.1:{port}"
    ch = grpc.insecure_channel(target) if credentials is None else grpc.secure_channel(target, credentials)
    with ch:
        req = auth_service_pb2.LoginRequest(username="admin1", password="secret")
        return auth_service_pb2_grpc.AuthServiceStub(ch).Login(req, timeout=5).access_token


def _refused(port: int, credentials: grpc.ChannelCredentials | None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        _login(port, credentials)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    return e.value


def test_client_with_certificate_gets_in(mtls_server, certs_dir) -> None:  # type: ignore[no-untyped-def]
    assert _login(mtls_server.port, tls_credentials(certs_dir, certs_dir))


def test_client_without_certificate_refused(mtls_server, certs_dir) -> None:  # type: ignore[no-untyped-def]
    _refused(mtls_server.port, tls_credentials(certs_dir, None))


def test_client_certificate_from_another_ca_refused(mtls_server, certs_dir, other_ca_dir) -> None:  # type: ignore[no-untyped-def]
    # The client trusts the right CA but shows a certificate signed by another one.
    _refused(mtls_server.port, tls_credentials(certs_dir, other_ca_dir))


def test_server_certificate_from_another_ca_refused(mtls_server, certs_dir, other_ca_dir) -> None:  # type: ignore[no-untyped-def]
    err = _refused(mtls_server.port, tls_credentials(other_ca_dir, other_ca_dir))
    assert "CERTIFICATE_VERIFY_FAILED" in err.details() or "handshake" in err.details().lower()


def test_plaintext_client_refused(mtls_server) -> None:  # type: ignore[no-untyped-def]
    _refused(mtls_server.port, None)


def test_tls_client_against_plaintext_server_refused(plain_server, certs_dir) -> None:  # type: ignore[no-untyped-def]
    _refused(plain_server.port, tls_credentials(certs_dir, certs_dir))


def test_client_auth_none_accepts_clients_without_certificate(start_server, certs_dir) -> None:  # type: ignore[no-untyped-def]
    srv = start_server("--tls", "--client-auth", "none")
    assert _login(srv.port, tls_credentials(certs_dir, None))
    assert "no client certificate" in srv.output


def test_multi_address_target_with_tls_and_round_robin(mtls_server, certs_dir) -> None:  # type: ignore[no-untyped-def]
    from pcbook.service import laptop_client

    target = f"ipv4:127.0.0.1:{mtls_server.port},127.0.0.1:{mtls_server.port}"
    with laptop_client.connect(
        target, tls_enabled=True, certs_dir=certs_dir, lb_policy="round_robin", health_check=True, quiet=True
    ) as conn:
        assert conn.laptops.create_laptop()
