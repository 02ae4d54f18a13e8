"""The bench's chart (bench.png), drawn from results.json's numbers."""

from __future__ import annotations

from pathlib import Path

from pcbook.bench.settings import DIRECT


def draw_chart(results: dict[str, object], png: Path) -> None:
    """Two panels: the p50 each path adds to direct's, with its interval; scale-out throughput."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hop = results["hop"]
    scale = results["scale"]
    info = results["machine"]
    assert isinstance(hop, dict) and isinstance(scale, dict) and isinstance(info, dict)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})

    names = [n for n in hop if hop[n].get("added_us")]
    labels = [hop[n]["label"] for n in names]
    added = [hop[n]["added_us"]["median"] for n in names]
    err = [[hop[n]["added_us"]["median"] - hop[n]["added_us"]["low"] for n in names],
           [hop[n]["added_us"]["high"] - hop[n]["added_us"]["median"] for n in names]]
    ys = list(range(len(names)))[::-1]
    colors = ["#2a9d8f" if hop[n]["added_us"]["resolved"] else "#c9c9c9" for n in names]
    left.barh(ys, added, xerr=err, color=colors, capsize=3)
    left.axvline(0, color="black", lw=0.8)
    for y, n, v in zip(ys, names, added, strict=True):
        tag = "" if hop[n]["added_us"]["resolved"] else " not resolved"
        left.text(v, y + 0.3, f" {v:+.0f} us{tag}", va="center", fontsize=8)
    left.set_yticks(ys, labels)
    direct = hop.get(DIRECT, {}).get("p50_ms", {}).get("median", 0)
    left.set_xlabel(f"p50 added to direct's ({direct:.3f} ms), microseconds; whiskers: 95% interval; "
                    "grey: not resolved", fontsize=8)
    left.set_title("The cost of the hop (one call in flight)")

    snames = list(scale)
    tput = [scale[n]["median"] for n in snames]
    serr = [[scale[n]["median"] - scale[n]["low"] for n in snames],
            [scale[n]["high"] - scale[n]["median"] for n in snames]]
    xs = range(len(snames))
    right.bar(xs, tput, yerr=serr, color=["#8d99ae", "#b8c0cc", "#2a9d8f", "#264653"][: len(snames)], capsize=3)
    base = tput[0] if tput else 0
    for x, v in zip(xs, tput, strict=True):
        right.text(x, v, f"{v:.0f}\n{v / base:.2f}x" if base else f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    capacity = results.get("capacity_per_server")
    if isinstance(capacity, int | float) and capacity:
        right.axhline(capacity, color="grey", ls=":", lw=1, label="capacity of 1 server")
        right.axhline(2 * capacity, color="grey", ls="--", lw=1, label="capacity of 2 servers")
        right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8, frameon=False)
    right.set_xticks(list(xs), [n.replace(", ", ",\n") for n in snames], fontsize=8)
    right.set_ylabel("calls/s at saturation")
    right.set_title("The gain of scale-out\n(capacity simulated: sleeping workers)", fontsize=10)
    right.set_ylim(0, max(tput + [2 * capacity if isinstance(capacity, int | float) else 0]) * 1.25)

    # Two lines: the machine and versions, then the placement (one line was wider than the figure).
    title = (f"{str(info.get('date', ''))[:10]} · {info.get('cores')} cores · {info.get('cpu', '')} · "
             f"nginx {info.get('nginx')} · HAProxy {info.get('haproxy', '?')} · "
             f"Envoy {info.get('envoy', '?')} · grpcio {info.get('grpcio')}\n"
             f"{info.get('placement', '')}")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
