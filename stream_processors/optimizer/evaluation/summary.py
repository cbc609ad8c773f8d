"""Across seeds: the optimizer's headline figures per seed, and their median and worst."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stream_processors.optimizer import scorecard
from stream_processors.optimizer.evaluation import attribution_truth
from stream_processors.optimizer.evaluation.lift_summary import summarize_lift


def seed_row(result: Mapping[str, Any]) -> dict[str, Any]:
    """The optimizer's headline figures of one seed's evaluation."""
    opt = result["policies"]["optimizer"]
    return {
        "gmv_vs_oracle": result["comparison"]["optimizer_gmv_vs_oracle"],
        "gmv_vs_static": result["comparison"]["optimizer_gmv_vs_static"],
        "settle_rounds": opt["settle_rounds"],
        "settle_by_campaign": {c["campaign_id"]: c["settle_rounds"] for c in opt["campaigns"]},
        "pacing_error": opt["pacing_error"],
        "in_band_after_20": opt.get("in_band_after_20"),
        "settle_after_shock": result["shock"]["settle_rounds_after_shock"],
    }


def summarize(per_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Per seed, the optimizer's headline figures; across seeds, their median and worst. A settle
    of None (never settled) counts as worse than any number of rounds."""
    rows = {seed: seed_row(r) for seed, r in per_seed.items()}

    def stats(key: str, higher_is_better: bool, never_is_worst: bool = False) -> dict[str, Any]:
        ranked = scorecard.rank_best_first([r[key] for r in rows.values()], higher_is_better, never_is_worst)
        if not ranked:
            return {"median": None, "worst": None}
        return {"median": _median(ranked), "worst": ranked[-1]}

    return {
        "seeds": [int(s) for s in rows],
        "per_seed": {str(s): r for s, r in rows.items()},
        "gmv_vs_oracle": stats("gmv_vs_oracle", True),
        "gmv_vs_static": stats("gmv_vs_static", True),
        "settle_rounds": stats("settle_rounds", False, never_is_worst=True),
        "pacing_error": stats("pacing_error", False),
        "in_band_after_20": stats("in_band_after_20", True),
        "settle_after_shock": stats("settle_after_shock", False, never_is_worst=True),
        # an expectation from the traffic model: the same for every seed
        "evidence": next(iter(per_seed.values()))["evidence"],
        # every policy on every figure, and the targets (scorecard.py)
        "field": scorecard.policy_summary(per_seed),
        # every attribution model against the GMV each campaign's ads truly caused, all seeds pooled
        "attribution_vs_truth": attribution_truth.pooled(
            [r["attribution_vs_truth"] for r in per_seed.values() if "attribution_vs_truth" in r]
        ),
        # the lift figures against the truth and the lift-steered optimizer, all seeds (lift_summary)
        "lift": summarize_lift(per_seed),
    }


def _median(ranked: Sequence[Any]) -> Any:
    """The median of values ranked best first; None (never) when the middle is None."""
    n = len(ranked)
    mid = ranked[(n - 1) // 2], ranked[n // 2]
    if any(v is None for v in mid):
        return None
    return mid[0] if n % 2 else round((mid[0] + mid[1]) / 2, 4)
