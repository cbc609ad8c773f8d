from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from stream_processors.optimizer.evaluate import EvalConfig, parse_seeds, run_evaluate, run_evaluate_seeds
from stream_processors.optimizer.evaluation.report import format_evaluation, format_evaluations

SEEDS = Path(__file__).resolve().parents[4] / "seeds"


def test_run_evaluate_smoke(tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    result = run_evaluate(SEEDS, EvalConfig(days=0.1, seed=3), json_path=out, workers=1)
    data = json.loads(out.read_text())
    assert set(data["policies"]) == {"static", "optimizer", "oracle", "pid", "pacing", "optimizer_lift"}
    for p in data["policies"].values():
        assert {
            "gmv",
            "spend",
            "roas",
            "settle_rounds",
            "pacing_error",
            "campaigns",
            "evidence_share",
            "gmv_at_target",
        } <= set(p)
        assert p["gmv_at_target"] <= p["gmv"]
        assert len(p["campaigns"]) == 10
    # the field's controllers are shocked alike, beside the keys that were there before
    assert {"optimizer", "static", "pid", "pacing", "settle_rounds_after_shock"} <= set(data["shock"])
    assert set(data["policy_rows"]) == set(data["policies"])
    assert set(data["attribution_vs_truth"]["campaigns"]) == {c["campaign_id"] for c in p["campaigns"]}
    assert data["evidence"]["mean_bound_after_20"] is None  # 5 rounds: none counted from round 20
    assert "shock" in data and "settle_rounds_after_shock" in data["shock"]
    # the hard cap: never more than 2% over a day's budget
    for p in data["policies"].values():
        for c in p["campaigns"]:
            assert c["spend"] <= c["daily_budget"] * 1.02
    assert "optimizer" in format_evaluation(result)
    # conversion lift (new keys): the lift-steered run's intervals against the truth, the holdout's
    # cost, and the two modes side by side
    lift = data["lift"]
    assert lift["holdout_share"] == data["config"]["holdout_share"] == EvalConfig().holdout_share
    assert set(lift["steer"]) >= {"optimizer", "optimizer_lift", "gmv_at_target_vs_attributed", "calibration"}
    assert set(lift["steer"]["calibration"]) == {c["campaign_id"] for c in p["campaigns"]}
    assert lift["coverage"]["campaign_days"] == len(lift["campaign_days"])
    assert lift["holdout_cost"]["share_of_gmv"] == pytest.approx(EvalConfig().holdout_share, abs=1e-3)


def test_several_seeds_report_each_and_a_summary(tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    result = run_evaluate_seeds(SEEDS, out, None, days=0.05, seeds=[3, 4], workers=1)
    data = json.loads(out.read_text())
    assert set(data["seeds"]) == {"3", "4"}
    for one in data["seeds"].values():
        # each seed keeps the single-seed shape
        assert set(one["policies"]) == {"static", "optimizer", "oracle", "pid", "pacing", "optimizer_lift"}
        assert one["config"]["seed"] in (3, 4)
    summary = data["summary"]
    assert summary["seeds"] == [3, 4]
    assert set(summary["per_seed"]) == {"3", "4"}
    for key in ("gmv_vs_oracle", "gmv_vs_static", "settle_rounds", "pacing_error", "settle_after_shock"):
        assert set(summary[key]) == {"median", "worst"}
    assert summary["pacing_error"]["worst"] == max(r["pacing_error"] for r in summary["per_seed"].values())
    field = summary["field"]
    assert set(field["policies"]) == {"static", "optimizer", "oracle", "pid", "pacing", "optimizer_lift"}
    assert set(field["targets"]) == {"beats_field", "pacing_error_le_5pct", "evidence_share_ge_0_9"}
    for block in field["policies"].values():
        assert set(block["per_seed"]) == {"3", "4"}
        assert "evidence_share" in block["median"]
    text = format_evaluations(result)
    assert "across seeds" in text and "median" in text and "P<=" in text
    assert "every policy across seeds" in text and "pid" in text
    # every attribution model against the causal truth, both seeds pooled (a new key of the summary)
    truth = summary["attribution_vs_truth"]
    assert (truth["seeds"], truth["scored_on"]) == (2, "static")
    assert set(truth["campaigns"]["c_pmpm_launch"]["models"]) == {
        "last",
        "first",
        "linear",
        "time_decay",
        "position",
        "markov",
    }
    assert "attribution against causal truth" in text
    lift = summary["lift"]
    assert set(lift["per_seed"]) == {"3", "4"} and lift["targets"]["lift_at_least_attributed"]["of"] == 2
    assert f"conversion lift (holdout share {EvalConfig().holdout_share})" in text


def test_one_seed_keeps_the_single_json_shape(tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    run_evaluate_seeds(SEEDS, out, None, days=0.05, seeds=[3], workers=1)
    data = json.loads(out.read_text())
    assert set(data["policies"]) == {"static", "optimizer", "oracle", "pid", "pacing", "optimizer_lift"}
    assert "seeds" not in data


def test_parse_seeds() -> None:
    assert parse_seeds("7,11,13") == [7, 11, 13]
    assert parse_seeds("7, 7,11") == [7, 11]
    with pytest.raises(argparse.ArgumentTypeError):
        parse_seeds("7,x")
