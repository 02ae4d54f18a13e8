"""Notebooks opened without `make`: the first cell makes what they need, a failed story stops at its
cell with its reason, and the notebooks' links open under `make lab`."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

from pcbook.workbook import manifest

from .test_notebooks import LESSONS_DIR, ROOT, kernel

NOTICE = "generated the certificates"


def test_the_first_cell_makes_missing_certificates(tmp_path: Path) -> None:
    env = {**os.environ, "PCBOOK_CERTS": str(tmp_path / "certs")}
    first = "from pcbook.workbook.notebook import Session\nSession(2).close()"
    made = subprocess.run([sys.executable, "-c", first], cwd=LESSONS_DIR, env=env, capture_output=True,
                          text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert NOTICE in made.stdout and "what `make cert` does" in made.stdout
    assert {"ca-cert.pem", "server-cert.pem", "client-cert.pem"} <= {p.name for p in (tmp_path / "certs").iterdir()}
    again = subprocess.run([sys.executable, "-c", first], cwd=LESSONS_DIR, env=env, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0 and NOTICE not in again.stdout  # kept while valid


@pytest.mark.timeout(120)
def test_a_step_that_cannot_run_stops_at_its_cell_with_the_reason() -> None:
    lesson = manifest.get(8)
    port = 8081  # lesson 8's nginx port, held here so that its first step cannot start nginx
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("0.0.0.0", port))
        held.listen()
        with kernel(nbformat.v4.new_notebook()) as k:
            k.run(f"from pcbook.workbook.notebook import Session\nsession = Session({lesson.number})")
            with pytest.raises(CellExecutionError) as failed:
                k.run("step1 = session.step()")
            error = next(o for o in k.client.nb.cells[-1].outputs if o.output_type == "error")
            # Only the reason, not a traceback: "Run All" stops here, before the chart cells.
            assert len(error.traceback) == 1, error.traceback
            assert error.traceback[0].startswith("lesson stopped: step 1 could not run: ")
            assert str(port) in error.traceback[0]
            assert "ValueError" not in str(failed.value) and "IndexError" not in str(failed.value)
            k.assert_nothing_left((port,))


def _lab_root() -> Path:
    recipe = (ROOT / "Makefile").read_text().split("\nlab:", 1)[1].split("\n\n", 1)[0]
    return (ROOT / re.search(r"--notebook-dir=(\S+)", recipe).group(1)).resolve()


def test_every_relative_link_of_a_notebook_opens_under_make_lab() -> None:
    # JupyterLab answers 403 for a path outside its root: `make lab`'s root must hold every link target.
    root = _lab_root()
    checked = 0
    for lesson in manifest.LESSONS:
        nb = nbformat.read(ROOT / lesson.notebook, as_version=4)
        for cell in nb.cells:
            for target in re.findall(r"\]\((?!https?:)([^)#]+)", cell.source if cell.cell_type == "markdown" else ""):
                path = (ROOT / lesson.notebook).parent.joinpath(target).resolve()
                assert path.exists(), f"{lesson.notebook}: {target} does not exist"
                assert path.is_relative_to(root), f"{lesson.notebook}: {target} is outside make lab's root {root}"
                checked += 1
    assert checked >= len(manifest.LESSONS)


def test_a_notebook_opened_before_make_gen_generates_the_code_first(tmp_path: Path) -> None:
    """Right after `make setup`, no generated code: the first cell's import makes it, saying so."""
    import shutil

    shutil.copytree(ROOT / "pcbook", tmp_path / "pcbook",
                    ignore=shutil.ignore_patterns("*_pb2*", "__pycache__"))
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    assert not list((tmp_path / "pcbook" / "pb").glob("*_pb2.py"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    made = subprocess.run([sys.executable, "-c", "from pcbook.workbook.notebook import Session"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr[-2000:]
    assert "what `make gen` does" in made.stdout, made.stdout
    assert (tmp_path / "pcbook" / "pb" / "laptop_service_pb2.py").exists()
