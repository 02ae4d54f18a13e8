from __future__ import annotations

import json
import random
import re

import grpc
import pytest

from pcbook.service import channels, logs, sample
from pcbook.service.grpc_errors import format_rpc_error, go_code_name


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_format_rpc_error_go_shape() -> None:
    err = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
    assert format_rpc_error(err) == "rpc error: code = Unavailable desc = failed to connect to all addresses"


def test_every_code_has_a_go_name() -> None:
    names = {go_code_name(c) for c in grpc.StatusCode}
    assert len(names) == len(grpc.StatusCode)
    assert go_code_name(grpc.StatusCode.CANCELLED) == "Canceled"
    assert go_code_name(grpc.StatusCode.DEADLINE_EXCEEDED) == "DeadlineExceeded"
    assert all(re.fullmatch(r"[A-Z][A-Za-z]+", n) for n in names)


def test_log_line_format(capsys: pytest.CaptureFixture[str]) -> None:
    logs.log("saved laptop with id: x")
    logs.error("oops")
    out, err = capsys.readouterr()
    assert re.fullmatch(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d saved laptop with id: x\n", out)
    assert err.endswith(" oops\n")
    with pytest.raises(SystemExit) as e:
        logs.fatal("bye")
    assert e.value.code == 1 and capsys.readouterr().err.endswith(" bye\n")


def test_service_config() -> None:
    assert channels.service_config() is None
    cfg = json.loads(channels.service_config("round_robin", health_check=True))
    assert cfg == {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}
    assert json.loads(channels.service_config("pick_first")) == {"loadBalancingConfig": [{"pick_first": {}}]}
    with pytest.raises(ValueError):
        channels.service_config("least_request")


@pytest.mark.parametrize(
    ("target", "host"),
    [
        ("0.0.0.0:8080", "0.0.0.0"),
        ("localhost:50051", "localhost"),
        ("ipv4:127.0.0.1:50051,127.0.0.1:50052", "127.0.0.1"),
        ("ipv6:[::1]:50051,[::1]:50052", "::1"),
        ("dns:///localhost:50051", "localhost"),
    ],
)
def test_target_host(target: str, host: str) -> None:
    assert channels.target_host(target) == host


def test_sample_laptop_ranges() -> None:
    rng = random.Random(7)
    for _ in range(50):
        lp = sample.new_laptop(rng)
        assert lp.brand in ("Apple", "Dell", "Lenovo")
        assert lp.cpu.brand in ("Intel", "AMD") and 2 <= lp.cpu.number_cores <= 8
        assert lp.cpu.number_cores <= lp.cpu.number_threads <= 12
        assert 4 <= lp.ram.value <= 64 and len(lp.gpus) == 1 and len(lp.storages) == 2
        assert 13 <= lp.screen.size_inch <= 17 and 1 <= lp.weight_kg <= 3
        assert 1500 <= lp.price_usd <= 3500 and 2015 <= lp.release_year <= 2019
        assert 1 <= sample.new_score(rng) <= 10


def test_an_upload_with_no_status_past_its_deadline_is_cancelled_and_named() -> None:
    # grpcio's own failure, which no real server provokes on purpose: a future that never completes.
    import grpc
    import pytest

    from pcbook.service import laptop_client

    class Stuck:
        cancelled = False

        def result(self, timeout: float | None = None) -> None:
            raise grpc.FutureTimeoutError()

        def cancel(self) -> bool:
            Stuck.cancelled = True
            return True

    client = laptop_client.LaptopClient(grpc.insecure_channel("127.0.0.1:9"), timeout=0.5, quiet=True)
    client._stub = type("Stub", (), {"UploadImage": type("M", (), {"future": staticmethod(lambda *a, **k: Stuck())})})
    with pytest.raises(laptop_client.UploadHung, match=r"no status 2.5 s after the upload began, past its 0.5 s"):
        client.upload_image("id", b"x")
    assert Stuck.cancelled


def test_soak_says_in_one_line_why_a_stack_could_not_start(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from pcbook.stack.ports import PortBusyError
    from pcbook.workbook import soak

    def busy(*_args: object) -> None:
        raise PortBusyError(50092, 4242, "python -m pcbook.server --port 50092")

    monkeypatch.setattr(soak, "_run_all", busy)
    assert soak.main(["--runs", "1", "--only", "probe-413"]) == 1
    out = capsys.readouterr().out
    assert "soak: stopped: port 50092 is already in use by" in out and "Traceback" not in out
    assert "stack        0/1 passed" in out
