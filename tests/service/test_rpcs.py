"""All four RPC kinds against the real server process, plaintext and over mutual TLS."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from concurrent import futures

import grpc
import pytest

from pcbook.pb import filter_message_pb2, laptop_service_pb2_grpc, memory_message_pb2
from pcbook.pb import laptop_service_pb2 as pb
from pcbook.service import auth, laptop_client, sample

Memory = memory_message_pb2.Memory


@pytest.fixture(params=["plain", "mtls"])
def server(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    return request.getfixturevalue(f"{request.param}_server")


def test_all_four_rpc_kinds(server) -> None:  # type: ignore[no-untyped-def]
    conn = laptop_client.connect(
        f"127.0.0.1:{server.port}", tls_enabled=server.tls_enabled, certs_dir=server.certs_dir, quiet=True
    )
    with conn:
        # unary
        special = sample.new_laptop()
        special.price_usd, special.cpu.number_cores, special.cpu.min_ghz = 1.25, 64, 4.99
        special.ram.CopyFrom(Memory(value=2, unit=Memory.TERABYTE))
        laptop_id = conn.laptops.create_laptop(special)
        assert laptop_id == special.id
        # server streaming
        flt = filter_message_pb2.Filter(
            max_price_usd=1.25, min_cpu_cores=64, min_cpu_ghz=4.99, min_ram=Memory(value=2048, unit=Memory.GIGABYTE)
        )
        assert [lp.id for lp in conn.laptops.search_laptop(flt)] == [laptop_id]
        # client streaming
        res = conn.laptops.upload_image(laptop_id, b"\x89PNG" * 5000, ".png")
        assert res.size == 20000 and res.id
        # bidi streaming: the reference's scores 8, 7.5, 10 give averages 8, 7.75, 8.5
        results = conn.laptops.rate_laptop([laptop_id] * 3, [8, 7.5, 10])
        assert [(r.rated_count, r.average_score) for r in results] == [(1, 8), (2, 7.75), (3, 8.5)]
    out = server.wait_for_line(rf"saved image with id: {res.id}, size: 20000")
    assert out


def test_fifty_concurrent_creates(server) -> None:  # type: ignore[no-untyped-def]
    conn = laptop_client.connect(
        f"127.0.0.1:{server.port}", tls_enabled=server.tls_enabled, certs_dir=server.certs_dir, quiet=True
    )
    with conn, futures.ThreadPoolExecutor(50) as pool:
        ids = list(pool.map(lambda _: conn.laptops.create_laptop(), range(50)))
    assert len(set(ids)) == 50


def _call_create(server, token: str) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with server.channel() as ch:
        stub = laptop_service_pb2_grpc.LaptopServiceStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            stub.CreateLaptop(
                pb.CreateLaptopRequest(laptop=sample.new_laptop()), metadata=[("authorization", token)], timeout=5
            )
    return e.value


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


ADMIN = auth.User("admin1", b"", "admin")


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        (lambda: auth.JWTManager(auth.DEV_SECRET, dt.timedelta(minutes=-1)).generate(ADMIN), "Signature has expired"),
        (lambda: auth.JWTManager("z" * 40).generate(ADMIN), "Signature verification failed"),
        (
            lambda: (
                f"{_b64({'alg': 'none', 'typ': 'JWT'})}."
                f"{_b64({'exp': int(time.time()) + 600, 'username': 'admin1', 'role': 'admin'})}."
            ),
            "",
        ),
    ],
    ids=["expired", "other-key", "alg-none"],
)
def test_bad_tokens_refused(plain_server, make_token, reason: str) -> None:  # type: ignore[no-untyped-def]
    err = _call_create(plain_server, make_token())
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.details().startswith("access token is invalid: ") and reason in err.details()


def test_valid_dev_token_accepted_and_user_role_limited(plain_server) -> None:  # type: ignore[no-untyped-def]
    # The same development secret in every process: a token from one server works on another.
    with plain_server.channel() as ch:
        stub = laptop_service_pb2_grpc.LaptopServiceStub(ch)
        md = [("authorization", auth.JWTManager(auth.DEV_SECRET).generate(ADMIN))]
        laptop_id = stub.CreateLaptop(pb.CreateLaptopRequest(laptop=sample.new_laptop()), metadata=md, timeout=5).id
    conn = laptop_client.connect(
        f"127.0.0.1:{plain_server.port}", username="user1", certs_dir=plain_server.certs_dir, quiet=True
    )
    with conn:
        assert conn.laptops.rate_laptop([laptop_id], [4])[0].rated_count == 1
        with pytest.raises(grpc.RpcError) as e:
            conn.laptops.create_laptop()
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_wrong_password(plain_server) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as e:
        laptop_client.connect(f"127.0.0.1:{plain_server.port}", password="nope", quiet=True)
    assert (e.value.code(), e.value.details()) == (grpc.StatusCode.NOT_FOUND, "incorrect username/password")


def test_reflection_lists_services(plain_server) -> None:  # type: ignore[no-untyped-def]
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with plain_server.channel() as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        req = reflection_pb2.ServerReflectionRequest(list_services="")
        res = next(iter(stub.ServerReflectionInfo(iter([req]), timeout=5)))
    names = {s.name for s in res.list_services_response.service}
    assert {"techschool_pcbook.LaptopService", "techschool_pcbook.AuthService", "grpc.health.v1.Health"} <= names


def test_token_is_refreshed_in_the_background(plain_server, capsys) -> None:  # type: ignore[no-untyped-def]
    with laptop_client.connect(f"127.0.0.1:{plain_server.port}", refresh_seconds=0.1) as conn:
        deadline = time.monotonic() + 5
        seen = ""
        while seen.count("token refreshed: ") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
            seen += capsys.readouterr().out
        assert seen.count("token refreshed: ") >= 3
        assert conn.refresher.token and conn.laptops.create_laptop()
