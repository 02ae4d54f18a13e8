"""The notebooks' charts read right: whole-number ticks for counts, titles that name the client's policy,
legends beside (not over) the data, and tables with one unit per column."""

from __future__ import annotations

import re
from typing import Any
from unittest import mock

import matplotlib
import pytest

matplotlib.use("Agg")

from pcbook.stage.results import Call, Calls, Counts, HopRun, Phases, Rounds, ScaleRun  # noqa: E402
from pcbook.workbook import manifest, notebook  # noqa: E402
from pcbook.workbook.runner import Outcome  # noqa: E402


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    shown: list[Any] = []

    def keep(fig: Any) -> None:
        fig.tight_layout()
        fig.canvas.draw()
        shown.append(fig)

    monkeypatch.setattr(notebook, "_finish", keep)
    return shown


def _outcome(title: str, result: object) -> Outcome:
    return Outcome(re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-"), title, "why", False, [], result=result)


def _calls(codes: list[str], servers: tuple[str, ...] = ("server1", "server2")) -> Calls:
    return Calls(tuple(Call(i, code, start=0.1 * i, servers=(servers[i % len(servers)],))
                       for i, code in enumerate(codes, 1)), servers)


def _integers(ticks: list[float]) -> bool:
    return bool(ticks) and all(float(t).is_integer() for t in ticks)


def _legends_clear_of_the_axes(fig: Any) -> None:
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None:
            continue
        box, area = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert box.x0 >= area.x1 or box.y1 <= area.y0, "the legend sits on the data"


def _ran(step_number: int, outcome: Outcome) -> Outcome:
    """What Session.step() records for lesson 7's step: the policy its client ran with."""
    step = manifest.get(7).steps[step_number - 1]
    if (policy := notebook._policy_of(step)) is not None:
        notebook._POLICIES[outcome.key] = policy
    return outcome


def test_calls_per_server_names_the_policy_and_counts_in_whole_calls(figures: list[Any]) -> None:
    step1 = _ran(1, _outcome("pick_first step", _calls(["OK"] * 3, ("server1",))))
    notebook.plot_calls(step1)
    ax = figures[-1].axes[-1]
    assert ax.get_title() == "calls per server (pick_first)"
    assert _integers(list(ax.get_yticks()))


def test_phases_chart_names_health_checking_and_keeps_its_legend_beside_the_bars(figures: list[Any]) -> None:
    phases = {"serving": Counts({"server1": 5, "server2": 5}), "not serving": Counts({"server1": 4, "server2": 0}),
              "serving again": Counts({"server1": 3, "server2": 2})}
    step3 = _ran(3, _outcome("health step", Phases(_calls(["OK"] * 19), phases, {})))
    notebook.plot_calls(step3)
    ax = figures[-1].axes[-1]
    assert ax.get_title() == "calls per server (round_robin with health checking)"
    assert _integers(list(ax.get_yticks()))
    _legends_clear_of_the_axes(figures[-1])


def test_codes_and_timeline_keep_legends_off_the_data(figures: list[Any]) -> None:
    ten = _outcome("10 connections", _calls(["OK"] * 5 + ["UNKNOWN"] * 31 + ["UNAVAILABLE"] * 12))
    enough = _outcome("1024 connections", _calls(["OK"] * 48))
    notebook.plot_codes(ten, enough)
    assert _integers(list(figures[-1].axes[0].get_xticks()))
    _legends_clear_of_the_axes(figures[-1])
    step4 = _ran(4, _outcome("kill step", _calls(["OK", "UNAVAILABLE", "OK", "OK"] * 3)))
    notebook.plot_timeline(step4)
    assert figures[-1].axes[0].get_title().endswith("(round_robin)")
    _legends_clear_of_the_axes(figures[-1])


def test_bench_table_has_one_unit_per_column(monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[str] = []
    monkeypatch.setattr(notebook, "_display", shown.append)
    hop = HopRun(Rounds("ms", {"direct": [0.41, 0.40], "nginx": [0.52, 0.50]}, 1.27), mock.sentinel.evidence)
    scale = ScaleRun(Rounds("calls/s", {"1 server": [190.0, 195.0], "2 servers": [380.0, 379.0]}, 1.97),
                     mock.sentinel.evidence, {}, {})
    notebook.bench_table(_outcome("hop", hop), _outcome("scale", scale))
    header = shown[-1].splitlines()[0].strip("| ").split(" | ")
    assert header == ["round", "direct: ms", "nginx: ms", "1 server: calls/s", "2 servers: calls/s"]
    assert shown[-1].splitlines()[2].strip("| ").split(" | ") == ["1", "0.410", "0.520", "190", "380"]
