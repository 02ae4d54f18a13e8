"""Generate the CA, server and client certificates of the tutorial with `cryptography`.

``python -m pcbook.service.certs [--force] [--dir DIR]`` keeps valid certificates and otherwise regenerates
all six files (a leaf signed by a CA that is no longer on disk is useless, so it is all or nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import ipaddress
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pcbook import paths
from pcbook.paths import CA_CERT, CA_KEY, CLIENT_CERT, CLIENT_KEY, SERVER_CERT, SERVER_KEY

ALL_FILES = (CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY, CLIENT_CERT, CLIENT_KEY)

# The course used RSA 4096. 2048 bits is still the accepted minimum and key generation is about ten
# times faster, which matters because tests and fresh clones generate certificates on every run.
KEY_SIZE = 2048
CA_DAYS = 365
LEAF_DAYS = 60
# Certificates that expire within this margin are replaced, so a lesson never starts on a dying cert.
RENEW_MARGIN = dt.timedelta(days=1)

# The names the containers of deploy/ dial each other by: the compose services and the Kubernetes
# Services. The lecture's `IP:0.0.0.0` SAN cannot match a name, so without these a client dialling
# `nginx:8080` fails its hostname check (tests/deploy keeps the list in step with deploy/).
CONTAINER_DNS = ("nginx", "envoy", "server1", "server2", "pcbook-nginx", "pcbook-envoy", "pcbook-server")
SERVER_DNS = ("*.pcbook.com", "*.pcbook.org", "localhost", *CONTAINER_DNS)
SERVER_IPS = ("0.0.0.0", "127.0.0.1", "::1")
CLIENT_DNS = ("*.pcclient.com", "localhost")
CLIENT_IPS = ("0.0.0.0", "127.0.0.1")


SERVER_USAGES = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


def _name(common_name: str, unit: str) -> x509.Name:
    # The subject fields of the course's gen.sh (a French school, hence FR/Occitanie/Toulouse).
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Occitanie"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Toulouse"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tech School"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key(key_size: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=key_size)


def _sans(dns: tuple[str, ...], ips: tuple[str, ...]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    return x509.SubjectAlternativeName(names)


def _leaf(
    ca_cert: x509.Certificate,
    ca_key: rsa.RSAPrivateKey,
    key: rsa.RSAPrivateKey,
    subject: x509.Name,
    sans: x509.SubjectAlternativeName,
    usages: list[x509.ObjectIdentifier],
    not_before: dt.datetime,
    days: int,
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(sans, critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _write(path: Path, data: bytes, private: bool) -> None:
    # Write to a temp file created with its final mode, then rename: a reader never sees half a
    # file, and a key is never readable by others, not even for an instant.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def generate_ca_and_certs(
    directory: str | os.PathLike[str],
    *,
    key_size: int = KEY_SIZE,
    ca_days: int = CA_DAYS,
    leaf_days: int = LEAF_DAYS,
    not_before: dt.datetime | None = None,
    common_name_prefix: str = "pcbook",
) -> Path:
    """Write a fresh CA and a server and a client certificate signed by it into ``directory``.

    Tests use it to make a *different* CA (another ``common_name_prefix``) or expired certificates
    (``not_before`` in the past).
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    start = not_before or (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))  # tolerate clock skew
    ca_key = _key(key_size)
    ca_name = _name(f"{common_name_prefix} CA", "Education")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=ca_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = _key(key_size)
    server_cert = _leaf(
        ca_cert,
        ca_key,
        server_key,
        _name(f"*.{common_name_prefix}.com", "Computer"),
        _sans(SERVER_DNS, SERVER_IPS),
        # clientAuth too: like the tutorial, nginx shows the server's pair to mutual-TLS backends
        # (grpc_ssl_certificate), and grpcio's TLS refuses a serverAuth-only certificate there.
        SERVER_USAGES,
        start,
        leaf_days,
    )
    client_key = _key(key_size)
    client_cert = _leaf(
        ca_cert,
        ca_key,
        client_key,
        _name("*.pcclient.com", "Computer"),
        _sans(CLIENT_DNS, CLIENT_IPS),
        [ExtendedKeyUsageOID.CLIENT_AUTH],
        start,
        leaf_days,
    )
    _write(out / CA_KEY, _key_pem(ca_key), private=True)
    _write(out / SERVER_KEY, _key_pem(server_key), private=True)
    _write(out / CLIENT_KEY, _key_pem(client_key), private=True)
    # Certificates last: a reader that finds a new certificate also finds its key.
    _write(out / CA_CERT, _cert_pem(ca_cert), private=False)
    _write(out / SERVER_CERT, _cert_pem(server_cert), private=False)
    _write(out / CLIENT_CERT, _cert_pem(client_cert), private=False)
    return out


def check_certs(directory: str | os.PathLike[str]) -> str | None:
    """Return why the certificates in ``directory`` must be regenerated, or None if they are fine."""
    d = Path(directory)
    try:
        ca = x509.load_pem_x509_certificate((d / CA_CERT).read_bytes())
        ca_key = serialization.load_pem_private_key((d / CA_KEY).read_bytes(), password=None)
        pairs = []
        for cert_name, key_name in ((SERVER_CERT, SERVER_KEY), (CLIENT_CERT, CLIENT_KEY)):
            cert = x509.load_pem_x509_certificate((d / cert_name).read_bytes())
            key = serialization.load_pem_private_key((d / key_name).read_bytes(), password=None)
            pairs.append((cert_name, cert, key))
    except FileNotFoundError as e:
        return f"{Path(e.filename).name} is missing"
    except (OSError, ValueError, TypeError) as e:
        return f"a file cannot be read ({e})"
    if ca.public_key() != ca_key.public_key():
        return f"{CA_KEY} does not belong to {CA_CERT}"
    deadline = dt.datetime.now(dt.UTC) + RENEW_MARGIN
    if ca.not_valid_after_utc < deadline:
        return f"{CA_CERT} expires on {ca.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    for name, cert, key in pairs:
        if cert.public_key() != key.public_key():
            return f"the key of {name} does not match it"
        try:
            cert.verify_directly_issued_by(ca)
        except (InvalidSignature, ValueError, TypeError) as e:
            return f"{name} is not signed by the CA in {CA_CERT} ({type(e).__name__})"
        if cert.not_valid_after_utc < deadline:
            return f"{name} expires on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    server = pairs[0][1]
    server_usages = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    if not set(SERVER_USAGES) <= set(server_usages):
        return f"{SERVER_CERT} cannot serve as nginx's client certificate (no clientAuth usage)"
    # Certificates made before a name was added to SERVER_DNS would fail the containers' hostname check.
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    missing = [d for d in SERVER_DNS if d not in names.get_values_for_type(x509.DNSName)]
    if missing:
        return f"{SERVER_CERT} lacks the name(s) {', '.join(missing)}"
    return None


@contextlib.contextmanager
def _dir_lock(directory: Path) -> Iterator[None]:
    # Two processes (two servers, parallel tests) may check the same folder at once: serialise them
    # so that one never reads a mix of old and new files.
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; the atomic renames still avoid torn files
        yield
        return
    # Lock the folder itself rather than a lock file, which would be one more untracked file.
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def ensure_certs(
    directory: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    quiet: bool = True,
    key_size: int = KEY_SIZE,
) -> Path:
    """Make sure valid certificates exist in ``directory`` (default CERTS_DIR); return the folder."""
    d = Path(directory) if directory is not None else paths.CERTS_DIR
    d.mkdir(parents=True, exist_ok=True)
    with _dir_lock(d):
        reason = "--force was given" if force else check_certs(d)
        if reason is None:
            message = f"certificates in {d} are valid; kept them"
        else:
            generate_ca_and_certs(d, key_size=key_size)
            message = f"generated a new CA, server and client certificate in {d} ({reason})"
    if not quiet:
        print(message, flush=True)
    return d


def foreign_client_dir(ca_dir: str | os.PathLike[str] | None = None) -> Path:
    """RUN_DIR/foreign-client/: our CA's certificate (to trust nginx) with a client certificate and key
    signed by another CA (RUN_DIR/foreign-ca/, generated once): a client a mutual-TLS nginx must refuse.

    Pass the folder to `python -m pcbook.client --tls --certs-dir`. Under RUN_DIR, never committed.
    """
    ours = Path(ca_dir) if ca_dir is not None else paths.CERTS_DIR
    foreign = ensure_certs_with_prefix(paths.RUN_DIR / "foreign-ca", "intruder")
    out = paths.RUN_DIR / "foreign-client"
    out.mkdir(parents=True, exist_ok=True)
    for name, source in ((CA_CERT, ours), (CLIENT_CERT, foreign), (CLIENT_KEY, foreign)):
        data = (source / name).read_bytes()
        target = out / name
        if not target.is_file() or target.read_bytes() != data:
            tmp = out / f".{name}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
    return out


def ensure_certs_with_prefix(directory: Path, prefix: str) -> Path:
    """Like ensure_certs, with another CA's names (``prefix``) in its certificates."""
    directory.mkdir(parents=True, exist_ok=True)
    with _dir_lock(directory):
        if check_certs(directory) is not None:
            generate_ca_and_certs(directory, common_name_prefix=prefix)
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pcbook.service.certs",
        description="Generate the CA, server and client certificates (kept if still valid).",
    )
    parser.add_argument("--force", action="store_true", help="regenerate even if the certificates are valid")
    parser.add_argument("--dir", type=Path, default=None, help=f"output folder (default {paths.CERTS_DIR})")
    parser.add_argument("--foreign-client", action="store_true",
                        help="also make a client certificate from another CA and print its folder")
    args = parser.parse_args(argv)
    try:
        if args.foreign_client:
            ensure_certs(args.dir)
            print(foreign_client_dir(args.dir))
            return 0
        ensure_certs(args.dir, force=args.force, quiet=False)
    except OSError as e:
        print(f"cannot write certificates: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
