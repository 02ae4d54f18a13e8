"""Checkpoints: compare what a step of a lesson showed with what it must show.

The evidence is what the real processes printed: the client's output and exit code, the servers'
interceptor lines (which server served which RPC) and nginx's access and error logs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pcbook.stage.model import Expect

# The server's interceptors log every call: `2021/05/12 19:48:13 --> unary interceptor:  /pkg.Service/Method`.
# Anchored to the whole line: the server escapes control characters in what clients send, so no client
# value can start a line, and a value that contains this text in the middle of a line does not match.
_CALL = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d --> (?:unary|stream) interceptor:\s+(/[\w./]+)$")
_ACCESS_POST = re.compile(r'"POST (/\S+) HTTP/2\.0" (\d{3})')


@dataclass
class Observation:
    """What one step of a lesson produced."""

    client_ok: bool = True
    client_lines: list[str] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (server name, method), in order seen
    nginx_errors: list[str] = field(default_factory=list)
    server_lines: list[str] = field(default_factory=list)  # every server's output, for server_says
    access_lines: list[str] = field(default_factory=list)
    access_log: str = ""  # which file access_lines came from, and where the config logs if elsewhere

    @property
    def posts(self) -> list[tuple[str, int]]:
        """(path, status) of each POST in nginx's access log."""
        found = (_ACCESS_POST.search(line) for line in self.access_lines)
        return [(m.group(1), int(m.group(2))) for m in found if m]

    def servers_of(self, method: str) -> set[str]:
        return {server for server, m in self.calls if m == method}

    def split(self) -> dict[str, list[str]]:
        """Server name -> the short names of the methods it served, in order."""
        out: dict[str, list[str]] = {}
        for server, method in self.calls:
            out.setdefault(server, []).append(method.rsplit("/", 1)[-1])
        return out


def calls_in(server: str, lines: Iterable[str]) -> list[tuple[str, str]]:
    """The RPCs a server's log lines show it served."""
    return [(server, m.group(1)) for line in lines if (m := _CALL.search(line))]


def differences(expect: Expect, seen: Observation) -> list[str]:
    """What differs between the expectation and the observation; empty means the step passed."""
    diffs: list[str] = []
    client_text = "\n".join(seen.client_lines)
    if expect.ok and not seen.client_ok:
        last = seen.client_lines[-1] if seen.client_lines else "(no output)"
        diffs.append(f"the client should succeed but failed: {last}")
    if not expect.ok and seen.client_ok:
        diffs.append("the client should fail but succeeded")
    if expect.client_says and not re.search(expect.client_says.regex, client_text):
        diffs.append(f"the client's output has no match for /{expect.client_says.regex}/")
    if expect.nginx_error and not any(re.search(expect.nginx_error.regex, line) for line in seen.nginx_errors):
        diffs.append(f"nginx's error log has no line matching /{expect.nginx_error.regex}/")
    if expect.server_says and not any(re.search(expect.server_says.regex, line) for line in seen.server_lines):
        diffs.append(f"no server logged a line matching /{expect.server_says.regex}/")
    served_by = {server for server, _ in seen.calls}
    missing = [s for s in expect.spread if s not in served_by]
    if missing:
        diffs.append(f"no call reached {' and '.join(missing)} (calls seen: {_describe(seen)})")
    for method, allowed in expect.routes.items():
        servers = seen.servers_of(method)
        if not servers:
            diffs.append(f"no server logged {method}")
        elif not servers <= set(allowed):
            diffs.append(
                f"{method} should reach only {' or '.join(allowed)} but reached {', '.join(sorted(servers))}"
            )
    if expect.no_calls and seen.calls:
        diffs.append(f"nginx should refuse the call, but a server got it (calls seen: {_describe(seen)})")
    if expect.access_posts is not None and len(seen.posts) < expect.access_posts:
        where = f" ({seen.access_log})" if seen.access_log else ""
        diffs.append(f"nginx's access log{where} shows {len(seen.posts)} POST lines, expected {expect.access_posts}")
    return diffs


def _describe(seen: Observation) -> str:
    split = seen.split()
    if not split:
        return "none"
    return "; ".join(f"{server}: {', '.join(methods)}" for server, methods in sorted(split.items()))


def settled(expect: Expect, seen: Observation, runs: int = 1) -> bool:
    """True once the evidence the expectation needs has arrived.

    Server output and nginx's log files reach the runner a moment after the client exits; a step is
    judged when this is true or when a deadline passes, whichever comes first.
    """
    calls = max(len(expect.spread), len(expect.routes)) * runs
    if len(seen.calls) < calls or len(seen.posts) < (expect.access_posts or 0):
        return False
    if expect.server_says and not any(re.search(expect.server_says.regex, line) for line in seen.server_lines):
        return False
    if expect.nginx_error:
        return any(re.search(expect.nginx_error.regex, line) for line in seen.nginx_errors)
    return True
