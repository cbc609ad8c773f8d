from __future__ import annotations

from pathlib import Path

import pytest

from stream_processors.optimizer.evaluation.config import EvalConfig
from stream_processors.optimizer.evaluation.evidence import evidence_by_round, lever_report

SEEDS = Path(__file__).resolve().parents[5] / "seeds"


def test_evidence_scales_with_the_market_and_bounds_settling() -> None:
    small = evidence_by_round(SEEDS, EvalConfig())
    large = evidence_by_round(SEEDS, EvalConfig(volume=4.0))
    assert small["campaigns"].keys() == large["campaigns"].keys()
    for cid, e in small["campaigns"].items():
        assert e["carts"] > e["checkouts"] > 0
        # the oracle's bids do not change when budgets and inventory scale together
        assert large["campaigns"][cid]["carts"] == pytest.approx(4 * e["carts"], abs=0.5)  # rounded to 0.1
        assert large["campaigns"][cid]["in_band_bound"] > e["in_band_bound"]
    assert small["all_in_band_bound"] < large["all_in_band_bound"]


def test_lever_report_covers_every_campaign_and_the_hour_control_is_flat() -> None:
    report = lever_report(SEEDS, 1.0, 40)
    assert len(report["campaigns"]) == 10
    for row in report["campaigns"].values():
        # the split includes the single bid: never worse
        assert row["segment"] >= 0 and row["hour"] >= 0
        # hours have no effect on conversion in the truth: what a bid per hour gains is the grid
        assert row["hour"] < 0.02
