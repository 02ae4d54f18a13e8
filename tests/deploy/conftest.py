"""A private Docker daemon and the workbook's image, shared by the container tests of this folder."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import pytest
from isolation import machine_network

from pcbook import paths
from pcbook.stack import dockerd

from .support import IMAGE, compose


@pytest.fixture(scope="package")
def daemon() -> Iterator[dockerd.Daemon]:
    reason = dockerd.why_unavailable()
    if reason:
        pytest.skip(reason)
    try:
        d = dockerd.start()  # its data root is kept across runs (dockerd.data_root), whichever worker runs it
    except dockerd.DockerUnavailable as e:
        pytest.skip(str(e))
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="package")
def image(daemon: dockerd.Daemon) -> str:
    """The workbook's image, built from deploy/Dockerfile on the locally made base, offline."""
    # The wheels download while debootstrap runs: the two are the slow part of a first run, and the only
    # part that needs the machine's network (a test worker has its own namespace: tests/isolation.py).
    with machine_network(), concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        wheels = pool.submit(dockerd.fill_wheelhouse, dockerd.image_requirements(), paths.ROOT / "deploy" / "wheels")
        try:
            base = dockerd.base_image(daemon)
            wheels.result()
        except dockerd.DockerUnavailable as e:
            pytest.skip(str(e))
    out = compose(daemon, "pcbook-build", "build", "server1", timeout=600)
    assert out.returncode == 0, out.stdout[-3000:]
    daemon.docker("image", "prune", "--force", check=False)  # the layers the new build replaced
    assert daemon.docker("image", "inspect", IMAGE, check=False).returncode == 0
    assert base
    return IMAGE


