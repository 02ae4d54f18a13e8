"""What grpcio does with the service config's retry and hedging policies (lesson 14 says it, measured here)."""

from __future__ import annotations

import json
import re

import grpc

from pcbook.pb import laptop_service_pb2 as pb
from pcbook.pb import laptop_service_pb2_grpc as pb_grpc
from pcbook.service import sample
from pcbook.service.channels import service_config
from pcbook.service.laptop_client import AuthClient

WORK_MS = 300  # each CreateLaptop takes this long: a hedge after 50 ms would surely be sent
HEDGING = {"hedgingPolicy": {"maxAttempts": 3, "hedgingDelay": "0.05s", "nonFatalStatusCodes": ["UNAVAILABLE"]}}


def _create(channel: grpc.Channel) -> str:
    token = AuthClient(channel, "admin1", "secret").login()
    laptop = sample.new_laptop()
    pb_grpc.LaptopServiceStub(channel).CreateLaptop(pb.CreateLaptopRequest(laptop=laptop), timeout=5,
                                                    metadata=[("authorization", token)])
    return laptop.id


def test_a_hedging_policy_is_accepted_and_ignored(start_server) -> None:  # type: ignore[no-untyped-def]
    srv = start_server("--work-ms", str(WORK_MS))
    config = json.dumps({"methodConfig": [{"name": [{}], **HEDGING}]})
    start = len(srv.lines)
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}", options=[("grpc.service_config", config)]) as channel:
        ids = [_create(channel) for _ in range(3)]
    srv.wait_for_line(f"saved laptop with id: {ids[-1]}", start=start)
    received = [line for line in srv.lines[start:] if "receive a create-laptop request" in line]
    # Three hedged attempts each would be nine lines; grpcio sent each call once.
    assert len(received) == len(ids), received


def test_a_malformed_retry_policy_fails_the_call_not_the_process(start_server) -> None:  # type: ignore[no-untyped-def]
    srv = start_server()
    config = json.dumps({"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": 4}}]})
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}", options=[("grpc.service_config", config)]) as channel:
        try:
            _create(channel)
        except grpc.RpcError as err:
            assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert re.search(r"errors validating service config.*retryPolicy", err.details() or "")
        else:
            raise AssertionError("a retryPolicy without backoff and codes was accepted")


def test_our_retry_policy_names_its_codes() -> None:
    config = json.loads(service_config(retry=("UNAVAILABLE",), wait_for_ready=True) or "{}")
    method = config["methodConfig"][0]
    assert method["name"] == [{}] and method["waitForReady"] is True
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert service_config() is None
