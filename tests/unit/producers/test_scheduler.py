from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from producers.scenario import load_scenario
from producers.scheduler import AdScheduler
from schemas.decisions import BidAdjustment

SEEDS = Path(__file__).resolve().parents[3] / "seeds"


def _adj(cid: str, ch: str, rnd: int, bid: float, reason: str = "toward_target") -> BidAdjustment:
    now = datetime.fromtimestamp(1_000_000 + rnd, UTC)
    return BidAdjustment(
        decision_id=f"{cid}:{ch}:{rnd}",
        campaign_id=cid,
        channel=ch,
        decided_at=now,
        as_of=now,
        round=rnd,
        old_bid=100.0,
        new_bid=bid,
        reason=reason,  # type: ignore[arg-type]
        target_kind="cpa",
        target=10.0,
    )


def test_hard_budget_cap() -> None:
    scenario = load_scenario(SEEDS)
    s = AdScheduler(scenario)
    c = scenario.campaigns[0]
    spent = 0
    while s.can_serve(c.campaign_id, 37, 100.0):
        s.record_spend(c.campaign_id, 37, 100.0)
        spent += 37
    assert spent <= c.daily_budget_minor
    assert s.budget_left_minor(c.campaign_id, 100.0) < 37
    assert s.can_serve(c.campaign_id, 37, 86_400.0 + 1)  # a new day


def test_apply_clamps_and_ignores_stale_rounds() -> None:
    scenario = load_scenario(SEEDS)
    s = AdScheduler(scenario)
    c = scenario.campaigns[0]
    ch = next(iter(c.channels))
    assert s.apply(_adj(c.campaign_id, ch, 2, 1e9))
    assert s.bid(c.campaign_id, ch) == c.bid_cap
    assert not s.apply(_adj(c.campaign_id, ch, 1, 100.0))
    assert s.bid(c.campaign_id, ch) == c.bid_cap
    assert s.apply(_adj(c.campaign_id, ch, 3, 100.0, "paused"))
    assert not s.can_serve(c.campaign_id, 1, 0.0)
    assert s.apply(_adj(c.campaign_id, ch, 4, 100.0))
    assert s.can_serve(c.campaign_id, 1, 0.0)
    assert not s.apply(_adj("nope", ch, 5, 100.0))
