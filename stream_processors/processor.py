"""Plan one partition's batch: decode, contain bad input, attribute. Pure: no Kafka, no Redis.

The worker (worker.py, `AttributionRuntime._apply_partition`) reads the partition's stored meta and
user states, calls `plan_batch`, sends the dead letters, and hands the plan to the partition state
store (store/: `apply` of store/redis_lua.py or store/memory.py) to apply in one atomic call.
Keeping the decisions here makes every rule (offset replay, lateness, dedup, currency) testable
in microseconds.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from confluent_kafka import murmur2

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

    @property
    def event_ids(self) -> list[str]:
        """The ids to look up in the partition's event-id sets (read_batch.lua)."""
        return sorted({d.event.event_id for d in self.events})


# The event-time watermark of a topic in a partition, the clock that lateness, pruning and the
# optimizer's "now" read, is the WATERMARK_QUORUM-th latest event time accepted there: it takes
# that many accepted events dated at or after T to move it to T. A client with a wrong clock
# (or a forger) that gets a few events past the future bound therefore cannot make ordinary
# traffic late: with fewer than WATERMARK_QUORUM such events the watermark stays where honest
# traffic put it, and each jump is counted (`outliers` below, the seedloop_event_time_outliers
# metric). The price is a lag: the watermark trails the latest event
# by the time its topic takes to produce WATERMARK_QUORUM events (seconds for views, about an hour
# for a partition's checkouts in the simulation), so lateness is that much more lenient.
# Until a topic has had WATERMARK_QUORUM events in a partition, it has no watermark: none of its
# events is late. The K latest times are stored with the partition's meta and offsets (same atomic
# apply), so a replayed batch meets exactly the watermark its first attempt met.
WATERMARK_QUORUM = 8


def observe_event_time(latest: list[float], at: float, quorum: int = WATERMARK_QUORUM) -> None:
    """Keep `latest` the `quorum` largest event times accepted so far, ascending."""
    if len(latest) < quorum:
        bisect.insort(latest, at)
    elif at > latest[0]:
        bisect.insort(latest, at)
        del latest[0]


def robust_watermark(latest: Sequence[float], floor: float, quorum: int = WATERMARK_QUORUM) -> float:
    """The watermark given the largest accepted event times (ascending) and the stored watermark.

    Monotone: a `quorum`-th largest of a growing set never decreases, and `floor` (the stored
    watermark) keeps it so across a change of `quorum` or state written by an older version."""
    if len(latest) >= quorum:
        kth = latest[-quorum]
        return kth if kth > floor else floor
    return floor


@dataclass(slots=True)
class PartitionMeta:
    """What Redis holds for a partition: owner epoch, and per topic the last applied offset, the
    watermark and the latest accepted event times it is computed from."""

    epoch: str | None = None
    offsets: dict[str, int] = field(default_factory=dict)
    watermarks: dict[str, float] = field(default_factory=dict)
    latest: dict[str, list[float]] = field(default_factory=dict)

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
            elif key.startswith("top:"):
                meta.latest[key[4:]] = sorted(float(t) for t in val.split(",") if t)
        return meta


# event_id -> [(topic, event time)] of the applied events with that id the partition remembers.
KnownIds = Mapping[str, Sequence[tuple[str, float]]]


@dataclass(slots=True)
class TopicProgress:
    expected_offset: int  # what Redis held when we read it (-1: nothing applied yet)
    new_offset: int
    watermark: float  # -inf: none yet (fewer than WATERMARK_QUORUM events accepted)
    # The largest accepted event times of the topic in the partition, ascending (WATERMARK_QUORUM).
    latest: list[float] = field(default_factory=list)


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
    # topic -> (event_id, event time) of every applied event: added to the partition's event-id
    # set of the topic, which forgets ids older than the topic's watermark minus the lateness.
    new_ids: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    # (action, "counted" | "dead_lettered") -> suspicious jumps in event time: events dead-lettered
    # as `future`, and accepted events dated more than the allowed lateness after every event the
    # partition had accepted (once it has a watermark). Under a latest-event watermark each of
    # them would have made ordinary traffic late (see WATERMARK_QUORUM). In event-time order
    # honest traffic never jumps so (a partition's events are seconds apart); the one honest
    # cause is a sparse topic read hours ahead of the others while a backlog is caught up.
    outliers: Counter[tuple[str, str]] = field(default_factory=Counter)
    # topic -> event time below which the topic's applied ids are forgotten: its watermark minus
    # the allowed lateness. Safe because watermarks only move forward, so from now on an event
    # older than that is dead-lettered as late before its id is looked up: an id is remembered
    # exactly as long as a copy of its event could still be counted (the dedup horizon).
    forget_ids_before: dict[str, float] = field(default_factory=dict)


def decode_batch(
    partition: int,
    messages: Sequence[RawMessage],
    topic_actions: Mapping[str, str],
    rules: ProcessingRules,
    partitions: int | None = None,
) -> DecodedBatch:
    """Decode and check a partition's messages. `partitions` (the action topics' partition count)
    enables the check that a message sits in the partition its key hashes to."""
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
        problem = _placement_problem(msg, event, partitions) or _catalogue_problem(event, rules.catalogue)
        if problem:
            dead.append(DeadLetter(msg, problem[0], problem[1]))
            continue
        events.append(Decoded(msg, event, event.event_ts))
    return DecodedBatch(partition, list(messages), events, dead)


def _placement_problem(msg: RawMessage, event: UserAction, partitions: int | None) -> tuple[str, str] | None:
    """A user's events must all reach the partition of `user_id`: its journey, and the event-id
    set that deduplicates it, live there. The key decides the partition, so it must be the user;
    and a message produced to another partition explicitly (or with another partitioner) is
    refused too, so the same message can never be counted once in each of two partitions.
    murmur2 is Kafka's default partitioner (Java clients, aiokafka, librdkafka's murmur2_random,
    which the simulator uses)."""
    user = event.user_id.encode()
    if msg.key != user:
        return "key_mismatch", f"message key {msg.key!r} is not the payload's user_id {event.user_id!r}"
    if partitions is not None and msg.partition != (expected := murmur2(user, partitions)):
        return "wrong_partition", f"user {event.user_id!r} belongs to partition {expected}, not {msg.partition}"
    return None


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


class OffsetGap(RuntimeError):
    """A batch would apply messages past a gap after the stored offset: some messages between were
    never applied. Applying it would store an offset beyond them, and their redelivery would then be
    skipped as a replay: lost. Never applied; the worker treats it as fatal (crash-only: the restart
    reads again from the committed offsets)."""


def _check_contiguous(batch: DecodedBatch, meta: PartitionMeta) -> None:
    """The messages past the stored offset must be exactly stored+1, stored+2, ... per topic.

    Action topics are written by idempotent, non-transactional producers and never compacted, so
    their offsets have no holes; a hole in a batch can only mean messages this worker never saw
    (a batch fetched before a rebalance delivered after Faust sought back). Before the first
    apply (no stored offset) a partition may start anywhere: at the earliest retained offset."""
    fresh: dict[str, list[int]] = {}
    for msg in batch.messages:
        stored = meta.offsets.get(msg.topic, -1)
        if stored >= 0 and msg.offset > stored:
            fresh.setdefault(msg.topic, []).append(msg.offset)
    for topic, offsets in fresh.items():
        offsets.sort()
        expected = meta.offsets[topic] + 1
        if offsets[0] != expected or offsets[-1] - offsets[0] + 1 != len(set(offsets)):
            raise OffsetGap(
                f"partition {batch.partition} {topic}: applied up to {expected - 1}, "
                f"batch holds {offsets[0]}..{offsets[-1]} ({len(set(offsets))} offsets)"
            )


def plan_batch(
    batch: DecodedBatch,
    meta: PartitionMeta,
    stored_states: Mapping[str, str | bytes | None],
    rules: ProcessingRules,
    channel_weights: Mapping[str, float] | None = None,
    *,
    wall_now: float,
    known_ids: KnownIds | None = None,
    value_weights: Mapping[str, float] | None = None,
) -> BatchPlan:
    """Decide everything a batch does to the partition's state, given what Redis held.

    An event's identity is its `event_id`, whatever its user or action. `known_ids` are the
    batch's ids found in the partition's event-id sets (read with the meta). An id is remembered
    while the event applied under it is within the allowed lateness of its topic's watermark;
    an event whose id is remembered (from Redis or from earlier in this batch) is a duplicate.
    Forgetting cannot count a copy twice: a copy carries its original's event time, so by then
    it is late. (An id reused for an event dated later is a new event once the first is forgotten.)

    `wall_now` (injected clock) bounds how far in the future an event may claim to be: beyond both
    the wall clock and the partition's watermark (a simulation may run ahead of the wall clock).
    """
    lateness = rules.engine.lateness_s
    progress: dict[str, TopicProgress] = {}
    watermarks = dict(meta.watermarks)
    replayed: Counter[str] = Counter()
    dead = list(batch.dead_letters)
    no_mark = float("-inf")

    for msg in batch.messages:
        tp = progress.get(msg.topic)
        if tp is None:
            stored = meta.offsets.get(msg.topic, -1)
            tp = progress[msg.topic] = TopicProgress(
                stored, stored, watermarks.get(msg.topic, no_mark), list(meta.latest.get(msg.topic, ()))
            )
            if len(tp.latest) > WATERMARK_QUORUM:  # stored under a larger quorum
                del tp.latest[: len(tp.latest) - WATERMARK_QUORUM]
        if msg.offset > tp.new_offset:
            tp.new_offset = msg.offset
    _check_contiguous(batch, meta)

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
    duplicates: list[UserAction] = []
    outliers: Counter[tuple[str, str]] = Counter()
    new_ids: dict[str, list[tuple[str, float]]] = {}
    # id -> [(topic, event time)] of applied events: stored, then this batch's, in order.
    remembered: dict[str, list[tuple[str, float]]] = {i: list(v) for i, v in (known_ids or {}).items()}
    # Watermarks only move forward, so the lead (the latest of them) is kept as it moves; so is
    # the latest event time the partition accepted (the newest of the stored `latest` lists).
    lead = max(watermarks.values(), default=no_mark)
    newest = max((times[-1] for times in meta.latest.values() if times), default=no_mark)
    # Every decision below reads only the stored meta and id sets and the messages before it in
    # (topic, offset) order, so a batch replayed after a crash (before its apply) is decided the
    # same way; per topic it does not even depend on where the batches were cut.
    for decoded in sorted(fresh, key=_topic_offset):
        at = decoded.at
        event = decoded.event
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
        reference = max(wall_now, lead)
        if at > reference + rules.max_future_s:
            outliers[(event.action, "dead_lettered")] += 1
            dead.append(
                DeadLetter(
                    decoded.message,
                    "future",
                    f"event_time is {at - reference:.0f}s ahead of the clock and watermark "
                    f"(max {rules.max_future_s:.0f}s): a skewed or forged clock",
                )
            )
            continue
        event_id = event.event_id
        earlier = remembered.get(event_id)
        # Judged against the current watermarks, not against what the sets still hold: the sets are
        # trimmed only when a batch is applied, and the decision must not depend on where batches
        # were cut (a replay after a crash may cut them elsewhere).
        if earlier is not None and any(t >= watermarks.get(tt, no_mark) - lateness for tt, t in earlier):
            # A duplicate counts once; the repeat is not silently dropped but dead-lettered, so a
            # producer's retries or replays can be audited.
            duplicates.append(event)
            dead.append(DeadLetter(decoded.message, "duplicate", f"event_id {event_id!r} already applied"))
            continue
        if earlier is None:
            remembered[event_id] = [(topic, at)]
        else:
            earlier.append((topic, at))
        if at > newest:
            if lead != no_mark and at > newest + lateness:  # newest >= lead: ahead of both
                outliers[(event.action, "counted")] += 1
            newest = at
        observe_event_time(tp.latest, at)
        mark = robust_watermark(tp.latest, tp.watermark)
        if mark != tp.watermark:
            tp.watermark = watermarks[topic] = mark
            if mark > lead:
                lead = mark
        ids = new_ids.get(topic)
        if ids is None:
            new_ids[topic] = [(event_id, at)]
        else:
            ids.append((event_id, at))
        on_time.append(decoded)

    horizon = min(watermarks.values(), default=no_mark) - lateness
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
            value_weights=value_weights,
            times=[d.at for d in decoded_events],
        )
        states[user_id] = result.state.to_json()
        for journey in result.journeys:
            if journey.channels:
                path = ">".join(journey.channels)
                paths[f"{path}|{int(journey.converted)}"] += 1
                # The converted value per path: the Markov model credits value by value-weighted
                # removal effects (attribution/markov.py `weights_from_path_counts`).
                if journey.converted and journey.value_minor:
                    paths[f"{path}|v"] += journey.value_minor

    return BatchPlan(
        batch.partition,
        progress,
        states,
        increments,
        paths,
        dead,
        on_time,
        duplicates,
        replayed,
        collect_signals(on_time, engine.bucket_s),
        new_ids,
        outliers,
        {t: tp.watermark - lateness for t, tp in progress.items() if tp.watermark != no_mark},
    )
