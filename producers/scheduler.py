"""The ad scheduler: current bids per campaign and channel, daily budgets, and the bid adjustments
it applies. Pure: the simulator asks it what to serve; the Kafka runner feeds it adjustments.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from producers.scenario import Scenario
from schemas.decisions import BidAdjustment

log = logging.getLogger("seedloop.scheduler")
DAY_S = 86_400


@dataclass(slots=True)
class _Applied:
    round: int
    decided_at: float


@dataclass(slots=True)
class AdScheduler:
    scenario: Scenario
    bids: dict[tuple[str, str], float] = field(default_factory=dict)
    paused: set[str] = field(default_factory=set)
    spend_today_minor: dict[str, int] = field(default_factory=dict)
    day: int | None = None
    applied: dict[tuple[str, str], _Applied] = field(default_factory=dict)
    adjustments_applied: int = 0

    def __post_init__(self) -> None:
        for c in self.scenario.campaigns:
            for channel, bid in c.channels.items():
                self.bids.setdefault((c.campaign_id, channel), bid)

    def bid(self, campaign_id: str, channel: str) -> float:
        return self.bids[(campaign_id, channel)]

    def apply(self, adj: BidAdjustment) -> bool:
        """Apply a published decision. Returns False for ones it must ignore, and says why in the log."""
        key = (adj.campaign_id, adj.channel)
        if key not in self.bids:
            log.warning(
                "bid adjustment for an unknown campaign/channel ignored",
                extra={"campaign": adj.campaign_id, "channel": adj.channel},
            )
            return False
        if adj.dry_run:
            return False
        seen = self.applied.get(key)
        decided = adj.decided_at.timestamp()
        # A replayed or reordered decision must not undo a newer one.
        if seen is not None and (adj.round, decided) <= (seen.round, seen.decided_at):
            return False
        campaign = self.scenario.campaign(adj.campaign_id)
        self.bids[key] = min(campaign.bid_cap, max(campaign.bid_floor, adj.new_bid))
        self.applied[key] = _Applied(adj.round, decided)
        if adj.reason == "paused":
            self.paused.add(adj.campaign_id)
        elif adj.campaign_id in self.paused:
            self.paused.discard(adj.campaign_id)
        self.adjustments_applied += 1
        return True

    def _roll_day(self, at: float) -> None:
        day = int(at // DAY_S)
        if day != self.day:
            self.day = day
            self.spend_today_minor.clear()

    def budget_left_minor(self, campaign_id: str, at: float) -> int:
        self._roll_day(at)
        budget = self.scenario.campaign(campaign_id).daily_budget_minor
        return budget - self.spend_today_minor.get(campaign_id, 0)

    def can_serve(self, campaign_id: str, cost_minor: int, at: float) -> bool:
        """Serve only while the impression fits the day's budget: the budget is a hard cap."""
        if campaign_id in self.paused:
            return False
        return self.budget_left_minor(campaign_id, at) >= cost_minor

    def record_spend(self, campaign_id: str, cost_minor: int, at: float) -> None:
        self._roll_day(at)
        self.spend_today_minor[campaign_id] = self.spend_today_minor.get(campaign_id, 0) + cost_minor
