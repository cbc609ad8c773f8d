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
from typing import NamedTuple

from schemas.events import AddToCart, Checkout, Follow, UserAction, View
from stream_processors.attribution.increments import Increments
from stream_processors.attribution.lift_cohorts import lift_checkout, lift_view, prune_lift
from stream_processors.attribution.loyalty import count_loyalty, emit_loyalty, loyalty_flags
from stream_processors.attribution.models import Lookback, ModelName, Touch, allocate
from stream_processors.attribution.user_state import (
    KIND_FIELD,
    MICRO,
    ConversionRecord,
    Credit,
    EngineConfig,
    JourneyObservation,
    TouchRecord,
    UserResult,
    UserState,
    bucket_of,
)

# The engine's public names, importable from here as before the state and loyalty modules were split off.
__all__ = [
    "MICRO",
    "EngineConfig",
    "Increments",
    "JourneyObservation",
    "UserResult",
    "UserState",
    "apply_events",
    "loyalty_flags",
]


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
            if cfg.lift_window_s:
                lift_view(state.lift, event.campaign_id, event.held_out, at, state.conversions, cfg, out)
            if event.held_out:
                # A ghost view: the user is in the campaign's holdout group and saw nothing. Not a
                # touch (no credit, no views or spend); only the lift cohort above and this count.
                out.add_windowed(bucket, "t|ghost_views", 1)
                continue
            out.add_view(bucket, event.campaign_id, event.channel, event.creator_id, event.cost_minor)
            _insert_touch(state, event, at, cfg)
            if state.conversions:
                _reattribute(state, since=at, cfg=cfg, out=out, weights=weights)
        elif isinstance(event, Follow):
            _apply_follow(state, event, at, bucket, cfg, out, weights)
        elif isinstance(event, AddToCart | Checkout):
            journey = _apply_purchase(state, event, at, bucket, cfg, out, weights)
            if journey is not None:
                journeys.append(journey)
    journeys.extend(_prune(state, horizon, cfg))
    if state.lift:
        prune_lift(state.lift, horizon, cfg)
    emit_loyalty(loyal_before, loyalty_flags(state, cfg.retention_s), out)
    return UserResult(state, journeys)


def _apply_follow(
    state: UserState,
    event: Follow,
    at: float,
    bucket: int,
    cfg: EngineConfig,
    out: Increments,
    weights: _MarkovWeights,
) -> None:
    """A follow is a conversion, and it engages the user's earlier touches of that creator."""
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


def _apply_purchase(
    state: UserState,
    event: AddToCart | Checkout,
    at: float,
    bucket: int,
    cfg: EngineConfig,
    out: Increments,
    weights: _MarkovWeights,
) -> JourneyObservation | None:
    """An add-to-cart or checkout conversion; a checkout also ends a converted journey (returned)."""
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
    _add_conversion(state, event.event_id, at, kind, event.value_minor, event.spu_id, cfg, out, weights)
    if kind != "checkout":
        return None
    if state.lift:
        lift_checkout(state.lift, at, event.spu_id, event.value_minor, cfg, out)
    path = _channel_path(_eligible(state, at, cfg, event.spu_id))
    return JourneyObservation(path, True, event.value_minor)


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


# The touches are already eligible: an infinite lookback keeps allocate() from filtering again.
_UNLIMITED = Lookback(view_s=float("inf"), engaged_s=float("inf"))


def _split(
    model: ModelName,
    touches: Sequence[Touch],
    at: float,
    amount: int,
    cfg: EngineConfig,
    channel_weights: Mapping[str, float] | None,
) -> list[tuple[Touch, int]]:
    return allocate(
        model,
        touches,
        at,
        amount,
        lookback=_UNLIMITED,
        half_life_s=cfg.half_life_s,
        channel_weights=channel_weights,
    )


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
    for model in cfg.models:
        counts = _split(model, touches, at, MICRO, cfg, weights.conversions)
        values = (
            _split(model, touches, at, value_minor, cfg, weights.value)
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


def _emit_credit(
    alloc: Mapping[str, Sequence[Credit]], kind: str, bucket: int, sign: int, out: Increments
) -> None:
    """Add (sign +1) or take back (-1) a conversion's credit, or its count as unattributed when
    no touch was credited."""
    if alloc:
        _emit(alloc, kind, bucket, sign, out)
    else:
        out.add_windowed(bucket, f"u|{KIND_FIELD[kind]}", sign)


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
    _emit_credit(alloc, kind, bucket_of(at, cfg.bucket_s), +1, out)
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
        _emit_credit(conv.alloc, conv.kind, bucket, -1, out)
        _emit_credit(new, conv.kind, bucket, +1, out)
        conv.alloc = new


def _prune(state: UserState, horizon: float, cfg: EngineConfig) -> list[JourneyObservation]:
    """Drop what can no longer change a figure; report touches that aged out unconverted."""
    if state.conversions and any(c.at < horizon for c in state.conversions):
        for conv in state.conversions:
            if conv.at < horizon:  # final: keep what the loyalty flags need of it
                count_loyalty(conv, state.loyal_checkouts, state.loyal_follow_at)
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
