"""What the container tests share: docker-compose on the private daemon, with the test image."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pcbook import paths
from pcbook.stack import dockerd

COMPOSE_FILE = paths.ROOT / "deploy" / "compose.yaml"
IMAGE = "pcbook-workbook:test"


def compose(daemon: dockerd.Daemon, project: str, *args: str, lesson: int = 5, certs_dir: Path | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {
        **daemon.env,
        "PCBOOK_IMAGE": IMAGE,
        "PCBOOK_BASE_IMAGE": dockerd.BASE_IMAGE,
        "PCBOOK_WHEELS": "local",
        "PCBOOK_LESSON": str(lesson),
        "PCBOOK_CERTS_DIR": str(certs_dir or paths.CERTS_DIR),
    }
    return subprocess.run(["docker-compose", "-p", project, "-f", str(COMPOSE_FILE), *args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
