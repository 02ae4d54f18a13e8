"""The bench's peer proxies without running them: HAProxy's config and command line, where its rows go,
what the report says of memory and of the run's resolving power."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pcbook.bench import settings
from pcbook.bench.accounting import memory_at_rest, process_tree
from pcbook.bench.results import HopResult
from pcbook.bench.tables import hop_table, memory_lines, resolving_power
from pcbook.measure.stats import summarize
from pcbook.stack import haproxy

CFG = settings.HAPROXY_CONF.read_text()


def directives(section: str) -> list[str]:
    """The lines of one section (`frontend grpc_in`, `global`, ...) of the bench's HAProxy config."""
    lines = CFG.splitlines()
    start = lines.index(section) + 1
    body = []
    for line in lines[start:]:
        if line and not line.startswith((" ", "#")):
            break
        if line.strip() and not line.strip().startswith("#"):
            body.append(" ".join(line.split()))
    return body


def test_the_haproxy_hop_is_h2c_on_both_sides_to_nginx_s_backend() -> None:
    assert f"bind 127.0.0.1:{settings.HAPROXY_PORT} proto h2" in directives("frontend grpc_in")
    backend = directives("backend plain_backend")
    assert "server server1 127.0.0.1:50101 proto h2" in backend  # the backend of nginx's 8101
    assert "http-reuse always" in backend  # calls share the kept-alive backend connection
    assert "nbthread 1" in directives("global")  # one thread, as nginx runs one worker
    nginx_conf = settings.HOP_CONF.read_text()
    assert re.search(r"upstream plain_backend \{\s*server 127\.0\.0\.1:50101;", nginx_conf)
    # No per-call log line through the runner's pipe: notice and above only.
    assert "log stdout format raw local0 notice" in directives("global")


def test_the_envoy_hop_is_h2c_on_both_sides_to_nginx_s_backend() -> None:
    import yaml

    doc = yaml.safe_load(settings.ENVOY_CONF.read_text())["static_resources"]
    (listener,) = doc["listeners"]
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": settings.ENVOY_PORT}
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert manager["codec_type"] == "HTTP2" and "access_log" not in manager  # no line per call
    (cluster,) = doc["clusters"]
    assert "http2_protocol_options" in cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"]
    (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 50101}
    assert settings.PEER_UPSTREAM_PORT[settings.ENVOY] == 50101


def test_haproxy_runs_in_the_foreground_on_its_copy(tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    assert haproxy.haproxy_argv(Path("/usr/sbin/haproxy"), cfg) == ["/usr/sbin/haproxy", "-db", "-f", str(cfg)]


def test_a_missing_haproxy_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("HAPROXY", raising=False)
    with pytest.raises(haproxy.HaproxyNotFoundError, match=r"not installed \(Debian/Ubuntu: apt-get install haproxy"):
        haproxy.find_haproxy()
    monkeypatch.setenv("HAPROXY", str(tmp_path / "nope"))
    with pytest.raises(haproxy.HaproxyNotFoundError, match="HAPROXY=.*nope is not an executable haproxy"):
        haproxy.find_haproxy()


def test_run_folders_are_fresh_and_pruned(tmp_path: Path) -> None:
    for n in range(4):
        folder = haproxy.new_run_folder(tmp_path, keep=2)
        assert folder.name.startswith("haproxy-") and not any(folder.iterdir())
        (folder / "haproxy.cfg").write_text(str(n))
    kept = sorted((p / "haproxy.cfg").read_text() for p in tmp_path.iterdir())
    assert kept == ["2", "3"]  # the newest two


def test_peer_rows_follow_nginx_s_plaintext_row_only_when_they_run() -> None:
    names = [t.name for t in settings.hop_paths()]
    assert names == [t.name for t in settings.HOP_PATHS]
    with_peer = [t.name for t in settings.hop_paths([settings.HAPROXY])]
    assert with_peer[with_peer.index(settings.NGINX_PLAIN) + 1] == settings.HAPROXY
    assert len(with_peer) == len(names) + 1
    assert {settings.HAPROXY} <= set(settings.LABELS) and settings.HAPROXY in settings.PEER_UPSTREAM_PORT
    assert (settings.HAPROXY, settings.NGINX_PLAIN) in {(a, b) for a, b, _ in settings.COMPARISONS}
    both = [t.name for t in settings.hop_paths([settings.HAPROXY, settings.ENVOY])]
    at = both.index(settings.NGINX_PLAIN)
    assert both[at + 1:at + 3] == [settings.HAPROXY, settings.ENVOY]
    assert (settings.ENVOY, settings.NGINX_PLAIN) in {(a, b) for a, b, _ in settings.COMPARISONS}


def _hop(added: dict[str, list[float]]) -> HopResult:
    """A hop whose direct p50 is 1 ms in every repetition and each path's adds `added` us."""
    reps = len(next(iter(added.values())))
    paths = {settings.DIRECT: [0.0] * reps, **added}
    rounds = {n: [{"p50_ms": 1 + us / 1000, "p99_ms": 2.0} for us in v] for n, v in paths.items()}
    stats = {n: summarize(n, [[int((1 + us / 1000) * 1e6)] for us in v]) for n, v in paths.items()}
    return HopResult(stats, rounds)


def test_the_table_states_its_resolving_power() -> None:
    hop = _hop({"nginx": [90, 100, 110, 120, 95, 105], "haproxy": [-20, 40, 10, 30, 0, 20]})
    table = hop_table(hop, settings.LABELS)
    assert "width us" in table[0]
    nginx_row = next(line for line in table if line.startswith("nginx, plaintext"))
    assert re.search(r"\+102 \[\+90, \+120\]\s+resolved\s+30\b", nginx_row)
    haproxy_row = next(line for line in table if line.startswith("HAProxy"))
    assert re.search(r"not resolved\s+60\b", haproxy_row)
    power = resolving_power(hop)
    assert "30 to 60 us wide (median 60)" in power and "under about 30 us is not resolved" in power


def test_memory_lines_name_each_proxy_and_its_processes() -> None:
    lines = memory_lines({"nginx": (9.04, 2), "haproxy": (16.5, 1)}, settings.LABELS)
    assert lines[0].split() == ["proxy", "RSS", "MB", "at", "rest", "processes"]
    assert lines[2].split() == ["nginx", "9.0", "2"] and lines[3].split() == ["HAProxy", "16.5", "1"]


def test_memory_at_rest_reads_this_process_tree() -> None:
    import os

    mb, count = memory_at_rest(os.getpid())
    assert mb > 1 and count >= 1 and process_tree(os.getpid())[0] == os.getpid()
    assert memory_at_rest(2 ** 22 + 1) == (0, 0)  # above pid_max's default: no such process


def test_the_driver_interleaves_runs_of_calls_when_asked() -> None:
    from pcbook.stack.specs import Driver

    plain = Driver(calls=10, warmup=2, compare=("a=127.0.0.1:1", "b=127.0.0.1:2")).args()
    assert "--run-length" not in plain
    runs = Driver(calls=10, warmup=2, run_length=20, compare=("a=127.0.0.1:1",)).args()
    assert runs[-2:] == ["--run-length", "20"]


def test_a_placement_that_did_not_take_is_said(monkeypatch: pytest.MonkeyPatch) -> None:
    from pcbook.bench import run
    from pcbook.measure.placement import plan

    said: list[str] = []
    where = plan(frozenset({0, 1}))
    monkeypatch.setattr(run, "affinity_of", lambda pid: frozenset({0, 1}))
    run._check_placement(where, {"server1": 1, "haproxy": 2}, said.append)
    assert said == ["placement did not take: server1 runs on cores [0, 1], planned [0]",
                    "placement did not take: haproxy runs on cores [0, 1], planned [1]"]
    said.clear()
    monkeypatch.setattr(run, "affinity_of", lambda pid: frozenset({0}) if pid == 1 else frozenset({1}))
    run._check_placement(where, {"server1": 1, "haproxy": 2}, said.append)
    assert said == []
