"""Load the TLS credentials of the server and the client from the PEM files of `make cert`."""

from __future__ import annotations

import os
from pathlib import Path

import grpc

from pcbook import paths

CLIENT_AUTH_CHOICES = ("require", "none")


class CertificateFileError(Exception):
    """A certificate or key file is missing or unreadable; the message names it and the fix."""


def _certs_dir(directory: str | os.PathLike[str] | None) -> Path:
    return Path(directory) if directory is not None else paths.CERTS_DIR


def read_pem(path: str | os.PathLike[str]) -> bytes:
    """Read a PEM file, turning any failure into one line that names the file and `make cert`."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise CertificateFileError(f"cannot load TLS credentials: {p} is missing; run `make cert`") from None
    except OSError as e:
        raise CertificateFileError(
            f"cannot load TLS credentials: cannot read {p} ({e.strerror}); run `make cert`"
        ) from None
    if b"-----BEGIN" not in data:
        raise CertificateFileError(f"cannot load TLS credentials: {p} is not a PEM file; run `make cert`")
    return data


def server_credentials(
    certs_dir: str | os.PathLike[str] | None = None, client_auth: str = "require"
) -> grpc.ServerCredentials:
    """The server's certificate and key; ``client_auth="require"`` is mutual TLS.

    "require" matches Go's ``tls.RequireAndVerifyClientCert``: a client must show a certificate
    signed by the CA. "none" is server-side TLS only (the step the lecture does by editing code).
    """
    if client_auth not in CLIENT_AUTH_CHOICES:
        raise ValueError(f"client_auth must be one of {CLIENT_AUTH_CHOICES}, not {client_auth!r}")
    d = _certs_dir(certs_dir)
    key = read_pem(d / paths.SERVER_KEY)
    cert = read_pem(d / paths.SERVER_CERT)
    if client_auth == "none":
        return grpc.ssl_server_credentials([(key, cert)])
    ca = read_pem(d / paths.CA_CERT)
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def client_credentials(
    certs_dir: str | os.PathLike[str] | None = None, with_client_cert: bool = True
) -> grpc.ChannelCredentials:
    """Trust the CA and (by default) present the client certificate, for mutual TLS."""
    d = _certs_dir(certs_dir)
    ca = read_pem(d / paths.CA_CERT)
    if not with_client_cert:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    key = read_pem(d / paths.CLIENT_KEY)
    cert = read_pem(d / paths.CLIENT_CERT)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
