from __future__ import annotations

import json
from pathlib import Path

from stream_processors.optimizer.evaluate import format_evaluation, run_evaluate

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
