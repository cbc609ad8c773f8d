from __future__ import annotations

from pathlib import Path

import pytest

from producers.scenario import load_scenario
from producers.traffic import load_truth
from stream_processors.optimizer.evaluation.market import scaled_market

SEEDS = Path(__file__).resolve().parents[5] / "seeds"


def test_scaled_market_scales_inventory_budgets_only() -> None:
    scenario, truth = load_scenario(SEEDS), load_truth(SEEDS)
    assert scaled_market(scenario, truth, 1.0) == (scenario, truth)
    big, big_truth = scaled_market(scenario, truth, 3.0)
    for c, b in zip(scenario.campaigns, big.campaigns, strict=True):
        assert b.daily_budget == pytest.approx(3 * c.daily_budget)
        assert (b.target, b.bid_floor, b.bid_cap) == (c.target, c.bid_floor, c.bid_cap)
    for cid, chans in truth.campaigns.items():
        for ch, t in chans.items():
            scaled = big_truth.campaigns[cid][ch]
            assert scaled.inventory_per_hour == pytest.approx(3 * t.inventory_per_hour)
            assert (scaled.bid_scale, scaled.p_add_to_cart) == (t.bid_scale, t.p_add_to_cart)
