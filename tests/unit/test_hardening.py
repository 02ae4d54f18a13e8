"""Bad input reaches a learner as a clear status, never as UNKNOWN or a forged log line (issue 11)."""

from __future__ import annotations

import base64
import json
import math
import re
import subprocess
import sys

import grpc
import jwt
import pytest

from pcbook.paths import ROOT
from pcbook.pb import auth_service_pb2, filter_message_pb2, laptop_message_pb2
from pcbook.pb import laptop_service_pb2 as pb
from pcbook.service import auth, sample
from pcbook.service.interceptors import INTERNAL_MESSAGE
from pcbook.service.logs import ECHO_LIMIT, clean
from pcbook.service.server import PcbookServer
from pcbook.stage import judge

from .conftest import SECRET


def test_login_with_a_password_over_72_bytes_is_not_found(auth_stub, capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        auth_stub.Login(auth_service_pb2.LoginRequest(username="admin1", password="x" * 73), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "incorrect username/password"
    with pytest.raises(grpc.RpcError) as err:  # an unknown user too
        auth_stub.Login(auth_service_pb2.LoginRequest(username="nobody", password="é" * 40), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_an_unexpected_exception_is_logged_with_its_method_and_answered_internal(
    server: PcbookServer, laptop_stub, admin_md, monkeypatch: pytest.MonkeyPatch, capfd  # type: ignore[no-untyped-def]
) -> None:
    def broken(_laptop: laptop_message_pb2.Laptop) -> None:
        raise OSError("disk full at /srv/secret/place")

    monkeypatch.setattr(server.laptop_store, "save", broken)
    with pytest.raises(grpc.RpcError) as err:
        laptop_stub.CreateLaptop(pb.CreateLaptopRequest(laptop=sample.new_laptop()), metadata=admin_md, timeout=5)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert err.value.details() == INTERNAL_MESSAGE and "/srv" not in err.value.details()
    out = capfd.readouterr().out
    assert "unexpected error in /techschool_pcbook.LaptopService/CreateLaptop: OSError: disk full" in out

    # In a stream too, and a refusal made on purpose stays what it was.
    monkeypatch.setattr(server.laptop_store, "search", lambda *_a: (_ for _ in ()).throw(KeyError("boom")))
    with pytest.raises(grpc.RpcError) as err:
        list(laptop_stub.SearchLaptop(pb.SearchLaptopRequest(filter=filter_message_pb2.Filter()), timeout=5))
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "unexpected error in /techschool_pcbook.LaptopService/SearchLaptop: KeyError" in capfd.readouterr().out
    with pytest.raises(grpc.RpcError) as err:
        laptop_stub.CreateLaptop(pb.CreateLaptopRequest(laptop=laptop_message_pb2.Laptop(id="bad")), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("field", ["price_usd", "weight_kg", "cpu.min_ghz", "screen.size_inch"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_invalid_argument(laptop_stub, admin_md, field: str, value: float) -> None:  # type: ignore[no-untyped-def]
    laptop = sample.new_laptop()
    *parents, name = field.split(".")
    target = laptop
    for parent in parents:
        target = getattr(target, parent)
    setattr(target, name, value)
    with pytest.raises(grpc.RpcError) as err:
        laptop_stub.CreateLaptop(pb.CreateLaptopRequest(laptop=laptop), metadata=admin_md, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"not finite: {field} = {value}" in err.value.details()


def test_a_nan_score_and_a_nan_filter_are_refused(laptop_stub, admin_md, user_md) -> None:  # type: ignore[no-untyped-def]
    laptop_id = laptop_stub.CreateLaptop(pb.CreateLaptopRequest(laptop=sample.new_laptop()), metadata=admin_md).id
    replies = laptop_stub.RateLaptop(iter([pb.RateLaptopRequest(laptop_id=laptop_id, score=math.nan)]),
                                     metadata=user_md, timeout=5)
    with pytest.raises(grpc.RpcError) as err:
        list(replies)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The laptop's average is still a number.
    good = list(laptop_stub.RateLaptop(iter([pb.RateLaptopRequest(laptop_id=laptop_id, score=8)]), metadata=user_md))
    assert good[0].average_score == 8 and good[0].rated_count == 1
    with pytest.raises(grpc.RpcError) as err:
        list(laptop_stub.SearchLaptop(pb.SearchLaptopRequest(filter=filter_message_pb2.Filter(min_cpu_ghz=math.nan))))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_newline_in_a_laptop_id_cannot_forge_log_lines(laptop_stub, admin_md, capfd) -> None:  # type: ignore[no-untyped-def]
    stamp = "2026/01/01 00:00:00"
    forged = (f"x\n{stamp} saved laptop with id: FORGED\n{stamp} --> unary interceptor:  "
              "/techschool_pcbook.AuthService/Login")
    with pytest.raises(grpc.RpcError) as err:
        laptop_stub.CreateLaptop(pb.CreateLaptopRequest(laptop=laptop_message_pb2.Laptop(id=forged)),
                                 metadata=admin_md, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    lines = capfd.readouterr().out.splitlines()
    assert not any(line.startswith(stamp) for line in lines)
    assert not any("saved laptop with id: FORGED" in line and not line.endswith("Login") for line in lines
                   if re.match(r"\S+ \S+ saved laptop", line))
    # The runner counts only the interceptor's own lines, never one a client's value could contain.
    assert judge.calls_in("server1", lines) == [("server1", "/techschool_pcbook.LaptopService/CreateLaptop")]
    inline = f"{stamp} receive a create-laptop request with id: {stamp} --> unary interceptor:  /a.B/C"
    assert judge.calls_in("server1", [inline]) == []


def test_echoed_client_input_is_cut(laptop_stub, user_md) -> None:  # type: ignore[no-untyped-def]
    huge = "z" * 20_000
    with pytest.raises(grpc.RpcError) as err:
        list(laptop_stub.RateLaptop(iter([pb.RateLaptopRequest(laptop_id=huge, score=5)]), metadata=user_md,
                                    timeout=5))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND  # not RESOURCE_EXHAUSTED on the metadata size
    assert len(err.value.details()) < 200 and "(20000 characters)" in err.value.details()
    assert clean("a\tb") == "a\\tb" and len(clean("q" * 1000)) < ECHO_LIMIT + 30


def _token(payload: dict[str, object]) -> str:
    def part(d: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    header = part({"alg": "HS256", "typ": "JWT"})
    body = part(payload)
    import hashlib
    import hmac

    sig = hmac.new(SECRET.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"


@pytest.mark.parametrize("exp", ["99999999999", "soon", float("inf"), True, None])
def test_a_non_numeric_exp_is_an_invalid_token(exp: object) -> None:
    token = _token({"exp": exp, "username": "admin1", "role": "admin"})
    with pytest.raises(jwt.InvalidTokenError):
        auth.JWTManager(SECRET).verify(token)


def test_a_short_jwt_secret_is_refused_at_start() -> None:
    env = {"PCBOOK_JWT_SECRET": "k", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "pcbook.server", "--port", "0"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "PCBOOK_JWT_SECRET is 1 bytes long; HS256 needs a secret of at least 32 bytes" in done.stderr
    assert "Traceback" not in done.stderr and "server is listening" not in done.stdout
