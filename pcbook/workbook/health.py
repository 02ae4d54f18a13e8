"""The compose health check: does the port this container's role serves accept connections?

`deploy run ROLE` writes the role's port to PORT_FILE before it execs the server or nginx; Docker runs
``python -m pcbook.workbook.health`` every second in each container. It imports nothing of pcbook's on
purpose: the lesson manifest costs 0.33 s of CPU to import (measured), and in a loaded CI run the check
that imported it missed its timeout until Docker called the server unhealthy.
"""

from __future__ import annotations

import socket
import sys
import tempfile
from pathlib import Path

PORT_FILE = Path(tempfile.gettempdir()) / "pcbook-role-port"


def write_port(port: int, path: Path = PORT_FILE) -> None:
    path.write_text(f"{port}\n")


def ready(port: int, timeout: float = 1.0) -> bool:
    """Does something accept connections on 127.0.0.1:port?"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def main(path: Path = PORT_FILE) -> int:
    try:
        port = int(path.read_text())
    except (OSError, ValueError):
        return 1  # the role has not started yet
    return 0 if ready(port) else 1


if __name__ == "__main__":
    sys.exit(main())
