"""Conversion lift against causal truth (lift_scores, lift_summary) and true GMV at target."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from producers.ground_truth import GroundTruth, OrderCause
from producers.holdout import in_holdout
from producers.scenario import load_scenario
from stream_processors.lift import GROUPS, lift_field
from stream_processors.optimizer.evaluation.config import DAY_S
from stream_processors.optimizer.evaluation.lift_scores import campaign_days, coverage, holdout_cost, pooled
from stream_processors.optimizer.evaluation.lift_summary import format_lift, seed_lift, summarize_lift
from stream_processors.optimizer.evaluation.run_scores import gmv_at_target

SEEDS = Path(__file__).resolve().parents[5] / "seeds"
D = 20_000 * DAY_S  # a day's start


def _users(held: bool, n: int) -> list[int]:
    return [u for u in range(200) if in_holdout("c1", f"u{u:07d}", 0.5) == held][:n]


def _truth() -> GroundTruth:
    """Day D: exposed users 0..2 of c1 first seen at D + 100 s; the first bought 60.00 caused by
    c1's ad and 10.00 organic; a user first seen on day D + 1 bought 30.00 caused, day 2."""
    truth = GroundTruth(users=200, holdout_share=0.5)
    exposed = _users(False, 4)
    for u in exposed[:3]:
        truth.record_view("c1", u, D + 100, ghost=False)
    truth.record_view("c1", exposed[3], D + DAY_S + 50, ghost=False)
    orders = (
        ("o1", OrderCause(f"u{exposed[0]:07d}", "c1", "feed", D + 500, 6_000)),
        ("o2", OrderCause(f"u{exposed[0]:07d}", None, None, D + 900, 1_000)),
        ("o3", OrderCause(f"u{exposed[3]:07d}", "c1", "feed", D + DAY_S + 600, 3_000)),
    )
    for event_id, cause in orders:
        truth.record_order(event_id, cause, "c1")
    return truth


def _fields(
    users: tuple[int, int], gmv: tuple[int, int], squares: tuple[int, int], checkouts: tuple[int, int] = (0, 0)
) -> dict[str, int]:
    out: dict[str, int] = {}
    for i, group in enumerate(GROUPS):
        out[lift_field("c1", group, "users")] = users[i]
        out[lift_field("c1", group, "checkouts")] = checkouts[i]
        out[lift_field("c1", group, "gmv")] = gmv[i]
        out[lift_field("c1", group, "gmv_sq")] = squares[i]
    return out


def test_each_campaign_day_interval_is_set_against_the_truth_of_its_cohort() -> None:
    # day D: of 30 exposed users one bought 7,000 minor in two orders (6,000 + 1,000: 70 whole units,
    # square 4,900), 30 held-out users nothing: estimate 70.00; truth 60.00 (the organic 10.00 is not
    # caused); the held-out group has no buyer, so it takes the exposed group's variance
    by_day: Mapping[float, dict[str, int]] = {
        D: _fields((30, 30), (7_000, 0), (4_900, 0), (2, 0)),
        D + DAY_S: _fields((1, 1), (3_000, 0), (900, 0), (1, 0)),  # too few users: no estimate
    }
    rows = campaign_days(
        lambda start, end: by_day.get(start, {}),
        _truth(),
        ["c1", "c2"],
        start=D,
        end=D + 2 * DAY_S,
        bucket_s=1800,
        lift_window_s=7 * DAY_S,
    )
    assert len(rows) == 1
    row = rows[0]
    assert (row["campaign_id"], row["day"], row["true"], row["estimate"]) == ("c1", int(D), 60.0, 70.0)
    lo, hi = row["ci"]
    assert lo < 60.0 < hi and row["covered"]
    assert (row["exposed_users"], row["held_out_users"]) == (30, 30)


def test_coverage_counts_covered_days_and_width_relative_to_the_truth() -> None:
    rows = [
        {"ci": [50.0, 150.0], "true": 100.0, "covered": True},
        {"ci": [10.0, 30.0], "true": 40.0, "covered": False},
        {"ci": [-5.0, 5.0], "true": 0.0, "covered": True},
    ]
    c = coverage(rows)
    assert (c["campaign_days"], c["covered"], c["coverage"]) == (3, 2, pytest.approx(2 / 3, abs=1e-4))
    assert c["width_vs_truth"] == pytest.approx((1.0 + 0.5) / 2)  # days with a positive truth
    assert c["pooled_width_vs_truth"] == pytest.approx(130.0 / 140.0, abs=1e-4)
    assert coverage([])["coverage"] is None


def test_holdout_cost_projects_the_exposed_users_rate_onto_the_held_out() -> None:
    cost = holdout_cost(_truth(), 0.1)
    # caused 90.00 by exposed users; a tenth held out would have bought 90 / 9 = 10.00
    assert cost == {"holdout_share": 0.1, "caused_gmv": 90.0, "gmv_lost": 10.0, "share_of_gmv": 0.1}
    assert holdout_cost(_truth(), 0.0)["gmv_lost"] == 0.0


def test_gmv_at_target_discounts_only_a_missed_target() -> None:
    scenario = load_scenario(SEEDS)
    roas = next(c for c in scenario.campaigns if c.target_kind == "roas")
    cpa = next(c for c in scenario.campaigns if c.target_kind == "cpa")
    assert gmv_at_target(roas, 100.0, roas.target * 100.0 * 1.2, 5) == pytest.approx(roas.target * 120.0)
    # ROAS at 80% of the target keeps 80% of the GMV
    assert gmv_at_target(roas, 100.0, roas.target * 80.0, 5) == pytest.approx(roas.target * 80.0 * 0.8)
    # CPA 25% over the target: 10 checkouts for 12.5 targets' spend keeps 80%
    assert gmv_at_target(cpa, cpa.target * 12.5, 1_000.0, 10) == pytest.approx(800.0)
    assert gmv_at_target(cpa, 0.0, 0.0, 0) == 0.0


def _policies(opt: float, lift: float, covered: int) -> dict[str, dict[str, Any]]:
    days = [{"ci": [0.0, 2.0], "true": 1.0, "covered": i < covered} for i in range(10)]
    block = {
        "coverage": coverage(days),
        "holdout_cost": {"holdout_share": 0.1, "caused_gmv": 900.0, "gmv_lost": 100.0, "share_of_gmv": 0.1},
        "campaign_days": days,
    }

    def run(gmv: float) -> dict[str, Any]:
        return {
            "gmv": gmv,
            "gmv_at_target": gmv,
            "spend": 1.0,
            "roas": gmv,
            "in_band_after_20": 0.5,
            "pacing_error": 0.01,
        }

    return {"optimizer": run(opt), "optimizer_lift": {**run(lift), "lift": block, "calibration": {}}}


def test_seeds_summarise_into_the_targets() -> None:
    per_seed = {
        seed: {"lift": seed_lift(_policies(100.0, lift, covered), 0.1)}
        for seed, lift, covered in ((7, 101.0, 10), (11, 100.0, 9), (13, 99.0, 8))
    }
    assert per_seed[7]["lift"] is not None
    assert per_seed[7]["lift"]["steer"]["gmv_at_target_vs_attributed"] == 1.01
    summary = summarize_lift(per_seed)
    assert summary is not None
    wins = summary["targets"]["lift_at_least_attributed"]
    assert (wins["seeds_won"], wins["of"]) == ([7, 11], 3)
    assert not wins["met"]  # 5 of 6 scaled to 3 seeds: 3 needed
    assert summary["coverage"]["coverage"] == pytest.approx(0.9)
    assert summary["targets"]["coverage_ge_90pct"]["met"]
    assert summary["holdout_cost"]["gmv_lost"] == 300.0
    assert pooled([per_seed[7]["lift"]])["coverage"]["campaign_days"] == 10
    text = format_lift(summary)
    assert "27 of 30 campaign-days" in text and "on 2 of 3 seeds (NOT met)" in text
    assert summarize_lift({7: {}}) is None
    assert seed_lift({"optimizer": {}}, 0.1) is None  # no lift-steered run
