"""What each container of the stack execs: a pcbook server, nginx or Envoy on its rendered config, or the
client; and the Kubernetes init container's wait for DNS."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from pcbook import paths
from pcbook.workbook import health
from pcbook.workbook.deploy.render import (
    ENVOY_CLIENT,
    ENVOY_SERVICE,
    NGINX_SERVICE,
    ContainerError,
    Plan,
    compose_names,
    render_envoy,
    render_upstreams,
)

# The nginx and Envoy runners are imported where they are used: the compose health check
# (pcbook.workbook.health) and the client's container need neither.

# Inside the image (deploy/Dockerfile): the checkout is /workbook, certs/ is mounted over /workbook/certs.
PREFIX_ENV = "PCBOOK_NGINX_PREFIX"


def exec_argv(argv: list[str]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


def run_nginx(conf_text: str, *, source: str) -> None:
    """Render `conf_text` for this nginx into a fresh prefix, check it, and exec nginx in the foreground.

    The prefix's logs/access.log and logs/error.log are the container's stdout and stderr, so
    `docker compose logs nginx` shows the access log lines as the lecture's `nginx | ...` lines.
    """
    from pcbook.stack import nginx

    binary = nginx.find_nginx()
    version = nginx.nginx_version(binary)
    prefix = Path(tempfile.mkdtemp(prefix="nginx-", dir=os.environ.get(PREFIX_ENV) or None))
    lesson_conf = prefix / "lesson.conf"
    lesson_conf.write_text(conf_text)
    rendered = nginx.render_config(lesson_conf, prefix, version=version, modules=nginx.dynamic_modules(binary))
    for name, stream in (("access.log", "/dev/stdout"), ("error.log", "/dev/stderr")):
        (prefix / "logs" / name).symlink_to(stream)
    try:
        nginx.check_config(binary, prefix, Path(source), version)
    except nginx.NginxConfigError as e:
        raise ContainerError(str(e)) from None
    exec_argv(nginx.nginx_argv(binary, prefix, rendered.read_text()))


def run_envoy(conf_text: str, admin_port: int, *, source: str) -> None:
    """Write the rendered config into a fresh run folder (cert/ is the mounted certs/, logs/access.log the
    container's stdout), check it, and exec Envoy there in the foreground."""
    from pcbook.stack import envoy

    binary = envoy.find_envoy()
    folder = Path(tempfile.mkdtemp(prefix="envoy-", dir=os.environ.get(PREFIX_ENV) or None))
    (folder / "logs").mkdir()
    (folder / "logs" / "access.log").symlink_to("/dev/stdout")
    (folder / "cert").symlink_to(paths.CERTS_DIR)
    conf = folder / "envoy.yaml"
    conf.write_text(conf_text)
    try:
        envoy.check_config(binary, folder, conf, admin_port)
    except envoy.EnvoyConfigError as e:
        raise ContainerError(f"{source}: {e}") from None
    os.chdir(folder)  # the config's cert/ and logs/ paths are relative
    exec_argv(envoy.envoy_argv(binary, conf, admin_port))


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as e:
        raise ContainerError(f"cannot read {path}: {e.strerror}") from None


def run_role(role: str, p: Plan, *, conf: Path | None = None) -> None:
    """Exec what the container of `role` runs (a server, nginx, Envoy or a client); returns only on error."""
    python = sys.executable
    if role not in ("client", ENVOY_CLIENT):
        health.write_port(role_port(role, p))  # what the health check of this container dials
    if role == NGINX_SERVICE:
        source = conf or p.conf
        text = _read(source)
        # A config given with --conf (Kubernetes' ConfigMap) is already rendered for its names.
        run_nginx(text if conf else render_upstreams(text, compose_names(p), source=str(source)), source=str(source))
    elif role == ENVOY_SERVICE and (spec := p.envoy) is not None:
        source = conf or spec.path
        text = _read(source)
        run_envoy(text if conf else render_envoy(text, p.envoy_names(), source=str(source)), spec.admin_port,
                  source=str(source))
    elif role == "client":
        exec_argv([python, "-m", "pcbook.client", *p.client_args()])
    elif role == ENVOY_CLIENT and (spec := p.envoy) is not None:
        exec_argv([python, "-m", "pcbook.client", *p.client_args(ENVOY_SERVICE, spec.port)])
    else:
        exec_argv([python, "-m", "pcbook.server", *p.server(role).args()])


def role_port(role: str, p: Plan) -> int:
    if role == ENVOY_SERVICE and p.envoy is not None:
        return p.envoy.port
    return p.nginx_port if role == NGINX_SERVICE else p.server(role).port


def wait_dns(name: str, timeout: float) -> bool:
    """Poll until `name` resolves or `timeout` seconds pass (the Kubernetes init container)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if socket.getaddrinfo(name, None):
                return True
        except OSError:
            pass
        if time.monotonic() > deadline:
            print(f"{name} does not resolve after {timeout:.0f} s: are the server pods ready?", file=sys.stderr)
            return False
        time.sleep(1)
