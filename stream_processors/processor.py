"""Plan one partition's batch: decode, contain bad input, attribute. Pure: no Kafka, no Redis.

The agent (agents.py) reads the partition's stored meta and user states, calls `plan_batch`, sends
the dead letters, and hands the plan to the Redis store (state.py) to apply in one atomic call.
Keeping the decisions here makes every rule (offset replay, lateness, dedup, currency) testable
in microseconds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from schemas.codec import DecodeError, decode_action
from schemas.events import AddToCart, Checkout, UserAction, View
from stream_processors.attribution.journey import (
    EngineConfig,
    Increments,
    UserState,
    apply_events,
)


class RawMessage(NamedTuple):
    """One consumed message (a tuple: built for every event, and cheaper than a frozen dataclass)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    # When the broker (or producer) stamped it, POSIX seconds: the start of event-to-Redis latency.
    timestamp: float | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message: RawMessage
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Catalogue:
    """What the worker accepts: known campaigns with their channels, and currency rates."""

    campaign_channels: Mapping[str, frozenset[str]]
    base_currency: str
    # minor units of currency X -> minor units of the base currency
    rates_to_base: Mapping[str, float]
    # (campaign, channel) pairs a view may carry: one set lookup accepts a valid view.
    view_channels: frozenset[tuple[str, str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pairs = frozenset((c, ch) for c, chans in self.campaign_channels.items() for ch in chans)
        object.__setattr__(self, "view_channels", pairs)

    def to_base(self, value_minor: int, currency: str) -> int | None:
        rate = self.rates_to_base.get(currency)
        return None if rate is None else round(value_minor * rate)


@dataclass(frozen=True, slots=True)
class ProcessingRules:
    engine: EngineConfig
    max_future_s: float
    catalogue: Catalogue


class Decoded(NamedTuple):
    message: RawMessage
    event: UserAction
    at: float  # event time, POSIX seconds (computed once: it is read several times per event)


@dataclass(slots=True)
class DecodedBatch:
    partition: int
    messages: list[RawMessage]
    events: list[Decoded]
    dead_letters: list[DeadLetter]

    @property
    def user_ids(self) -> list[str]:
        return sorted({d.event.user_id for d in self.events})


@dataclass(slots=True)
class PartitionMeta:
    """What Redis holds for a partition: owner epoch, last applied offset and watermark per topic."""

    epoch: str | None = None
    offsets: dict[str, int] = field(default_factory=dict)
    watermarks: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> PartitionMeta:
        meta = cls()
        for k, v in raw.items():
            key = k.decode() if isinstance(k, bytes) else k
            val = v.decode() if isinstance(v, bytes) else v
            if key == "epoch":
                meta.epoch = val
            elif key.startswith("off:"):
                meta.offsets[key[4:]] = int(val)
            elif key.startswith("wm:"):
                meta.watermarks[key[3:]] = float(val)
        return meta


@dataclass(slots=True)
class TopicProgress:
    expected_offset: int  # what Redis held when we read it (-1: nothing applied yet)
    new_offset: int
    watermark: float


@dataclass(slots=True)
class BatchSignals:
    """What the applied events add to reach and to the remarketing audiences (written with the
    batch, see apply_batch.lua)."""

    # (bucket, campaign, channel) -> users who viewed; (bucket, campaign) -> users with an engaged view
    reach: dict[tuple[int, str, str], set[str]] = field(default_factory=dict)
    engaged_reach: dict[tuple[int, str], set[str]] = field(default_factory=dict)
    # user -> latest event time in the batch of: a checkout, an add-to-cart, an engagement
    # (an engaged view or a follow)
    checkouts: dict[str, float] = field(default_factory=dict)
    carts: dict[str, float] = field(default_factory=dict)
    engagements: dict[str, float] = field(default_factory=dict)


def collect_signals(applied: Sequence[Decoded], bucket_s: int) -> BatchSignals:
    out = BatchSignals()
    reach, engaged_reach = out.reach, out.engaged_reach
    for d in applied:
        event, at = d.event, d.at
        user = event.user_id
        if type(event) is View:
            bucket = int(at // bucket_s) * bucket_s
            key = (bucket, event.campaign_id, event.channel)
            users = reach.get(key)
            if users is None:
                reach[key] = {user}
            else:
                users.add(user)
            if event.engaged:
                engaged_reach.setdefault((bucket, event.campaign_id), set()).add(user)
                _latest(out.engagements, user, at)
        elif type(event) is Checkout:
            _latest(out.checkouts, user, at)
        elif type(event) is AddToCart:
            _latest(out.carts, user, at)
        else:
            _latest(out.engagements, user, at)  # a follow
    return out


def _latest(times: dict[str, float], user: str, at: float) -> None:
    if at > times.get(user, float("-inf")):
        times[user] = at


@dataclass(slots=True)
class BatchPlan:
    partition: int
    progress: dict[str, TopicProgress]
    user_states: dict[str, bytes]
    increments: Increments
    journey_paths: Counter[str]
    dead_letters: list[DeadLetter]
    applied: list[Decoded]
    duplicates: list[UserAction]
    replayed: Counter[str]
    signals: BatchSignals = field(default_factory=BatchSignals)


def decode_batch(
    partition: int, messages: Sequence[RawMessage], topic_actions: Mapping[str, str], rules: ProcessingRules
) -> DecodedBatch:
    events: list[Decoded] = []
    dead: list[DeadLetter] = []
    for msg in messages:
        try:
            if msg.value is None:
                raise DecodeError("not_json", "empty message (tombstone)")
            event = decode_action(msg.value, topic_actions.get(msg.topic))
        except DecodeError as exc:
            dead.append(DeadLetter(msg, exc.reason, exc.detail))
            continue
        problem = _catalogue_problem(event, rules.catalogue)
        if problem:
            dead.append(DeadLetter(msg, problem[0], problem[1]))
            continue
        events.append(Decoded(msg, event, event.event_ts))
    return DecodedBatch(partition, list(messages), events, dead)


def _catalogue_problem(event: UserAction, catalogue: Catalogue) -> tuple[str, str] | None:
    if isinstance(event, View):
        # The common case, a valid view, in one set lookup; the checks below name what is wrong.
        if (event.campaign_id, event.channel) in catalogue.view_channels and event.currency == catalogue.base_currency:
            return None
        channels = catalogue.campaign_channels.get(event.campaign_id)
        if channels is None:
            return "unknown_campaign", f"campaign_id={event.campaign_id!r}"
        if event.channel not in channels:
            return "unknown_channel", f"campaign {event.campaign_id!r} does not buy channel {event.channel!r}"
        if event.currency != catalogue.base_currency:
            return "unknown_currency", f"view cost must be in {catalogue.base_currency}, got {event.currency}"
    elif isinstance(event, AddToCart | Checkout) and event.currency not in catalogue.rates_to_base:
        return "unknown_currency", f"no rate for {event.currency!r}"
    return None


def _in_base_currency(event: UserAction, catalogue: Catalogue) -> UserAction:
    if isinstance(event, AddToCart | Checkout) and event.currency != catalogue.base_currency:
        converted = catalogue.to_base(event.value_minor, event.currency)
        assert converted is not None  # _catalogue_problem rejected unknown currencies
        return event.model_copy(update={"value_minor": converted, "currency": catalogue.base_currency})
    return event


def _topic_offset(d: Decoded) -> tuple[str, int]:
    return (d.message.topic, d.message.offset)


def plan_batch(
    batch: DecodedBatch,
    meta: PartitionMeta,
    stored_states: Mapping[str, str | bytes | None],
    rules: ProcessingRules,
    channel_weights: Mapping[str, float] | None = None,
    *,
    wall_now: float,
) -> BatchPlan:
    """Decide everything a batch does to the partition's state, given what Redis held.

    `wall_now` (injected clock) bounds how far in the future an event may claim to be: beyond both
    the wall clock and the partition's watermark (a simulation may run ahead of the wall clock).
    """
    lateness = rules.engine.lateness_s
    progress: dict[str, TopicProgress] = {}
    watermarks = dict(meta.watermarks)
    replayed: Counter[str] = Counter()
    dead = list(batch.dead_letters)

    for msg in batch.messages:
        tp = progress.get(msg.topic)
        if tp is None:
            stored = meta.offsets.get(msg.topic, -1)
            tp = progress[msg.topic] = TopicProgress(stored, stored, watermarks.get(msg.topic, float("-inf")))
        if msg.offset > tp.new_offset:
            tp.new_offset = msg.offset

    # Messages at or below the stored offset were applied before a crash or rebalance: skip them.
    stored_offsets = meta.offsets
    if stored_offsets:
        fresh = []
        for d in batch.events:
            if d.message.offset > stored_offsets.get(d.message.topic, -1):
                fresh.append(d)
            else:
                replayed[d.message.topic] += 1
        dead = [d for d in dead if d.message.offset > stored_offsets.get(d.message.topic, -1)]
    else:
        fresh = list(batch.events)

    on_time: list[Decoded] = []
    # Watermarks only move forward, so the lead (the latest of them) is kept as it moves.
    lead = max(watermarks.values(), default=None)
    no_mark = float("-inf")
    for decoded in sorted(fresh, key=_topic_offset):
        at = decoded.at
        topic = decoded.message.topic
        tp = progress[topic]
        if tp.watermark != no_mark and at < tp.watermark - lateness:
            dead.append(
                DeadLetter(
                    decoded.message,
                    "late",
                    f"event_time is {tp.watermark - at:.0f}s behind the watermark "
                    f"(allowed lateness {lateness:.0f}s)",
                )
            )
            continue
        reference = max(wall_now, lead) if lead is not None else wall_now
        if at > reference + rules.max_future_s:
            dead.append(
                DeadLetter(
                    decoded.message,
                    "future",
                    f"event_time is {at - reference:.0f}s ahead of the clock and watermark "
                    f"(max {rules.max_future_s:.0f}s)",
                )
            )
            continue
        if at > tp.watermark:
            tp.watermark = at
            watermarks[topic] = at
            if lead is None or at > lead:
                lead = at
        on_time.append(decoded)

    horizon = min(watermarks.values(), default=float("-inf")) - lateness
    by_user: dict[str, list[Decoded]] = {}
    for decoded in on_time:
        user_events = by_user.get(decoded.event.user_id)
        if user_events is None:
            by_user[decoded.event.user_id] = [decoded]
        else:
            user_events.append(decoded)

    increments = Increments()
    paths: Counter[str] = Counter()
    states: dict[str, bytes] = {}
    base_currency = rules.catalogue.base_currency
    applied: list[Decoded] = []
    duplicates: list[UserAction] = []
    engine = rules.engine
    for user_id, decoded_events in by_user.items():
        state = UserState.from_json(stored_states.get(user_id))
        events: list[UserAction] = []
        for d in decoded_events:
            e = d.event
            if isinstance(e, AddToCart | Checkout) and e.currency != base_currency:
                e = _in_base_currency(e, rules.catalogue)
            events.append(e)
        result = apply_events(
            state,
            events,
            engine,
            increments,
            horizon=horizon,
            channel_weights=channel_weights,
            times=[d.at for d in decoded_events],
        )
        states[user_id] = result.state.to_json()
        for journey in result.journeys:
            if journey.channels:
                paths[f"{'>'.join(journey.channels)}|{int(journey.converted)}"] += 1
        if not result.duplicates:
            applied.extend(decoded_events)
            continue
        # Every applied event is one of `events` (converted or not): map it back to its message.
        by_event = {id(e): d for e, d in zip(events, decoded_events, strict=True)}
        applied.extend(by_event[id(e)] for e in result.applied)
        duplicates.extend(result.duplicates)
        # A duplicate counts once; the repeat is not silently dropped but dead-lettered, so a
        # producer's retries or replays can be audited.
        for e in result.duplicates:
            dead.append(DeadLetter(by_event[id(e)].message, "duplicate", f"event_id {e.event_id!r} already applied"))

    for tp in progress.values():
        if tp.watermark == float("-inf"):
            tp.watermark = -1.0
    return BatchPlan(
        batch.partition,
        progress,
        states,
        increments,
        paths,
        dead,
        applied,
        duplicates,
        replayed,
        collect_signals(applied, engine.bucket_s),
    )
