"""The Kubernetes manifests of deploy/k8s/, rendered from the lesson manifest and configs, and the TLS Secret
from certs/ (printed, never committed)."""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pcbook import paths
from pcbook.stack.specs import Server
from pcbook.workbook.deploy.render import (
    DEFAULT_LESSON,
    ENVOY_SERVICE,
    NGINX_SERVICE,
    ContainerError,
    Plan,
    plan,
    render_envoy,
    render_upstreams,
)

K8S_DIR = paths.ROOT / "deploy" / "k8s"
K8S_IMAGE = "pcbook-workbook:dev"
K8S_SERVERS = "pcbook-server"  # Deployment and headless Service of the servers
K8S_NGINX = "pcbook-nginx"  # Deployment, ConfigMap and ClusterIP Service of nginx
K8S_ENVOY = "pcbook-envoy"  # the same for Envoy (lesson 13's twin of the lesson)
K8S_SECRET = "pcbook-certs"
K8S_REPLICAS = 3
K8S_CONF_DIR = "/etc/pcbook-nginx"
K8S_ENVOY_CONF_DIR = "/etc/pcbook-envoy"


def names(p: Plan, servers: Sequence[Server] | None = None) -> dict[int, str]:
    """Port of each of `servers` (default: the lesson's) -> the headless Service of the server pods (one pool,
    on the port of the lesson's server1)."""
    port = p.servers[0].port
    return {s.port: f"{K8S_SERVERS}:{port}" for s in (p.servers if servers is None else servers)}


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


def documents(number: int = DEFAULT_LESSON, replicas: int = K8S_REPLICAS) -> dict[str, list[dict[str, Any]]]:
    """File name (under deploy/k8s/) -> its documents, for lesson `number`."""
    p = plan(number)
    flags = {tuple(s.args()[2:]) for s in p.servers}  # everything but --port
    if len(flags) != 1:
        raise ContainerError(f"lesson {number}'s servers run with different flags; one Deployment cannot")
    port = p.servers[0].port
    lesson_flag = ["--lesson", str(number)]
    server_args = ["run", p.servers[0].name, *lesson_flag]  # every pod runs server1's flags and port
    conf = render_upstreams(p.conf.read_text(), names(p), source=str(p.conf))
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
    docs = {
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
    if (envoy := p.envoy) is not None:
        envoy_step = p.envoy_step
        assert envoy_step is not None
        rendered = render_envoy(envoy.path.read_text(), names(p, envoy_step.servers),
                                source=str(envoy.path))
        note = (f"# Rendered by `python -m pcbook.workbook.deploy k8s` from envoy/{envoy.name} (lesson 13, step"
                f" {envoy_step.key}):\n# its endpoints became the headless Service {K8S_SERVERS}:{port}, which"
                " Envoy looks up again every 5 s (STRICT_DNS).\n"
                "# `deploy run envoy` runs it in a folder whose cert/ is the mounted Secret.\n")
        envoy_args = ["run", ENVOY_SERVICE, "--conf", f"{K8S_ENVOY_CONF_DIR}/envoy.yaml", *lesson_flag]
        container = _container(ENVOY_SERVICE, envoy_args, envoy.port)
        container["volumeMounts"].append({"name": "envoy-conf", "mountPath": K8S_ENVOY_CONF_DIR, "readOnly": True})
        # The same init container as nginx's: Envoy opens its listener once the cluster's first lookup has an
        # answer, and a name no DNS server answers for held it back (started before any pod in Docker: its
        # port still closed after 30 s). Pods that come later it finds by itself, at the next lookup.
        docs["envoy.yaml"] = [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": K8S_ENVOY, "labels": _labels(K8S_ENVOY)},
             "data": {"envoy.yaml": note + rendered}},
            _deployment(K8S_ENVOY, 1, [container],
                        [_certs_volume(), {"name": "envoy-conf", "configMap": {"name": K8S_ENVOY}}], [wait_dns]),
            _service(K8S_ENVOY, envoy.port, headless=False),
        ]
        docs["clients/via-envoy.yaml"] = [
            _job("pcbook-client-via-envoy", [*client, "--address", f"{K8S_ENVOY}:{envoy.port}"]),
        ]
    return docs


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


def files(number: int = DEFAULT_LESSON, replicas: int = K8S_REPLICAS) -> dict[str, str]:
    """File name under deploy/k8s/ -> its text."""
    p = plan(number)
    sources = ", ".join([f"nginx/{p.conf.name}", *([f"envoy/{p.envoy.name}"] if p.envoy else [])])
    note = (f"# Generated by `python -m pcbook.workbook.deploy k8s` from the lesson manifest and {sources};\n"
            "# edit those, not this file (tests/deploy checks it is up to date).\n")
    return {name: note + to_yaml(docs) for name, docs in documents(number, replicas).items()}


def write(out: Path = K8S_DIR, number: int = DEFAULT_LESSON, replicas: int = K8S_REPLICAS) -> list[Path]:
    written = []
    for name, text in files(number, replicas).items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
