"""The arithmetic and the tables of `make bench` (pcbook.measure.stats) and its target verdicts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pcbook.bench.accounting import opened_between, peer_ports
from pcbook.bench.phases import architecture_latency, count_upstream_connections
from pcbook.bench.results import ArchResult, ChangeCost
from pcbook.bench.run import quiet
from pcbook.bench.settings import (
    CLIENT_RR,
    COMPARISONS,
    DIRECT,
    HOP_PATHS,
    HOP_SERVERS,
    NGINX_KEEPALIVE,
    NGINX_PLAIN,
    NGINX_TWO,
    ONE,
    RR_TWO,
    XDS,
    XDS_SERVERS,
    saturated,
)
from pcbook.bench.tables import architecture_lines, targets_met
from pcbook.measure.loadgen import Round
from pcbook.measure.stats import (
    PathStats,
    Spread,
    block_percentiles,
    latency_table,
    median,
    percentile,
    ratio,
    summarize,
    throughput_table,
)
from pcbook.measure.verdicts import ConnectionCount


def test_percentile_interpolates_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]  # order must not matter
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 25) == pytest.approx(1.75)
    assert percentile([7.0], 99) == 7.0


def test_percentile_p99_of_a_hundred_values() -> None:
    values = list(range(1, 101))
    assert percentile(values, 99) == pytest.approx(99.01)
    assert median(values) == 50.5


def test_percentile_rejects_nothing_and_bad_q() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_spread_is_median_and_range_of_repetitions() -> None:
    s = Spread.of([3.0, 1.0, 2.0])
    assert (s.median, s.low, s.high, s.n) == (2.0, 1.0, 3.0, 3)
    assert s.relative_range == 1.0
    assert Spread.of([0.0]).relative_range == math.inf


def test_summarize_takes_p50_per_repetition_in_ms() -> None:
    ms = 1_000_000
    rounds = [[1 * ms] * 10, [3 * ms] * 10, [2 * ms] * 10]
    stats = summarize("direct", rounds, [100.0, 300.0, 200.0])
    assert stats.p50_ms == Spread(2.0, 1.0, 3.0, 3)
    assert stats.p99_ms.median == 2.0
    assert stats.throughput == Spread(200.0, 100.0, 300.0, 3)
    assert summarize("x", rounds).throughput is None


def test_ratio() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(1.0, 0.0) == math.inf


def _row(name: str, p50: float, calls: float | None = None) -> PathStats:
    return PathStats(name, Spread.of([p50]), Spread.of([p50 * 2]), Spread.of([calls]) if calls else None)


def test_latency_table_shows_ratios_to_the_base() -> None:
    lines = latency_table([_row("direct", 0.5, 1000), _row("nginx", 0.75, 800)], "direct", {"nginx": "via nginx"})
    assert lines[0].split()[:2] == ["path", "p50"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].startswith("direct") and " 1.00 " in lines[2]
    assert lines[3].startswith("via nginx")
    assert "1.50" in lines[3] and "0.80" in lines[3]
    assert len({len(line) for line in lines[:2]}) == 1  # header and rule line up


def test_latency_table_without_throughput_and_without_base() -> None:
    lines = latency_table([_row("direct", 1.0), _row("nginx", 2.0)], "direct")
    assert lines[3].rstrip().endswith("-")
    with pytest.raises(ValueError):
        latency_table([_row("nginx", 1.0)], "direct")


def test_throughput_table() -> None:
    lines = throughput_table([("1 server", Spread.of([190, 200, 210])), ("2 servers", Spread.of([400]))], "1 server")
    assert "x 1 server" in lines[0]
    assert lines[2].endswith("1.00") and lines[3].endswith("2.00")
    assert "200 [190-210]" in lines[2]


def test_targets_met_reports_each_target() -> None:
    hop = {
        DIRECT: _row(DIRECT, 1.0),
        NGINX_PLAIN: _row(NGINX_PLAIN, 1.3),
        NGINX_KEEPALIVE: _row(NGINX_KEEPALIVE, 1.4),
        CLIENT_RR: _row(CLIENT_RR, 1.0),
    }
    scale = {ONE: Spread.of([200]), NGINX_TWO: Spread.of([390]), RR_TWO: Spread.of([385])}
    verdicts = targets_met(hop, scale)
    assert [ok for _, ok, _ in verdicts] == [True, True, True]
    scale[NGINX_TWO] = Spread.of([300])
    hop[NGINX_KEEPALIVE] = _row(NGINX_KEEPALIVE, 1.6)
    hop[CLIENT_RR] = _row(CLIENT_RR, 1.5)  # slower than nginx: client RR target missed
    assert [ok for _, ok, _ in targets_met(hop, scale)] == [False, False, False]


def test_server_argv_keeps_stdout_out_of_the_pipe(tmp_path) -> None:  # type: ignore[no-untyped-def]
    log_dir = tmp_path / "a dir"
    server = saturated((HOP_SERVERS[2],), workers=4, work_ms=20)[0]
    argv = server.argv(log_dir=log_dir)
    assert argv[:2] == ["/bin/sh", "-c"]
    assert "'" in argv[2] and str(log_dir / "server3.log") in argv[2]  # quoted: the path has a space
    assert argv[argv.index("--port") + 1] == "50103"
    assert ["--tls", "--client-auth", "require"] == argv[argv.index("--tls"):argv.index("--tls") + 3]
    assert argv[argv.index("--work-ms") + 1] == "20"


def test_opened_connections_count_a_reused_time_wait_port() -> None:
    # Port 40001: the keepalive connection, open throughout. 40002: in TIME_WAIT before, its timer ran
    # down with the clock (not reused). 40003: in TIME_WAIT before, and again in a fresh TIME_WAIT after
    # (Linux reused it for a new connection). 40004: in TIME_WAIT before, in use again now. 40005: new.
    # 40006: a TIME_WAIT whose timer ran out in between, still listed at 0 (not reaped yet): not new.
    before: dict[int, float | None] = {40001: None, 40002: 30.0, 40003: 30.0, 40004: 12.0, 40006: 0.23}
    after: dict[int, float | None] = {40001: None, 40002: 29.5, 40003: 59.8, 40004: None, 40005: 59.9, 40006: 0.0}
    assert opened_between(before, after, elapsed=0.5) == 3
    # A set of ports alone would see one.
    assert len(after.keys() - before.keys()) == 1


def test_time_wait_timers_are_read_from_the_kernel_table() -> None:
    import socket
    import time

    from pcbook.stack.ports import tcp_sockets

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = srv.accept()
        client.close()  # the side that closes first holds TIME_WAIT
        conn.close()
        deadline = time.monotonic() + 5  # loopback delivers the FINs at once; the deadline is a backstop
        while not any((waits := peer_ports(port)).values()) and time.monotonic() < deadline:
            time.sleep(0.01)
    assert len(waits) == 1 and 50 < next(iter(waits.values())) <= 60, waits
    assert any(s.time_wait_left > 50 for s in tcp_sockets() if s.remote_port == port)


# --- the xDS row and phase 3 (three architectures on one registry) -------------------------------------

def test_block_percentiles_cut_consecutive_slices() -> None:
    values = [1.0, 2.0, 3.0, 10.0, 20.0, 30.0, 100.0]
    # 7 values in 3 blocks: sizes 3, 2, 2, in order (not sorted first: a block is a moment of the run)
    assert block_percentiles(values, 3) == [2.0, 15.0, 65.0]
    assert block_percentiles(values, 1) == [10.0]
    with pytest.raises(ValueError):
        block_percentiles([1.0, 2.0], 3)


def test_architecture_latency_pairs_blocks_and_gives_ratios() -> None:
    direct = [1.0] * 6 + [2.0] * 6  # a slow second half of the run: every path felt it
    samples = {"direct": direct, "nginx": [v + 0.3 for v in direct], "xds": list(direct)}
    rows = {r.name: r for r in architecture_latency(samples, "direct", blocks=6)}
    assert rows["direct"].added is None and rows["direct"].x_p50 == 1.0
    nginx = rows["nginx"]
    assert nginx.added is not None
    # paired by block, the slow half cancels out: +300 us in every block, resolved
    assert nginx.added.interval.low == pytest.approx(300) and nginx.added.interval.high == pytest.approx(300)
    assert nginx.added.resolved
    assert nginx.x_p50 == pytest.approx(1.8 / 1.5)  # p50 over all calls: 1.5 ms direct, 1.8 ms nginx
    assert rows["xds"].added is not None and not rows["xds"].added.resolved  # identical: the interval is 0


def test_architecture_lines_show_ratios_losses_and_what_was_redone() -> None:
    latency = architecture_latency({"direct": [1.0, 1.0], "xds": [1.5, 1.5]}, "direct", blocks=2)
    changes = [ChangeCost("nginx", 400, {"join": 0, "graceful stop": 0, "kill": 1}, 0.2,
                                ["3 nginx reloads", "4 client connections"]),
               ChangeCost("xds", 410, {"join": 0, "graceful stop": 0, "kill": 0}, math.inf, ["4 EDS pushes"])]
    text = "\n".join(architecture_lines(ArchResult(latency, changes, 2, 2, 3.1)))
    assert "1.50" in text  # xds p50 ratio
    assert "0 / 0 / 1" in text and "never" in text and "3.10 s after its SIGKILL" in text
    assert "proxy: 3 nginx reloads; 4 client connections" in text
    assert "look-aside: 4 EDS pushes" in text


def test_quiet_echo_drops_per_call_lines_only() -> None:
    shown: list[str] = []
    say = quiet(shown.append)
    for line in ("server1  | 2026/12/03 06:59:29 receive a create-laptop request with id: abc",
                 "server1  | 2026/12/03 06:59:29 saved laptop with id: abc",
                 "fast1    | 2026/12/03 06:59:29 --> unary interceptor:  /techschool_pcbook.LaptopService/CreateLaptop",
                 "thick-client | 20 calls done: 20 OK",
                 "thick-client | call 281: UNAVAILABLE after 6.9 ms: Stream removed",
                 "sync     | 2026/12/03 06:59:39 upstream pcbook_services: 2 server(s) (a, b); nginx reloaded"):
        say(line)
    assert [line.split("|")[0].strip() for line in shown] == ["thick-client", "sync"]


def test_the_xds_path_balances_over_the_servers_of_client_rr() -> None:
    xds = next(t for t in HOP_PATHS if t.name == XDS)
    rr = next(t for t in HOP_PATHS if t.name == CLIENT_RR)
    assert xds.address == "xds:///pcbook" and xds.lb_policy is None  # the policy comes from the control plane
    assert rr.address == "ipv4:" + ",".join(XDS_SERVERS.values())
    compared = {(name, base) for name, base, _ in COMPARISONS}
    assert {(XDS, CLIENT_RR), (XDS, NGINX_PLAIN)} <= compared


class _SlowLoad:
    """A load generator whose rounds complete `per_round` calls each (how many fit depends on the machine)."""

    def __init__(self, per_round: int) -> None:
        self.per_round, self.rounds = per_round, 0

    def run(self, target: str, *, concurrency: int, window: float, warmup: float = 0.2) -> Round:
        self.rounds += 1
        return Round(target, concurrency, window, [], completed=self.per_round)


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="counts connections in Linux's /proc/net/tcp")
def test_connection_counting_runs_rounds_until_enough_calls() -> None:
    def count(load: _SlowLoad) -> dict[str, ConnectionCount]:
        return count_upstream_connections(load, {"path": 1}, lambda _line: None, min_calls=20)  # type: ignore[arg-type]

    slow, dead = _SlowLoad(8), _SlowLoad(0)
    assert count(slow) == {"path": ConnectionCount(0, 24, 3)} and slow.rounds == 3  # nothing listens on port 1
    assert count(dead) == {"path": ConnectionCount(0, 0, 1)} and dead.rounds == 1  # no call: more rounds would not help
