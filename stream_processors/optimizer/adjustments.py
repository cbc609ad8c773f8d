"""A control round's decision as the event the scheduler applies (schemas.decisions.BidAdjustment).
Pure: shared by the optimizer service and the evaluation's simulated rounds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, cast

from schemas.decisions import BidAdjustment
from schemas.events import Channel
from stream_processors.optimizer.controller import ChannelDecision


class Targeted(Protocol):
    """A campaign's efficiency target (a scenario Campaign or a CampaignSpec)."""

    @property
    def target_kind(self) -> Literal["cpa", "roas"]: ...

    @property
    def target(self) -> float: ...


@dataclass(frozen=True, slots=True)
class DecisionAudit:
    """What a recorded decision carries beyond the bid, so a person can audit why it moved."""

    dry_run: bool
    spent_today: float  # the campaign's spend today when it was decided


def bid_adjustment(
    cd: ChannelDecision,
    campaign: Targeted,
    round_no: int,
    decided_at: datetime,
    as_of: datetime,
    audit: DecisionAudit | None = None,
) -> BidAdjustment:
    """Decision id `<campaign>:<channel>:<round>`: the scheduler ignores a round it has applied.
    With `audit`, the figures the decision saw too (the service's record); without, the bid alone."""
    d = cd.decision
    seen: dict[str, Any] = {}
    if audit is not None:
        seen = {
            "observed": d.observed,
            "spend": cd.figures.spend,
            "conversions": cd.figures.conversions,
            "gmv": cd.figures.gmv,
            "dry_run": audit.dry_run,
            "estimate": d.estimate,
            "pacing_multiplier": cd.pacing.multiplier if cd.pacing else None,
            "spent_today": audit.spent_today,
            "planned_today": cd.pacing.plan if cd.pacing else None,
        }
    return BidAdjustment(
        decision_id=f"{cd.campaign_id}:{cd.channel}:{round_no}",
        campaign_id=cd.campaign_id,
        channel=cast(Channel, cd.channel),
        old_bid=cd.old_bid,
        new_bid=d.new_bid,
        reason=d.reason,
        target_kind=campaign.target_kind,
        target=campaign.target,
        decided_at=decided_at,
        as_of=as_of,
        round=round_no,
        **seen,
    )
