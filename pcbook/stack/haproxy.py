"""Run HAProxy in the foreground with a config of haproxy/, inside a Stack: `make bench`'s peer of nginx.

Which HAProxy: the `HAPROXY` environment variable (a path or a command name), else `haproxy` on PATH
(Debian/Ubuntu: `apt-get install haproxy`). Unlike nginx there is no pinned wheel: where none is found,
`find_haproxy` raises HaproxyNotFoundError with one line saying how to install it, and the bench skips
its rows.

Each run gets a fresh folder RUN_DIR/haproxy-<time>-<pid>-<n>/ holding `haproxy.cfg`, the config copied
as it is (HAProxy resolves nothing relative to it: the copy is what ran, kept for inspection). HAProxy runs
as

    haproxy -db -f haproxy.cfg

`-db`: no daemon, no background fork, so the Stack's child is HAProxy itself and stopping its process
group stops it; its alerts and warnings (stderr) and `log stdout` lines come out prefixed `haproxy | ...`.
`haproxy -c` checks the config first: a rejection is one HaproxyConfigError with HAProxy's own words.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pcbook import paths

from . import runfiles
from .ports import check_port_free
from .procs import Proc, Stack

HAPROXY_DIR = paths.ROOT / "haproxy"
KEEP_RUNS = 5  # run folders kept in RUN_DIR (the newest ones)
_PID = re.compile(r"^(\[\w+\])\s+\(\d+\) : ")
INSTALL = "Debian/Ubuntu: apt-get install haproxy; or HAPROXY=/path/to/haproxy"


class HaproxyError(RuntimeError):
    """HAProxy cannot be found, rejects its config, or does not come up."""


class HaproxyNotFoundError(HaproxyError):
    pass


class HaproxyConfigError(HaproxyError):
    pass


def find_haproxy() -> Path:
    """HAPROXY=/path/to/haproxy if set (and not empty), else `haproxy` on PATH."""
    override = os.environ.get("HAPROXY", "").strip()
    found = shutil.which(override or "haproxy")
    if found is None:
        if override:
            raise HaproxyNotFoundError(f"HAPROXY={override} is not an executable haproxy: fix HAPROXY= or unset it")
        raise HaproxyNotFoundError(f"haproxy is not installed ({INSTALL})")
    return Path(found)


def haproxy_version(binary: Path | str) -> str:
    """"2.6.12" from `haproxy -v` (`HAProxy version 2.6.12-1+deb12u4 2026/10/17 - ...`)."""
    try:
        out = subprocess.run([os.fspath(binary), "-v"], capture_output=True, text=True, timeout=10)
    except OSError as exc:
        raise HaproxyNotFoundError(f"cannot run {binary} ({exc}): fix HAPROXY=") from None
    match = re.search(r"HA-?Proxy version (\d+\.\d+(?:\.\d+)?)", out.stdout + out.stderr)
    if not match:
        raise HaproxyNotFoundError(f"{binary} does not look like haproxy: `haproxy -v` printed "
                                   f"{(out.stdout + out.stderr).strip()[:200]!r}")
    return match.group(1)


def haproxy_argv(binary: Path, cfg: Path) -> list[str]:
    """The foreground command line (-db: neither daemon nor background)."""
    return [os.fspath(binary), "-db", "-f", os.fspath(cfg)]


def check_config(binary: Path, cfg: Path, conf: Path) -> None:
    """`haproxy -c` on the copy; a rejection names the original file (`conf`)."""
    try:
        out = subprocess.run([os.fspath(binary), "-c", "-f", os.fspath(cfg)], capture_output=True,
                             text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise HaproxyConfigError(f"`haproxy -c` on {conf} did not finish within 30 s") from None
    if out.returncode == 0:
        return
    said = (out.stderr + out.stdout).replace(os.fspath(cfg), os.fspath(conf)).strip().splitlines()
    # "[ALERT]    (20267) : config : ..." -> "[ALERT] config : ...": the pid says nothing about a config;
    # the [NOTICE] lines (version, path to the binary) neither.
    said = [_PID.sub(r"\1 ", line) for line in said if "[NOTICE]" not in line] or [f"exit code {out.returncode}"]
    raise HaproxyConfigError(f"haproxy rejected {conf}:\n" + "\n".join(f"  {line}" for line in said))


def new_run_folder(run_dir: Path, keep: int = KEEP_RUNS) -> Path:
    """A fresh RUN_DIR/haproxy-... folder; deletes all but the newest `keep` - 1 earlier ones."""
    # HAProxy reads its config once, at start: removing the folder of one still running harms nothing.
    folder = runfiles.fresh_folder(run_dir, "haproxy", keep)
    if folder is None:
        raise HaproxyError(f"cannot create a run folder in {run_dir}")
    return folder


@dataclass
class HaproxyProcess:
    """An HAProxy running in a Stack, with its run folder."""

    stack: Stack
    name: str
    proc: Proc
    folder: Path
    conf: Path  # the config it was started with
    rendered: Path  # FOLDER/haproxy.cfg
    binary: Path
    version: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 3) -> int | None:
        return self.stack.stop(self.name, timeout)


def start_haproxy(stack: Stack, conf: Path, *, port: int, name: str = "haproxy", host: str = "127.0.0.1",
                  timeout: float = 10, binary: Path | None = None) -> HaproxyProcess:
    """Check `port` is free, copy and `haproxy -c` the config, start HAProxy in the foreground as Stack
    child `name` and wait until `port` accepts connections (HAProxy binds every listener before serving)."""
    conf = Path(conf)
    if not conf.is_file():
        raise HaproxyConfigError(f"no HAProxy config at {conf}")
    binary = Path(binary) if binary is not None else find_haproxy()
    version = haproxy_version(binary)
    check_port_free(port)
    folder = new_run_folder(stack.run_dir)
    rendered = folder / "haproxy.cfg"
    shutil.copyfile(conf, rendered)
    check_config(binary, rendered, conf)
    proc = stack.start(name, haproxy_argv(binary, rendered), cwd=folder)
    started = HaproxyProcess(stack, name, proc, folder, conf, rendered, binary, version)
    try:
        stack.wait_ready(name, port=port, host=host, timeout=timeout)
    except BaseException:
        stack.stop(name)
        raise
    return started
