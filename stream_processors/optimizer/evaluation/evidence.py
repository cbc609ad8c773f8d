"""What a controller can learn, from the truth: the add-to-carts and checkouts each campaign's ads
cause by a round at the oracle's bids, the bound that puts on being in band (settling.in_band_bound),
and the perfect-knowledge headroom of finer bid levers. The same for every seed."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from producers.scenario import Campaign
from producers.simulator import SimConfig
from stream_processors.optimizer.evaluation.config import EvalConfig
from stream_processors.optimizer.evaluation.market import Economics
from stream_processors.optimizer.evaluation.settling import IN_BAND_FROM_ROUND, in_band_bound


def _round_checkouts(econ: Economics, c: Campaign, ch: str, bid: float, at: float, round_s: float) -> float:
    """Expected checkouts a channel's ads cause in the control round starting at `at` (of the
    views shown: a held-out user's ghost view causes nothing)."""
    traffic = econ.traffic
    per_view = traffic.expected_checkouts_per_view(c.campaign_id, ch, bid, econ.weights[c.campaign_id])
    views = traffic.views_per_hour(c.campaign_id, ch, bid, at) * round_s / 3600.0 * econ.shown
    return views * per_view


def evidence_by_round(seeds_dir: Path, cfg: EvalConfig, rounds: int = IN_BAND_FROM_ROUND) -> dict[str, Any]:
    """Expected add-to-carts and checkouts each campaign's ads cause in the first `rounds` control
    rounds at the oracle's bids (from the traffic model, the same for every seed), and the bound
    they put on being within +-10% of the reference at that round (`in_band_bound`)."""
    econ = Economics.load(seeds_dir, cfg.volume, cfg.holdout_share)
    start = SimConfig(seed=cfg.seed).start_ts
    rows: dict[str, dict[str, float]] = {}
    everyone = 1.0
    for c in econ.scenario.campaigns:
        bids = econ.oracle(c)[0]
        carts = checkouts = 0.0
        for ch, b in bids.items():
            p_checkout = econ.traffic.channel(c.campaign_id, ch).p_checkout
            for r in range(rounds):
                caused = _round_checkouts(econ, c, ch, b, start + r * cfg.round_s, cfg.round_s)
                checkouts += caused
                carts += caused / p_checkout
        bound = in_band_bound(carts)
        everyone *= bound
        rows[c.campaign_id] = {
            "carts": round(carts, 1),
            "checkouts": round(checkouts, 1),
            "in_band_bound": round(bound, 4),
        }
    return {
        "rounds": rounds,
        "volume": cfg.volume,
        "campaigns": rows,
        "all_in_band_bound": round(everyone, 4),
    }


@functools.lru_cache(maxsize=8)  # the same for every seed and policy: once per market and horizon
def mean_in_band_bound(
    seeds_dir: Path, volume: float, round_s: float, rounds: int, holdout_share: float = 0.0
) -> float | None:
    """The mean, over campaigns and rounds IN_BAND_FROM_ROUND .. rounds-1 (the rounds the in-band
    share counts), of the bound on being within +-10% of the reference given the add-to-carts the
    campaign's ads cause by that round at the oracle's bids (evidence_by_round, per round)."""
    econ = Economics.load(seeds_dir, volume, holdout_share)
    start = SimConfig().start_ts  # the simulation's clock starts here whatever the seed
    total = count = 0.0
    for c in econ.scenario.campaigns:
        bids = econ.oracle(c)[0]
        carts = 0.0
        for r in range(rounds):
            if r >= IN_BAND_FROM_ROUND:
                total += in_band_bound(carts)
                count += 1
            for ch, b in bids.items():
                p_checkout = econ.traffic.channel(c.campaign_id, ch).p_checkout
                carts += _round_checkouts(econ, c, ch, b, start + r * round_s, round_s) / p_checkout
    return total / count if count else None  # a run shorter than 20 rounds counts none


@functools.lru_cache(maxsize=4)  # the same for every seed: computed once per scenario and volume
def lever_report(seeds_dir: Path, volume: float, points: int = 120) -> dict[str, Any]:
    """Per campaign, the perfect-knowledge GMV headroom of a bid per user segment and of a bid per
    hour of the day over one bid per channel (Economics.lever_headroom). The truth gives hours no
    effect on conversion, so the hour figure is the method's own resolution: a lever pays only if
    its headroom clearly exceeds it (and the seed-to-seed noise of the evaluation)."""
    econ = Economics.load(seeds_dir, volume)
    rows: dict[str, dict[str, float]] = {}
    totals = {"segment": [0.0, 0.0], "hour": [0.0, 0.0]}
    for c in econ.scenario.campaigns:
        row: dict[str, float] = {}
        for lever in ("segment", "hour"):
            h = econ.lever_headroom(c, lever, points)
            row[lever] = round(h.gain, 4)
            totals[lever][0] += h.split_gmv
            totals[lever][1] += h.uniform_gmv
        rows[c.campaign_id] = row
    overall = {k: round(v[0] / v[1] - 1.0, 4) if v[1] > 0 else 0.0 for k, v in totals.items()}
    return {"campaigns": rows, "overall": overall}
