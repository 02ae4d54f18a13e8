"""Every rule and status of LaptopService and AuthService, through an in-process server."""

from __future__ import annotations

import uuid

import grpc
import pytest

from pcbook.pb import auth_service_pb2, filter_message_pb2, memory_message_pb2
from pcbook.pb import laptop_service_pb2 as pb
from pcbook.service import sample
from pcbook.service.laptop_service import MAX_IMAGE_SIZE, LaptopServicer
from pcbook.service.stores import ImageStore, LaptopStore, RatingStore

Memory = memory_message_pb2.Memory


def _status(call) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code(), e.value.details()


def _create(stub, md, laptop=None):  # type: ignore[no-untyped-def]
    laptop = laptop if laptop is not None else sample.new_laptop()
    return stub.CreateLaptop(pb.CreateLaptopRequest(laptop=laptop), metadata=md, timeout=5).id


def test_create_keeps_client_id_and_logs(laptop_stub, admin_md, server, capsys) -> None:  # type: ignore[no-untyped-def]
    laptop = sample.new_laptop()
    assert _create(laptop_stub, admin_md, laptop) == laptop.id
    assert server.laptop_store.find(laptop.id) is not None
    out = capsys.readouterr().out
    assert f" receive a create-laptop request with id: {laptop.id}\n" in out
    assert f" saved laptop with id: {laptop.id}\n" in out


def test_create_without_id_gets_a_uuid(laptop_stub, admin_md) -> None:  # type: ignore[no-untyped-def]
    laptop = sample.new_laptop()
    laptop.id = ""
    assert uuid.UUID(_create(laptop_stub, admin_md, laptop))


def test_create_invalid_uuid(laptop_stub, admin_md) -> None:  # type: ignore[no-untyped-def]
    laptop = sample.new_laptop()
    laptop.id = "invalid-uuid"
    code, details = _status(lambda: _create(laptop_stub, admin_md, laptop))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("laptop ID is not a valid UUID: ")


def test_create_duplicate(laptop_stub, admin_md) -> None:  # type: ignore[no-untyped-def]
    laptop = sample.new_laptop()
    _create(laptop_stub, admin_md, laptop)
    code, details = _status(lambda: _create(laptop_stub, admin_md, laptop))
    assert (code, details) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "cannot save laptop to the store: record already exists",
    )


class FakeContext:
    """Just what LaptopServicer asks of a context, to reach the cancel and deadline branches."""

    def __init__(self, active: bool = True, remaining: float | None = None) -> None:
        self.active, self.remaining = active, remaining

    def is_active(self) -> bool:
        return self.active

    def time_remaining(self) -> float | None:
        return self.remaining

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _Aborted(code, details)


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


@pytest.mark.parametrize(
    ("ctx", "code", "message"),
    [
        (FakeContext(active=False), grpc.StatusCode.CANCELLED, "request is canceled"),
        (FakeContext(active=False, remaining=0.0), grpc.StatusCode.DEADLINE_EXCEEDED, "deadline is exceeded"),
    ],
)
def test_create_after_cancel_or_deadline(ctx, code, message) -> None:  # type: ignore[no-untyped-def]
    servicer = LaptopServicer(LaptopStore(), ImageStore(), RatingStore())
    with pytest.raises(_Aborted) as e:
        servicer.CreateLaptop(pb.CreateLaptopRequest(laptop=sample.new_laptop()), ctx)
    assert (e.value.code, e.value.details) == (code, message)
    assert len(servicer.laptop_store) == 0  # nothing saved for a caller that is gone


def test_create_past_client_deadline(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pcbook.service.server import build_server

    srv = build_server(0, host="127.0.0.1", image_dir=str(tmp_path), work_ms=300, jwt_secret="x" * 40)
    srv.start()
    try:
        from pcbook.pb import laptop_service_pb2_grpc
        from pcbook.service import auth

        token = auth.JWTManager("x" * 40).generate(auth.User("a", b"", "admin"))
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            stub = laptop_service_pb2_grpc.LaptopServiceStub(ch)
            req = pb.CreateLaptopRequest(laptop=sample.new_laptop())
            code, _ = _status(lambda: stub.CreateLaptop(req, metadata=[("authorization", token)], timeout=0.1))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        srv.stop(1)  # lets the call finish its simulated work
    assert len(srv.laptop_store) == 0


def test_search_streams_matches(laptop_stub, admin_md, capsys) -> None:  # type: ignore[no-untyped-def]
    cheap = sample.new_laptop()
    cheap.price_usd, cheap.cpu.number_cores, cheap.cpu.min_ghz = 1.5, 16, 4.9
    cheap.ram.CopyFrom(Memory(value=1, unit=Memory.TERABYTE))
    _create(laptop_stub, admin_md, cheap)
    flt = filter_message_pb2.Filter(
        max_price_usd=2, min_cpu_cores=16, min_cpu_ghz=4.9, min_ram=Memory(value=1024, unit=Memory.GIGABYTE)
    )
    found = [r.laptop.id for r in laptop_stub.SearchLaptop(pb.SearchLaptopRequest(filter=flt), timeout=5)]
    assert found == [cheap.id]
    out = capsys.readouterr().out
    assert " receive a search-laptop request with filter: max_price_usd: 2" in out
    assert f" sent laptop with id: {cheap.id}\n" in out


def _upload(stub, md, laptop_id: str, data: bytes, chunk: int = 1024, info: bool = True):  # type: ignore[no-untyped-def]
    def reqs():  # type: ignore[no-untyped-def]
        if info:
            yield pb.UploadImageRequest(info=pb.ImageInfo(laptop_id=laptop_id, image_type=".jpg"))
        for i in range(0, len(data), chunk):
            yield pb.UploadImageRequest(chunk_data=data[i : i + chunk])

    return stub.UploadImage(reqs(), metadata=md, timeout=5)


def test_upload_image(laptop_stub, admin_md, server, capsys) -> None:  # type: ignore[no-untyped-def]
    laptop_id = _create(laptop_stub, admin_md)
    data = bytes(range(256)) * 10
    res = _upload(laptop_stub, admin_md, laptop_id, data)
    assert res.size == len(data)
    info = server.image_store.find(res.id)
    assert info.path.read_bytes() == data and info.laptop_id == laptop_id
    out = capsys.readouterr().out
    assert f" receive an upload-image request for laptop {laptop_id} with image type .jpg\n" in out
    assert " received a chunk with size: 1024\n" in out
    assert f" saved image with id: {res.id}, size: {len(data)}\n" in out


def test_upload_exactly_one_mib_is_fine(laptop_stub, admin_md) -> None:  # type: ignore[no-untyped-def]
    laptop_id = _create(laptop_stub, admin_md)
    assert _upload(laptop_stub, admin_md, laptop_id, b"x" * MAX_IMAGE_SIZE, chunk=64 * 1024).size == MAX_IMAGE_SIZE


def test_upload_too_large(laptop_stub, admin_md) -> None:  # type: ignore[no-untyped-def]
    laptop_id = _create(laptop_stub, admin_md)
    code, details = _status(lambda: _upload(laptop_stub, admin_md, laptop_id, b"x" * (MAX_IMAGE_SIZE + 1), 64 * 1024))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, f"image is too large: {MAX_IMAGE_SIZE + 1} > 1048576")


def test_upload_unknown_laptop(laptop_stub, admin_md) -> None:  # type: ignore[no-untyped-def]
    unknown = str(uuid.uuid4())
    code, details = _status(lambda: _upload(laptop_stub, admin_md, unknown, b"abc"))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, f"laptop id {unknown} doesn't exist")


def test_upload_must_start_with_info(laptop_stub, admin_md) -> None:  # type: ignore[no-untyped-def]
    code, details = _status(lambda: _upload(laptop_stub, admin_md, "", b"abc", info=False))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "image info" in details


def test_upload_empty_stream(laptop_stub, admin_md) -> None:  # type: ignore[no-untyped-def]
    code, details = _status(lambda: laptop_stub.UploadImage(iter([]), metadata=admin_md, timeout=5))
    assert (code, details) == (grpc.StatusCode.UNKNOWN, "cannot receive image info")


def test_rate_running_average(laptop_stub, admin_md) -> None:  # type: ignore[no-untyped-def]
    a, b = _create(laptop_stub, admin_md), _create(laptop_stub, admin_md)
    reqs = [pb.RateLaptopRequest(laptop_id=i, score=s) for i, s in ((a, 8), (b, 3), (a, 7.5), (a, 10))]
    res = list(laptop_stub.RateLaptop(iter(reqs), metadata=admin_md, timeout=5))
    assert [(r.laptop_id, r.rated_count, r.average_score) for r in res] == [
        (a, 1, 8),
        (b, 1, 3),
        (a, 2, 7.75),
        (a, 3, 8.5),
    ]


def test_rate_unknown_laptop(laptop_stub, admin_md) -> None:  # type: ignore[no-untyped-def]
    known, unknown = _create(laptop_stub, admin_md), str(uuid.uuid4())
    reqs = [pb.RateLaptopRequest(laptop_id=known, score=5), pb.RateLaptopRequest(laptop_id=unknown, score=5)]
    got = []

    def rate() -> None:
        for r in laptop_stub.RateLaptop(iter(reqs), metadata=admin_md, timeout=5):
            got.append(r)

    assert _status(rate) == (grpc.StatusCode.NOT_FOUND, f"laptopID {unknown} is not found")
    assert [r.laptop_id for r in got] == [known]


@pytest.mark.parametrize(("username", "password"), [("admin1", "wrong"), ("nobody", "secret")])
def test_login_refused(auth_stub, username: str, password: str) -> None:  # type: ignore[no-untyped-def]
    req = auth_service_pb2.LoginRequest(username=username, password=password)
    assert _status(lambda: auth_stub.Login(req, timeout=5)) == (
        grpc.StatusCode.NOT_FOUND,
        "incorrect username/password",
    )


def test_login_gives_a_token_of_the_right_role(auth_stub, jwt_manager) -> None:  # type: ignore[no-untyped-def]
    for username, role in (("admin1", "admin"), ("user1", "user")):
        token = auth_stub.Login(auth_service_pb2.LoginRequest(username=username, password="secret")).access_token
        claims = jwt_manager.verify(token)
        assert (claims.username, claims.role) == (username, role)
