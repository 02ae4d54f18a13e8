"""The rendering and the files of deploy/, without a Docker daemon or a cluster."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from cryptography import x509

from pcbook import paths
from pcbook.service import certs
from pcbook.stack import nginx
from pcbook.workbook import manifest
from pcbook.workbook.deploy import k8s, render

K8S = paths.ROOT / "deploy" / "k8s"
COMPOSE = paths.ROOT / "deploy" / "compose.yaml"


def _upstream_servers(text: str) -> list[str]:
    return [s.words[1] for s in nginx._statements(text)
            if s.words and s.words[0] == "server" and s.parents[-1:] == ("upstream",)]


@pytest.mark.parametrize("number", render.usable_lessons())
def test_compose_rendering_names_each_lesson_server(number: int) -> None:
    p = render.plan(number)
    original = p.conf.read_text()
    rendered = render.render_upstreams(original, render.compose_names(p))
    assert rendered.count("\n") == original.count("\n"), "nginx's line numbers must still match the file"
    wanted = {f"{s.name}:{s.port}" for s in p.servers}
    assert set(_upstream_servers(rendered)) <= wanted and _upstream_servers(rendered)
    assert "0.0.0.0:5005" not in rendered.split("upstream", 1)[1].split("server {", 1)[0]
    # Nothing but the upstream addresses changed.
    changed = [(a, b) for a, b in zip(original.splitlines(), rendered.splitlines(), strict=True) if a != b]
    assert all(a.strip().startswith("server 0.0.0.0:") for a, _ in changed), changed


def test_lesson_6_keeps_its_routes() -> None:
    p = render.plan(6)
    rendered = render.render_upstreams(p.conf.read_text(), render.compose_names(p))
    auth = rendered.split("upstream auth_services", 1)[1].split("}", 1)[0]
    laptop = rendered.split("upstream laptop_services", 1)[1].split("}", 1)[0]
    assert "server1:50051" in auth and "server2" not in auth
    assert "server2:50052" in laptop and "server1" not in laptop


def test_k8s_rendering_collapses_both_backends_into_one_pool() -> None:
    p = render.plan(5)
    rendered = render.render_upstreams(p.conf.read_text(), k8s.names(p))
    assert _upstream_servers(rendered) == ["pcbook-server:50051"]
    assert "# server pcbook-server:50051; (same pool as above)" in rendered


def test_an_upstream_on_no_lesson_port_is_one_clear_error() -> None:
    text = "http { upstream u { server 0.0.0.0:50059; } }"
    with pytest.raises(render.ContainerError, match=r"0\.0\.0\.0:50059 is on no lesson server's port"):
        render.render_upstreams(text, {50051: "server1:50051"}, source="mine.conf")
    named = "http { upstream u { server already.named:1; } }"  # a learner's own name is left alone
    assert render.render_upstreams(named, {50051: "server1:50051"}) == named


def test_commented_servers_and_other_blocks_are_not_touched() -> None:
    text = ("http {\n  # server 0.0.0.0:50051;\n  server { listen 8080; }\n"
            "  upstream u { server 0.0.0.0:50051 weight=2; }\n}\n")
    out = render.render_upstreams(text, {50051: "server1:50051"})
    assert "# server 0.0.0.0:50051;" in out and "server server1:50051 weight=2;" in out


def test_the_container_plan_follows_the_manifest() -> None:
    p = render.plan(5)
    assert [s.name for s in p.servers] == ["server1", "server2"]
    assert p.conf.name == "lesson-5.conf"
    assert p.client_args() == ["--address", f"nginx:{manifest.NGINX_PORT}", "--tls"]
    plain = render.plan(2)
    lesson_args = plain.step.client.args()
    assert lesson_args[:2] == ["--address", "0.0.0.0:8080"]
    assert plain.client_args() == ["--address", "nginx:8080", *lesson_args[2:]] and not plain.servers[0].tls


@pytest.mark.parametrize("argv, said", [
    (["render", "--lesson", "7"], "lesson 7 has no nginx-and-servers checkpoint"),
    (["render", "--lesson", "99"], "there is no lesson 99"),
    (["run", "bogus"], "lesson 5 has no role 'bogus'"),
    (["run", "server1", "--", "--tls"], "only the client takes flags after --"),
])
def test_cli_mistakes_are_one_line(argv: list[str], said: str) -> None:
    out = subprocess.run([sys.executable, "-m", "pcbook.workbook.deploy", *argv], capture_output=True, text=True,
                         timeout=60, cwd=paths.ROOT)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [out.stderr.strip()] and said in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_lesson_env_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(render.LESSON_ENV, "five")
    with pytest.raises(render.ContainerError, match="PCBOOK_LESSON=five is not a lesson number"):
        render.lesson_from_env()


# --- compose.yaml ----------------------------------------------------------------------------------

def test_compose_services_are_the_lessons_roles() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == set(render.plan(5).roles())
    for name, service in services.items():
        assert service["command"] == ["run", name]
        assert "../nginx:/workbook/nginx:ro" in service["volumes"]
        assert any(v.endswith(":/workbook/certs:ro") for v in service["volumes"])
    assert services["client"]["profiles"] == ["client"]  # a one-shot: `up` does not start it
    assert services["envoy"]["profiles"] == services["client-envoy"]["profiles"] == ["envoy"]


@pytest.mark.parametrize("number", sorted(__import__("pcbook.lessons.l13_envoy", fromlist=["ON_ENVOY"]).ON_ENVOY))
def test_envoy_rendering_names_each_lesson_server(number: int) -> None:
    p = render.plan(number)
    assert p.envoy_step is not None and p.envoy_step.envoy is not None
    # The twin's servers speak what the lesson's do, or Envoy's cluster could not reach them.
    assert {s.tls for s in p.envoy_step.servers} == {s.tls for s in p.servers}
    text = render.render_envoy(p.envoy_step.envoy.path.read_text(), p.envoy_names())
    for s in p.servers:
        assert f"socket_address: {{address: {s.name}, port_value: {s.port}}}" in text
    assert "address: 127.0.0.1" not in text and "type: STATIC" not in text and "type: STRICT_DNS" in text


def test_k8s_envoy_collapses_both_endpoints_into_one_pool_and_is_valid_yaml() -> None:
    docs = {d["metadata"]["name"] + "/" + d["kind"]: d for ds in k8s.documents().values() for d in ds}
    text = docs["pcbook-envoy/ConfigMap"]["data"]["envoy.yaml"]
    endpoint = "- endpoint: {address: {socket_address: {address: pcbook-server, port_value: 50051}}}"
    lines = [line.strip() for line in text.splitlines()]
    assert lines.count(endpoint) == 1 and lines.count(f"# {endpoint} (same pool as above)") == 1, text
    cluster = yaml.safe_load(text)["static_resources"]["clusters"][0]
    assert cluster["type"] == "STRICT_DNS" and len(cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]) == 1
    job = docs["pcbook-client-via-envoy/Job"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert job[job.index("--address") + 1] == f"{k8s.K8S_ENVOY}:8132"


def test_envoy_rendering_without_a_lesson_endpoint_is_one_clear_error() -> None:
    with pytest.raises(render.ContainerError, match="no endpoint is on a lesson server's port"):
        render.render_envoy("static_resources: {}\n", {50131: "server1:50051"})


def test_docker_compose_accepts_the_file() -> None:
    import shutil

    if shutil.which("docker-compose") is None:
        pytest.skip("no docker-compose (Debian: apt-get install docker-compose)")
    out = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr


def test_certificates_carry_every_name_the_containers_dial() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    dialled = set(compose["services"]) - {"client", "client-envoy"}
    dialled |= {doc["metadata"]["name"] for docs in k8s.documents().values() for doc in docs
                if doc["kind"] == "Service"}
    assert dialled <= set(certs.CONTAINER_DNS) <= set(certs.SERVER_DNS)


def test_old_certificates_without_the_names_are_regenerated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Certificates made before the names were added (valid 60 days) would fail in the containers."""
    with monkeypatch.context() as m:
        m.setattr(certs, "SERVER_DNS", ("*.pcbook.com", "*.pcbook.org", "localhost"))
        certs.generate_ca_and_certs(tmp_path, key_size=1024)
    reason = certs.check_certs(tmp_path)
    assert reason is not None and "lacks the name(s) nginx, envoy, server1" in reason
    certs.ensure_certs(tmp_path, key_size=1024)
    assert certs.check_certs(tmp_path) is None
    cert = x509.load_pem_x509_certificate((tmp_path / certs.SERVER_CERT).read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"nginx", "server1", "pcbook-server"} <= set(names.get_values_for_type(x509.DNSName))
    assert cert.not_valid_after_utc > dt.datetime.now(dt.UTC)


# --- deploy/k8s ----------------------------------------------------------------------------------

def test_committed_manifests_are_what_the_renderer_writes() -> None:
    for name, text in k8s.files().items():
        path = K8S / name
        assert path.is_file(), f"deploy/k8s/{name} is missing: run python -m pcbook.workbook.deploy k8s"
        assert path.read_text() == text, f"deploy/k8s/{name} is stale: run python -m pcbook.workbook.deploy k8s"
    committed = {p.relative_to(K8S).as_posix() for p in K8S.rglob("*.yaml")}
    assert committed == set(k8s.files()), "deploy/k8s holds files the renderer does not write"


def test_yaml_writer_round_trips() -> None:
    for docs in k8s.documents().values():
        assert list(yaml.safe_load_all(k8s.to_yaml(docs))) == docs
    tricky = {"a": ["--", "5", "yes", "on", "x: y", "#no", "", "1.5", "-1", "dns:///a:1"], "b": "two\nlines\n"}
    assert yaml.safe_load(k8s.to_yaml([tricky])) == tricky


def _validate(docs: list[dict]) -> None:
    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("name", sorted(k8s.files()))
def test_manifests_pass_kubernetes_validate(name: str) -> None:
    docs = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    assert docs
    _validate(docs)


def test_a_wrong_manifest_fails_validation() -> None:
    """The validation can fail: a string where Kubernetes wants an integer is caught."""
    doc = k8s.documents()["servers.yaml"][0]
    doc["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate([doc])


def test_secret_from_certs_validates_and_holds_every_pem(tmp_path: Path) -> None:
    certs.ensure_certs(tmp_path, key_size=1024)
    secret = k8s.secret_document(tmp_path)
    _validate([secret])
    assert set(secret["data"]) == set(nginx.CERT_FILES)
    with pytest.raises(render.ContainerError, match="make cert"):
        k8s.secret_document(tmp_path / "none")


def test_manifests_run_the_lessons_roles() -> None:
    docs = {d["metadata"]["name"] + "/" + d["kind"]: d for ds in k8s.documents().values() for d in ds}
    pod = docs["pcbook-server/Deployment"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"] == ["run", "server1", "--lesson", "5"]
    assert docs["pcbook-server/Service"]["spec"]["clusterIP"] == "None"  # headless: every pod in DNS
    assert "clusterIP" not in docs["pcbook-nginx/Service"]["spec"]  # a ClusterIP Service in front of nginx
    conf = docs["pcbook-nginx/ConfigMap"]["data"]["nginx.conf"]
    assert _upstream_servers(conf) == ["pcbook-server:50051"]
    rr = docs["pcbook-client-round-robin/Job"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "dns:///pcbook-server:50051" in rr and "round_robin" in rr


def test_the_docs_show_what_the_renderer_writes() -> None:
    """docs/deploy.md quotes rendered upstream blocks (output, not configs): they must stay true."""
    page = (paths.ROOT / "docs" / "deploy.md").read_text()
    blocks = [b for b in re.findall(r"```text\n(.*?)```", page, re.S)
              if "upstream pcbook_services" in b and "resolve;" not in b]  # not the `resolve` experiment
    p = render.plan(5)
    rendered = {
        "compose": render.render_upstreams(p.conf.read_text(), render.compose_names(p)),
        "k8s": k8s.documents()["nginx.yaml"][0]["data"]["nginx.conf"],
    }
    assert len(blocks) == 2
    for block, (kind, text) in zip(blocks, rendered.items(), strict=True):
        assert block in text, f"the {kind} block of docs/deploy.md is stale"
