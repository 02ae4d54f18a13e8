"""The Go course's secret, as the docs teach it (issue 26, item 3): the documented command, typed into a
shell, starts `make server1` signing with `secret` and warning about it; without the opt-in it is refused."""

from __future__ import annotations

import datetime as dt
import re
import warnings
from collections.abc import Iterator

import grpc
import jwt
import pytest
from terminal import Shell

from pcbook.paths import ROOT
from pcbook.pb import auth_service_pb2, auth_service_pb2_grpc, laptop_service_pb2, laptop_service_pb2_grpc
from pcbook.service import sample

GO_SECRET = "secret"
OPT_IN = "PCBOOK_JWT_INSECURE_SECRET=1 "


def documented_command() -> str:
    """The shell line of docs/go-code.md that starts server1 with the Go course's secret (README says it too)."""
    page = (ROOT / "docs" / "go-code.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", page, re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    commands = [line for line in lines if "PCBOOK_JWT_SECRET=secret" in line and line.endswith("make server1")]
    assert len(commands) == 1, f"docs/go-code.md should show one such command, found {commands}"
    assert commands[0] in (ROOT / "README.md").read_text(), "README.md should give the same command"
    return commands[0]


@pytest.fixture
def go_secret_server() -> Iterator[Shell]:
    shell = Shell(documented_command())
    try:
        shell.wait_for(r"server is listening on 0\.0\.0\.0:50051")
        yield shell
    finally:
        shell.stop()


def test_the_documented_command_shares_the_go_courses_secret_and_warns(go_secret_server: Shell) -> None:
    said = "\n".join(go_secret_server.seen)
    assert "using the JWT secret from PCBOOK_JWT_SECRET" in said, said
    assert re.search(r"WARNING: PCBOOK_JWT_INSECURE_SECRET=1: signing tokens with a 6-byte secret", said), said
    with grpc.insecure_channel("127.0.0.1:50051") as channel, warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        login = auth_service_pb2_grpc.AuthServiceStub(channel).Login(
            auth_service_pb2.LoginRequest(username="admin1", password="secret"), timeout=10)
        # Signed with the Go course's secret: a Go server behind the same nginx verifies it.
        claims = jwt.decode(login.access_token, GO_SECRET, algorithms=["HS256"])
        assert claims["username"] == "admin1" and claims["role"] == "admin"
        # A token signed as the Go server signs it (its claims, `secret`) is accepted here.
        exp = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=15)
        go_token = jwt.encode({"exp": exp, "username": "admin1", "role": "admin"}, GO_SECRET, algorithm="HS256")
        created = laptop_service_pb2_grpc.LaptopServiceStub(channel).CreateLaptop(
            laptop_service_pb2.CreateLaptopRequest(laptop=sample.new_laptop()),
            metadata=[("authorization", go_token)], timeout=10)
        assert created.id


def test_without_the_opt_in_the_weak_secret_is_refused_in_one_line() -> None:
    command = documented_command()
    assert command.startswith(OPT_IN)
    shell = Shell(command.removeprefix(OPT_IN))
    try:
        line = shell.wait_for(r"PCBOOK_JWT_SECRET is 6 bytes long")
        assert "HS256 needs a secret of at least 32 bytes" in line and "PCBOOK_JWT_INSECURE_SECRET=1" in line, line
        said = "\n".join(shell.rest())
        assert shell.proc.wait(30) != 0
        assert "Traceback" not in said and "server is listening" not in said, said
    finally:
        shell.stop()
