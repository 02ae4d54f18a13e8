"""`make lab`'s contents manager (issue 26, item 9): a notebook is read with the kernel's own language_info,
so JupyterLab has nothing to change when the kernel starts (it marked every notebook modified on open), and
is saved with the metadata it was committed with."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from pcbook.paths import ROOT

pytest.importorskip("jupyter_server", reason="JupyterLab is the `lab` extra, installed by the first `make lab`")
from ipykernel.ipkernel import IPythonKernel  # noqa: E402

from pcbook.workbook.labcontents import COMMITTED, Contents  # noqa: E402


def test_make_lab_uses_it() -> None:
    assert "--ServerApp.contents_manager_class=pcbook.workbook.labcontents.Contents" in (ROOT / "Makefile").read_text()


def test_every_notebook_is_committed_with_the_metadata_it_replaces() -> None:
    for notebook in sorted((ROOT / "lessons").glob("*.ipynb")):
        assert json.loads(notebook.read_text())["metadata"]["language_info"] == COMMITTED, notebook.name


def test_read_with_the_kernels_language_info_saved_as_committed(tmp_path: Path) -> None:
    shutil.copyfile(ROOT / "lessons" / "04-tls-to-backends.ipynb", tmp_path / "lesson.ipynb")
    before = (tmp_path / "lesson.ipynb").read_text()
    manager = Contents(root_dir=str(tmp_path))

    async def round_trip() -> dict:
        model = await manager.get("lesson.ipynb")
        assert model["content"]["metadata"]["language_info"] == IPythonKernel.language_info
        await manager.save({"type": "notebook", "format": "json", "content": model["content"]}, "lesson.ipynb")
        return json.loads((tmp_path / "lesson.ipynb").read_text())

    saved = asyncio.run(round_trip())
    assert saved["metadata"] == json.loads(before)["metadata"]
    assert saved["cells"] == json.loads(before)["cells"]
