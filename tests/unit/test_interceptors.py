"""The role map and every auth status, directly and through an in-process server."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from pcbook.pb import auth_service_pb2, filter_message_pb2
from pcbook.pb import laptop_service_pb2 as pb
from pcbook.service import auth, sample
from pcbook.service.interceptors import ACCESSIBLE_ROLES, AuthClientInterceptor, AuthError, authorize

from .conftest import SECRET, token_for

LAPTOP = "/techschool_pcbook.LaptopService/"
MANAGER = auth.JWTManager(SECRET)


def _md(role: str) -> list[tuple[str, str]]:
    return [("authorization", token_for(MANAGER, role))]


@pytest.mark.parametrize(
    ("method", "role", "allowed"),
    [
        ("CreateLaptop", "admin", True),
        ("CreateLaptop", "user", False),
        ("UploadImage", "admin", True),
        ("UploadImage", "user", False),
        ("RateLaptop", "admin", True),
        ("RateLaptop", "user", True),
        ("RateLaptop", "guest", False),
    ],
)
def test_role_map(method: str, role: str, allowed: bool) -> None:
    if allowed:
        assert authorize(MANAGER, ACCESSIBLE_ROLES, LAPTOP + method, _md(role)).role == role
    else:
        with pytest.raises(AuthError) as e:
            authorize(MANAGER, ACCESSIBLE_ROLES, LAPTOP + method, _md(role))
        assert (e.value.code, e.value.message) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "no permission to access this RPC",
        )


@pytest.mark.parametrize(
    "method", [LAPTOP + "SearchLaptop", "/techschool_pcbook.AuthService/Login", "/grpc.health.v1.Health/Check"]
)
def test_open_methods_need_nothing(method: str) -> None:
    assert authorize(MANAGER, ACCESSIBLE_ROLES, method, None) is None


def test_role_map_spelling() -> None:
    # One translation of the course misspelled RateLaptop and left it unprotected.
    assert set(ACCESSIBLE_ROLES) == {LAPTOP + "CreateLaptop", LAPTOP + "UploadImage", LAPTOP + "RateLaptop"}


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (None, "metadata is not provided"),
        ([], "authorization token is not provided"),
        ([("other", "x")], "authorization token is not provided"),
        ([("authorization", "garbage")], "access token is invalid: "),
        ([("authorization", b"garbage")], "access token is invalid: "),
    ],
)
def test_unauthenticated_statuses(metadata, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AuthError) as e:
        authorize(MANAGER, ACCESSIBLE_ROLES, LAPTOP + "CreateLaptop", metadata)
    assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert e.value.message.startswith(message)


def test_expired_token_status() -> None:
    old = auth.JWTManager(SECRET, dt.timedelta(seconds=-5)).generate(auth.User("a", b"", "admin"))
    with pytest.raises(AuthError) as e:
        authorize(MANAGER, ACCESSIBLE_ROLES, LAPTOP + "CreateLaptop", [("authorization", old)])
    assert e.value.message == "access token is invalid: Signature has expired"


# Through the in-process server: the status and message a real client sees.


def _create(stub, md):  # type: ignore[no-untyped-def]
    return stub.CreateLaptop(pb.CreateLaptopRequest(laptop=sample.new_laptop()), metadata=md, timeout=5)


def test_server_refuses_without_token(laptop_stub) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as e:
        _create(laptop_stub, None)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert e.value.details() == "authorization token is not provided"


def test_server_refuses_invalid_token(laptop_stub) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as e:
        _create(laptop_stub, [("authorization", "abc")])
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert e.value.details().startswith("access token is invalid: ")


def test_server_refuses_wrong_role_on_every_kind(laptop_stub, user_md) -> None:  # type: ignore[no-untyped-def]
    upload = iter([pb.UploadImageRequest(info=pb.ImageInfo(laptop_id="x", image_type=".jpg"))])
    for call in (
        lambda: _create(laptop_stub, user_md),
        lambda: laptop_stub.UploadImage(upload, metadata=user_md, timeout=5),
    ):
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert e.value.details() == "no permission to access this RPC"


def test_server_refuses_rate_without_token(laptop_stub) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as e:
        list(laptop_stub.RateLaptop(iter([pb.RateLaptopRequest(laptop_id="x", score=1)]), timeout=5))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_server_lets_user_rate_and_anyone_search(laptop_stub, admin_md, user_md) -> None:  # type: ignore[no-untyped-def]
    laptop_id = _create(laptop_stub, admin_md).id
    res = list(laptop_stub.RateLaptop(iter([pb.RateLaptopRequest(laptop_id=laptop_id, score=5)]), metadata=user_md))
    assert res[0].rated_count == 1
    flt = filter_message_pb2.Filter(max_price_usd=1e9)
    assert laptop_id in {r.laptop.id for r in laptop_stub.SearchLaptop(pb.SearchLaptopRequest(filter=flt))}


def test_server_logs_interceptor_lines(laptop_stub, auth_stub, capsys) -> None:  # type: ignore[no-untyped-def]
    auth_stub.Login(auth_service_pb2.LoginRequest(username="admin1", password="secret"), timeout=5)
    list(laptop_stub.SearchLaptop(pb.SearchLaptopRequest(), timeout=5))
    out = capsys.readouterr().out
    # Go's log.Println puts two spaces between "interceptor:" and the method.
    assert " --> unary interceptor:  /techschool_pcbook.AuthService/Login\n" in out
    assert " --> stream interceptor:  /techschool_pcbook.LaptopService/SearchLaptop\n" in out


def test_client_interceptor_attaches_token_only_where_needed(server, capsys) -> None:  # type: ignore[no-untyped-def]
    seen: list[tuple[str, tuple]] = []

    class Recorder(grpc.ServerInterceptor):
        def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
            seen.append((details.method, tuple(details.invocation_metadata)))
            return continuation(details)

    from concurrent import futures

    from pcbook.pb import laptop_service_pb2_grpc
    from pcbook.service.laptop_service import LaptopServicer
    from pcbook.service.stores import ImageStore, LaptopStore, RatingStore

    srv = grpc.server(futures.ThreadPoolExecutor(2), interceptors=[Recorder()])
    laptop_service_pb2_grpc.add_LaptopServiceServicer_to_server(
        LaptopServicer(LaptopStore(), ImageStore(), RatingStore()), srv
    )
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    try:
        ch = grpc.intercept_channel(grpc.insecure_channel(f"127.0.0.1:{port}"), AuthClientInterceptor(lambda: "tok123"))
        stub = laptop_service_pb2_grpc.LaptopServiceStub(ch)
        stub.CreateLaptop(pb.CreateLaptopRequest(laptop=sample.new_laptop()), timeout=5)
        list(stub.SearchLaptop(pb.SearchLaptopRequest(), timeout=5))
        ch.close()
    finally:
        srv.stop(0)
    md = {method: dict(m) for method, m in seen}
    assert md[LAPTOP + "CreateLaptop"]["authorization"] == "tok123"
    assert "authorization" not in md[LAPTOP + "SearchLaptop"]
    out = capsys.readouterr().out
    # The Go client logs with Printf and a single space.
    assert " --> unary interceptor: /techschool_pcbook.LaptopService/CreateLaptop\n" in out
    assert " --> stream interceptor: /techschool_pcbook.LaptopService/SearchLaptop\n" in out
