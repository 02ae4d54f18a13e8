"""The lessons' stack in containers: one image, compose services and Kubernetes manifests.

Everything here is derived from the lesson manifest and the lesson's own nginx config, through one
rendering step (`render_upstreams`): each upstream `server 0.0.0.0:PORT;` of nginx/lesson-N.conf
becomes the name a container reaches that backend by. Which name belongs to which port comes from
the lesson's checkpoint step (server1 listens on 50051, ...), so no address is written twice.

* In compose (deploy/compose.yaml) every container runs ``python -m pcbook.workbook.deploy run ROLE``
  with ``PCBOOK_LESSON=N`` (default 5): a server role execs the pcbook server with the lesson's flags,
  ``nginx`` renders nginx/lesson-N.conf with the compose service names and execs nginx, ``client``
  execs the client against ``nginx:8080``.
* For Kubernetes, ``python -m pcbook.workbook.deploy k8s`` writes deploy/k8s/ from the same config
  (tests check the committed files are what it writes), and ``k8s-secret`` prints the TLS Secret
  from certs/ (keys never go into a committed file).
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcbook import paths
from pcbook.stage.model import Client, Envoy, Step
from pcbook.workbook import health
from pcbook.workbook import manifest as lessons

# The nginx runner and the certificates are imported where they are used. The compose health check is
# pcbook.workbook.health, which imports none of this.

LESSON_ENV = "PCBOOK_LESSON"
DEFAULT_LESSON = 5
NGINX_SERVICE = "nginx"  # the compose service of nginx; the client dials it
ENVOY_SERVICE = "envoy"  # the compose service of Envoy (lesson 13's twin of the lesson); client-envoy dials it
ENVOY_CLIENT = "client-envoy"
# Inside the image (deploy/Dockerfile): the checkout is /workbook, certs/ is mounted over /workbook/certs.
PREFIX_ENV = "PCBOOK_NGINX_PREFIX"
K8S_DIR = paths.ROOT / "deploy" / "k8s"
K8S_IMAGE = "pcbook-workbook:dev"
K8S_SERVERS = "pcbook-server"  # Deployment and headless Service of the servers
K8S_NGINX = "pcbook-nginx"  # Deployment, ConfigMap and ClusterIP Service of nginx
K8S_SECRET = "pcbook-certs"
K8S_REPLICAS = 3
K8S_CONF_DIR = "/etc/pcbook-nginx"
_LOOPBACK_HOSTS = ("0.0.0.0", "127.0.0.1", "localhost")


class ContainerError(Exception):
    """A lesson, role or config that the container stack cannot run; the message says why."""


# --- the lesson --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """What the containers of one lesson run: its checkpoint step's servers, nginx config and client."""

    lesson: lessons.Lesson
    step: lessons.Step
    conf: Path

    @property
    def nginx_port(self) -> int:
        assert self.step.nginx is not None  # plan() keeps only steps with nginx
        return self.step.nginx.port

    @property
    def client(self) -> Client:
        assert isinstance(self.step.client, Client)  # plan() keeps only steps of the tutorial's client
        return self.step.client

    @property
    def servers(self) -> tuple[lessons.Server, ...]:
        return self.step.servers

    def server(self, name: str) -> lessons.Server:
        for s in self.servers:
            if s.name == name:
                return s
        raise ContainerError(f"lesson {self.lesson.number} has no server {name!r}"
                             f" (roles: {', '.join(self.roles())})")

    @property
    def envoy_step(self) -> Step | None:
        """Lesson 13's step that runs this lesson on Envoy, if it has one."""
        from pcbook.lessons.l13_envoy import ON_ENVOY

        key = ON_ENVOY.get(self.lesson.number)
        return lessons.get(13).step(key) if key else None

    @property
    def envoy(self) -> Envoy | None:
        """The Envoy of that step (its config, port and admin port), if the lesson has one."""
        step = self.envoy_step
        return step.envoy if step is not None else None

    def roles(self) -> list[str]:
        envoy = [ENVOY_SERVICE, ENVOY_CLIENT] if self.envoy else []
        return [s.name for s in self.servers] + [NGINX_SERVICE, "client", *envoy]

    def client_args(self, host: str = NGINX_SERVICE, port: int | None = None) -> list[str]:
        """The lesson's client flags, dialling `host` (and `port`) instead of the lecture's 0.0.0.0."""
        args = self.client.args()
        i = args.index("--address") + 1
        _, lesson_port = _split_address(args[i])
        args[i] = f"{host}:{port or lesson_port}"
        return args

    def envoy_names(self) -> dict[int, str]:
        """Lesson 13's server ports -> the compose address of the server of the same name."""
        step = self.envoy_step
        assert step is not None
        return {s.port: f"{s.name}:{self.server(s.name).port}" for s in step.servers}


def plan(number: int) -> Plan:
    """The container plan of lesson `number`; ContainerError for a lesson without one."""
    try:
        lesson = lessons.get(number)
    except (KeyError, ValueError, LookupError):
        raise ContainerError(f"there is no lesson {number}") from None
    # The lecture's own setup: lessons beyond the tutorial run stacks (an L4 port, load drivers) that
    # the compose file does not model.
    steps = [s for s in lesson.checkpoint_steps if _runs_in_containers(s)] if lesson.tutorial else []
    if not steps:
        usable = ", ".join(str(n) for n in usable_lessons())
        raise ContainerError(f"lesson {number} has no nginx-and-servers checkpoint to run in containers"
                             f" (lessons {usable} have)")
    step = steps[-1]
    return Plan(lesson, step, step.nginx.path)


def _runs_in_containers(step: Step) -> bool:
    """A step of the tutorial's kind: nginx in front of two or more servers, the tutorial's client."""
    # The refusal steps (a client without or with a foreign certificate) show nginx saying no; the
    # container stack replays the lesson's working call.
    return (step.nginx is not None and len(step.servers) >= 2 and isinstance(step.client, Client)
            and step.client.cert == "ours")


def usable_lessons() -> list[int]:
    found = []
    for lesson in lessons.LESSONS:
        if lesson.tutorial and any(_runs_in_containers(s) for s in lesson.checkpoint_steps):
            found.append(lesson.number)
    return found


def lesson_from_env() -> int:
    raw = os.environ.get(LESSON_ENV, "").strip() or str(DEFAULT_LESSON)
    try:
        return int(raw)
    except ValueError:
        raise ContainerError(f"{LESSON_ENV}={raw} is not a lesson number (try {LESSON_ENV}=5)") from None


# --- the one rendering step ----------------------------------------------------------------------

def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ContainerError(f"{address!r} is not a host:port address")
    return host, int(port)


def render_upstreams(text: str, names: Mapping[int, str], *, source: str = "the config") -> str:
    """Replace the host of each upstream `server 0.0.0.0:PORT ...;` by ``names[PORT]``.

    `names` maps a lesson port to ``host:port`` as the containers reach it. A server line that maps
    to an address already listed in the same upstream becomes a comment (on the same line, so nginx's
    line numbers still match the file): in Kubernetes both lesson backends are one pool of pods.
    """
    edits: list[tuple[int, int, str]] = []
    seen: dict[int, set[str]] = {}
    from pcbook.stack import nginx

    for s in nginx._statements(text):  # the nginx runner's parser: quotes, comments and blocks
        if len(s.words) < 2 or s.words[0] != "server" or not s.parents or s.parents[-1] != "upstream":
            continue
        host, port = _split_address(s.words[1])
        if host not in _LOOPBACK_HOSTS:
            continue  # already a name: leave it as the learner wrote it
        if port not in names:
            known = ", ".join(str(p) for p in sorted(names))
            raise ContainerError(f"{source}: upstream server {s.words[1]} is on no lesson server's port ({known})")
        target = names[port]
        original = text[s.start:s.end]
        block = seen.setdefault(s.block_id, set())
        if target in block:
            edits.append((s.start, s.end, f"# {original.replace(s.words[1], target, 1)} (same pool as above)"))
        else:
            block.add(target)
            edits.append((s.start, s.end, original.replace(s.words[1], target, 1)))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def compose_names(p: Plan) -> dict[int, str]:
    """Lesson port -> compose address: server1's port -> server1:50051 (the service keeps the port)."""
    return {s.port: f"{s.name}:{s.port}" for s in p.servers}


def k8s_names(p: Plan) -> dict[int, str]:
    """Lesson port -> the headless Service of the server pods (one pool, one port)."""
    port = p.servers[0].port
    return {s.port: f"{K8S_SERVERS}:{port}" for s in p.servers}


_ENDPOINT = re.compile(r"socket_address: \{address: (127\.0\.0\.1|0\.0\.0\.0), port_value: (\d+)\}")


def render_envoy(text: str, names: Mapping[int, str], *, source: str = "the config") -> str:
    """Lesson 13's Envoy config with each endpoint `{address: 127.0.0.1, port_value: PORT}` of a lesson server
    on its compose name, and its clusters resolving those names (STRICT_DNS: a STATIC cluster takes IPs only).
    The listeners (0.0.0.0) are left as they are."""
    def endpoint(m: re.Match[str]) -> str:
        port = int(m.group(2))
        if port not in names:
            return m.group(0)  # a listener, or an address of no lesson server
        host, target = _split_address(names[port])
        return f"socket_address: {{address: {host}, port_value: {target}}}"

    rendered = _ENDPOINT.sub(endpoint, text)
    if rendered == text:
        raise ContainerError(f"{source}: no endpoint is on a lesson server's port ({', '.join(map(str, names))})")
    return re.sub(r"(?m)^(\s*)type: STATIC$", r"\1type: STRICT_DNS", rendered)


# --- inside a container ----------------------------------------------------------------------------

def _exec(argv: list[str]) -> None:
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
    _exec(nginx.nginx_argv(binary, prefix, rendered.read_text()))


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
    _exec(envoy.envoy_argv(binary, conf, admin_port))


def run_role(role: str, p: Plan, *, conf: Path | None = None) -> None:
    """Exec what the container of `role` runs (a server, nginx or the client); returns only on error."""
    python = sys.executable
    if role not in ("client", ENVOY_CLIENT):
        health.write_port(role_port(role, p))  # what the health check of this container dials
    if role == NGINX_SERVICE:
        source = conf or p.conf
        try:
            text = source.read_text()
        except OSError as e:
            raise ContainerError(f"cannot read {source}: {e.strerror}") from None
        # A config given with --conf (Kubernetes' ConfigMap) is already rendered for its names.
        run_nginx(text if conf else render_upstreams(text, compose_names(p), source=str(source)),
                  source=str(source))
    elif role == ENVOY_SERVICE and (spec := p.envoy) is not None:
        run_envoy(render_envoy(spec.path.read_text(), p.envoy_names(), source=str(spec.path)), spec.admin_port,
                  source=str(spec.path))
    elif role == "client":
        _exec([python, "-m", "pcbook.client", *p.client_args()])
    elif role == ENVOY_CLIENT and (spec := p.envoy) is not None:
        _exec([python, "-m", "pcbook.client", *p.client_args(ENVOY_SERVICE, spec.port)])
    else:
        _exec([python, "-m", "pcbook.server", *p.server(role).args()])


def role_port(role: str, p: Plan) -> int:
    if role == ENVOY_SERVICE and p.envoy is not None:
        return p.envoy.port
    return p.nginx_port if role == NGINX_SERVICE else p.server(role).port


# --- Kubernetes -----------------------------------------------------------------------------------

def _labels(app: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": "pcbook-workbook"}


def _certs_volume() -> dict[str, Any]:
    return {"name": "certs", "secret": {"secretName": K8S_SECRET, "defaultMode": 0o400}}


def _certs_mount() -> dict[str, Any]:
    return {"name": "certs", "mountPath": "/workbook/certs", "readOnly": True}


def _container(name: str, args: list[str], port: int | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": name,
        "image": K8S_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "volumeMounts": [_certs_mount()],
    }
    if port is not None:
        c["ports"] = [{"name": "grpc", "containerPort": port}]
        c["readinessProbe"] = {"tcpSocket": {"port": port}, "periodSeconds": 2}
    return c


def _deployment(name: str, replicas: int, containers: list[dict[str, Any]],
                volumes: list[dict[str, Any]], init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers, "volumes": volumes}
    if init:
        spec = {"initContainers": init, **spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": _labels(name)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {"metadata": {"labels": _labels(name)}, "spec": spec},
        },
    }


def _service(name: str, port: int, *, headless: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"app.kubernetes.io/name": name},
        "ports": [{"name": "grpc", "port": port, "targetPort": port, "appProtocol": "grpc"}],
    }
    if headless:
        # No virtual IP: DNS answers with every ready pod's address, so a client (or nginx) sees them all.
        spec = {"clusterIP": "None", **spec}
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": _labels(name)}, "spec": spec}


def _job(name: str, args: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": _labels(name)},
        "spec": {
            "backoffLimit": 2,
            "template": {
                "metadata": {"labels": _labels(name)},
                "spec": {"restartPolicy": "Never", "containers": [_container("client", args)],
                         "volumes": [_certs_volume()]},
            },
        },
    }


def k8s_documents(number: int = DEFAULT_LESSON, replicas: int = K8S_REPLICAS) -> dict[str, list[dict[str, Any]]]:
    """File name (under deploy/k8s/) -> its documents, for lesson `number`."""
    p = plan(number)
    flags = {tuple(s.args()[2:]) for s in p.servers}  # everything but --port
    if len(flags) != 1:
        raise ContainerError(f"lesson {number}'s servers run with different flags; one Deployment cannot")
    port = p.servers[0].port
    lesson_flag = ["--lesson", str(number)]
    server_args = ["run", p.servers[0].name, *lesson_flag]  # every pod runs server1's flags and port
    conf = render_upstreams(p.conf.read_text(), k8s_names(p), source=str(p.conf))
    header = (f"# Rendered by `python -m pcbook.workbook.deploy k8s` from nginx/{p.conf.name} (lesson {number}):\n"
              f"# its upstream servers became the headless Service {K8S_SERVERS}:{port}.\n")
    nginx_args = ["run", NGINX_SERVICE, "--conf", f"{K8S_CONF_DIR}/nginx.conf", *lesson_flag]
    wait_dns = {
        # nginx resolves upstream names once, at start, and refuses to start if one does not resolve:
        # wait until the headless Service has at least one ready pod.
        "name": "wait-for-servers",
        "image": K8S_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "args": ["wait-dns", K8S_SERVERS],
    }
    nginx_container = _container(NGINX_SERVICE, nginx_args, p.nginx_port)
    nginx_container["volumeMounts"].append({"name": "nginx-conf", "mountPath": K8S_CONF_DIR, "readOnly": True})
    tls = p.client.tls
    # Six laptops, so that the calls have room to spread over the pods.
    client = ["run", "client", *lesson_flag, "--", "--laptops", "6"] + (["--tls"] if tls else [])
    return {
        "servers.yaml": [
            _deployment(K8S_SERVERS, replicas, [_container("server", server_args, port)], [_certs_volume()]),
            _service(K8S_SERVERS, port, headless=True),
        ],
        "nginx.yaml": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": K8S_NGINX, "labels": _labels(K8S_NGINX)},
             "data": {"nginx.conf": header + conf}},
            _deployment(K8S_NGINX, 1, [nginx_container],
                        [_certs_volume(), {"name": "nginx-conf", "configMap": {"name": K8S_NGINX}}], [wait_dns]),
            _service(K8S_NGINX, p.nginx_port, headless=False),
        ],
        "clients/via-nginx.yaml": [
            _job("pcbook-client-via-nginx", [*client, "--address", f"{K8S_NGINX}:{p.nginx_port}"]),
        ],
        "clients/round-robin.yaml": [
            _job("pcbook-client-round-robin",
                 [*client, "--address", f"dns:///{K8S_SERVERS}:{port}", "--lb-policy", "round_robin"]),
        ],
    }


def secret_document(certs_dir: Path | None = None) -> dict[str, Any]:
    """The Secret holding the PEM files of `make cert` (for `kubectl apply -f -`, never committed)."""
    d = certs_dir or paths.CERTS_DIR
    from pcbook.service import certs
    from pcbook.stack import nginx

    reason = certs.check_certs(d)
    if reason is not None:
        raise ContainerError(f"the certificates in {paths.shown(d)} cannot be used ({reason}): run `make cert`")
    data = {name: base64.b64encode((d / name).read_bytes()).decode() for name in nginx.CERT_FILES}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": K8S_SECRET, "labels": _labels(K8S_SECRET)}, "data": data}


# A small YAML writer: block style, keys in the order given, multi-line strings as literal blocks.
# (The manifests are plain dicts, lists, strings, ints and bools; no dependency is needed for them.)
_PLAIN = re.compile(r"^[A-Za-z0-9_./-][A-Za-z0-9_./:=-]*$")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _RESERVED and not re.fullmatch(r"[-+.\d][\d.eE+-]*", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _yaml(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and "\n" in item:
                lines.append(f"{pad}{key}: |")
                lines += [f"{pad}  {line}" if line else "" for line in item.rstrip("\n").split("\n")]
            elif isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:")
                lines += _yaml(item, indent + 2 if isinstance(item, dict) else indent)
            elif isinstance(item, (dict, list)):
                lines.append(f"{pad}{key}: {'{}' if isinstance(item, dict) else '[]'}")
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
    else:
        for item in value:
            sub = _yaml(item, indent + 2) if isinstance(item, (dict, list)) else [f"{pad}  {_scalar(item)}"]
            lines.append(f"{pad}- {sub[0].lstrip()}")
            lines += sub[1:]
    return lines


def to_yaml(documents: list[dict[str, Any]]) -> str:
    return "".join("---\n" + "\n".join(_yaml(doc, 0)) + "\n" for doc in documents)


def k8s_files(number: int = DEFAULT_LESSON, replicas: int = K8S_REPLICAS) -> dict[str, str]:
    """File name under deploy/k8s/ -> its text."""
    note = ("# Generated by `python -m pcbook.workbook.deploy k8s` from the lesson manifest and"
            f" nginx/lesson-{number}.conf;\n# edit those, not this file (tests/deploy checks it is up to date).\n")
    return {name: note + to_yaml(docs) for name, docs in k8s_documents(number, replicas).items()}


def write_k8s(out: Path = K8S_DIR, number: int = DEFAULT_LESSON, replicas: int = K8S_REPLICAS) -> list[Path]:
    written = []
    for name, text in k8s_files(number, replicas).items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


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


# --- CLI ------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pcbook.workbook.deploy",
        description="Run a lesson's stack in containers (the image's entry point) and write its Kubernetes files.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="exec a role of the lesson: server1, server2, nginx or client"
                         " (client: flags after -- replace the lesson's)")
    run.add_argument("role")
    run.add_argument("--conf", type=Path, default=None, help="nginx: an already rendered config to run")
    health = sub.add_parser("ready", help="exit 0 if the role's port accepts connections (health check)")
    health.add_argument("role")
    wait = sub.add_parser("wait-dns", help="exit 0 once NAME resolves (Kubernetes init container)")
    wait.add_argument("name")
    wait.add_argument("--timeout", type=float, default=300, help="give up after this many seconds (default 300)")
    render = sub.add_parser("render", help="print the lesson's nginx config with the compose service names")
    render.add_argument("--conf", type=Path, default=None, help="an nginx config instead of the lesson's")
    k8s = sub.add_parser("k8s", help="write the Kubernetes manifests (default: deploy/k8s/)")
    k8s.add_argument("--out", type=Path, default=K8S_DIR, help="folder to write into")
    k8s.add_argument("--replicas", type=int, default=K8S_REPLICAS, help=f"server pods (default {K8S_REPLICAS})")
    sub.add_parser("k8s-secret", help="print the Secret with the certificates of certs/ (for kubectl apply -f -)")
    sub.add_parser("wheels", help="download the image's wheels into deploy/wheels/ (for PCBOOK_WHEELS=local)")
    for p in (run, health, render, k8s):
        p.add_argument("--lesson", type=int, default=None,
                       help=f"lesson number (default ${LESSON_ENV}, else {DEFAULT_LESSON})")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `run client ... -- FLAGS`: everything after -- goes to the client unparsed.
    client_flags = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    args = build_parser().parse_args(argv)
    try:
        number = args.lesson if getattr(args, "lesson", None) is not None else lesson_from_env()
        if args.command == "run":
            p = plan(number)
            if args.role not in p.roles():
                raise ContainerError(f"lesson {number} has no role {args.role!r} (roles: {', '.join(p.roles())})")
            if client_flags and args.role != "client":
                raise ContainerError("only the client takes flags after --")
            if client_flags:
                _exec([sys.executable, "-m", "pcbook.client", *client_flags])
            run_role(args.role, p, conf=args.conf)
        elif args.command == "ready":
            return 0 if health.ready(role_port(args.role, plan(number))) else 1
        elif args.command == "wait-dns":
            return 0 if wait_dns(args.name, args.timeout) else 1
        elif args.command == "render":
            p = plan(number)
            source = args.conf or p.conf
            print(render_upstreams(source.read_text(), compose_names(p), source=str(source)), end="")
        elif args.command == "k8s":
            if args.replicas < 1:
                raise ContainerError("--replicas must be at least 1")
            for path in write_k8s(args.out, number, args.replicas):
                print(f"wrote {paths.shown(path)}")
        elif args.command == "wheels":
            from pcbook.stack import dockerd

            dest = paths.ROOT / "deploy" / "wheels"
            try:
                dockerd.fill_wheelhouse(dockerd.image_requirements(), dest)
            except dockerd.DockerUnavailable as e:
                raise ContainerError(str(e)) from None
            print(f"{len(list(dest.glob('*.whl')))} wheels in {paths.shown(dest)}; build with PCBOOK_WHEELS=local")
        elif args.command == "k8s-secret":
            print(to_yaml([secret_document()]), end="")
        if args.command != "run":
            return 0
    except ContainerError as e:
        print(str(e), file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{e.filename or 'a file'}: {e.strerror}", file=sys.stderr)
        return 1
    return 1  # run returns only when exec failed


if __name__ == "__main__":
    sys.exit(main())
