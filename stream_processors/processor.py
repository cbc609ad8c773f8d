"""Plan one partition's batch: decode, contain bad input, attribute. Pure: no Kafka, no Redis.

The worker (worker.py, `AttributionRuntime._apply_partition`) reads the partition's stored meta and
user states, calls `plan_batch`, sends the dead letters, and hands the plan to the partition state
store (store/: `apply` of store/redis_lua.py or store/memory.py) to apply in one atomic call.
Keeping the decisions here makes every rule (offset replay, lateness, dedup, currency) testable
in microseconds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from confluent_kafka import murmur2

from schemas.codec import DecodeError, decode_action
from schemas.events import AddToCart, Checkout, UserAction, View
from stream_processors.attribution.journey import (
    EngineConfig,
    Increments,
    UserState,
    apply_events,
)
from stream_processors.messages import DeadLetter, Decoded, DecodedBatch, RawMessage
from stream_processors.progress import (
    WATERMARK_QUORUM,
    KnownIds,
    PartitionMeta,
    TopicProgress,
    observe_event_time,
    robust_watermark,
)
from stream_processors.signals import BatchSignals, collect_signals


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
        return (
            "wrong_partition",
            f"user {event.user_id!r} belongs to partition {expected}, not {msg.partition}",
        )
    return None


def _catalogue_problem(event: UserAction, catalogue: Catalogue) -> tuple[str, str] | None:
    if isinstance(event, View):
        # The common case, a valid view, in one set lookup; the checks below name what is wrong.
        if (
            (event.campaign_id, event.channel) in catalogue.view_channels
            and event.currency == catalogue.base_currency
            and not (event.held_out and event.cost_minor)
        ):
            return None
        channels = catalogue.campaign_channels.get(event.campaign_id)
        if channels is None:
            return "unknown_campaign", f"campaign_id={event.campaign_id!r}"
        if event.channel not in channels:
            return "unknown_channel", f"campaign {event.campaign_id!r} does not buy channel {event.channel!r}"
        if event.currency != catalogue.base_currency:
            return "unknown_currency", f"view cost must be in {catalogue.base_currency}, got {event.currency}"
        if event.held_out and event.cost_minor:
            # A ghost view records an impression that was never shown: charging for it would put
            # spend on the holdout group and bias every lift figure.
            return (
                "ghost_view_cost",
                f"a ghost view (held_out) costs nothing, got cost_minor={event.cost_minor}",
            )
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

    Steps: the topics' progress (refusing a gap), the replayed messages skipped, each fresh event
    admitted or dead-lettered (_admit), the admitted events attributed per user (_attribute).
    """
    lateness = rules.engine.lateness_s
    progress = _topic_progress(batch, meta)
    _check_contiguous(batch, meta)
    fresh, dead, replayed = _skip_replayed(batch, meta)
    admitted = _admit(fresh, progress, meta, known_ids, rules, wall_now, dead)
    horizon = min(admitted.watermarks.values(), default=_NO_MARK) - lateness
    states, increments, paths = _attribute(
        admitted.on_time, stored_states, rules, horizon, channel_weights, value_weights
    )
    return BatchPlan(
        batch.partition,
        progress,
        states,
        increments,
        paths,
        dead,
        admitted.on_time,
        admitted.duplicates,
        replayed,
        collect_signals(_shown(admitted.on_time), rules.engine.bucket_s),
        admitted.new_ids,
        admitted.outliers,
        {t: tp.watermark - lateness for t, tp in progress.items() if tp.watermark != _NO_MARK},
    )


_NO_MARK = float("-inf")  # a topic without a watermark yet


def _shown(on_time: list[Decoded]) -> list[Decoded]:
    """The events without ghost views: a ghost view reached nobody (no reach, no audience)."""
    return [d for d in on_time if not (type(d.event) is View and d.event.held_out)]


def _topic_progress(batch: DecodedBatch, meta: PartitionMeta) -> dict[str, TopicProgress]:
    """Per topic of the batch: the stored offset and watermark, and the batch's last offset."""
    progress: dict[str, TopicProgress] = {}
    for msg in batch.messages:
        tp = progress.get(msg.topic)
        if tp is None:
            stored = meta.offsets.get(msg.topic, -1)
            tp = progress[msg.topic] = TopicProgress(
                stored, stored, meta.watermarks.get(msg.topic, _NO_MARK), list(meta.latest.get(msg.topic, ()))
            )
            if len(tp.latest) > WATERMARK_QUORUM:  # stored under a larger quorum
                del tp.latest[: len(tp.latest) - WATERMARK_QUORUM]
        if msg.offset > tp.new_offset:
            tp.new_offset = msg.offset
    return progress


def _skip_replayed(
    batch: DecodedBatch, meta: PartitionMeta
) -> tuple[list[Decoded], list[DeadLetter], Counter[str]]:
    """Messages at or below the stored offset were applied before a crash or rebalance: skip them.
    Returns the fresh events, the fresh dead letters, and the skipped events per topic."""
    stored_offsets = meta.offsets
    replayed: Counter[str] = Counter()
    if not stored_offsets:
        return list(batch.events), list(batch.dead_letters), replayed
    fresh = []
    for d in batch.events:
        if d.message.offset > stored_offsets.get(d.message.topic, -1):
            fresh.append(d)
        else:
            replayed[d.message.topic] += 1
    dead = [d for d in batch.dead_letters if d.message.offset > stored_offsets.get(d.message.topic, -1)]
    return fresh, dead, replayed


@dataclass(slots=True)
class _Admitted:
    """What _admit decided: the events to apply and what the plan records about the others."""

    watermarks: dict[str, float]
    on_time: list[Decoded] = field(default_factory=list)
    duplicates: list[UserAction] = field(default_factory=list)
    outliers: Counter[tuple[str, str]] = field(default_factory=Counter)
    new_ids: dict[str, list[tuple[str, float]]] = field(default_factory=dict)


def _admit(
    fresh: list[Decoded],
    progress: dict[str, TopicProgress],
    meta: PartitionMeta,
    known_ids: KnownIds | None,
    rules: ProcessingRules,
    wall_now: float,
    dead: list[DeadLetter],
) -> _Admitted:
    """Each fresh event, in (topic, offset) order: dead-lettered (appended to `dead`) as late,
    future or duplicate, or admitted, moving its topic's watermark (in `progress`)."""
    lateness = rules.engine.lateness_s
    out = _Admitted(dict(meta.watermarks))
    watermarks, new_ids = out.watermarks, out.new_ids
    # id -> [(topic, event time)] of applied events: stored, then this batch's, in order.
    remembered: dict[str, list[tuple[str, float]]] = {i: list(v) for i, v in (known_ids or {}).items()}
    # Watermarks only move forward, so the lead (the latest of them) is kept as it moves; so is
    # the latest event time the partition accepted (the newest of the stored `latest` lists).
    lead = max(watermarks.values(), default=_NO_MARK)
    newest = max((times[-1] for times in meta.latest.values() if times), default=_NO_MARK)
    # Every decision below reads only the stored meta and id sets and the messages before it in
    # (topic, offset) order, so a batch replayed after a crash (before its apply) is decided the
    # same way; per topic it does not even depend on where the batches were cut.
    for decoded in sorted(fresh, key=_topic_offset):
        at = decoded.at
        event = decoded.event
        topic = decoded.message.topic
        tp = progress[topic]
        if tp.watermark != _NO_MARK and at < tp.watermark - lateness:
            behind = f"event_time is {tp.watermark - at:.0f}s behind the watermark"
            dead.append(DeadLetter(decoded.message, "late", f"{behind} (allowed lateness {lateness:.0f}s)"))
            continue
        reference = max(wall_now, lead)
        if at > reference + rules.max_future_s:
            out.outliers[(event.action, "dead_lettered")] += 1
            dead.append(_future(decoded, at - reference, rules.max_future_s))
            continue
        event_id = event.event_id
        earlier = remembered.get(event_id)
        # Judged against the current watermarks, not against what the sets still hold: the sets are
        # trimmed only when a batch is applied, and the decision must not depend on where batches
        # were cut (a replay after a crash may cut them elsewhere).
        if earlier is not None and any(t >= watermarks.get(tt, _NO_MARK) - lateness for tt, t in earlier):
            # A duplicate counts once; the repeat is not silently dropped but dead-lettered, so a
            # producer's retries or replays can be audited.
            out.duplicates.append(event)
            dead.append(DeadLetter(decoded.message, "duplicate", f"event_id {event_id!r} already applied"))
            continue
        if earlier is None:
            remembered[event_id] = [(topic, at)]
        else:
            earlier.append((topic, at))
        if at > newest:
            if lead != _NO_MARK and at > newest + lateness:  # newest >= lead: ahead of both
                out.outliers[(event.action, "counted")] += 1
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
        out.on_time.append(decoded)
    return out


def _future(decoded: Decoded, ahead: float, max_future_s: float) -> DeadLetter:
    return DeadLetter(
        decoded.message,
        "future",
        f"event_time is {ahead:.0f}s ahead of the clock and watermark "
        f"(max {max_future_s:.0f}s): a skewed or forged clock",
    )


def _attribute(
    on_time: list[Decoded],
    stored_states: Mapping[str, str | bytes | None],
    rules: ProcessingRules,
    horizon: float,
    channel_weights: Mapping[str, float] | None,
    value_weights: Mapping[str, float] | None,
) -> tuple[dict[str, bytes], Increments, Counter[str]]:
    """Run each user's admitted events through the journey engine: the users' new states, the
    figures' increments and the journey path counts."""
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
            rules.engine,
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
    return states, increments, paths
