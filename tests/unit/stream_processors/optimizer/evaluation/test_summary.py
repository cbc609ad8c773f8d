from __future__ import annotations

from typing import Any

from stream_processors.optimizer.evaluation.summary import summarize


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
    s = summarize(
        {1: _fake(0.95, 10, 0.02, 30), 2: _fake(0.90, None, 0.06, None), 3: _fake(1.0, 30, 0.01, 5)}
    )
    assert s["gmv_vs_oracle"] == {"median": 0.95, "worst": 0.90}
    assert s["settle_rounds"] == {"median": 30, "worst": None}
    assert s["pacing_error"] == {"median": 0.02, "worst": 0.06}
    assert s["settle_after_shock"] == {"median": 30, "worst": None}
    assert s["per_seed"]["1"]["settle_by_campaign"] == {"c1": 10}
