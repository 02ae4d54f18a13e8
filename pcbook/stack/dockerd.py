"""A private Docker daemon for the container tests, and the base image they build on.

The daemon runs in its own network namespace (``unshare --net``), so its bridge, its iptables rules
and the ports compose publishes stay out of the machine's network, and it keeps its state apart:
``--data-root`` where `data_root` says (kept between runs: the image layers are the slow part),
``--exec-root``, ``--pidfile`` and the API socket in a temp folder (Unix socket paths are
short). Docker and containerd also create the empty folders /run/docker/plugins and
/run/containerd/s; `stop` removes them again when it finds them empty and they were not there before.

No image registry may be reachable, so the base image is made here: `debootstrap` (Debian's
packages) writes a minimal bookworm with python3 and python3-venv, `docker import` turns it into an
image. The tarball can be cached between runs where that is safe (`base_image`).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pcbook import paths

BASE_IMAGE = "pcbook-base:bookworm"
DEBOOTSTRAP = ("--variant=minbase", "--include=python3,python3-venv", "bookworm")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
IMAGE_PYTHON = "3.11"  # bookworm's python3, and the Dockerfile's default python:3.11-slim
CACHE_ENV = "PCBOOK_BASE_CACHE"  # a folder; only then is the base tarball kept outside the checkout
CACHE_MAX_AGE = 7 * 24 * 3600  # older tarballs miss a week of Debian security updates: rebuild
_RUN_DIRS = (Path("/run/docker/plugins"), Path("/run/docker"), Path("/run/containerd/s"), Path("/run/containerd"))


class DockerUnavailable(RuntimeError):
    """No daemon can be started here; the message says why (tests skip with it)."""


def why_unavailable() -> str | None:
    """None if a private daemon can be started, else the reason."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "starting a private Docker daemon needs root (CI runs as root)"
    for tool in ("dockerd", "docker", "docker-compose", "unshare", "ip"):
        if shutil.which(tool) is None:
            return f"no {tool} on PATH (Debian: apt-get install docker.io docker-compose)"
    return None


@dataclass
class Daemon:
    """A dockerd started by `start`; `env` points docker and docker-compose at it."""

    proc: subprocess.Popen[bytes]
    sock: Path
    state: Path  # exec-root, pidfile, socket
    log: Path
    data: Path
    created_run_dirs: list[Path] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, "COMPOSE_INTERACTIVE_NO_CLI": "1"}

    def docker(self, *args: str, timeout: float = 120, check: bool = True,
               stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(["docker", *args], env=self.env, capture_output=True, timeout=timeout,
                             input=stdin, text=stdin is None)
        if check and out.returncode != 0:
            said = out.stderr if isinstance(out.stderr, str) else out.stderr.decode(errors="replace")
            raise RuntimeError(f"docker {' '.join(args[:3])} failed ({out.returncode}): {said.strip()[-2000:]}")
        return out

    def stop(self, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # dockerd stops its containers and containerd
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # A daemon that had to be killed leaves its mounts (its network namespace file under the
        # exec-root, containers' overlays under the data root): nothing may stay mounted.
        for mount_point in [*_mounts_under(self.state), *_mounts_under(self.data)]:
            subprocess.run(["umount", "-l", mount_point], capture_output=True, timeout=30)
        shutil.rmtree(self.state, ignore_errors=True)
        for d in self.created_run_dirs:
            try:
                d.rmdir()  # only if empty
            except OSError:
                pass


def _mounts_under(folder: Path) -> list[str]:
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    inside = [line.split()[1] for line in lines if len(line.split()) > 1]
    return sorted((m for m in inside if m == str(folder) or m.startswith(f"{folder}/")), reverse=True)


def start(data: Path | None = None, timeout: float = 60) -> Daemon:
    """Start dockerd in a new network namespace; wait (with a deadline) until its API answers."""
    reason = why_unavailable()
    if reason:
        raise DockerUnavailable(reason)
    data = Path(data) if data is not None else data_root()
    data.mkdir(parents=True, exist_ok=True)
    state = Path(tempfile.mkdtemp(prefix="pcbook-docker-"))
    sock = state / "docker.sock"
    log = data.parent / "dockerd.log"
    before = [d for d in _RUN_DIRS if not d.exists()]
    script = (
        "ip link set lo up && exec dockerd --log-level warn"
        f" --data-root {data} --exec-root {state / 'exec'} --pidfile {state / 'dockerd.pid'} -H unix://{sock}"
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(["unshare", "--net", "--", "sh", "-c", script], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    daemon = Daemon(proc, sock, state, log, data, before)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            daemon.stop()
            raise DockerUnavailable(f"dockerd exited with code {proc.returncode}: {_tail(log)}")
        if sock.exists() and _answers(daemon):
            return daemon
        if time.monotonic() > deadline:
            daemon.stop()
            raise DockerUnavailable(f"dockerd did not answer within {timeout:.0f} s: {_tail(log)}")
        time.sleep(0.2)


def _answers(daemon: Daemon) -> bool:
    try:  # a daemon still starting (or an old one on the same data root still stopping) may not answer
        return daemon.docker("version", timeout=10, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _tail(path: Path, n: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


# --- the base image --------------------------------------------------------------------------------

def _recipe_key() -> str:
    recipe = " ".join((*DEBOOTSTRAP, platform.machine()))
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def base_tarball() -> Path:
    """Where the base tarball lives: in $PCBOOK_BASE_CACHE when set (CI), else in the checkout's .run/.

    Caching is safe there because the name carries a hash of the debootstrap recipe (another recipe
    never reuses it), the file is renamed into place only once complete (a killed run leaves no
    half tarball), it is rebuilt after a week (Debian's security updates), and `docker import` plus
    the image build check it before anything relies on it.
    """
    folder = Path(os.environ[CACHE_ENV]) if os.environ.get(CACHE_ENV) else paths.RUN_DIR / "deploy"
    return folder / f"base-bookworm-{_recipe_key()}.tar"


def data_root() -> Path:
    """Where the tests' daemon keeps its images and layers: beside the base tarball, so in
    $PCBOOK_BASE_CACHE on CI. A fresh clone there then builds only the image's layers that changed: the
    Dockerfile installs the pinned dependencies in a layer of their own, which docker's build cache reuses
    as long as pyproject.toml and the wheels are the same (the other layers are rebuilt). The daemon
    imports the base from the tarball only when it does not have it."""
    return base_tarball().parent / "docker-data"


def make_tarball(tarball: Path, timeout: float = 600) -> None:
    """debootstrap a minimal bookworm with python3 and python3-venv, and tar it (about a minute)."""
    if shutil.which("debootstrap") is None:
        raise DockerUnavailable("no debootstrap to make the base image (Debian: apt-get install debootstrap)")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=tarball.parent))  # made above, unlike a worker's run folder
    try:
        out = subprocess.run(["debootstrap", *DEBOOTSTRAP, str(rootfs), DEBIAN_MIRROR],
                             capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise DockerUnavailable(f"debootstrap failed (offline?): {(out.stdout + out.stderr).strip()[-500:]}")
        tmp = tarball.with_name(f".{tarball.name}.{os.getpid()}")
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tmp), "."], check=True, timeout=timeout)
        os.replace(tmp, tarball)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def base_image(daemon: Daemon) -> str:
    """The locally made base image in `daemon` (imported from the tarball, made when missing or old)."""
    if daemon.docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    tarball = base_tarball()
    if not tarball.is_file() or time.time() - tarball.stat().st_mtime > CACHE_MAX_AGE:
        make_tarball(tarball)
    with tarball.open("rb") as f:
        out = subprocess.run(["docker", "import", "-", BASE_IMAGE], env=daemon.env, stdin=f,
                             capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        tarball.unlink(missing_ok=True)  # a bad tarball is never reused
        raise RuntimeError(f"docker import of {tarball} failed: {out.stderr.strip()}")
    return BASE_IMAGE


# --- the wheelhouse --------------------------------------------------------------------------------

def wheel_platforms(machine: str | None = None) -> list[str]:
    """manylinux tags the image's glibc (2.36 in bookworm) runs, for `pip download --platform`."""
    arch = machine or platform.machine()
    return [f"manylinux_2_{minor}_{arch}" for minor in range(36, 16, -1)] + [f"manylinux2014_{arch}"]


def fill_wheelhouse(requirements: list[str], dest: Path, timeout: float = 600) -> None:
    """`pip download` the image's dependencies for its Python into `dest` (the build's WHEELS=local).

    pip runs with this machine's configuration, so it uses whatever index or local wheel folders
    the machine has; the image build then needs no index at all.
    """
    dest.mkdir(parents=True, exist_ok=True)
    # A stamp of what was downloaded: the same requirements for the same platform need no new run.
    wanted = hashlib.sha256(" ".join([IMAGE_PYTHON, *wheel_platforms(), *requirements]).encode()).hexdigest()
    stamp = dest / ".complete"
    if stamp.is_file() and stamp.read_text().strip() == wanted:
        return
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--dest", str(dest),
            "--only-binary=:all:", "--python-version", IMAGE_PYTHON]
    for tag in wheel_platforms():
        argv += ["--platform", tag]
    out = subprocess.run([*argv, *requirements], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise DockerUnavailable(f"pip download of the image's wheels failed: {out.stderr.strip()[-800:]}")
    stamp.write_text(wanted + "\n")


def image_requirements(pyproject: Path | None = None) -> list[str]:
    """What the image's `pip install -e .` needs: the project's dependencies and its build backend."""
    import tomllib

    data = tomllib.loads((pyproject or paths.ROOT / "pyproject.toml").read_text())
    return [*data["project"]["dependencies"], *data["build-system"]["requires"]]
