from __future__ import annotations

from pathlib import Path

import pytest

from producers.scenario import load_scenario
from producers.scheduler import AdScheduler
from producers.simulator import SimConfig, Simulator
from producers.traffic import TrafficModel, load_truth
from schemas.events import Checkout
from stream_processors.attribution.models import MODEL_NAMES
from stream_processors.optimizer.evaluation.attribution_truth import (
    CausalLedger,
    pooled,
    score_models,
)

SEEDS = Path(__file__).resolve().parents[5] / "seeds"


def test_score_models_bias_over_the_run_and_error_per_day() -> None:
    true = [100.0, 100.0]
    scores = score_models(true, {"last": [120.0, 80.0], "first": [150.0, 150.0], "zero": [0.0, 0.0]})
    # over-credit one day and under-credit the other: no bias, but a 20% daily error
    assert scores["last"] == {"attributed_gmv": 200.0, "bias": 0.0, "error": 0.2}
    assert scores["first"] == {"attributed_gmv": 300.0, "bias": 0.5, "error": 0.5}
    assert scores["zero"] == {"attributed_gmv": 0.0, "bias": -1.0, "error": 1.0}
    # nothing truly caused: no ratio to speak of, whatever was attributed
    assert score_models([0.0, 0.0], {"last": [5.0, 0.0]})["last"] == {
        "attributed_gmv": 5.0,
        "bias": None,
        "error": None,
    }


def _report(true: list[float], last: list[float]) -> dict[str, object]:
    days = {"true_gmv_by_day": true, "attributed_gmv_by_day": {"last": last}}
    return {"scored_on": "static", "days": len(true), "campaigns": {"c1": {"by_channel": {"kol": days}}}}


def test_pooled_scores_every_seed_day_together() -> None:
    out = pooled([_report([100.0], [150.0]), _report([300.0], [250.0])])
    assert out is not None
    assert (out["seeds"], out["days"]) == (2, 2)
    c1 = out["campaigns"]["c1"]
    # +50 and -50 cancel over 400 truly caused: no bias; RMS of 50 over a mean day of 200
    assert c1["true_gmv"] == 400.0
    assert c1["models"]["last"]["bias"] == 0.0
    assert c1["models"]["last"]["error"] == 0.25
    assert c1["by_channel"]["kol"]["models"] == c1["models"]
    assert pooled([]) is None


def _ledger_run(organic: bool) -> tuple[Simulator, CausalLedger, int]:
    """Six hours of the static market, attributed by every model; and the GMV of all checkouts.
    Organic rates are ten times the seeds' so that six night hours of 20k users have enough."""
    scenario, truth = load_scenario(SEEDS), load_truth(SEEDS)
    rates = {cid: 10 * r for cid, r in truth.organic_per_user_day.items()}
    truth = truth.model_copy(update={"organic_per_user_day": rates})
    cfg = SimConfig(seed=7, users=20_000, organic=organic)
    sim = Simulator(scenario, TrafficModel(truth), AdScheduler(scenario), cfg)
    ledger = CausalLedger(scenario, scenario.campaign_products())
    checkout_minor = 0
    for hour in range(1, 7):
        t = sim.cfg.start_ts + hour * 3600.0
        events = sim.advance(t)
        checkout_minor += sum(sim.truth.orders[e.event_id].gmv_minor for e in events if isinstance(e, Checkout))
        ledger.apply(events, t, sim.truth.orders)
    return sim, ledger, checkout_minor


def test_without_organic_purchases_every_checkout_is_credited_once_to_some_campaign() -> None:
    sim, ledger, checkout_minor = _ledger_run(organic=False)
    assert checkout_minor > 20 * 5000
    channels = {c.campaign_id: set(c.channels) for c in sim.scenario.campaigns}
    causes = list(sim.truth.orders.values())
    assert causes and all(o.campaign_id is not None and o.channel in channels[o.campaign_id] for o in causes)
    # only the checkouts that happened count as truth: fewer than the simulator's (scheduled) total
    report = ledger.report()
    true_total = sum(c["true_gmv"] for c in report["campaigns"].values())
    assert true_total == pytest.approx(checkout_minor / 100, abs=0.05)
    assert 0 < true_total < sum(sim.truth.caused_gmv_minor.values()) / 100
    # every model hands out each checkout's value exactly once, to some campaign
    for model in MODEL_NAMES:
        credited = sum(c["models"][model]["attributed_gmv"] for c in report["campaigns"].values())
        assert credited == pytest.approx(true_total, abs=0.05)


def test_organic_checkouts_are_no_campaigns_truth_and_last_touch_credits_them() -> None:
    sim, ledger, checkout_minor = _ledger_run(organic=True)
    organic = [o for o in sim.truth.orders.values() if o.campaign_id is None and o.at <= sim.now]
    assert len(organic) > 20 and all(o.channel is None for o in organic)
    report = ledger.report()
    true_total = sum(c["true_gmv"] for c in report["campaigns"].values())
    # the truth is the caused checkouts only: the organic ones that happened are left out of it
    assert true_total < checkout_minor / 100
    # no model credits a checkout twice, and every caused checkout follows a view of its campaign
    # in the lookback (so it is credited to some campaign): the credit lies between the two, and
    # last-touch credits organic checkouts of users who had seen an ad of the product
    for model in MODEL_NAMES:
        credited = sum(c["models"][model]["attributed_gmv"] for c in report["campaigns"].values())
        assert true_total - 0.05 <= credited <= checkout_minor / 100 + 0.05
    last = sum(c["models"]["last"]["attributed_gmv"] for c in report["campaigns"].values())
    assert last > true_total + 100
