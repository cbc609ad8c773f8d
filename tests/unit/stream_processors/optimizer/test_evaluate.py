from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from producers.scenario import load_scenario
from producers.traffic import load_truth
from stream_processors.optimizer.evaluate import (
    EvalConfig,
    evidence_by_round,
    format_evaluation,
    format_evaluations,
    in_band_bound,
    lever_report,
    parse_seeds,
    run_evaluate,
    run_evaluate_seeds,
    scaled_market,
    summarize,
)

SEEDS = Path(__file__).resolve().parents[4] / "seeds"


def test_run_evaluate_smoke(tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    result = run_evaluate(SEEDS, out, None, days=0.1, seed=3, workers=1)
    data = json.loads(out.read_text())
    assert set(data["policies"]) == {"static", "optimizer", "oracle", "pid", "pacing"}
    for p in data["policies"].values():
        assert {"gmv", "spend", "roas", "settle_rounds", "pacing_error", "campaigns", "evidence_share"} <= set(p)
        assert len(p["campaigns"]) == 10
    # the field's controllers are shocked alike, beside the keys that were there before
    assert {"optimizer", "static", "pid", "pacing", "settle_rounds_after_shock"} <= set(data["shock"])
    assert set(data["policy_rows"]) == set(data["policies"])
    assert data["evidence"]["mean_bound_after_20"] is None  # 5 rounds: none counted from round 20
    assert "shock" in data and "settle_rounds_after_shock" in data["shock"]
    # the hard cap: never more than 2% over a day's budget
    for p in data["policies"].values():
        for c in p["campaigns"]:
            assert c["spend"] <= c["daily_budget"] * 1.02
    assert "optimizer" in format_evaluation(result)


def test_several_seeds_report_each_and_a_summary(tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    result = run_evaluate_seeds(SEEDS, out, None, days=0.05, seeds=[3, 4], workers=1)
    data = json.loads(out.read_text())
    assert set(data["seeds"]) == {"3", "4"}
    for one in data["seeds"].values():
        # each seed keeps the single-seed shape
        assert set(one["policies"]) == {"static", "optimizer", "oracle", "pid", "pacing"}
        assert one["config"]["seed"] in (3, 4)
    summary = data["summary"]
    assert summary["seeds"] == [3, 4]
    assert set(summary["per_seed"]) == {"3", "4"}
    for key in ("gmv_vs_oracle", "gmv_vs_static", "settle_rounds", "pacing_error", "settle_after_shock"):
        assert set(summary[key]) == {"median", "worst"}
    assert summary["pacing_error"]["worst"] == max(r["pacing_error"] for r in summary["per_seed"].values())
    field = summary["field"]
    assert set(field["policies"]) == {"static", "optimizer", "oracle", "pid", "pacing"}
    assert set(field["targets"]) == {"beats_field", "pacing_error_le_5pct", "evidence_share_ge_0_9"}
    for block in field["policies"].values():
        assert set(block["per_seed"]) == {"3", "4"}
        assert "evidence_share" in block["median"]
    text = format_evaluations(result)
    assert "across seeds" in text and "median" in text and "P<=" in text
    assert "every policy across seeds" in text and "pid" in text


def test_one_seed_keeps_the_single_json_shape(tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    run_evaluate_seeds(SEEDS, out, None, days=0.05, seeds=[3], workers=1)
    data = json.loads(out.read_text())
    assert set(data["policies"]) == {"static", "optimizer", "oracle", "pid", "pacing"}
    assert "seeds" not in data


def _fake(gmv_vs_oracle: float, settle: int | None, pacing: float, shock: int | None) -> dict[str, Any]:
    return {
        "comparison": {"optimizer_gmv_vs_oracle": gmv_vs_oracle, "optimizer_gmv_vs_static": 1.2},
        "policies": {
            "optimizer": {
                "settle_rounds": settle,
                "pacing_error": pacing,
                "in_band_after_20": 0.9,
                "campaigns": [{"campaign_id": "c1", "settle_rounds": settle}],
            }
        },
        "shock": {"settle_rounds_after_shock": shock},
        "evidence": {"rounds": 20, "campaigns": {"c1": {"in_band_bound": 0.5}}, "all_in_band_bound": 0.5},
    }


def test_summary_median_and_worst_count_never_as_worst() -> None:
    s = summarize({1: _fake(0.95, 10, 0.02, 30), 2: _fake(0.90, None, 0.06, None), 3: _fake(1.0, 30, 0.01, 5)})
    assert s["gmv_vs_oracle"] == {"median": 0.95, "worst": 0.90}
    assert s["settle_rounds"] == {"median": 30, "worst": None}
    assert s["pacing_error"] == {"median": 0.02, "worst": 0.06}
    assert s["settle_after_shock"] == {"median": 30, "worst": None}
    assert s["per_seed"]["1"]["settle_by_campaign"] == {"c1": 10}


def test_parse_seeds() -> None:
    assert parse_seeds("7,11,13") == [7, 11, 13]
    assert parse_seeds("7, 7,11") == [7, 11]
    with pytest.raises(argparse.ArgumentTypeError):
        parse_seeds("7,x")


def test_in_band_bound_grows_with_evidence() -> None:
    assert in_band_bound(0) == 0.0
    # 100 carts: a standard error of 10%, about the +-10% band itself: 2 Phi(0.953) - 1
    assert in_band_bound(100) == pytest.approx(0.6594, abs=1e-3)
    assert in_band_bound(25) < in_band_bound(100) < in_band_bound(400) < 1.0
    assert in_band_bound(2000) > 0.99


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
