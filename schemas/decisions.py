"""What the optimizer decides, as published on `<prefix>.bid_adjustments` (key = `<campaign_id>:<channel>`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import Channel, Identifier, UtcDatetime

ReasonCode = Literal[
    "learning",  # too few conversions to judge: bid held
    "toward_target",  # feedback step toward the CPA/ROAS target
    "at_floor",
    "at_cap",
    "cooldown",
    "pacing_ahead",  # spending faster than the daily plan: bid lowered
    "pacing_behind",
    "budget_exhausted",
    "paused",
    "manual_override",
    "within_band",  # efficiency within tolerance of target: bid held
    "budget_hold",  # budget-bound campaign behind plan: a cut the evidence does not support, held
]


class BidAdjustment(BaseModel):
    """One bid decision, with the figures it saw, so a person can audit why a bid moved."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    decision_id: Annotated[str, Field(min_length=1, max_length=128)]
    campaign_id: Identifier
    channel: Channel
    decided_at: UtcDatetime
    # Event time of the data the decision was based on (the pipeline's watermark).
    as_of: UtcDatetime
    round: Annotated[int, Field(ge=0)]
    old_bid: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    new_bid: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    reason: ReasonCode
    target_kind: Literal["cpa", "roas"]
    target: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    observed: Annotated[float | None, Field(allow_inf_nan=False)] = None
    spend: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    conversions: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    gmv: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    dry_run: bool = False
    # Optional audit figures (absent from older producers' messages).
    estimate: Annotated[float | None, Field(allow_inf_nan=False)] = None  # shrunk CPA/ROAS acted on
    pacing_multiplier: Annotated[float | None, Field(gt=0, allow_inf_nan=False)] = None
    spent_today: Annotated[float | None, Field(ge=0, allow_inf_nan=False)] = None
    planned_today: Annotated[float | None, Field(ge=0, allow_inf_nan=False)] = None
