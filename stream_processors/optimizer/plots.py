"""Charts of an evaluation (`seedloop evaluate --plots DIR`): bids, efficiency and spend per campaign.

Built as matplotlib figures first (returned, so tests can read their axes) and written as PNG
afterwards. What a reader needs from them: axes labelled with units and the currency, ROAS and
CPA campaigns on separate axes (one column each: their scales and their "better" directions
differ), the static bids and the oracle drawn beside the optimizer, and the shock round marked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from producers.scenario import Campaign, Scenario

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

WHATS = ("bids", "efficiency", "spend")
# One colour per channel in every chart: the shared legend then names each line's channel.
CHANNEL_COLOURS = {"kol": "tab:blue", "brand": "tab:orange", "feed": "tab:green", "search": "tab:purple"}
SHOCK_LABEL = "shock"


def _hours(n: int, round_s: float) -> list[float]:
    return [round_s / 3600.0 * (i + 1) for i in range(n)]


def _grid(campaigns: Sequence[Campaign]) -> tuple[list[Campaign | None], list[Campaign | None]]:
    """ROAS campaigns in the left column, CPA campaigns in the right one, padded to equal length."""
    roas = [c for c in campaigns if c.target_kind == "roas"]
    cpa = [c for c in campaigns if c.target_kind == "cpa"]
    rows = max(len(roas), len(cpa), 1)
    return [*roas, *[None] * (rows - len(roas))], [*cpa, *[None] * (rows - len(cpa))]


def _mark_shock(ax: Axes, at_h: float, shocked: bool, text: str) -> None:
    ax.axvline(at_h, color="red", lw=1.2 if shocked else 0.8, ls=":", label=SHOCK_LABEL)
    if shocked:
        ax.annotate(
            text,
            xy=(at_h, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -10),
            textcoords="offset points",
            color="red",
            fontsize=7,
        )


def evaluation_figures(
    runs: Mapping[str, Mapping[str, Any]],
    scenario: Scenario,
    round_s: float,
    shock_campaign: str,
    shock_multiplier: float,
) -> dict[str, Figure]:
    """{"optimizer_bids": Figure, "shock_efficiency": Figure, ...}: for the optimizer's run and the
    shocked one, each campaign's bids, true efficiency and spend against the plan. `runs` holds
    "optimizer", "static", "oracle", "shock" (the optimizer under the shock) and, when present,
    "static_shock"."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ccy = scenario.fx.base
    figures: dict[str, Figure] = {}
    for name in ("optimizer", "shock"):
        run = runs[name]
        shock_round = run.get("shock_round")
        # What the optimizer is compared with: the same market without control (static) and with
        # perfect knowledge (oracle); under the shock only static saw the same shock.
        others = (
            {"static": runs.get("static"), "oracle": runs.get("oracle")}
            if name == "optimizer"
            else {"static (shocked)": runs.get("static_shock")}
        )
        left, right = _grid(scenario.campaigns)
        rows = len(left)
        for what in WHATS:
            fig, axes = plt.subplots(rows, 2, figsize=(13, 2.3 * rows + 1.2), sharex=True, squeeze=False)
            for row in range(rows):
                for col, c in enumerate((left[row], right[row])):
                    ax = axes[row][col]
                    if c is None:
                        ax.set_visible(False)
                        continue
                    _campaign_axes(ax, what, c, run, others, round_s, ccy)
                    if shock_round is not None:
                        at_h = shock_round * round_s / 3600.0
                        shocked = c.campaign_id == shock_campaign
                        _mark_shock(ax, at_h, shocked, f"conversion rate x{shock_multiplier:g}")
                    if row == rows - 1 or (row + 1 < rows and (left, right)[col][row + 1] is None):
                        ax.set_xlabel("simulated hours")
                        ax.tick_params(labelbottom=True)
            axes[0][0].set_title("ROAS campaigns\n" + axes[0][0].get_title(), fontsize=9)
            axes[0][1].set_title("CPA campaigns\n" + axes[0][1].get_title(), fontsize=9)
            handles, labels = [], []
            for ax in axes.flat:
                for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
                    if label not in labels:
                        handles.append(h)
                        labels.append(label)
            # Below the charts: the heading keeps the top, and no chart's lines are hidden.
            fig.legend(handles, labels, loc="lower center", fontsize=8, ncol=min(len(labels), 6))
            heading = {
                "optimizer": "optimizer vs static bids and the oracle",
                "shock": f"optimizer under a shock: {shock_campaign} conversion rate x{shock_multiplier:g}"
                + (f" at round {shock_round}" if shock_round is not None else ""),
            }[name]
            fig.suptitle(f"{heading}\n{_WHAT_TITLE[what].format(ccy=ccy)}", x=0.01, ha="left", fontsize=11)
            fig.tight_layout(rect=(0, 0.04, 1, 0.955))
            figures[f"{name}_{what}"] = fig
    return figures


_WHAT_TITLE = {
    "bids": "CPM bid per channel ({ccy})",
    "efficiency": "true efficiency of the bids (ROAS = GMV / spend; CPA in {ccy} per checkout, lower is better)",
    "spend": "spend today against the pacing plan ({ccy})",
}


def _campaign_axes(
    ax: Axes,
    what: str,
    c: Campaign,
    run: Mapping[str, Any],
    others: Mapping[str, Mapping[str, Any] | None],
    round_s: float,
    ccy: str,
) -> None:
    tr = run["trace"][c.campaign_id]
    x = _hours(len(tr["eff"]), round_s)
    if what == "bids":
        for ch in c.channels:
            colour = CHANNEL_COLOURS.get(ch, "black")
            ax.plot(x, [b[ch] for b in tr["bids"]], color=colour, label=f"optimizer: {ch}")
            oracle = others.get("oracle")
            if oracle is not None:
                ob = oracle["trace"][c.campaign_id]["bids"]
                ax.plot(x, [b[ch] for b in ob], ls="--", lw=0.9, color=colour, label=f"oracle: {ch}")
            ax.axhline(c.channels[ch], color=colour, lw=0.7, ls=":", label=f"static: {ch}")
        ax.set_ylabel(f"CPM bid ({ccy})")
    elif what == "efficiency":
        kind = c.target_kind.upper()
        ax.plot(x, tr["eff"], lw=1.6, label="optimizer")
        for label, other in others.items():
            if other is not None:
                ax.plot(x, other["trace"][c.campaign_id]["eff"], lw=0.9, ls="--", label=label)
        ax.axhline(c.target, color="grey", lw=0.8, label="target")
        ax.set_ylabel("ROAS (GMV / spend)" if kind == "ROAS" else f"CPA ({ccy} / checkout)")
    else:
        ax.plot(x, tr["spent"], label="optimizer: spend today")
        static = others.get("static") or others.get("static (shocked)")
        if static is not None:
            ax.plot(x, static["trace"][c.campaign_id]["spent"], lw=0.9, ls="--", label="static: spend today")
        ax.plot(x, tr["plan"], ls=":", color="black", lw=0.9, label="plan")
        ax.axhline(c.daily_budget, color="grey", lw=0.8, label="daily budget")
        ax.set_ylabel(f"spend ({ccy})")
    ax.set_title(f"{c.campaign_id} ({c.target_kind.upper()} target {c.target:g})", fontsize=9)


def write_plots(
    plots_dir: Path,
    runs: Mapping[str, Mapping[str, Any]],
    scenario: Scenario,
    round_s: float,
    shock_campaign: str,
    shock_multiplier: float,
) -> list[Path]:
    """The figures as `<plots_dir>/<run>_<what>.png`; returns the files written."""
    import matplotlib.pyplot as plt

    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for key, fig in evaluation_figures(runs, scenario, round_s, shock_campaign, shock_multiplier).items():
        path = plots_dir / f"{key}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written
