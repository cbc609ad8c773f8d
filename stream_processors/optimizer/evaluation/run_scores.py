"""A run's figures, scored by the truth: per campaign the true spend and GMV (what the simulator
knows its ads caused), settling and in-band share of the true efficiency, and pacing against the
plan; and the run's totals. Pure: from the run's trace and the simulator's ground truth."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from producers.scenario import Campaign, Scenario
from producers.simulator import GroundTruth
from stream_processors.optimizer.evaluation.config import DAY_S, EvalConfig
from stream_processors.optimizer.evaluation.settling import IN_BAND_FROM_ROUND, in_band_share, settle

# per round: "eff" true efficiency of the bids in force, "ref" its reference, "spent" spend so far
# today, "plan" the plan's spend by then, "bids" the bids per channel
Trace = dict[str, list[Any]]
# campaign -> (the oracle's bids, their efficiency, budget-bound?)
Oracle = Mapping[str, tuple[dict[str, float], float, bool]]


def pacing_errors(tr: Trace, c: Campaign, budget_bound: bool, rounds_per_day: int) -> tuple[float, float]:
    """The worst spend-against-plan error as a share of the daily budget: from the second day on
    (the first day's is the start, not the pacing), and over the whole run. Underspend counts only
    where the budget binds: elsewhere spending less than the plan is the target's doing."""
    errs = []
    for i, (s, p) in enumerate(zip(tr["spent"], tr["plan"], strict=True)):
        over = (s - p) / c.daily_budget
        errs.append((i, max(over, -over if budget_bound else 0.0)))
    later = [e for i, e in errs if i >= rounds_per_day] or [e for _, e in errs]
    return max(later), max(e for _, e in errs)


def gmv_at_target(c: Campaign, spend: float, gmv: float, checkouts: int) -> float:
    """The true GMV the campaign's target allows: all of it where its true efficiency over the run
    meets the target, else that GMV times the efficiency's ratio to the target (a ROAS of 0.8 x the
    target keeps 80%). To first order that is the GMV less the excess spend valued at the target
    (GMV - T * (spend - GMV / T) for a ROAS target T): a controller cannot buy GMV above its target
    by overspending, which is what credit an ad did not earn leads it to do."""
    if spend <= 0:
        return gmv
    ratio = c.target * checkouts / spend if c.target_kind == "cpa" else gmv / spend / c.target
    return gmv * min(1.0, ratio)


def campaign_row(
    c: Campaign, cfg: EvalConfig, truth: GroundTruth, oracle: Oracle, tr: Trace, end: int
) -> dict[str, Any]:
    """One campaign's figures over rounds 1..end (end: the shock's round, where there is one)."""
    cid = c.campaign_id
    spend = truth.spend_minor.get(cid, 0) / 100.0
    gmv = truth.caused_gmv_minor.get(cid, 0) / 100.0
    conv = truth.caused_checkouts.get(cid, 0)
    bound = oracle[cid][2]
    later, overall = pacing_errors(tr, c, bound, round(DAY_S / cfg.round_s))
    return {
        "campaign_id": cid,
        "target_kind": c.target_kind,
        "target": c.target,
        "daily_budget": c.daily_budget,
        "spend": round(spend, 2),
        "gmv": round(gmv, 2),
        "checkouts": conv,
        "roas": round(gmv / spend, 4) if spend else None,
        "cpa": round(spend / conv, 2) if conv else None,
        "gmv_at_target": round(gmv_at_target(c, spend, gmv, conv), 2),
        "budget_bound": bound,
        "reference": round(tr["ref"][0], 4),
        "settle_rounds": settle(tr["eff"][:end], tr["ref"][:end], c.target_kind),
        "in_band_after_20": in_band_share(
            tr["eff"][IN_BAND_FROM_ROUND:end], tr["ref"][IN_BAND_FROM_ROUND:end]
        ),
        "final_efficiency": round(tr["eff"][end - 1], 4),
        "pacing_error": round(later, 4),
        "pacing_error_all": round(overall, 4),
        "oracle_bids": {ch: round(b, 1) for ch, b in oracle[cid][0].items()},
        "final_bids": {ch: round(b, 1) for ch, b in tr["bids"][end - 1].items()},
    }


def run_figures(
    scenario: Scenario,
    cfg: EvalConfig,
    truth: GroundTruth,
    oracle: Oracle,
    trace: Mapping[str, Trace],
    *,
    policy: str,
    shock_round: int | None,
    n_rounds: int,
    reasons: Mapping[str, int],
) -> dict[str, Any]:
    """The run's result: per campaign (campaign_row), the totals, and the trace (for the plots)."""
    end = shock_round if shock_round is not None else n_rounds
    campaigns = []
    for c in scenario.campaigns:
        row = campaign_row(c, cfg, truth, oracle, trace[c.campaign_id], end)
        if shock_round is not None and c.campaign_id == cfg.shock_campaign:
            tr = trace[c.campaign_id]
            row["settle_rounds_after_shock"] = settle(
                tr["eff"][shock_round:], tr["ref"][shock_round:], c.target_kind
            )
        campaigns.append(row)
    spend = sum(r["spend"] for r in campaigns)
    gmv = sum(r["gmv"] for r in campaigns)
    settles = [r["settle_rounds"] for r in campaigns]
    eff_after, ref_after = _after_round(trace.values(), IN_BAND_FROM_ROUND, end)
    return {
        "policy": policy,
        "shock": shock_round is not None,
        "rounds": n_rounds,
        "shock_round": shock_round,
        "gmv": round(gmv, 2),
        "spend": round(spend, 2),
        "roas": round(gmv / spend, 4) if spend else None,
        "gmv_at_target": round(sum(r["gmv_at_target"] for r in campaigns), 2),
        "settle_rounds": None if any(s is None for s in settles) else max(settles),
        "pacing_error": max(r["pacing_error"] for r in campaigns),
        "in_band_after_20": in_band_share(eff_after, ref_after),
        "reasons": dict(reasons),
        "campaigns": campaigns,
        "trace": {cid: dict(tr) for cid, tr in trace.items()},
    }


def _after_round(traces: Iterable[Trace], first: int, end: int) -> tuple[list[float], list[float]]:
    """Every campaign's (true efficiency, reference) of rounds first..end-1, pooled."""
    pairs = [(e, f) for tr in traces for e, f in zip(tr["eff"][first:end], tr["ref"][first:end], strict=True)]
    return [e for e, _ in pairs], [f for _, f in pairs]
