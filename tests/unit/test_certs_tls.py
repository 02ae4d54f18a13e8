from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509

from pcbook.service import certs, tls

# Smaller keys where the test is about files, not TLS: RSA key generation dominates the run time.
FAST = 1024


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return certs.ensure_certs(tmp_path_factory.mktemp("certs"))


def _load(d: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((d / name).read_bytes())


def test_files_sans_and_key_modes(cert_dir: Path) -> None:
    assert sorted(p.name for p in cert_dir.iterdir()) == sorted(certs.ALL_FILES)
    for key in (certs.CA_KEY, certs.SERVER_KEY, certs.CLIENT_KEY):
        assert stat.S_IMODE((cert_dir / key).stat().st_mode) == 0o600
    san = _load(cert_dir, certs.SERVER_CERT).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"*.pcbook.com", "*.pcbook.org", "localhost"} <= set(san.get_values_for_type(x509.DNSName))
    ips = set(san.get_values_for_type(x509.IPAddress))
    assert {ipaddress.ip_address(a) for a in ("0.0.0.0", "127.0.0.1", "::1")} <= ips
    client_san = _load(cert_dir, certs.CLIENT_CERT).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "*.pcclient.com" in client_san.value.get_values_for_type(x509.DNSName)
    assert certs.check_certs(cert_dir) is None


def test_ensure_keeps_valid_certs(cert_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (cert_dir / certs.SERVER_CERT).read_bytes()
    certs.ensure_certs(cert_dir, quiet=False)
    assert (cert_dir / certs.SERVER_CERT).read_bytes() == before
    assert "kept" in capsys.readouterr().out


def test_cli_prints_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert certs.main(["--dir", str(tmp_path)]) == 0
    assert certs.main(["--dir", str(tmp_path), "--force"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("generated") and "--force" in lines[1]


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: (d / certs.CLIENT_KEY).unlink(),
        lambda d: (d / certs.SERVER_CERT).write_text("garbage"),
        # a leaf from another CA
        lambda d: (
            certs.generate_ca_and_certs(d / "other", key_size=FAST)
            and (d / certs.SERVER_CERT).write_bytes((d / "other" / certs.SERVER_CERT).read_bytes())
        ),
        # expiring within a day
        lambda d: certs.generate_ca_and_certs(
            d, key_size=FAST, not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=59, hours=12)
        ),
    ],
    ids=["missing", "unreadable", "other-ca", "expiring"],
)
def test_ensure_regenerates_everything(tmp_path: Path, damage) -> None:  # type: ignore[no-untyped-def]
    certs.generate_ca_and_certs(tmp_path, key_size=FAST)
    old_ca = (tmp_path / certs.CA_CERT).read_bytes()
    damage(tmp_path)
    assert certs.check_certs(tmp_path) is not None
    certs.ensure_certs(tmp_path, key_size=FAST)
    assert certs.check_certs(tmp_path) is None
    assert (tmp_path / certs.CA_CERT).read_bytes() != old_ca


def test_missing_file_message_names_file_and_make_cert(tmp_path: Path) -> None:
    with pytest.raises(tls.CertificateFileError) as e:
        tls.server_credentials(tmp_path)
    assert str(e.value) == f"cannot load TLS credentials: {tmp_path / certs.SERVER_KEY} is missing; run `make cert`"
    with pytest.raises(tls.CertificateFileError, match="ca-cert.pem is missing; run `make cert`"):
        tls.client_credentials(tmp_path)


def test_unreadable_file_message(tmp_path: Path) -> None:
    (tmp_path / certs.CA_CERT).mkdir()  # a folder where a file should be: unreadable even as root
    with pytest.raises(tls.CertificateFileError, match="cannot read .*ca-cert.pem .*run `make cert`"):
        tls.client_credentials(tmp_path)
    (tmp_path / certs.CA_CERT).rmdir()
    (tmp_path / certs.CA_CERT).write_text("not pem")
    with pytest.raises(tls.CertificateFileError, match="is not a PEM file"):
        tls.client_credentials(tmp_path)


def test_credentials_load(cert_dir: Path) -> None:
    assert tls.server_credentials(cert_dir, "require") is not None
    assert tls.server_credentials(cert_dir, "none") is not None
    assert tls.client_credentials(cert_dir) is not None
    with pytest.raises(ValueError):
        tls.server_credentials(cert_dir, "optional")
