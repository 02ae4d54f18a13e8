"""`make lab`'s contents manager: a notebook opens unmodified and saves with the metadata it was committed with.

A notebook is committed with `language_info: {"name": "python"}`. When its kernel starts, JupyterLab
writes the kernel's full language_info (Python's version included) into the notebook and marks it
modified, before the learner has touched it (measured with JupyterLab 4.6 in headless Chromium: the
tab is dirty; with the full language_info in the file, it is not). The version differs from one
learner's Python to the next, so the file cannot carry it: this manager adds it when a notebook is
read (the kernel is the server's own interpreter, so ipykernel's language_info is the kernel's) and
takes it out again when one is saved. jupyter_server has save hooks but no load hook, hence the subclass.
"""

from __future__ import annotations

from typing import Any

from ipykernel.ipkernel import IPythonKernel
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager

COMMITTED = {"name": "python"}


class Contents(AsyncLargeFileManager):
    async def get(self, path: str, content: bool = True, type: str | None = None, format: str | None = None,
                  require_hash: bool = False) -> dict[str, Any]:
        model = await super().get(path, content=content, type=type, format=format, require_hash=require_hash)
        if model.get("type") == "notebook" and model.get("content"):
            metadata = model["content"]["metadata"]
            if metadata.get("language_info") == COMMITTED:
                metadata["language_info"] = dict(IPythonKernel.language_info)
        return model

    async def save(self, model: dict[str, Any], path: str = "") -> dict[str, Any]:
        if model.get("type") == "notebook" and model.get("content"):
            metadata = model["content"].get("metadata", {})
            if metadata.get("language_info") == IPythonKernel.language_info:
                metadata["language_info"] = dict(COMMITTED)
        return await super().save(model, path)
