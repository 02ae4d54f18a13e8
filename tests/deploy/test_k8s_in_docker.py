"""The commands of deploy/k8s/ for real, with Docker standing in for the cluster.

No cluster runs here, so the test runs every container of the manifests as Kubernetes would,
with the same image and the same args: three server containers share the network alias
`pcbook-server` (Docker's DNS then answers with all three addresses, as a headless Service does),
nginx runs the ConfigMap's config behind the alias `pcbook-nginx`, after the init container's
`wait-dns`, and both client Jobs run once. It proves what the docs claim for the manifests: nginx
resolves the headless name to every pod and spreads the calls, and a `dns:///` round_robin client
spreads them by itself. (A ClusterIP Service's L4 balancing needs kube-proxy; lesson 9 measures it.)
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
from pcbook.workbook.deploy import k8s

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
        pods = [docker_run("--name", f"{run}-server-{i}", "--network-alias", k8s.K8S_SERVERS, image,
                           *servers["containers"][0]["args"]).stdout.strip() for i in range(replicas)]

        nginx_pod = _pod(docs["pcbook-nginx/Deployment"])
        init = docker_run(image, *nginx_pod["initContainers"][0]["args"], "--timeout", "60", detach=False)
        assert init.returncode == 0, init.stderr
        conf_dir = tmp_path / "configmap"
        conf_dir.mkdir()
        for key, text in docs["pcbook-nginx/ConfigMap"]["data"].items():
            (conf_dir / key).write_text(text)
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
