from __future__ import annotations

from datetime import UTC, datetime

from stream_processors.optimizer.adjustments import DecisionAudit, bid_adjustment
from stream_processors.optimizer.controller import CampaignSpec, ChannelDecision, ChannelFigures, Decision
from stream_processors.optimizer.pacing import PacingDecision

SPEC = CampaignSpec("c1", "cpa", 100.0, 5000.0, 50.0, 800.0, ("feed",), {"feed": 200.0})
AT = datetime(2026, 1, 1, 12, tzinfo=UTC)
DECIDED = ChannelDecision(
    "c1",
    "feed",
    200.0,
    Decision(220.0, "toward_target", 80.0, estimate=85.0, error=0.1),
    ChannelFigures(800.0, 10.0, 0.0),
    PacingDecision(0.9, plan=2500.0, ratio=1.1),
)


def test_the_bid_alone_without_an_audit() -> None:
    adj = bid_adjustment(DECIDED, SPEC, 7, AT, AT)
    assert adj.decision_id == "c1:feed:7" and adj.round == 7
    assert (adj.old_bid, adj.new_bid, adj.reason) == (200.0, 220.0, "toward_target")
    assert (adj.target_kind, adj.target) == ("cpa", 100.0)
    assert adj.observed is None and adj.spend == 0.0 and adj.pacing_multiplier is None


def test_an_audit_carries_the_figures_the_decision_saw() -> None:
    adj = bid_adjustment(DECIDED, SPEC, 7, AT, AT, DecisionAudit(dry_run=True, spent_today=1200.0))
    assert (adj.observed, adj.estimate) == (80.0, 85.0)
    assert (adj.spend, adj.conversions, adj.gmv) == (800.0, 10.0, 0.0)
    assert (adj.pacing_multiplier, adj.planned_today, adj.spent_today) == (0.9, 2500.0, 1200.0)
    assert adj.dry_run
