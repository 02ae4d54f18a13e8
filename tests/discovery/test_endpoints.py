"""The one parser of a registered endpoint (pcbook.service.endpoints): each value the red-team pass
put into the registry is refused with one line, and what it accepts renders back to itself."""

from __future__ import annotations

import pytest

from pcbook.service.endpoints import MAX_VALUE, Endpoint, EndpointError, Screen, check_name, parse_endpoint

REFUSED = {
    "127.0.0.1:99999999999": "between 1 and 65535",
    "127.0.0.1:\u00b2": "between 1 and 65535",  # str.isdigit() is true for a superscript two
    "127.0.0.1:70000": "between 1 and 65535",
    "127.0.0.1:0": "between 1 and 65535",
    "not an address": "whitespace",
    '{"host":"127.0.0.1","port":50051}': "between 1 and 65535",
    "1" * (1 << 20): f"more than the {MAX_VALUE}",
    "127.0.0.1:50051;\nserver 10.0.0.1:1": "control characters",
    "[::1]": "not host:port",
    "::1:50051": "in brackets",
    "[127.0.0.1]:1": "not an IPv6 address",
    "10.0.0.1:50051": "outside loopback",
    "example.com:50051": "outside loopback",
    "999.1.1.1:1": "neither an IP address nor a DNS name",
    "127.0.0.1": "not host:port",
}


@pytest.mark.parametrize("value", REFUSED)
def test_each_bad_value_is_one_bounded_line(value: str) -> None:
    with pytest.raises(EndpointError, match=REFUSED[value]) as err:
        parse_endpoint(value)
    assert "\n" not in str(err.value) and len(str(err.value)) < 200


def test_good_values_and_the_remote_flag() -> None:
    assert parse_endpoint("127.0.0.1:50051") == Endpoint("127.0.0.1", 50051)
    assert str(parse_endpoint("[0:0::1]:50051")) == "[::1]:50051"
    assert parse_endpoint("LOCALHOST:1").loopback and parse_endpoint("127.9.9.9:1").loopback
    assert parse_endpoint("10.0.0.1:50051", allow_remote=True) == Endpoint("10.0.0.1", 50051)
    assert parse_endpoint("Server-1.Example.com:443", allow_remote=True).host == "server-1.example.com"
    with pytest.raises(EndpointError):
        check_name("a\nb")
    assert check_name("server-1") == "server-1"


def test_screen_says_each_bad_entry_once() -> None:
    said: list[str] = []
    screen = Screen(said.append)
    members = {"good": "127.0.0.1:1", "bad": "127.0.0.1:\u00b2", "evil\nx": "127.0.0.1:2"}
    assert screen(members) == {"good": Endpoint("127.0.0.1", 1)}
    assert screen(dict(members, other="127.0.0.1:3")).keys() == {"good", "other"}
    assert len(said) == 2 and all(line.startswith("registry: skipped '") for line in said), said
    assert "'evil\\nx'" in said[1]
