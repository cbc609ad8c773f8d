"""Conversion lift scored against causal truth: per campaign-day cohort of first exposures, the
stream's 95% interval of incremental GMV (stream_processors.lift, from the figures the engine
stored in the run) against the GMV the campaign's real views truly caused in that cohort's exposed
users within the lift window (producers.ground_truth.true_incremental_gmv); and the holdout's cost.
Pure: from stored fields and the simulator's ground truth.

Coverage is the share of campaign-days whose interval holds the truth: a 95% interval should hold
it about 95% of the time, and it can fall short where the normal approximation does (a few buyers
with large orders in a small held-out group). Width is relative to the truth: an interval of
+-100% covers easily and steers nothing.

The holdout's cost: the held-out users are a share h of the campaign's users, so had they seen the
ads they would have bought about h / (1 - h) times what the exposed users' ads caused. That GMV is
lost, unless a budget-bound campaign spends what the ghosts did not cost on other users (the
evaluation's runs at different shares measure what is really lost)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from producers.ground_truth import GroundTruth, true_incremental_gmv
from stream_processors.figures import MINOR
from stream_processors.lift import lift_estimates
from stream_processors.optimizer.evaluation.config import DAY_S

ReadFields = Callable[[float, float], Mapping[str, int]]


def campaign_days(
    read_fields: ReadFields,
    truth: GroundTruth,
    campaigns: Iterable[str],
    *,
    start: float,
    end: float,
    bucket_s: int,
    lift_window_s: float,
    confidence: float = 0.95,
) -> list[dict[str, Any]]:
    """One row per campaign and day of [start, end) that has an estimate: the estimate and its
    interval (GMV in major units of the base currency), the truth, whether it is covered."""
    truth_by_day: dict[tuple[str, float], int] = defaultdict(int)
    for (cid, bucket), gmv in true_incremental_gmv(truth, bucket_s, lift_window_s, end).items():
        truth_by_day[(cid, math.floor(bucket / DAY_S) * DAY_S)] += gmv
    ids = list(campaigns)
    rows: list[dict[str, Any]] = []
    day = math.floor(start / DAY_S) * DAY_S
    while day < end:
        estimates = lift_estimates(read_fields(day, day + DAY_S), {}, confidence)
        for cid in ids:
            est = estimates.get(cid)
            if est is None:
                continue
            true = truth_by_day.get((cid, day), 0) / MINOR
            lo, hi = (v / MINOR for v in est.incremental_gmv_ci)
            rows.append(
                {
                    "campaign_id": cid,
                    "day": int(day),
                    "exposed_users": est.exposed.users,
                    "held_out_users": est.held_out.users,
                    "estimate": round(est.incremental_gmv_minor / MINOR, 2),
                    "ci": [round(lo, 2), round(hi, 2)],
                    "true": round(true, 2),
                    "covered": lo <= true <= hi,
                }
            )
        day += DAY_S
    return rows


def coverage(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Share of campaign-days covered; interval width relative to the truth, the mean over
    campaign-days with a positive truth and pooled (sum of widths over sum of truths)."""
    if not rows:
        return {
            "campaign_days": 0,
            "covered": 0,
            "coverage": None,
            "width_vs_truth": None,
            "pooled_width_vs_truth": None,
        }
    covered = sum(1 for r in rows if r["covered"])
    widths = [(r["ci"][1] - r["ci"][0], r["true"]) for r in rows]
    relative = [w / t for w, t in widths if t > 0]
    total_true = math.fsum(t for _, t in widths)
    return {
        "campaign_days": len(rows),
        "covered": covered,
        "coverage": round(covered / len(rows), 4),
        "width_vs_truth": round(math.fsum(relative) / len(relative), 4) if relative else None,
        "pooled_width_vs_truth": round(math.fsum(w for w, _ in widths) / total_true, 4)
        if total_true > 0
        else None,
    }


def holdout_cost(truth: GroundTruth, share: float) -> dict[str, Any]:
    """The GMV the held-out users would have bought had they seen the ads: h / (1 - h) times what the
    exposed users' ads caused (the caused GMV, base currency), and its share of the GMV with it."""
    caused = sum(truth.caused_gmv_minor.values()) / MINOR
    return _cost(share, caused, caused * share / (1.0 - share) if share < 1.0 else 0.0)


def _cost(share: float | None, caused: float, lost: float) -> dict[str, Any]:
    return {
        "holdout_share": share,
        "caused_gmv": round(caused, 2),
        "gmv_lost": round(lost, 2),
        "share_of_gmv": round(lost / (caused + lost), 4) if caused + lost > 0 else None,
    }


def lift_report(
    read_fields: ReadFields,
    truth: GroundTruth,
    campaigns: Iterable[str],
    *,
    start: float,
    end: float,
    bucket_s: int,
    lift_window_s: float,
    share: float,
) -> dict[str, Any]:
    """A run's lift block: its campaign-days, their coverage and the holdout's cost."""
    rows = campaign_days(
        read_fields, truth, campaigns, start=start, end=end, bucket_s=bucket_s, lift_window_s=lift_window_s
    )
    return {"coverage": coverage(rows), "holdout_cost": holdout_cost(truth, share), "campaign_days": rows}


def pooled(blocks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Coverage over the campaign-days of several runs (seeds), and the holdout's cost summed."""
    rows = [r for b in blocks for r in b["campaign_days"]]
    caused = math.fsum(b["holdout_cost"]["caused_gmv"] for b in blocks)
    lost = math.fsum(b["holdout_cost"]["gmv_lost"] for b in blocks)
    shares = {b["holdout_cost"]["holdout_share"] for b in blocks}
    return {
        "coverage": coverage(rows),
        "holdout_cost": _cost(shares.pop() if len(shares) == 1 else None, caused, lost),
    }
