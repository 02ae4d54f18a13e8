"""The Envoy runner: which binary, one clear line for a missing one or a bad config, a real Envoy on a stage
(prefixed access-log lines, the admin endpoint's per-host counters), stopped on every path."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcbook.stack import envoy
from pcbook.stack.ports import pick_free_port
from pcbook.stack.procs import Stack
from pcbook.stack.specs import Driver, Envoy, Server
from pcbook.stage.stage import Stage

from .conftest import eventually, pid_gone, port_free

CONFIG = """\
static_resources:
  listeners:
  - name: edge
    address: {socket_address: {address: 127.0.0.1, port_value: PORT}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: edge
          codec_type: HTTP2
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: logs/access.log
              log_format: {text_format_source: {inline_string: "%REQ(:PATH)% upstream=%UPSTREAM_HOST%\\n"}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
          route_config:
            virtual_hosts:
            - {name: all, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: one}}]}
  clusters:
  - name: one
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: one
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: BACKEND}}}}]}]
"""


def test_envoy_env_var_that_is_not_a_binary_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVOY", "/nonexistent/envoy")
    with pytest.raises(envoy.EnvoyNotFoundError, match=r"^ENVOY=/nonexistent/envoy is not an executable Envoy"):
        envoy.find_envoy()


def test_envoy_env_var_that_is_another_program_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVOY", "/bin/true")
    with pytest.raises(envoy.EnvoyNotFoundError, match="does not look like Envoy"):
        envoy.find_envoy()


def test_the_pinned_binary_is_envoy_1_40() -> None:
    assert envoy.envoy_version(envoy.find_envoy()) == (1, 40, 0)


def test_a_config_envoy_rejects_is_one_line_with_its_words(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG.replace("PORT", "80x").replace("BACKEND", "1"))
    with Stack(echo=None, run_dir=tmp_path / "run") as stack, \
            pytest.raises(envoy.EnvoyConfigError) as err:
        envoy.start_envoy(stack, bad, port=pick_free_port(), admin_port=pick_free_port())
    said = str(err.value)
    assert "\n" not in said and "invalid number: '80x'" in said and '{"static_resources"' not in said


def test_envoy_on_a_stage_proxies_logs_counts_and_stops(tmp_path: Path) -> None:
    port, admin, backend = pick_free_port(), pick_free_port(), pick_free_port()
    conf = tmp_path / "edge.yaml"
    conf.write_text(CONFIG.replace("PORT", str(port)).replace("BACKEND", str(backend)))
    with Stack(echo=None, run_dir=tmp_path / "run") as stack:
        stage = Stage(stack, tmp_path / "logs")
        stage.apply([Server("server1", backend)], envoy=Envoy(conf, port, admin))
        assert stage.envoy is not None and stage.envoy.folder.parent == tmp_path / "run"
        pid = stage.envoy.proc.pid
        report = stage.start_driver(Driver(f"127.0.0.1:{port}", calls=4)).finish(stop=False)
        assert [c.code for c in report.calls] == ["OK"] * 4
        # The access log reaches the stack under Envoy's name; the admin endpoint counts per host.
        stack.wait_for_line("envoy", f"CreateLaptop upstream=127.0.0.1:{backend}", 5)
        hosts = stage.envoy.clusters()["one"]
        assert int(hosts[f"127.0.0.1:{backend}"]["rq_success"]) == 5  # the Login and 4 calls
        assert stage.envoy.stats("cluster.one.upstream_rq_total")["cluster.one.upstream_rq_total"] == 5
        # The next state without Envoy stops it.
        stage.apply([Server("server1", backend)])
        assert stage.envoy is None and eventually(lambda: pid_gone(pid)) and port_free(port) and port_free(admin)
