"""The batch planner's rules against hostile producers: a robust watermark, event identity,
placement by key, and decisions that a replay repeats. Pure: no Kafka, no Redis (the Redis side of
the same rules is tests/integration/test_apply_batch.py)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import murmur2

from schemas.codec import encode
from schemas.events import UserAction, View
from stream_processors.attribution.journey import EngineConfig
from stream_processors.attribution.models import Lookback
from stream_processors.processor import (
    WATERMARK_QUORUM,
    BatchPlan,
    Catalogue,
    PartitionMeta,
    ProcessingRules,
    RawMessage,
    decode_batch,
    observe_event_time,
    plan_batch,
    robust_watermark,
)

T0 = datetime(2026, 11, 11, 8, tzinfo=UTC).timestamp()
DAY = 86_400.0
LATENESS = 3600.0
PARTITIONS = 4
VIEW_TOPIC = "t.view"
TOPIC_ACTIONS = {VIEW_TOPIC: "view", "t.checkout": "checkout"}
RULES = ProcessingRules(
    engine=EngineConfig(
        lookback=Lookback(view_s=DAY, engaged_s=7 * DAY), half_life_s=3600, lateness_s=LATENESS
    ),
    max_future_s=DAY,
    catalogue=Catalogue({"c1": frozenset({"kol"})}, "CNY", {"CNY": 1.0}),
)
# Users of partition 0 (Kafka's default partitioner), so the messages below are correctly placed.
USERS = [u for u in (f"u{i}" for i in range(200)) if murmur2(u.encode(), PARTITIONS) == 0][:5]


def view(event_id: str, at: float, user: str = USERS[0]) -> View:
    return View(
        event_id=event_id,
        user_id=user,
        event_time=datetime.fromtimestamp(at, UTC),
        campaign_id="c1",
        channel="kol",
        creative_id="cr1",
        cost_minor=30,
    )


@dataclass
class Partition:
    """Partition 0 as Redis would hold it after each apply (what apply_batch.lua writes of the
    meta and the event-id sets), fed batch by batch through the real planner."""

    meta: PartitionMeta = field(default_factory=PartitionMeta)
    ids: dict[str, dict[str, float]] = field(default_factory=dict)
    next_offset: Counter[str] = field(default_factory=Counter)
    wall_now: float = T0

    def messages(
        self, events: Sequence[UserAction], topic: str = VIEW_TOPIC, key: str | None = None
    ) -> list[RawMessage]:
        out = []
        for e in events:
            out.append(RawMessage(topic, 0, self.next_offset[topic], (key or e.user_id).encode(), encode(e)))
            self.next_offset[topic] += 1
        return out

    def plan(self, messages: Sequence[RawMessage]) -> BatchPlan:
        batch = decode_batch(0, messages, TOPIC_ACTIONS, RULES, PARTITIONS)
        known: dict[str, list[tuple[str, float]]] = {}
        for topic, ids in self.ids.items():
            for i in batch.event_ids:
                if i in ids:
                    known.setdefault(i, []).append((topic, ids[i]))
        return plan_batch(batch, self.meta, {}, RULES, wall_now=self.wall_now, known_ids=known)

    def apply(self, plan: BatchPlan) -> None:
        for topic, tp in plan.progress.items():
            self.meta.offsets[topic] = tp.new_offset
            if tp.watermark != float("-inf"):
                self.meta.watermarks[topic] = tp.watermark
            self.meta.latest[topic] = list(tp.latest)
        for topic, ids in plan.new_ids.items():
            self.ids.setdefault(topic, {}).update(ids)
        for topic, bound in plan.forget_ids_before.items():
            self.ids[topic] = {i: at for i, at in self.ids.get(topic, {}).items() if at >= bound}

    def run(self, events: Sequence[UserAction], topic: str = VIEW_TOPIC) -> BatchPlan:
        plan = self.plan(self.messages(events, topic))
        self.apply(plan)
        return plan


def reasons(plan: BatchPlan) -> Counter[str]:
    return Counter(d.reason for d in plan.dead_letters)


def applied_ids(plan: BatchPlan) -> list[str]:
    return [d.event.event_id for d in plan.applied]


# ------------------------------------------------------------------ the watermark rule


def test_quorum_minus_one_events_do_not_move_the_watermark_quorum_do() -> None:
    latest: list[float] = []
    mark = float("-inf")
    honest = [T0 + i for i in range(WATERMARK_QUORUM)]
    for at in honest:
        observe_event_time(latest, at)
        mark = robust_watermark(latest, mark)
    assert mark == T0  # the quorum-th latest event time
    for _ in range(WATERMARK_QUORUM - 1):
        observe_event_time(latest, T0 + DAY)
        mark = robust_watermark(latest, mark)
        # Each forged event only lets the watermark reach the next honest event time.
        assert mark <= max(honest)
    observe_event_time(latest, T0 + DAY)
    assert robust_watermark(latest, mark) == T0 + DAY  # the quorum-th forged event moves it


def test_the_watermark_never_goes_back() -> None:
    rng = random.Random(3)
    latest: list[float] = []
    mark = float("-inf")
    for _ in range(2000):
        observe_event_time(latest, T0 + rng.uniform(-DAY, DAY))
        new = robust_watermark(latest, mark)
        assert new >= mark
        mark = new
    # A smaller quorum than the stored state's, or state without it: the stored mark is the floor.
    assert robust_watermark([T0], T0 + 5) == T0 + 5


def test_no_watermark_before_the_quorum_so_nothing_is_late() -> None:
    p = Partition()
    first = p.run([view(f"v{i}", T0) for i in range(WATERMARK_QUORUM - 1)])
    assert first.progress[VIEW_TOPIC].watermark == float("-inf")
    older = p.run([view("old", T0 - 10 * LATENESS)])
    assert applied_ids(older) == ["old"]


# ------------------------------------------------------------------ forged clocks


def honest_start(p: Partition) -> None:
    p.run([view(f"h{i}", T0 + i) for i in range(WATERMARK_QUORUM)])
    assert p.meta.watermarks[VIEW_TOPIC] == T0


def test_a_few_day_ahead_views_do_not_make_later_ordinary_events_late() -> None:
    # The wall clock runs 20 days ahead of the simulated event time (as in the demo), so nothing
    # a day ahead of the simulation is past the future bound: only the watermark rule protects.
    p = Partition(wall_now=T0 + 20 * DAY)
    honest_start(p)
    # Each a day after the one before (within the allowed skew of it, as a walking clock).
    forged = [view(f"forged{i}", T0 + (i + 1) * (DAY - 60), USERS[1]) for i in range(WATERMARK_QUORUM - 1)]
    plan = p.run(forged)
    # Well-formed and within the future bound: counted, but each jump is flagged ...
    assert applied_ids(plan) == [e.event_id for e in forged]
    assert plan.outliers == Counter({("view", "counted"): WATERMARK_QUORUM - 1})
    # ... and they did not move the watermark,
    assert p.meta.watermarks[VIEW_TOPIC] < T0 + WATERMARK_QUORUM
    # so ordinary traffic after them is on time and counted.
    ordinary = [view(f"o{i}", T0 + 60 + i, USERS[2]) for i in range(50)]
    after = p.run(ordinary)
    assert reasons(after) == Counter()
    assert applied_ids(after) == [e.event_id for e in ordinary]
    assert after.outliers == Counter()


def test_a_quorum_of_forged_events_does_move_it() -> None:
    """The documented limit: WATERMARK_QUORUM agreeing events are indistinguishable from time
    passing (they are dead-lettered nowhere, but the outlier metric shows each jump)."""
    p = Partition(wall_now=T0 + 20 * DAY)
    honest_start(p)
    plan = p.run([view(f"forged{i}", T0 + (i + 1) * (DAY - 60), USERS[1]) for i in range(WATERMARK_QUORUM)])
    assert plan.outliers[("view", "counted")] == WATERMARK_QUORUM
    assert p.meta.watermarks[VIEW_TOPIC] == T0 + DAY - 60
    assert reasons(p.run([view("ordinary", T0 + 60)])) == Counter({"late": 1})


def test_only_jumps_past_everything_accepted_are_outliers() -> None:
    p = Partition(wall_now=T0 + 20 * DAY)
    honest_start(p)
    # A sparse stream with an honest gap of less than the allowed lateness: no outlier.
    quiet = p.run([view(f"q{i}", T0 + i * (LATENESS - 60)) for i in range(1, 5)])
    assert quiet.outliers == Counter() and len(quiet.applied) == 4
    # Ten hours of nothing, then traffic again: one jump, not one per event.
    back = p.run([view(f"b{i}", T0 + 14 * LATENESS + i) for i in range(20)])
    assert back.outliers == Counter({("view", "counted"): 1})


def test_a_chain_of_skewed_events_cannot_walk_past_the_future_bound() -> None:
    # Wall clock and event time agree (a live pipeline). Each forged event is within the allowed
    # skew of the one before; only the first is within it of the clock and the watermark.
    p = Partition(wall_now=T0 + WATERMARK_QUORUM)
    honest_start(p)
    chain = [view(f"skew{i}", T0 + (i + 1) * (DAY - 600), USERS[1]) for i in range(4)]
    plan = p.run(chain)
    assert applied_ids(plan) == ["skew0"]
    assert reasons(plan) == Counter({"future": 3})
    assert plan.outliers == Counter({("view", "counted"): 1, ("view", "dead_lettered"): 3})
    assert p.meta.watermarks[VIEW_TOPIC] < T0 + WATERMARK_QUORUM  # among the honest times


# ------------------------------------------------------------------ identity and placement


def test_an_event_id_is_one_event_whoever_it_is_under_and_whenever_it_comes_back() -> None:
    p = Partition()
    honest_start(p)
    first = p.run([view("e1", T0 + 100, USERS[0]), view("e1", T0 + 100, USERS[1])])  # same batch
    assert applied_ids(first) == ["e1"] and reasons(first) == Counter({"duplicate": 1})
    again = p.run([view("e1", T0 + 100, USERS[2])])  # a later batch, a third user
    assert applied_ids(again) == [] and reasons(again) == Counter({"duplicate": 1})
    assert [e.user_id for e in again.duplicates] == [USERS[2]]


def test_a_repeat_adds_nothing_to_the_figures() -> None:
    p = Partition()
    honest_start(p)
    first = p.run([view("e1", T0 + 100)])
    again = p.run([view("e1", T0 + 100)])
    assert first.increments.by_key and not again.increments.by_key and not again.user_states


def test_an_id_is_remembered_until_its_event_is_late_and_then_the_repeat_is_late() -> None:
    p = Partition()
    honest_start(p)
    p.run([view("e1", T0 + 100)])
    # Time moves on by more than the allowed lateness: e1's id is forgotten ...
    p.run([view(f"n{i}", T0 + 100 + LATENESS + 10 + i) for i in range(WATERMARK_QUORUM)])
    assert "e1" not in p.ids[VIEW_TOPIC]
    assert p.meta.watermarks[VIEW_TOPIC] - LATENESS > T0 + 100
    # ... and a repeat of it is late, never counted again.
    repeat = p.run([view("e1", T0 + 100)])
    assert applied_ids(repeat) == [] and reasons(repeat) == Counter({"late": 1})


def test_ids_are_kept_while_a_copy_could_still_be_on_time() -> None:
    p = Partition()
    honest_start(p)
    for i in range(300):  # a steady stream, one event a minute
        p.run([view(f"s{i}", T0 + 60 * i)])
        mark = p.meta.watermarks[VIEW_TOPIC]
        remembered = p.ids[VIEW_TOPIC]
        # Every applied id an on-time copy could still come for is remembered.
        assert all(f"s{j}" in remembered for j in range(i + 1) if T0 + 60 * j >= mark - LATENESS)
    assert len(p.ids[VIEW_TOPIC]) < 100  # and the set is bounded by the horizon


def test_a_key_other_than_the_user_is_dead_lettered() -> None:
    p = Partition()
    e = view("e1", T0)
    batch = decode_batch(0, p.messages([e], key=USERS[1]), TOPIC_ACTIONS, RULES, PARTITIONS)
    assert [d.reason for d in batch.dead_letters] == ["key_mismatch"] and not batch.events
    keyless = RawMessage(VIEW_TOPIC, 0, 9, None, encode(e))
    assert [d.reason for d in decode_batch(0, [keyless], TOPIC_ACTIONS, RULES).dead_letters] == [
        "key_mismatch"
    ]


def test_a_correctly_keyed_message_in_another_partition_is_dead_lettered() -> None:
    other = next(u for u in (f"x{i}" for i in range(100)) if murmur2(u.encode(), PARTITIONS) == 2)
    e = view("e1", T0, other)
    msg = RawMessage(VIEW_TOPIC, 0, 0, other.encode(), encode(e))
    batch = decode_batch(0, [msg], TOPIC_ACTIONS, RULES, PARTITIONS)
    assert [d.reason for d in batch.dead_letters] == ["wrong_partition"]
    assert "partition 2" in batch.dead_letters[0].detail
    placed = decode_batch(2, [msg._replace(partition=2)], TOPIC_ACTIONS, RULES, PARTITIONS)
    assert not placed.dead_letters and len(placed.events) == 1


# ------------------------------------------------------------------ replay


def hostile_stream(rng: random.Random, n: int) -> list[View]:
    out = []
    for i in range(n):
        r = rng.random()
        at = T0 + 30 * i
        if r < 0.01:
            at += DAY  # a skewed clock
        elif r < 0.12:
            at -= 3 * LATENESS  # late
        event_id = f"e{rng.randrange(i + 1)}" if r > 0.9 else f"e{i}"  # some repeats of earlier ids
        out.append(view(event_id, at, rng.choice(USERS)))
    return out


def decisions(plans: Sequence[BatchPlan]) -> dict[int, str]:
    """offset -> what became of the message."""
    out = {d.message.offset: "applied" for plan in plans for d in plan.applied}
    out.update({d.message.offset: d.reason for plan in plans for d in plan.dead_letters})
    return out


def test_decisions_do_not_depend_on_replays_or_where_batches_were_cut() -> None:
    rng = random.Random(11)
    stream = hostile_stream(rng, 400)
    whole = Partition(wall_now=T0 + 20 * DAY)
    honest_start(whole)
    expected = decisions([whole.run(stream)])
    assert set(Counter(expected.values())) >= {"applied", "late", "duplicate"}

    cut = Partition(wall_now=T0 + 20 * DAY)
    honest_start(cut)
    messages = cut.messages(stream)
    plans = []
    start = 0
    while start < len(messages):
        end = start + rng.randint(1, 40)
        chunk = messages[start:end]
        # A crash before the apply: the batch is planned again from the same stored state ...
        crashed = cut.plan(chunk)
        plan = cut.plan(chunk)
        assert decisions([crashed]) == decisions([plan])
        cut.apply(plan)
        # ... and a replay after the apply (Kafka's committed offset was behind) changes nothing.
        replay = cut.plan(messages[max(0, start - 5) : end])
        assert not replay.applied and sum(replay.replayed.values()) == min(end, len(messages)) - max(
            0, start - 5
        )
        plans.append(plan)
        start = end
    assert decisions(plans) == expected
    assert cut.meta == whole.meta and cut.ids == whole.ids


# ------------------------------------------------------------------ ghost views (conversion lift)


def ghost(event_id: str, at: float, cost_minor: int = 0) -> View:
    return view(event_id, at).model_copy(update={"held_out": True, "cost_minor": cost_minor})


def test_a_ghost_view_joins_the_holdout_cohort_reaches_no_one_and_a_charged_one_is_dead_lettered() -> None:
    p = Partition()
    honest_start(p)
    plan = p.run([ghost("g1", T0 + 100), ghost("g2", T0 + 100, cost_minor=30)])
    assert applied_ids(plan) == ["g1"] and reasons(plan) == Counter({"ghost_view_cost": 1})
    assert "cost_minor=30" in plan.dead_letters[0].detail
    figures = {name: v for (bucket, name), v in plan.increments.by_key.items() if bucket is None and v}
    assert figures == {"t|ghost_views": 1, "x|c1|held_out|users": 1}
    assert not plan.signals.reach and not plan.signals.engaged_reach


def test_a_repeated_or_replayed_ghost_view_adds_nothing() -> None:
    p = Partition()
    honest_start(p)
    messages = p.messages([ghost("g1", T0 + 100)])
    first = p.plan(messages)
    p.apply(first)
    assert first.increments.by_key
    replay = p.plan(messages)  # Kafka redelivers what was applied: skipped by offset
    assert not replay.applied and not replay.increments.by_key
    repeat = p.run([ghost("g1", T0 + 100)])  # the same event again: dead-lettered by id
    assert reasons(repeat) == Counter({"duplicate": 1}) and not repeat.increments.by_key
