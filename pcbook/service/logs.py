"""Log lines in Go's default format (``2021/05/12 19:48:13 message``), flushed per line.

Informational lines go to stdout; the one line a CLI prints before exiting with an error goes to
stderr (`fatal`). Every line is flushed at once so that a parent reading a pipe sees it as it happens.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from typing import NoReturn, TextIO

# One lock for both streams: lines from concurrent RPC threads never interleave.
_lock = threading.Lock()


# The laptop service logs this line for every CreateLaptop it receives; the runner, the stage and the
# judges tell which server received which call from it. Anchored to the whole line: `clean` escapes
# control characters of client values, so none can start a line.
RECEIVED_TEXT = "receive a create-laptop request with id: "
RECEIVED = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d " + RECEIVED_TEXT + r"([0-9a-f-]{36})$")

ECHO_LIMIT = 64  # characters of a client's value that a log line or an error message repeats


def clean(value: str, limit: int = ECHO_LIMIT) -> str:
    """A client's value as it may appear in a log line or an error message: control characters
    escaped (a newline in a laptop id must not start a forged log line) and cut to `limit` characters
    (a 20 KB id must not make an error message too large for gRPC's metadata)."""
    if value.isprintable() and len(value) <= limit:
        return value
    escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in value[:limit])
    return f"{escaped}...({len(value)} characters)" if len(value) > limit else escaped


def _stamp() -> str:
    # Go's log package uses local time with this exact layout.
    return time.strftime("%Y/%m/%d %H:%M:%S")


def _write(stream: TextIO, message: str) -> None:
    line = f"{_stamp()} {message}\n"
    with _lock:
        stream.write(line)
        stream.flush()


def log(message: str) -> None:
    """Print one timestamped line to stdout, like Go's ``log.Printf``."""
    _write(sys.stdout, message)


def error(message: str) -> None:
    """Print one timestamped line to stderr."""
    _write(sys.stderr, message)


def fatal(message: str, code: int = 1) -> NoReturn:
    """Print one timestamped line to stderr and exit, like Go's ``log.Fatal``."""
    error(message)
    raise SystemExit(code)
