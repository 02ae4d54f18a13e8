"""Where the workbook keeps things on disk."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PB_DIR = Path(__file__).resolve().parent / "pb"
NGINX_DIR = ROOT / "nginx"
ENVOY_DIR = ROOT / "envoy"  # lesson 13's Envoy configs
# Certificates live in certs/ at the repo root; PCBOOK_CERTS points elsewhere (tests use a temp dir).
CERTS_DIR = Path(os.environ.get("PCBOOK_CERTS", ROOT / "certs"))
# The PEM files in it (made by pcbook.service.certs). Named here so that reading them (pcbook.service.tls,
# in every client and server) does not import the generator and its x509 modules: 6-12 ms of every start.
CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
SERVER_CERT = "server-cert.pem"
SERVER_KEY = "server-key.pem"
CLIENT_CERT = "client-cert.pem"
CLIENT_KEY = "client-key.pem"
# Per-run state (nginx prefixes, logs, images) lives outside the source tree's tracked files.
RUN_DIR = Path(os.environ.get("PCBOOK_RUN_DIR", ROOT / ".run"))


def shown(path: Path) -> str:
    """A path as a learner would type it: relative to the current folder when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
