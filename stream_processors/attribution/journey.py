"""One user's journey: touches, conversions and the credit they earn, as a pure state machine.

`apply_events` takes a user's stored state and a batch of that user's events and returns the new
state plus integer metric increments. It is order-independent inside the allowed lateness: when a
touch (or a follow that engages earlier touches) arrives after a conversion that happened later
in event time, the conversion's stored allocation is recomputed and the difference is emitted, so
the final figures equal an event-time recount whatever order the topics were read in. That is what
makes reading four topics in one consumer safe: Kafka orders each partition, never across topics.

Money is integer minor units and conversion counts are integer micro-units (1 conversion =
1_000_000), so every credit is an exact integer and the parts of a conversion sum to its value.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson

from schemas.events import AddToCart, Checkout, Follow, UserAction, View
from stream_processors.attribution.models import (
    MODEL_NAMES,
    Lookback,
    ModelName,
    Touch,
    allocate,
)

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
        )


class Increments:
    """Integer increments keyed by (bucket start or None for all-time totals, field).

    Views, by far the most common event, are first tallied per (bucket, campaign, channel,
    creator) and expanded into their field names once, when `by_key` is read: the same
    figures at a fraction of the per-event dictionary work."""

    __slots__ = ("_by_key", "_views")

    def __init__(self) -> None:
        self._by_key: dict[tuple[int | None, str], int] = {}
        # (bucket, campaign, channel, creator or None) -> [views, cost in minor units]
        self._views: dict[tuple[int, str, str, str | None], list[int]] = {}

    @property
    def by_key(self) -> dict[tuple[int | None, str], int]:
        if self._views:
            self._expand_views()
        return self._by_key

    def add(self, bucket: int | None, name: str, amount: int) -> None:
        if amount:
            key = (bucket, name)
            self._by_key[key] = self._by_key.get(key, 0) + amount

    def add_windowed(self, bucket: int, name: str, amount: int) -> None:
        if amount:
            by_key = self._by_key
            key: tuple[int | None, str] = (bucket, name)
            by_key[key] = by_key.get(key, 0) + amount
            key = (None, name)
            by_key[key] = by_key.get(key, 0) + amount

    def add_view(self, bucket: int, campaign: str, channel: str, creator: str | None, cost: int) -> None:
        key = (bucket, campaign, channel, creator)
        tally = self._views.get(key)
        if tally is None:
            self._views[key] = [1, cost]
        else:
            tally[0] += 1
            tally[1] += cost

    def _expand_views(self) -> None:
        views, self._views = self._views, {}
        add = self.add_windowed
        for (bucket, campaign, channel, creator), (n, cost) in views.items():
            base = f"c|{campaign}|{channel}"
            add(bucket, "t|views", n)
            add(bucket, base + "|views", n)
            add(bucket, "t|spend", cost)
            add(bucket, base + "|spend", cost)
            if creator:
                add(bucket, f"k|{creator}|views", n)
                add(bucket, f"k|{creator}|spend", cost)

    def merge(self, other: Increments) -> None:
        by_key = self.by_key
        for key, amount in other.by_key.items():
            by_key[key] = by_key.get(key, 0) + amount


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


class _MarkovWeights(NamedTuple):
    """The Markov model's learned channel weights: one map splits conversion counts, the other value
    (a channel closing dear conversions earns more value than its share of counts)."""

    conversions: Mapping[str, float] | None
    value: Mapping[str, float] | None


def apply_events(
    state: UserState,
    events: Sequence[UserAction],
    cfg: EngineConfig,
    out: Increments,
    *,
    horizon: float,
    channel_weights: Mapping[str, float] | None = None,
    times: Sequence[float] | None = None,
    value_weights: Mapping[str, float] | None = None,
) -> UserResult:
    """Apply one user's events (any order) to `state`, adding metric increments to `out`.

    The events must be distinct: duplicates are found per partition before this is called
    (processor.plan_batch, against the partition's event-id sets), not per user.
    `horizon` is the event time before which nothing can change any more (the partition's slowest
    watermark minus the allowed lateness): conversions older than it are finalised and dropped.
    `times`, when the caller already has them, are the events' `event_ts`, in the same order.
    `channel_weights` split the Markov model's conversion counts, `value_weights` its conversion value
    (MarkovChain.weights()); without value weights the channel weights split value too, as before.
    """
    weights = _MarkovWeights(channel_weights, channel_weights if value_weights is None else value_weights)
    journeys: list[JourneyObservation] = []
    bucket_s = cfg.bucket_s
    loyal_before = loyalty_flags(state, cfg.retention_s)
    # event_ts is computed from a datetime: once per event
    timed = list(zip(times, events, strict=True)) if times is not None else [(e.event_ts, e) for e in events]
    if len(timed) > 1:
        timed.sort(key=lambda p: (p[0], p[1].event_id))
    for at, event in timed:
        if state.last_at is None or at > state.last_at:
            state.last_at = at
        bucket = int(at // bucket_s) * bucket_s
        if isinstance(event, View):
            out.add_view(bucket, event.campaign_id, event.channel, event.creator_id, event.cost_minor)
            _insert_touch(state, event, at, cfg)
            if state.conversions:
                _reattribute(state, since=at, cfg=cfg, out=out, weights=weights)
        elif isinstance(event, Follow):
            out.add_windowed(bucket, "t|follows", 1)
            if event.creator_id not in state.follows:
                out.add(None, f"k|{event.creator_id}|followers", 1)
            state.follows.setdefault(event.creator_id, []).append(at)
            engaged_any = False
            for touch in state.touches:
                if (
                    touch.creator_id == event.creator_id
                    and touch.at <= at
                    and (touch.engaged_at is None or touch.engaged_at > at)
                ):
                    touch.engaged_at = at
                    engaged_any = True
            if engaged_any:
                _reattribute(state, since=at, cfg=cfg, out=out, weights=weights)
            _add_conversion(state, event.event_id, at, "follow", 0, None, cfg, out, weights)
        elif isinstance(event, AddToCart | Checkout):
            kind = event.action
            out.add_windowed(bucket, f"t|{KIND_FIELD[kind]}", 1)
            if isinstance(event, Checkout):
                out.add_windowed(bucket, "t|gmv", event.value_minor)
                # Loyalty: distinct buyers and repeat buyers, all-time. Each user crosses 1 and 2
                # checkouts exactly once whatever the arrival order (which checkout crosses it, and
                # so its time bucket, would depend on order: hence no windowed figure).
                state.checkouts += 1
                if state.checkouts == 1:
                    out.add(None, "t|buyers", 1)
                elif state.checkouts == 2:
                    out.add(None, "t|repeat_buyers", 1)
            _add_conversion(
                state, event.event_id, at, kind, event.value_minor, event.spu_id, cfg, out, weights
            )
            if kind == "checkout":
                path = _channel_path(_eligible(state, at, cfg, event.spu_id))
                journeys.append(JourneyObservation(path, True, event.value_minor))
    journeys.extend(_prune(state, horizon, cfg))
    _emit_loyalty(loyal_before, loyalty_flags(state, cfg.retention_s), out)
    return UserResult(state, journeys)


# Loyalty flags of one user toward one campaign (the L of AIPL), as bits.
BUYER, REPEAT_BUYER, FOLLOWER, RETAINED_FOLLOWER = 1, 2, 4, 8
LOYALTY_FIELDS = ((BUYER, "buyers"), (REPEAT_BUYER, "repeat_buyers"), (FOLLOWER, "followers"),
                  (RETAINED_FOLLOWER, "retained_followers"))


def _credited_campaigns(alloc: Mapping[str, Sequence[Credit]]) -> set[str]:
    return {row[0] for rows in alloc.values() for row in rows}


def loyalty_flags(state: UserState, retention_s: float) -> dict[str, int]:
    """Per campaign: is this user its buyer (a checkout credited to it), repeat buyer (two),
    follower (a follow credited to it) and retained follower (active again `retention_s` after
    the first such follow)?

    Every input is order-independent (credited conversions are re-attributed when late touches
    arrive; counts, earliest and latest times do not depend on arrival order), so the flags after
    the last event are too; `apply_events` emits each batch's change in the flags, and the stored
    sums are exact distinct-user counts. Credited = in the credit of any model, i.e. the campaign
    had an eligible touch."""
    if not (state.conversions or state.loyal_checkouts or state.loyal_follow_at):
        return {}
    checkouts = dict(state.loyal_checkouts)
    follow_at = dict(state.loyal_follow_at)
    for conv in state.conversions:
        _count_loyalty(conv, checkouts, follow_at)
    flags = {c: BUYER | (REPEAT_BUYER if n >= 2 else 0) for c, n in checkouts.items() if n}
    last = state.last_at if state.last_at is not None else float("-inf")
    for campaign, at in follow_at.items():
        flags[campaign] = flags.get(campaign, 0) | FOLLOWER | (RETAINED_FOLLOWER if last >= at + retention_s else 0)
    return flags


def _emit_loyalty(before: Mapping[str, int], after: Mapping[str, int], out: Increments) -> None:
    if before == after:
        return
    for campaign in before.keys() | after.keys():
        old, new = before.get(campaign, 0), after.get(campaign, 0)
        if old == new:
            continue
        for bit, name in LOYALTY_FIELDS:
            out.add(None, f"l|{campaign}|{name}", bool(new & bit) - bool(old & bit))


def _count_loyalty(conv: ConversionRecord, checkouts: dict[str, int], follow_at: dict[str, float]) -> None:
    """Add one conversion to per-campaign checkout counts (capped at 2, all the flags need) and
    earliest credited follows. Used for live conversions and to fold pruned ones into the state."""
    if conv.kind == "add_to_cart" or not conv.alloc:
        return
    for campaign in _credited_campaigns(conv.alloc):
        if conv.kind == "checkout":
            checkouts[campaign] = min(2, checkouts.get(campaign, 0) + 1)
        elif conv.at < follow_at.get(campaign, float("inf")):
            follow_at[campaign] = conv.at


def _touch_order(t: TouchRecord) -> tuple[float, str]:
    return (t.at, t.event_id)


def _insert_touch(state: UserState, view: View, at: float, cfg: EngineConfig) -> None:
    record = TouchRecord(
        at=at,
        event_id=view.event_id,
        campaign_id=view.campaign_id,
        channel=view.channel,
        creative_id=view.creative_id,
        creator_id=view.creator_id,
        engaged_at=at if view.engaged else None,
    )
    if view.creator_id:
        later_follows = [f for f in state.follows.get(view.creator_id, ()) if f >= record.at]
        if later_follows:
            first = min(later_follows)
            record.engaged_at = first if record.engaged_at is None else min(record.engaged_at, first)
    # The stored touches are sorted; inserting after equal keys is what append + stable sort did.
    touches = state.touches
    if not touches or (touches[-1].at, touches[-1].event_id) <= (at, record.event_id):
        touches.append(record)  # the common case: the newest touch
    else:
        bisect.insort_right(touches, record, key=_touch_order)
    if len(state.touches) > cfg.max_touches:
        del state.touches[: len(state.touches) - cfg.max_touches]


def _eligible(state: UserState, conversion_at: float, cfg: EngineConfig, spu_id: str | None) -> list[Touch]:
    out: list[Touch] = []
    products = cfg.campaign_products if spu_id is not None else None
    for t in state.touches:
        if t.at > conversion_at:
            break
        if products:
            promoted = products.get(t.campaign_id)
            if promoted is not None and spu_id not in promoted:
                continue
        engaged = t.engaged_at is not None and t.engaged_at <= conversion_at
        lookback = cfg.lookback_of(t.campaign_id)
        limit = lookback.engaged_s if engaged else lookback.view_s
        if conversion_at - t.at <= limit:
            out.append(Touch(t.at, t.campaign_id, t.channel, t.creative_id, t.creator_id, engaged))
    return out


def _channel_path(touches: Iterable[Touch]) -> tuple[str, ...]:
    return tuple(t.channel for t in touches)


def _allocations(
    touches: Sequence[Touch],
    at: float,
    kind: str,
    value_minor: int,
    cfg: EngineConfig,
    weights: _MarkovWeights,
) -> dict[str, list[Credit]]:
    result: dict[str, list[Credit]] = {}
    if not touches:
        return result
    # The touches are already eligible: an infinite lookback keeps allocate() from filtering again.
    unlimited = Lookback(view_s=float("inf"), engaged_s=float("inf"))
    for model in cfg.models:
        counts = allocate(
            model,
            touches,
            at,
            MICRO,
            lookback=unlimited,
            half_life_s=cfg.half_life_s,
            channel_weights=weights.conversions,
        )
        values = (
            allocate(
                model,
                touches,
                at,
                value_minor,
                lookback=unlimited,
                half_life_s=cfg.half_life_s,
                channel_weights=weights.value,
            )
            if value_minor
            else [(t, 0) for t, _ in counts]
        )
        merged: dict[tuple[str, str, str, str], list[int]] = {}
        for (touch, micro), (_, value) in zip(counts, values, strict=True):
            key = (touch.campaign_id, touch.channel, touch.creator_id or "", touch.creative_id)
            acc = merged.setdefault(key, [0, 0])
            acc[0] += micro
            acc[1] += value
        result[model] = [(c, ch, cr, cv, m, v) for (c, ch, cr, cv), (m, v) in sorted(merged.items())]
    return result


def _emit(
    alloc: Mapping[str, Sequence[Credit]],
    kind: str,
    bucket: int,
    sign: int,
    out: Increments,
) -> None:
    kind_field = KIND_FIELD[kind]
    for model, rows in alloc.items():
        for campaign, channel, creator, creative, micro, value in rows:
            base = f"c|{campaign}|{channel}|{model}"
            out.add_windowed(bucket, f"{base}|{kind_field}", sign * micro)
            # Creatives are many and short-lived: all-time credit only, no windows.
            out.add(None, f"v|{creative}|{model}|{kind_field}", sign * micro)
            if kind == "checkout":
                out.add_windowed(bucket, f"{base}|gmv", sign * value)
                out.add(None, f"v|{creative}|{model}|gmv", sign * value)
            if creator:
                out.add_windowed(bucket, f"k|{creator}|{model}|{kind_field}", sign * micro)
                if kind == "checkout":
                    out.add_windowed(bucket, f"k|{creator}|{model}|gmv", sign * value)


def _add_conversion(
    state: UserState,
    event_id: str,
    at: float,
    kind: str,
    value_minor: int,
    spu_id: str | None,
    cfg: EngineConfig,
    out: Increments,
    weights: _MarkovWeights,
) -> None:
    alloc = _allocations(_eligible(state, at, cfg, spu_id), at, kind, value_minor, cfg, weights)
    bucket = bucket_of(at, cfg.bucket_s)
    if alloc:
        _emit(alloc, kind, bucket, +1, out)
    else:
        out.add_windowed(bucket, f"u|{KIND_FIELD[kind]}", 1)
    state.conversions.append(ConversionRecord(at, event_id, kind, value_minor, alloc, spu_id))


def _reattribute(
    state: UserState,
    since: float,
    cfg: EngineConfig,
    out: Increments,
    weights: _MarkovWeights,
) -> None:
    """Recompute the credit of stored conversions at or after `since`; emit only the difference."""
    for conv in state.conversions:
        if conv.at < since:
            continue
        new = _allocations(
            _eligible(state, conv.at, cfg, conv.spu_id), conv.at, conv.kind, conv.value_minor, cfg, weights
        )
        if new == conv.alloc:
            continue
        bucket = bucket_of(conv.at, cfg.bucket_s)
        if conv.alloc:
            _emit(conv.alloc, conv.kind, bucket, -1, out)
        else:
            out.add_windowed(bucket, f"u|{KIND_FIELD[conv.kind]}", -1)
        if new:
            _emit(new, conv.kind, bucket, +1, out)
        else:
            out.add_windowed(bucket, f"u|{KIND_FIELD[conv.kind]}", 1)
        conv.alloc = new


def _prune(state: UserState, horizon: float, cfg: EngineConfig) -> list[JourneyObservation]:
    """Drop what can no longer change a figure; report touches that aged out unconverted."""
    if state.conversions and any(c.at < horizon for c in state.conversions):
        for conv in state.conversions:
            if conv.at < horizon:  # final: keep what the loyalty flags need of it
                _count_loyalty(conv, state.loyal_checkouts, state.loyal_follow_at)
        state.conversions = [c for c in state.conversions if c.at >= horizon]
    keep_from = horizon - cfg.longest_lookback_s
    # Touches are sorted by time: the expired ones are a prefix.
    if not state.touches or state.touches[0].at >= keep_from:
        return []
    expired = [t for t in state.touches if t.at < keep_from]
    state.touches = [t for t in state.touches if t.at >= keep_from]
    last_checkout = max((c.at for c in state.conversions if c.kind == "checkout"), default=None)
    if last_checkout is not None and any(t.at <= last_checkout for t in expired):
        return []
    return [JourneyObservation(tuple(t.channel for t in expired), False)]
