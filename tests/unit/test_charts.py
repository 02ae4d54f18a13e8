"""The notebooks' charts read right: whole-number ticks for counts, titles that name the policy,
legends beside (not over) the data, and tables with one unit per column."""

from __future__ import annotations

from typing import Any

import matplotlib
import pytest

matplotlib.use("Agg")

from pcbook.workbook import notebook  # noqa: E402
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


def _outcome(**data: Any) -> Outcome:
    return Outcome("a step", "why", False, [], data=data)


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


def test_calls_per_server_names_the_policy_and_counts_in_whole_calls(figures: list[Any]) -> None:
    notebook.plot_calls(_outcome(policy="pick_first", calls_per_server={"server1": 3, "server2": 0}))
    ax = figures[-1].axes[-1]
    assert ax.get_title() == "calls per server (pick_first)"
    assert _integers(list(ax.get_yticks()))


def test_phases_chart_has_its_legend_beside_the_bars(figures: list[Any]) -> None:
    counts = {"serving": {"server1": 5, "server2": 5}, "not serving": {"server1": 4, "server2": 0},
              "serving again": {"server1": 3, "server2": 2}}
    notebook.plot_calls(_outcome(policy="round_robin with health checking", calls_per_server=counts))
    ax = figures[-1].axes[-1]
    assert "round_robin with health checking" in ax.get_title()
    assert _integers(list(ax.get_yticks()))
    _legends_clear_of_the_axes(figures[-1])


def test_codes_and_timeline_keep_legends_off_the_data(figures: list[Any]) -> None:
    notebook.plot_codes(_outcome(codes={"OK": 5, "UNKNOWN": 31, "UNAVAILABLE": 12}),
                        _outcome(codes={"OK": 48}), labels=["10 connections", "1024 connections"])
    assert _integers(list(figures[-1].axes[0].get_xticks()))
    _legends_clear_of_the_axes(figures[-1])
    calls = [{"call": i, "t_ms": 10.0 * i, "code": "OK" if i % 3 else "UNAVAILABLE", "server": "server1"}
             for i in range(12)]
    notebook.plot_timeline(_outcome(policy="round_robin", calls=calls))
    assert figures[-1].axes[0].get_title().endswith("(round_robin)")
    _legends_clear_of_the_axes(figures[-1])


def test_bench_table_has_one_unit_per_column(monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[str] = []
    monkeypatch.setattr(notebook, "_display", shown.append)
    hop = _outcome(p50_ms={"direct": [0.41, 0.40], "nginx": [0.52, 0.50]})
    scale = _outcome(calls_per_s={"1 server": [190.0, 195.0], "2 servers": [380.0, 379.0]})
    notebook.bench_table([hop, scale])
    header = shown[-1].splitlines()[0].strip("| ").split(" | ")
    assert header[0] == "repetition"
    for head in header[1:]:
        assert head.endswith((": p50 ms", ": calls/s")), head
        assert not ("ms" in head and "calls/s" in head)
