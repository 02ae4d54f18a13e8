"""The one parser of a registered endpoint: what a registry value (`host:port`) and its key may be.

Everything that reads the registry (the thick client, nginx_sync, the xDS control plane) and the
server that writes its own entry go through `parse_endpoint`; a consumer only ever renders or dials
the parts it returns, never the raw text. A value is untrusted input: another process, a typo or an
attacker with write access to etcd put it there, so a bad one is skipped with one line naming its
key, and the others keep serving.

    parse_endpoint("127.0.0.1:50051")           # Endpoint("127.0.0.1", 50051)
    parse_endpoint("[::1]:50051")               # Endpoint("::1", 50051): IPv6 in brackets
    parse_endpoint("10.0.0.5:50051")            # EndpointError: outside loopback needs allow_remote

Hand-written on the standard library (ipaddress and a regex for DNS names): the rules are a few
lines, and what we refuse (control characters, sizes, loopback) is ours, not a URL library's.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from pcbook.service.logs import clean

MAX_VALUE = 300  # characters: a bracketed 253-character DNS name and a port fit
MAX_NAME = 128
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_PORT = re.compile(r"[0-9]{1,5}")  # ASCII digits only: str.isdigit() accepts '²'
_NAME = re.compile(r"[A-Za-z0-9._:/-]+")  # a key under the prefix: safe in a log line and an nginx comment
LOOPBACK_NAMES = ("localhost",)


class EndpointError(ValueError):
    """Not an endpoint we dial; the message is one line, safe to print (the value is escaped and cut)."""


@dataclass(frozen=True)
class Endpoint:
    host: str  # an IP literal (IPv6 without brackets) or a DNS name, lower case
    port: int

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    @property
    def loopback(self) -> bool:
        ip = self.ip
        return ip.is_loopback if ip is not None else self.host in LOOPBACK_NAMES

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _host(text: str) -> str:
    if text.startswith("[") and text.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(text[1:-1]))
        except ValueError:
            raise EndpointError(f"{text[1:-1]!r} in brackets is not an IPv6 address") from None
    if ":" in text:
        raise EndpointError("an IPv6 address goes in brackets: [::1]:50051")
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        pass
    labels = text.rstrip(".").split(".")
    if len(text) > 253 or not all(_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        raise EndpointError(f"'{clean(text)}' is neither an IP address nor a DNS name")
    return text.rstrip(".").lower()


def parse_endpoint(text: str, *, allow_remote: bool = False) -> Endpoint:
    """`host:port` -> Endpoint, or EndpointError saying why in one line.

    host: an IPv4 literal, an IPv6 literal in brackets, or a DNS name; port: 1-65535 in ASCII digits;
    no whitespace or control characters; at most MAX_VALUE characters. Outside loopback (a DNS name
    other than localhost counts as outside) only with allow_remote."""
    if len(text) > MAX_VALUE:
        raise EndpointError(f"{len(text)} characters, more than the {MAX_VALUE} an address can have")
    if not text.isprintable() or any(c.isspace() for c in text):
        raise EndpointError(f"'{clean(text)}' holds whitespace or control characters")
    host, sep, port = text.rpartition(":")
    if not sep or not host or text.endswith("]"):
        raise EndpointError(f"'{clean(text)}' is not host:port (an IPv6 address goes in brackets: [::1]:50051)")
    if not _PORT.fullmatch(port) or not 0 < int(port) < 65536:
        raise EndpointError(f"port '{clean(port)}' is not a number between 1 and 65535")
    endpoint = Endpoint(_host(host), int(port))
    if not endpoint.loopback and not allow_remote:
        raise EndpointError(f"{endpoint} is outside loopback; the lessons use 127.0.0.1"
                            " (pass --allow-remote to accept other hosts)")
    return endpoint


def check_name(name: str) -> str:
    """A member's key under the prefix: letters, digits and `._:/-`, at most MAX_NAME characters."""
    if not 0 < len(name) <= MAX_NAME or not _NAME.fullmatch(name):
        raise EndpointError(f"the key may hold only letters, digits and ._:/- (at most {MAX_NAME} characters)")
    return name


class Screen:
    """Turns the registry's raw {name: value} into {name: Endpoint}, skipping each bad entry with one line.

    A line is said once per (name, value): a consumer screens the whole set on every change, and an
    entry that stays bad should not repeat its line on each change of the others. An accepted
    endpoint outside loopback (allow_remote) is said once too. `dialable` lets a consumer refuse
    what it cannot use (the thick client's ipv4: target, an xDS endpoint: IP literals only)."""

    def __init__(self, say: Callable[[str], None], *, allow_remote: bool = False,
                 dialable: Callable[[Endpoint], str | None] | None = None):
        self.say = say
        self.allow_remote = allow_remote
        self.dialable = dialable
        self._said: dict[str, str] = {}  # name -> the value its line was about

    def __call__(self, members: dict[str, str]) -> dict[str, Endpoint]:
        good: dict[str, Endpoint] = {}
        for name in sorted(members):
            value = members[name]
            try:
                check_name(name)
                endpoint = parse_endpoint(value, allow_remote=self.allow_remote)
                why_not = self.dialable(endpoint) if self.dialable else None
                if why_not:
                    raise EndpointError(why_not)
            except EndpointError as err:
                self._once(name, value, f"registry: skipped '{clean(name)}' = '{clean(value, 40)}': {err}")
                continue
            if not endpoint.loopback:
                self._once(name, value, f"registry: {name} = {endpoint} is outside loopback (--allow-remote)")
            else:
                self._said.pop(name, None)
            good[name] = endpoint
        for gone in self._said.keys() - members.keys():
            del self._said[gone]
        return good

    def _once(self, name: str, value: str, line: str) -> None:
        if self._said.get(name) != value:
            self._said[name] = value
            self.say(line)


def ip_only(endpoint: Endpoint) -> str | None:
    """For consumers that need an IP literal (grpc's ipv4:/ipv6: targets and xDS socket addresses)."""
    return None if endpoint.ip is not None else f"{endpoint.host} is a DNS name; this client dials IP addresses only"
