"""The evaluation's conversion-lift section: per seed, the lift figures against the truth
(lift_scores) and the lift-steered optimizer against the attributed one on true GMV at target; across
seeds, the pooled coverage, the holdout's cost and the issue's targets; and its text. Pure."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from stream_processors.optimizer.evaluation import lift_scores

# the run whose lift figures are scored against the truth: the one that steers by them
LIFT_SCORED_ON = "optimizer_lift"
TARGET_COVERAGE = 0.9
TARGET_WINS = 5  # of 6 seeds: the lift-steered mode's true GMV at target at least the attributed's

_STEER_FIGURES = ("gmv", "gmv_at_target", "spend", "roas", "in_band_after_20", "pacing_error")


def seed_lift(policies: Mapping[str, Mapping[str, Any]], holdout_share: float) -> dict[str, Any] | None:
    """One seed's lift section, from its runs (None when the lift-steered run has no lift block:
    no holdout)."""
    scored = policies.get(LIFT_SCORED_ON, {})
    block = scored.get("lift")
    if block is None or "optimizer" not in policies:
        return None
    opt, lift = policies["optimizer"], policies[LIFT_SCORED_ON]
    return {
        "holdout_share": holdout_share,
        "scored_on": LIFT_SCORED_ON,
        "coverage": block["coverage"],
        "holdout_cost": block["holdout_cost"],
        "campaign_days": block["campaign_days"],
        "steer": {
            "optimizer": {k: opt.get(k) for k in _STEER_FIGURES},
            "optimizer_lift": {k: lift.get(k) for k in _STEER_FIGURES},
            "gmv_at_target_vs_attributed": _ratio(lift["gmv_at_target"], opt["gmv_at_target"]),
            "gmv_vs_attributed": _ratio(lift["gmv"], opt["gmv"]),
            "calibration": lift.get("calibration"),
        },
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def summarize_lift(per_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, Any] | None:
    """Across seeds: per seed the two modes' true GMV at target and the coverage; pooled coverage
    and holdout cost; the targets (coverage >= 90% of campaign-days; the lift mode at least the
    attributed one on 5 of 6 seeds)."""
    blocks = {seed: r["lift"] for seed, r in per_seed.items() if r.get("lift")}
    if not blocks:
        return None
    rows = {
        str(seed): {
            "optimizer": b["steer"]["optimizer"]["gmv_at_target"],
            "optimizer_lift": b["steer"]["optimizer_lift"]["gmv_at_target"],
            "ratio": b["steer"]["gmv_at_target_vs_attributed"],
            "coverage": b["coverage"]["coverage"],
        }
        for seed, b in blocks.items()
    }
    wins = [int(s) for s, r in rows.items() if r["optimizer_lift"] >= r["optimizer"]]
    pooled = lift_scores.pooled(list(blocks.values()))
    need = math.ceil(TARGET_WINS / 6 * len(rows))
    cov = pooled["coverage"]["coverage"]
    return {
        "per_seed": rows,
        **pooled,
        "targets": {
            "coverage_ge_90pct": {"coverage": cov, "met": cov is not None and cov >= TARGET_COVERAGE},
            "lift_at_least_attributed": {
                "seeds_won": wins,
                "won": len(wins),
                "of": len(rows),
                "met": len(wins) >= need,
            },
        },
    }


def format_lift(summary: Mapping[str, Any]) -> str:
    """The lift section of the report: per seed, then pooled, then the targets."""
    share = summary["holdout_cost"]["holdout_share"]
    lines = [
        f"conversion lift (holdout share {share}): the lift-steered optimizer against the attributed one on "
        "true GMV at target (GMV x min(1, true efficiency / target)); the lift intervals' coverage of the "
        "true incremental GMV per campaign-day",
        f"{'seed':<8}{'attributed':>12}{'lift':>12}{'lift/attr':>10}{'coverage':>10}",
    ]
    for seed, r in summary["per_seed"].items():
        cov = "-" if r["coverage"] is None else f"{r['coverage']:.0%}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.4f}"
        lines.append(f"{seed:<8}{r['optimizer']:>12.0f}{r['optimizer_lift']:>12.0f}{ratio:>10}{cov:>10}")
    c, h, t = summary["coverage"], summary["holdout_cost"], summary["targets"]
    width = "-" if c["width_vs_truth"] is None else f"{c['width_vs_truth']:.0%}"
    pooled_width = "-" if c["pooled_width_vs_truth"] is None else f"{c['pooled_width_vs_truth']:.0%}"
    lost_share = "-" if h["share_of_gmv"] is None else f"{h['share_of_gmv']:.1%}"
    cov_t, win_t = t["coverage_ge_90pct"], t["lift_at_least_attributed"]
    return "\n".join(
        [
            *lines,
            f"95% intervals cover the truth on {c['covered']} of {c['campaign_days']} campaign-days "
            f"({'-' if c['coverage'] is None else format(c['coverage'], '.1%')}, target >= 90%: "
            f"{'met' if cov_t['met'] else 'NOT met'}); width {width} of the truth (mean), {pooled_width} pooled",
            f"lift-steered at least the attributed mode on {win_t['won']} of {win_t['of']} seeds "
            f"({'met' if win_t['met'] else 'NOT met'})",
            f"holdout cost: the held-out users would have bought {h['gmv_lost']:.0f} of caused GMV "
            f"({lost_share} of the GMV with it; projected at the exposed users' rate)",
        ]
    )
