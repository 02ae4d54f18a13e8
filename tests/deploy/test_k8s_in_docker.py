"""The commands of deploy/k8s/ for real, with Docker standing in for the cluster.

No cluster runs here, so the test runs every container of the manifests as Kubernetes would,
with the same image and the same args: three server containers share the network alias
`pcbook-server` (Docker's DNS then answers with all three addresses, as a headless Service does),
nginx runs the ConfigMap's config behind the alias `pcbook-nginx`, after the init container's
`wait-dns`, Envoy runs its ConfigMap's config behind `pcbook-envoy` (after the same init container, once
the first pod is up), and the three client Jobs run once. It proves what the docs claim for the
manifests: nginx resolves the headless name to every pod and spreads the calls, Envoy finds the pods
that start after it by looking the name up again and spreads the calls too, and a `dns:///`
round_robin client spreads them by itself.
(A ClusterIP Service's L4 balancing needs kube-proxy; lesson 9 measures it.)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from pcbook import paths
from pcbook.lessons import tutorial
from pcbook.stack import dockerd
from pcbook.stage.judge import calls_in
from pcbook.workbook.deploy import k8s, render

pytestmark = pytest.mark.timeout(600)
LABEL = "pcbook.test"


def _docs() -> dict[str, dict[str, Any]]:
    return {f"{d['metadata']['name']}/{d['kind']}": d for ds in k8s.documents().values() for d in ds}


def _pod(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def test_the_manifests_commands_spread_calls_over_the_pods(daemon: dockerd.Daemon, image: str,
                                                           tmp_path: Path) -> None:
    docs = _docs()
    run = f"k8s-{os.getpid()}"
    net = f"pcbook-{run}"
    certs_mount = ["-v", f"{paths.CERTS_DIR}:/workbook/certs:ro"]

    def docker_run(*args: str, detach: bool = True, timeout: float = 120):  # type: ignore[no-untyped-def]
        return daemon.docker("run", *(["-d"] if detach else ["--rm"]), "--network", net, "--label", f"{LABEL}={run}",
                             *certs_mount, *args, timeout=timeout, check=detach)

    daemon.docker("network", "create", "--label", f"{LABEL}={run}", net)
    try:
        servers = _pod(docs["pcbook-server/Deployment"])
        replicas = docs["pcbook-server/Deployment"]["spec"]["replicas"]

        def server_pod(i: int) -> str:
            return docker_run("--name", f"{run}-server-{i}", "--network-alias", k8s.K8S_SERVERS, image,
                              *servers["containers"][0]["args"]).stdout.strip()

        # One pod, then Envoy (after its init container), then the other pods: Envoy must find them itself.
        pods = [server_pod(0)]
        envoy_pod = _pod(docs["pcbook-envoy/Deployment"])
        init = docker_run(image, *envoy_pod["initContainers"][0]["args"], "--timeout", "60", detach=False)
        assert init.returncode == 0, init.stderr
        envoy = docker_run("--name", f"{run}-envoy", "--network-alias", k8s.K8S_ENVOY,
                           "-v", f"{_configmap(docs, 'pcbook-envoy', tmp_path)}:{k8s.K8S_ENVOY_CONF_DIR}:ro", image,
                           *envoy_pod["containers"][0]["args"]).stdout.strip()
        _wait_ready(daemon, [(envoy, "envoy")])
        pods += [server_pod(i) for i in range(1, replicas)]

        nginx_pod = _pod(docs["pcbook-nginx/Deployment"])
        init = docker_run(image, *nginx_pod["initContainers"][0]["args"], "--timeout", "60", detach=False)
        assert init.returncode == 0, init.stderr
        conf_dir = _configmap(docs, "pcbook-nginx", tmp_path)
        # The init container only waits for DNS; the pods must also listen before nginx sends calls.
        _wait_ready(daemon, [(p, "server1") for p in pods])
        nginx = docker_run("--name", f"{run}-nginx", "--network-alias", k8s.K8S_NGINX,
                           "-v", f"{conf_dir}:{k8s.K8S_CONF_DIR}:ro", image,
                           *nginx_pod["containers"][0]["args"]).stdout.strip()
        _wait_ready(daemon, [(nginx, "nginx")])

        def run_job(job: str) -> dict[str, list[str]]:
            """The Job's client once; the CreateLaptop calls each pod received."""
            before = _calls(daemon, pods)
            args = _pod(docs[f"{job}/Job"])["containers"][0]["args"]
            client = docker_run(image, *args, detach=False)
            assert client.returncode == 0, client.stdout + client.stderr
            assert client.stdout.count("created laptop with id: ") == 6
            after = _wait_calls(daemon, pods, before, 7)  # Login + 6 CreateLaptop
            return {pod: [m for m in new if m == tutorial.CREATE_LAPTOP] for pod, new in after.items()}

        # nginx resolved the headless name to every pod and balances per call: 2 on each.
        creates = run_job("pcbook-client-via-nginx")
        assert sorted(len(c) for c in creates.values()) == [2] * replicas, creates
        # The client's round_robin picks among the pods whose connection is READY, and each connection is a
        # mutual TLS handshake: on a loaded machine the 6 calls were once all sent before the other pods were
        # ready. A new run opens new connections: up to 3 runs, each printed, until every pod gets calls.
        # A pick_first client never spreads, so this still fails for one.
        spread_runs = []
        for _ in range(3):
            creates = run_job("pcbook-client-round-robin")
            spread_runs.append(sorted((len(c) for c in creates.values()), reverse=True))
            print(f"round_robin job: CreateLaptop calls per pod {spread_runs[-1]}")
            if all(creates.values()):
                break
        assert all(creates.values()), f"no run reached every pod: CreateLaptop calls per pod {spread_runs}"

        # Envoy found every pod without a restart (its admin endpoint lists them), and balances per call.
        hosts = _wait_hosts(daemon, envoy, replicas)
        assert len(hosts) == replicas, f"Envoy knows {hosts}, not the {replicas} pods"
        creates = run_job("pcbook-client-via-envoy")
        assert sorted(len(c) for c in creates.values()) == [2] * replicas, creates
    finally:
        ids = daemon.docker("ps", "-aq", "--filter", f"label={LABEL}={run}").stdout.split()
        if ids:
            daemon.docker("rm", "-f", *ids)
        daemon.docker("network", "rm", net, check=False)
        assert not daemon.docker("ps", "-aq", "--filter", f"label={LABEL}={run}").stdout.split()
        assert not daemon.docker("network", "ls", "-q", "--filter", f"label={LABEL}={run}").stdout.split()


def _wait_ready(daemon: dockerd.Daemon, targets: list[tuple[str, str]], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    for cid, role in targets:
        while daemon.docker("exec", cid, "python", "-m", "pcbook.workbook.deploy", "ready", role, "--lesson", "5",
                            check=False).returncode != 0:
            if time.monotonic() > deadline:
                logs = daemon.docker("logs", cid, check=False)
                raise AssertionError(f"{role} in {cid[:12]} never listened: {logs.stdout[-800:]} {logs.stderr[-800:]}")
            time.sleep(0.2)


def _calls(daemon: dockerd.Daemon, pods: list[str]) -> dict[str, list[str]]:
    return {pod: [m for _, m in calls_in(pod, daemon.docker("logs", pod).stdout.splitlines())] for pod in pods}


def _wait_calls(daemon: dockerd.Daemon, pods: list[str], before: dict[str, list[str]], total: int,
                timeout: float = 20) -> dict[str, list[str]]:
    """The calls each pod logged since `before`, once `total` have arrived (or the deadline passed)."""
    deadline = time.monotonic() + timeout
    while True:
        now = _calls(daemon, pods)
        new = {pod: now[pod][len(before[pod]):] for pod in pods}
        if sum(map(len, new.values())) >= total or time.monotonic() > deadline:
            return new
        time.sleep(0.2)


def _configmap(docs: dict[str, dict[str, Any]], name: str, tmp_path: Path) -> Path:
    """The ConfigMap's files in a folder, as Kubernetes mounts them."""
    folder = tmp_path / name
    folder.mkdir()
    for key, text in docs[f"{name}/ConfigMap"]["data"].items():
        (folder / key).write_text(text)
    return folder


def _wait_hosts(daemon: dockerd.Daemon, envoy: str, count: int, timeout: float = 30) -> list[str]:
    """The upstream hosts Envoy's admin endpoint lists (inside its container), once there are `count`."""
    admin = render.plan(5).envoy
    assert admin is not None
    ask = ("import urllib.request; print(urllib.request.urlopen("
           f"'http://127.0.0.1:{admin.admin_port}/clusters', timeout=5).read().decode())")
    deadline = time.monotonic() + timeout
    while True:
        out = daemon.docker("exec", envoy, "python", "-c", ask, check=False).stdout
        hosts = sorted({line.split("::")[1] for line in out.splitlines() if "::cx_active::" in line})
        if len(hosts) >= count or time.monotonic() > deadline:
            return hosts
        time.sleep(0.5)
