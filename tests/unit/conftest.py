"""Unit-test fixtures: an in-process server on a free loopback port, and the stubs to call it."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from pcbook.pb import auth_service_pb2_grpc, laptop_service_pb2_grpc
from pcbook.service import auth
from pcbook.service.server import PcbookServer, build_server

SECRET = "unit-test-secret-that-is-long-enough-for-hs256"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PcbookServer]:
    srv = build_server(0, host="127.0.0.1", image_dir=str(tmp_path_factory.mktemp("images")), jwt_secret=SECRET)
    srv.start()
    yield srv
    srv.stop(0)


@pytest.fixture(scope="module")
def channel(server: PcbookServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture(scope="module")
def laptop_stub(channel: grpc.Channel) -> laptop_service_pb2_grpc.LaptopServiceStub:
    return laptop_service_pb2_grpc.LaptopServiceStub(channel)


@pytest.fixture(scope="module")
def auth_stub(channel: grpc.Channel) -> auth_service_pb2_grpc.AuthServiceStub:
    return auth_service_pb2_grpc.AuthServiceStub(channel)


@pytest.fixture(scope="module")
def jwt_manager() -> auth.JWTManager:
    return auth.JWTManager(SECRET)


def token_for(manager: auth.JWTManager, role: str, username: str = "someone") -> str:
    return manager.generate(auth.User(username, b"", role))


@pytest.fixture(scope="module")
def admin_md(jwt_manager: auth.JWTManager) -> list[tuple[str, str]]:
    return [("authorization", token_for(jwt_manager, "admin", "admin1"))]


@pytest.fixture(scope="module")
def user_md(jwt_manager: auth.JWTManager) -> list[tuple[str, str]]:
    return [("authorization", token_for(jwt_manager, "user", "user1"))]
