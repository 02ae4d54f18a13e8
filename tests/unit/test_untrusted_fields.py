"""Client fields and the environment are untrusted input (issue 27, item 6): averages stay finite, laptop ids
have one canonical form, echoed text is escaped and bounded, errors carry no server path, a bad secret is
one line, .run/ files are pruned, `make help` lists every lesson."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest

from pcbook.paths import ROOT
from pcbook.pb import laptop_message_pb2
from pcbook.pb import laptop_service_pb2 as pb
from pcbook.service.server import PcbookServer


def _create(stub, md, laptop_id: str) -> str:  # type: ignore[no-untyped-def]
    return stub.CreateLaptop(pb.CreateLaptopRequest(laptop=laptop_message_pb2.Laptop(id=laptop_id)), metadata=md,
                             timeout=5).id


def test_two_huge_scores_keep_a_finite_average(laptop_stub, admin_md) -> None:  # type: ignore[no-untyped-def]
    laptop_id = _create(laptop_stub, admin_md, "")
    scores = [1e308, 1e308, -1.7976931348623157e308, 1.7976931348623157e308]
    answers = list(laptop_stub.RateLaptop(iter([pb.RateLaptopRequest(laptop_id=laptop_id, score=s) for s in scores]),
                                          metadata=admin_md, timeout=5))
    averages = [a.average_score for a in answers]
    assert all(math.isfinite(a) for a in averages), averages
    assert averages[1] == pytest.approx(1e308) and answers[-1].rated_count == 4


def test_laptop_ids_are_stored_in_one_canonical_form(laptop_stub, admin_md, capfd) -> None:  # type: ignore[no-untyped-def]
    u = uuid.uuid4()
    assert _create(laptop_stub, admin_md, f"urn:uuid:{u}") == str(u)
    for spelling in (f"{{{u}}}", str(u).upper(), u.hex):  # the same UUID in other spellings: a duplicate
        with pytest.raises(grpc.RpcError) as err:
            _create(laptop_stub, admin_md, spelling)
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS, spelling
    for bad in ("-" * 1_000_000 + uuid.uuid4().hex, f"\n{uuid.uuid4()}"):
        with pytest.raises(grpc.RpcError) as err:
            _create(laptop_stub, admin_md, bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and len(err.value.details()) < 200
    lines = capfd.readouterr().out.splitlines()
    assert max(map(len, lines)) < 300, max(map(len, lines))
    saved = [line for line in lines if "saved laptop with id:" in line]
    assert saved and all(line.endswith(f"saved laptop with id: {u}") for line in saved), saved
    # a rating or an upload finds the laptop by any spelling of its id too
    answers = list(laptop_stub.RateLaptop(iter([pb.RateLaptopRequest(laptop_id=str(u).upper(), score=5)]),
                                          metadata=admin_md, timeout=5))
    assert answers[0].laptop_id == str(u)


def _upload(stub, md, laptop_id: str, image_type: str) -> pb.UploadImageResponse:  # type: ignore[no-untyped-def]
    reqs = [pb.UploadImageRequest(info=pb.ImageInfo(laptop_id=laptop_id, image_type=image_type)),
            pb.UploadImageRequest(chunk_data=b"x" * 10)]
    return stub.UploadImage(iter(reqs), metadata=md, timeout=5)


def test_errors_to_clients_carry_no_server_path(server: PcbookServer, laptop_stub, admin_md) -> None:  # type: ignore[no-untyped-def]
    laptop_id = _create(laptop_stub, admin_md, "")
    assert _upload(laptop_stub, admin_md, laptop_id, "." + "i" * 10_000).size == 10  # the type is not a file name
    folder = server.image_store.folder
    shutil.rmtree(folder)  # the disk fails under the server
    try:
        with pytest.raises(grpc.RpcError) as err:
            _upload(laptop_stub, admin_md, laptop_id, ".jpg")
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert str(folder) not in err.value.details() and "/" not in err.value.details(), err.value.details()
    finally:
        folder.mkdir(parents=True, exist_ok=True)


def test_a_secret_that_is_not_utf8_is_one_line() -> None:
    env = {"PCBOOK_JWT_SECRET": b"\xff" * 40, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "pcbook.server", "--port", "0"], cwd=ROOT, env=env,  # type: ignore[arg-type]
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and "PCBOOK_JWT_SECRET is not valid UTF-8" in done.stderr, done.stderr


def test_run_files_are_pruned(tmp_path: Path) -> None:
    from pcbook.stack import runfiles

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    old = time.time() - 3600
    for n in range(runfiles.KEEP_BOOTSTRAPS + 4):
        path = tmp_path / f"xds-bootstrap-{18000 + n}.json"
        path.write_text("{}")
        os.utime(path, (old + n, old + n))
    left = [tmp_path / f"load-{dead}-1.json", tmp_path / f"discovery-load-{dead}-2.json"]
    kept = [tmp_path / f"load-{os.getpid()}-1.json", tmp_path / "notes.json"]
    for path in left + kept:
        path.write_text("{}")
    runfiles.prune(tmp_path)
    assert len(list(tmp_path.glob("xds-bootstrap-*.json"))) == runfiles.KEEP_BOOTSTRAPS
    assert (tmp_path / f"xds-bootstrap-{18000 + runfiles.KEEP_BOOTSTRAPS + 3}.json").exists()  # the newest stay
    assert not any(p.exists() for p in left) and all(p.exists() for p in kept)


def test_make_help_lists_every_lesson_without_generated_code(tmp_path: Path) -> None:
    from pcbook.workbook.manifest import LESSONS

    # The fallback (no generated code yet): the Makefile with GEN pointing at a file that does not exist.
    done = subprocess.run(["make", "-s", "-f", str(ROOT / "Makefile"), "help", f"GEN={tmp_path}/none.py"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"make lesson-{len(LESSONS)}" in done.stdout and f"lesson-{len(LESSONS) + 1}" not in done.stdout, done.stdout
