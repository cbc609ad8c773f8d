"""What the attribution engine stores per user (touches, conversions and their credit, follows,
loyalty carried over from pruned conversions) and its configuration (journey.py applies events).

Money is integer minor units and conversion counts are integer micro-units (1 conversion =
1_000_000), so every credit is an exact integer and the parts of a conversion sum to its value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

from stream_processors.attribution.models import MODEL_NAMES, Lookback, ModelName

MICRO = 1_000_000
KIND_FIELD = {"follow": "follows", "add_to_cart": "add_to_carts", "checkout": "checkouts"}


@dataclass(frozen=True, slots=True)
class EngineConfig:
    lookback: Lookback
    half_life_s: float
    # Conversions stay re-attributable for this long behind the partition's slowest topic
    # watermark; older arrivals are dead-lettered as late upstream (processor.py).
    lateness_s: float
    bucket_s: int = 60
    max_touches: int = 200
    # Per-campaign lookbacks (the advertiser's own "7-day click / 1-day view"), else `lookback`.
    campaign_lookbacks: Mapping[str, Lookback] = field(default_factory=dict)
    # A campaign's follower counts as retained when the user is active again this long after
    # their first follow credited to the campaign (day-1 retention by default).
    retention_s: float = 86_400.0
    # campaign -> the SPUs it promotes. An add-to-cart or checkout of an SPU can only credit touches
    # of campaigns promoting that SPU (a lipstick ad did not sell the serum the user bought next),
    # as an advertiser's conversion tracking only counts its own products. Empty: any touch may be
    # credited; a campaign missing from a non-empty map may be credited with any product.
    campaign_products: Mapping[str, frozenset[str]] = field(default_factory=dict)

    models: tuple[ModelName, ...] = MODEL_NAMES
    # Conversion lift (attribution/lift_cohorts.py): checkouts count for a user's lift cohort this
    # long after their first view of a campaign. 0 keeps no lift state and no lift figures.
    lift_window_s: float = 7 * 86_400.0
    # Derived once (read for every user of every batch): the longest engaged lookback of any campaign.
    longest_lookback_s: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        longest = max([self.lookback.engaged_s, *(lb.engaged_s for lb in self.campaign_lookbacks.values())])
        object.__setattr__(self, "longest_lookback_s", longest)

    def lookback_of(self, campaign_id: str) -> Lookback:
        return self.campaign_lookbacks.get(campaign_id, self.lookback)


# One row of a conversion's allocation: (campaign, channel, creator or "", creative,
# credited micro-conversions, credited value in minor units).
Credit = tuple[str, str, str, str, int, int]


@dataclass(slots=True)
class TouchRecord:
    at: float
    event_id: str
    campaign_id: str
    channel: str
    creative_id: str
    creator_id: str | None
    # Event time from which the touch counts as engaged (clicked/opened, or its creator followed).
    engaged_at: float | None


@dataclass(slots=True)
class ConversionRecord:
    at: float
    event_id: str
    kind: str
    value_minor: int
    # model -> [(campaign, channel, creator, credit_micro, credit_value)]
    alloc: dict[str, list[Credit]]
    spu_id: str | None = None  # the product added or bought (None for a follow)


@dataclass(slots=True)
class UserState:
    touches: list[TouchRecord] = field(default_factory=list)
    conversions: list[ConversionRecord] = field(default_factory=list)
    # creator -> times the user followed them: a follow engages that creator's earlier touches.
    follows: dict[str, list[float]] = field(default_factory=dict)
    checkouts: int = 0
    # Loyalty per campaign from conversions already pruned (final: their credit can no longer
    # move): checkouts credited to the campaign (capped at 2, all that the flags need) and the
    # earliest follow credited to it. Live conversions add to these when the flags are computed.
    loyal_checkouts: dict[str, int] = field(default_factory=dict)
    loyal_follow_at: dict[str, float] = field(default_factory=dict)
    last_at: float | None = None  # the user's latest event time (a max: order-independent)
    # Conversion-lift episodes per campaign (attribution/lift_cohorts.py: first exposure, group,
    # counted checkouts and GMV), as compact lists.
    lift: dict[str, list[list[float]]] = field(default_factory=dict)

    def to_json(self) -> bytes:
        # orjson: the same JSON document as json.dumps (floats round-trip exactly), several times faster.
        doc: dict[str, object] = {
            "t": [
                [t.at, t.event_id, t.campaign_id, t.channel, t.creative_id, t.creator_id, t.engaged_at]
                for t in self.touches
            ],
            "c": [
                [c.at, c.event_id, c.kind, c.value_minor, c.alloc]
                if c.spu_id is None
                else [c.at, c.event_id, c.kind, c.value_minor, c.alloc, c.spu_id]
                for c in self.conversions
            ],
            "f": self.follows,
            "b": self.checkouts,
            "l": self.last_at,
        }
        # Most users never convert: leave the loyalty maps out rather than store empty ones.
        if self.loyal_checkouts:
            doc["lc"] = self.loyal_checkouts
        if self.loyal_follow_at:
            doc["lf"] = self.loyal_follow_at
        if self.lift:
            doc["x"] = self.lift
        return orjson.dumps(doc)

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> UserState:
        if not raw:
            return cls()
        data = orjson.loads(raw)
        return cls(
            touches=[TouchRecord(*row) for row in data["t"]],
            conversions=[
                ConversionRecord(
                    c[0], c[1], c[2], c[3], {m: [tuple(x) for x in v] for m, v in c[4].items()}, *c[5:6]
                )
                for c in data["c"]
            ],
            follows=data.get("f", {}),
            checkouts=int(data.get("b", 0)),
            loyal_checkouts=data.get("lc", {}),
            loyal_follow_at=data.get("lf", {}),
            last_at=data.get("l"),
            lift=data.get("x", {}),
        )


@dataclass(slots=True)
class JourneyObservation:
    """A finished path for the data-driven model: channels in order, converted or not, and the value
    of the conversion (base-currency minor units; 0 when not converted) for the value weights."""

    channels: tuple[str, ...]
    converted: bool
    value_minor: int = 0


@dataclass(slots=True)
class UserResult:
    state: UserState
    journeys: list[JourneyObservation]


def bucket_of(at: float, bucket_s: int) -> int:
    return int(at // bucket_s) * bucket_s
