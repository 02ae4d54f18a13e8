"""Where the workbook keeps things on disk."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PB_DIR = Path(__file__).resolve().parent / "pb"
NGINX_DIR = ROOT / "nginx"
# Certificates live in certs/ at the repo root; PCBOOK_CERTS points elsewhere (tests use a temp dir).
CERTS_DIR = Path(os.environ.get("PCBOOK_CERTS", ROOT / "certs"))
# Per-run state (nginx prefixes, logs, images) lives outside the source tree's tracked files.
RUN_DIR = Path(os.environ.get("PCBOOK_RUN_DIR", ROOT / ".run"))


def shown(path: Path) -> str:
    """A path as a learner would type it: relative to the current folder when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
