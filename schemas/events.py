"""The four user actions of the AIPL funnel: view, follow, add_to_cart, checkout.

Money is carried in integer minor units (cents/fen) so that every figure downstream is an exact
integer sum: an independent recount of the input must equal what the pipeline stored, to the
unit, and floats would make that equality depend on summation order.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

Channel = Literal["kol", "brand", "feed", "search"]
CHANNELS: tuple[Channel, ...] = ("kol", "brand", "feed", "search")
Action = Literal["view", "follow", "add_to_cart", "checkout"]
ACTIONS: tuple[Action, ...] = ("view", "follow", "add_to_cart", "checkout")
ConversionKind = Literal["follow", "add_to_cart", "checkout"]
CONVERSION_KINDS: tuple[ConversionKind, ...] = ("follow", "add_to_cart", "checkout")

# A payload larger than this is not a user action; it is rejected before parsing.
MAX_PAYLOAD_BYTES = 16 * 1024


# Naive timestamps are ambiguous (whose local time?) and would silently shift windows: rejected.
# An explicit offset is kept as given (the same instant as its UTC form, and every window reads
# `event_ts`); the check runs in pydantic's Rust core, not as a Python validator per event.
UtcDatetime = AwareDatetime
Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
MinorUnits = Annotated[int, Field(ge=0, le=10**12)]


class _Event(BaseModel):
    # allow_inf_nan=False: NaN/Infinity are not JSON and not money; the parser rejects them.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False, allow_inf_nan=False)

    schema_version: Literal[1] = 1
    event_id: Identifier
    user_id: Identifier
    event_time: UtcDatetime

    @property
    def event_ts(self) -> float:
        """Event time as POSIX seconds, the unit of every window and lookback."""
        return self.event_time.timestamp()


class View(_Event):
    """A user saw an ad or a seeded note: the touch that attribution credits."""

    action: Literal["view"] = "view"
    campaign_id: Identifier
    channel: Channel
    creative_id: Identifier
    creator_id: Identifier | None = None
    segment: Identifier | None = None
    # What the advertiser paid for this impression, in the campaign's currency.
    cost_minor: MinorUnits
    currency: Currency = "CNY"
    # True when the user engaged (opened the product link, liked, commented): platforms count
    # engaged touches over a longer lookback than plain impressions.
    engaged: bool = False
    # True for a ghost view: the user is in the campaign's holdout group, so the scheduler won
    # the impression but did not show the ad (and paid nothing: cost_minor is 0). Ghost views
    # mark who *would* have been exposed, which conversion-lift figures compare against.
    held_out: bool = False


class Follow(_Event):
    action: Literal["follow"] = "follow"
    creator_id: Identifier
    note_id: Identifier | None = None


class _Commerce(_Event):
    spu_id: Identifier
    value_minor: MinorUnits
    currency: Currency


class AddToCart(_Commerce):
    action: Literal["add_to_cart"] = "add_to_cart"
    quantity: Annotated[int, Field(ge=1, le=1000)] = 1


class Checkout(_Commerce):
    action: Literal["checkout"] = "checkout"
    order_id: Identifier


UserAction = View | Follow | AddToCart | Checkout

ACTION_MODELS: dict[str, type[_Event]] = {
    "view": View,
    "follow": Follow,
    "add_to_cart": AddToCart,
    "checkout": Checkout,
}


def is_finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
