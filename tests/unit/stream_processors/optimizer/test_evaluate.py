from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from stream_processors.optimizer.evaluate import (
    format_evaluation,
    format_evaluations,
    parse_seeds,
    run_evaluate,
    run_evaluate_seeds,
    summarize,
)

SEEDS = Path(__file__).resolve().parents[4] / "seeds"


def test_run_evaluate_smoke(tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    result = run_evaluate(SEEDS, out, None, days=0.1, seed=3, workers=1)
    data = json.loads(out.read_text())
    assert set(data["policies"]) == {"static", "optimizer", "oracle"}
    for p in data["policies"].values():
        assert {"gmv", "spend", "roas", "settle_rounds", "pacing_error", "campaigns"} <= set(p)
        assert len(p["campaigns"]) == 10
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
        assert set(one["policies"]) == {"static", "optimizer", "oracle"}
        assert one["config"]["seed"] in (3, 4)
    summary = data["summary"]
    assert summary["seeds"] == [3, 4]
    assert set(summary["per_seed"]) == {"3", "4"}
    for key in ("gmv_vs_oracle", "gmv_vs_static", "settle_rounds", "pacing_error", "settle_after_shock"):
        assert set(summary[key]) == {"median", "worst"}
    assert summary["pacing_error"]["worst"] == max(r["pacing_error"] for r in summary["per_seed"].values())
    text = format_evaluations(result)
    assert "across seeds" in text and "median" in text


def test_one_seed_keeps_the_single_json_shape(tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    run_evaluate_seeds(SEEDS, out, None, days=0.05, seeds=[3], workers=1)
    data = json.loads(out.read_text())
    assert set(data["policies"]) == {"static", "optimizer", "oracle"}
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
