"""Resolution (intervals, balanced orders, queueing), placement plans and lesson 7/10 verdicts: pure functions."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from pcbook.measure import placement, verdicts
from pcbook.measure.stats import balanced_orders, median_interval, paired_difference, queued_calls


def test_median_interval_coverage_is_exact_and_grows_with_n() -> None:
    three = median_interval([3.0, 1.0, 2.0])
    assert (three.low, three.median, three.high) == (1.0, 2.0, 3.0) and three.coverage == pytest.approx(0.75)
    six = median_interval(list(range(6)))
    assert (six.low, six.high) == (0, 5) and six.coverage == pytest.approx(1 - 2 / 64)
    hundred = median_interval(list(range(100)))
    assert 0.95 <= hundred.coverage < 0.97 and (hundred.low, hundred.high) == (39, 60)
    with pytest.raises(ValueError):
        median_interval([])


def test_a_difference_is_resolved_only_when_the_interval_excludes_zero_at_the_level() -> None:
    slower = paired_difference("nginx", [5, 6, 7, 6, 5, 6], "direct", [1, 1, 2, 1, 1, 1])
    assert slower.resolved and slower.state() == "slower"
    mixed = paired_difference("rr", [1, 2, 1, 2, 1, 2], "direct", [2, 1, 2, 1, 2, 1])
    assert not mixed.resolved and mixed.state() == "not resolved"
    few = paired_difference("nginx", [5, 6, 7], "direct", [1, 1, 1])  # always slower, but 3 reps: 75 %
    assert not few.resolved and "3 reps" in few.state()
    faster = paired_difference("x", [1] * 6, "direct", [2] * 6)
    assert faster.resolved and faster.state() == "faster"
    with pytest.raises(ValueError):
        paired_difference("a", [1, 2], "b", [1])


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_balanced_orders_make_every_path_follow_every_other_equally(n: int) -> None:
    names = [chr(ord("a") + i) for i in range(n)]
    rows = 2 * n if n % 2 else n
    orders = balanced_orders(names, rows)
    assert all(sorted(o) == names for o in orders)
    follows = Counter(pair for o in orders for pair in itertools.pairwise(o))
    assert set(follows) == {(a, b) for a in names for b in names if a != b}
    assert len(set(follows.values())) == 1  # the same count for every ordered pair
    assert Counter(o[0] for o in orders)[names[0]] == rows // n  # and each path opens a round equally


def test_queued_calls_follow_littles_law() -> None:
    # 180 calls/s, 175 ms in the system, 20 ms of it served: 27.9 calls waiting on average
    assert queued_calls(180, 0.175, 0.020) == pytest.approx(27.9)
    assert queued_calls(50, 0.020, 0.021) == 0.0


def test_placement_plan() -> None:
    assert not placement.plan(None).pinned and "sched_setaffinity" in placement.plan(None).note
    assert not placement.plan(frozenset({0})).pinned
    assert not placement.plan(frozenset({0, 1}), free=True).pinned
    two = placement.plan(frozenset({0, 1}))
    assert two.of(placement.SERVERS) == {0} and two.of(placement.LOADGEN) == two.of(placement.NGINX) == {1}
    four = placement.plan(frozenset({0, 1, 2, 3}))
    assert (four.of(placement.SERVERS), four.of(placement.NGINX), four.of(placement.LOADGEN)) == ({0}, {1}, {2, 3})
    assert "servers on core 0" in four.describe()


def _added(values: list[float]) -> verdicts.Difference:
    return paired_difference("nginx", values, "direct", [0.0] * len(values))


def test_judge_hop_counts_calls_not_time() -> None:
    faster = _added([-50.0] * 6)  # nginx measured faster: shown, never a failure by itself
    assert verdicts.judge_hop(verdicts.HopEvidence(8101, 200, 200, 300, faster)) == []
    assert "resolved the other way" in verdicts.hop_reading(faster)
    assert "not resolved" in verdicts.hop_reading(_added([-5.0, 5.0] * 3))
    assert "adds about" in verdicts.hop_reading(_added([300.0] * 6))
    [more] = verdicts.judge_hop(verdicts.HopEvidence(8101, 200, 500, 300, faster))
    assert "calls of another path" in more
    [fewer] = verdicts.judge_hop(verdicts.HopEvidence(8101, 200, 150, 300, faster))
    assert "150" in fewer and "200" in fewer
    assert verdicts.judge_hop(verdicts.HopEvidence(8101, 0, 0, 300, faster))


def test_judge_keepalive() -> None:
    C = verdicts.ConnectionCount
    assert verdicts.judge_keepalive(C(1, 200), C(100, 100)) == []
    assert verdicts.judge_keepalive(C(0, 200), C(95, 100)) == []  # a reused TIME_WAIT port or five
    assert "reuse one backend connection" in verdicts.judge_keepalive(C(5, 200), C(100, 100))[0]
    assert "one backend connection per call" in verdicts.judge_keepalive(C(1, 200), C(1, 100))[0]
    assert "too few calls" in verdicts.judge_keepalive(C(0, 5), C(5, 5))[0]
    assert "one backend connection per call" in verdicts.judge_keepalive(C(1, 200), C(30, 27, rounds=5))[0]


def test_judge_scale() -> None:
    def ev(one: float, two: float, waiting: float, served: dict[str, int]) -> verdicts.ScaleEvidence:
        return verdicts.ScaleEvidence([one, one], [two, two], waiting, served, 200)

    assert verdicts.judge_scale(ev(180, 360, 27, {"server1": 400, "server2": 400})) == []
    wrong = verdicts.judge_scale(ev(180, 182, 27, {"server1": 800, "server2": 0}))
    assert any("server2 served no call through nginx" in d for d in wrong)
    assert any("at least 1.4x" in d for d in wrong)
    [unsaturated] = verdicts.judge_scale(ev(50, 60, 0.2, {"server1": 100, "server2": 100}))
    assert "not saturated" in unsaturated


def test_interleaved_differences_for_lesson_7() -> None:
    samples = {"direct": [1.0, 1.1, 0.9] * 10, "nginx": [1.4, 1.5, 1.3] * 10, "client-side": [1.1, 1.0, 0.9] * 10}
    d = verdicts.interleaved_differences(samples)
    assert d["nginx"].resolved and d["nginx"].interval.median == pytest.approx(400)
    assert not d["client-side"].resolved
    assert "not resolved" in verdicts.client_side_reading(d["client-side"])


def test_an_interval_touching_zero_is_not_resolved() -> None:
    # A bound of -0.3 us is printed "+0": the run cannot tell the two paths apart (seen: "-17 [-35, +0]
    # resolved: faster" in phase 3 of a bench run).
    touching = paired_difference("thick", [83, 65, 80, 90, 83, 99.7], "direct", [100] * 6)
    assert touching.short() == "-17 [-35, +0]"
    assert not touching.resolved and touching.state() == "not resolved"
    assert "not resolved" in touching.verdict()
    at_zero = paired_difference("x", [1, 2, 3, 4, 5, 0], "direct", [0] * 6)  # the lower bound is exactly 0
    assert not at_zero.resolved and at_zero.state() == "not resolved"
    clear = paired_difference("x", [1, 2, 3, 4, 5, 0.6], "direct", [0] * 6)  # +0.6 is printed +1
    assert clear.short() == "+2 [+1, +5]" and clear.resolved and clear.state() == "slower"
    assert touching.interval.width == pytest.approx(34.7)
