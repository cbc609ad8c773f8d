"""The truth side of the evaluation: a bid's expected daily spend, checkouts and GMV from the
traffic model (the hidden truth), and the oracle's bids, the best any controller could hold."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from producers.scenario import Campaign, Scenario, load_scenario
from producers.traffic import TrafficModel, Truth, load_truth
from stream_processors.optimizer.levers import LeverHeadroom, PartCurves, lever_headroom
from stream_processors.optimizer.specs import catalogue_price


def scaled_market(scenario: Scenario, truth: Truth, volume: float) -> tuple[Scenario, Truth]:
    """The same market `volume` times as large: inventory and budgets scaled, all else equal."""
    if volume == 1.0:
        return scenario, truth
    campaigns = [c.model_copy(update={"daily_budget": c.daily_budget * volume}) for c in scenario.campaigns]
    per = {
        cid: {
            ch: t.model_copy(update={"inventory_per_hour": t.inventory_per_hour * volume})
            for ch, t in chans.items()
        }
        for cid, chans in truth.campaigns.items()
    }
    return scenario.model_copy(update={"campaigns": campaigns}), truth.model_copy(update={"campaigns": per})


class Economics:
    """Expected daily spend, checkouts and GMV of a bid, from the traffic model (the hidden truth).

    With a holdout share h, a won impression is shown (and paid, and able to cause a purchase) only
    for the 1 - h of users not held out: spend, checkouts and GMV of a bid are all (1 - h) times
    the full market's, so efficiency is unchanged, but a budget binds at a higher bid."""

    def __init__(self, scenario: Scenario, traffic: TrafficModel, holdout_share: float = 0.0) -> None:
        self.scenario = scenario
        self.traffic = traffic
        self.shown = 1.0 - holdout_share
        self.day_mass = sum(traffic.truth.hour_shape)
        shares = {s.segment_id: s.share for s in scenario.segments}
        self.weights = {c.campaign_id: {g: shares[g] for g in c.segments} for c in scenario.campaigns}
        self.price = {c.campaign_id: catalogue_price(scenario, c) for c in scenario.campaigns}

    @classmethod
    def load(cls, seeds_dir: Path, volume: float = 1.0, holdout_share: float = 0.0) -> Economics:
        """The seeded market (scaled by `volume`, see scaled_market) and a fresh traffic model."""
        scenario, truth = scaled_market(load_scenario(seeds_dir), load_truth(seeds_dir), volume)
        return cls(scenario, TrafficModel(truth), holdout_share)

    def daily(
        self, cid: str, ch: str, bid: float, segment: str | None = None, hour: int | None = None
    ) -> tuple[float, float, float]:
        """Expected (spend, checkouts, GMV) per day at `bid`; of one segment's or one hour's share
        of the auctions only, when given (the parts a segment or hour bid multiplier would split)."""
        ct = self.traffic.channel(cid, ch)
        weights = self.weights[cid]
        mass = self.day_mass if hour is None else self.traffic.truth.hour_shape[hour]
        share = 1.0 if segment is None else weights[segment] / sum(weights.values())
        views = ct.inventory_per_hour * (1 - math.exp(-bid / ct.bid_scale)) * mass * share * self.shown
        per_view = self.traffic.expected_checkouts_per_view(
            cid, ch, bid, weights if segment is None else {segment: 1.0}
        )
        conv = views * per_view
        spend = views * max(1, round(bid / 10)) / 100.0
        return spend, conv, conv * self.price[cid]

    def lever_headroom(
        self, c: Campaign, lever: Literal["segment", "hour"], points: int = 60
    ) -> LeverHeadroom:
        """GMV headroom of a bid per segment (or per hour) over one bid per channel, with perfect
        knowledge of the truth (levers.lever_headroom)."""
        grid = np.geomspace(c.bid_floor, c.bid_cap, points)
        parts = list(self.weights[c.campaign_id]) if lever == "segment" else [str(h) for h in range(24)]

        def curves(ch: str, part: str, bids: np.ndarray) -> PartCurves:
            rows = [
                self.daily(c.campaign_id, ch, float(b), segment=part)
                if lever == "segment"
                else self.daily(c.campaign_id, ch, float(b), hour=int(part))
                for b in bids
            ]
            a = np.array(rows)
            return a[:, 0], a[:, 1], a[:, 2]

        return lever_headroom(
            list(c.channels),
            parts,
            curves,
            grid,
            budget=c.daily_budget,
            target_kind=c.target_kind,
            target=c.target,
        )

    def efficiency(self, c: Campaign, bids: Mapping[str, float]) -> float:
        s = cv = g = 0.0
        for ch, b in bids.items():
            sp, co, gm = self.daily(c.campaign_id, ch, b)
            s, cv, g = s + sp, cv + co, g + gm
        return s / cv if c.target_kind == "cpa" else g / s

    def oracle(self, c: Campaign, points: int = 60) -> tuple[dict[str, float], float, bool]:
        """Bids maximising expected GMV under the target and the budget; their efficiency; budget-bound?"""
        chans = list(c.channels)
        grid = np.geomspace(c.bid_floor, c.bid_cap, points if len(chans) < 3 else 36)
        budget = c.daily_budget * 0.97  # a margin: Poisson days above the mean hit the hard cap
        ok, gmv = self._feasible_gmv(c, chans, [grid] * len(chans), budget)
        if not ok.any():
            idx = tuple(int(i) for i in np.zeros(len(chans), dtype=int))
        else:
            score = np.where(ok, gmv, -1.0)
            idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(score)), score.shape))
        bids: dict[str, float] = {str(ch): float(grid[idx[i]]) for i, ch in enumerate(chans)}
        if ok.any():
            bids = self._refine(c, chans, grid, idx, budget)
        eff = self.efficiency(c, bids)
        total = sum(self.daily(c.campaign_id, ch, b)[0] for ch, b in bids.items())
        bound = total >= budget * 0.95
        return bids, eff, bound

    def _refine(
        self, c: Campaign, chans: Sequence[str], grid: np.ndarray, idx: tuple[int, ...], budget: float
    ) -> dict[str, float]:
        """A finer grid around the coarse optimum: the coarse grid steps bids by ~5%, which is ~7%
        of CPA/ROAS, most of the +-10% band the controller is judged by."""
        axes = []
        for i in idx:
            lo, hi = grid[max(0, i - 1)], grid[min(len(grid) - 1, i + 1)]
            axes.append(np.geomspace(lo, hi, 25 if len(chans) < 3 else 13))
        ok, gmv = self._feasible_gmv(c, chans, axes, budget)
        score = np.where(ok, gmv, -1.0)
        best = tuple(int(i) for i in np.unravel_index(int(np.argmax(score)), score.shape))
        return {str(ch): float(axes[k][best[k]]) for k, ch in enumerate(chans)}

    def _feasible_gmv(
        self, c: Campaign, chans: Sequence[str], axes: Sequence[np.ndarray], budget: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Over every combination of one bid per channel from `axes`: whether it meets the budget and
        the target, and its expected daily GMV."""
        per = [
            np.array([self.daily(c.campaign_id, ch, float(b)) for b in axes[k]]) for k, ch in enumerate(chans)
        ]
        mesh = np.meshgrid(*[np.arange(len(a)) for a in axes], indexing="ij")
        spend = sum(per[k][mesh[k], 0] for k in range(len(chans)))
        conv = sum(per[k][mesh[k], 1] for k in range(len(chans)))
        gmv = sum(per[k][mesh[k], 2] for k in range(len(chans)))
        ok = spend <= budget
        ok &= (spend <= c.target * conv) if c.target_kind == "cpa" else (gmv >= c.target * spend)
        return np.asarray(ok), np.asarray(gmv)
