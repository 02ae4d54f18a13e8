"""Shared test setup: generated code must exist before any test module imports pcbook.pb."""

from __future__ import annotations

from pcbook import codegen


def pytest_configure() -> None:
    # `make test` generates the code first; this covers `pytest` run by hand after a proto edit.
    if codegen.is_stale():
        codegen.generate()
