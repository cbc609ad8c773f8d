"""The exactly-once rules of the partition state store, in process, against both backends.

Each test drives the real rules (processor.decode_batch / plan_batch over simulator events) through
the store interface, on the in-memory backend and on the Redis + Lua backend (a valkey started
by the module on a free port), and checks what the store holds through the same interface.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from confluent_kafka import murmur2

from schemas.codec import encode
from seedloop import runtime
from seedloop.settings import Settings
from stream_processors.processor import (
    DecodedBatch,
    PartitionMeta,
    ProcessingRules,
    RawMessage,
    decode_batch,
    plan_batch,
)
from stream_processors.store.base import AudienceExpiry, FencedError, OffsetConflict, PartitionStateStore
from stream_processors.store.memory import MemoryState, MemoryStore
from stream_processors.store.redis_lua import FigureReader, Keys, RedisPartitionStore, named_args

PARTITIONS = 4
SETTINGS = Settings(partitions=PARTITIONS, topic_prefix="t")
SCENARIO = runtime.scenario_of(SETTINGS)
RULES: ProcessingRules = runtime.processing_rules(SETTINGS, SCENARIO)
TOPICS = {SETTINGS.topic(a): a for a in ("view", "follow", "add_to_cart", "checkout")}


def simulated_messages(sim_seconds: float = 1800.0) -> list[RawMessage]:
    """Partition 0's messages of the seeded simulation, as Kafka would hand them over."""
    sim = runtime.simulator_of(SETTINGS, SCENARIO)
    offsets: dict[tuple[str, int], int] = {}
    out = []
    for e in sim.advance(sim.now + sim_seconds):
        topic, partition = SETTINGS.topic(e.action), murmur2(e.user_id.encode(), PARTITIONS)
        offset = offsets[(topic, partition)] = offsets.get((topic, partition), -1) + 1
        if partition == 0:
            out.append(RawMessage(topic, partition, offset, e.user_id.encode(), encode(e), e.event_ts))
    return out


MESSAGES = simulated_messages()
WALL_NOW = max(m.timestamp or 0.0 for m in MESSAGES)


def split(messages: list[RawMessage], share: float = 0.5) -> tuple[list[RawMessage], list[RawMessage]]:
    """Two consecutive batches: per topic, the first `share` of the offsets, then the rest."""
    last: dict[str, int] = {}
    for m in messages:
        last[m.topic] = max(last.get(m.topic, -1), m.offset)
    first = [m for m in messages if m.offset <= last[m.topic] * share]
    return first, [m for m in messages if m.offset > last[m.topic] * share]


def decode(messages: list[RawMessage]) -> DecodedBatch:
    return decode_batch(0, messages, TOPICS, RULES, PARTITIONS)


async def plan(store: PartitionStateStore, batch: DecodedBatch) -> Any:
    meta, states, known = await store.read(0, batch.user_ids, batch.event_ids)
    return plan_batch(batch, meta, states, RULES, wall_now=WALL_NOW, known_ids=known)


async def apply_batch(store: PartitionStateStore, messages: list[RawMessage], epoch: str) -> Any:
    """What the worker does for one partition batch: read, plan, apply."""
    batch_plan = await plan(store, decode(messages))
    await store.apply(batch_plan, epoch)
    return batch_plan


async def snapshot(store: PartitionStateStore, batch: DecodedBatch) -> dict[str, Any]:
    """Everything a batch can change, read through the interface."""
    meta, states, known = await store.read(0, batch.user_ids, batch.event_ids)
    channels = RULES.catalogue.campaign_channels
    buckets = sorted({int(d.at // 60) * 60 for d in batch.events})
    return {
        "meta": meta,
        "states": states,
        "known": known,
        "totals": await store.totals(),
        "window": await store.window(min(buckets), max(buckets) + 60),
        "paths": await store.journey_paths(),
        "reach": await store.reach([0], buckets, channels),
    }


StoreRun = Callable[[Callable[[PartitionStateStore], Any]], Any]


@pytest.fixture(params=["memory", "redis"])
def with_store(request: pytest.FixtureRequest) -> StoreRun:
    """Runs an async test body against a fresh store of the backend (its own Redis namespace)."""

    def run(body: Callable[[PartitionStateStore], Any]) -> Any:
        async def main() -> Any:
            store: PartitionStateStore
            if request.param == "memory":
                store = MemoryStore(MemoryState(PARTITIONS, 60, AudienceExpiry().as_mapping()))
            else:
                url = request.getfixturevalue("redis_url")
                store = RedisPartitionStore(
                    aioredis.Redis.from_url(url),
                    Keys(f"t{uuid.uuid4().hex[:8]}"),
                    3600,
                    3600,
                    audience_expiry_s=AudienceExpiry().as_mapping(),
                    partitions=PARTITIONS,
                )
            try:
                return await body(store)
            finally:
                await store.close()

        return asyncio.run(main())

    return run


def test_the_simulation_gives_every_kind_of_event() -> None:
    assert {TOPICS[m.topic] for m in MESSAGES} == set(TOPICS.values())
    assert not decode(MESSAGES).dead_letters


def test_apply_then_replay_is_a_no_op(with_store: StoreRun) -> None:
    async def body(store: PartitionStateStore) -> None:
        batch = decode(MESSAGES)
        empty = await snapshot(store, batch)
        epoch = await store.claim(0)
        first = await apply_batch(store, MESSAGES, epoch)
        assert len(first.applied) == len(batch.events) and not first.dead_letters
        after = await snapshot(store, batch)
        assert after != empty and after["totals"]["t|views"] > 0
        assert after["meta"].offsets == {t: tp.new_offset for t, tp in first.progress.items()}
        # The same batch again (a restart before its acknowledgement): every event is skipped by
        # offset, and applying the empty plan changes nothing.
        replay = await apply_batch(store, MESSAGES, epoch)
        assert not replay.applied and sum(replay.replayed.values()) == len(batch.events)
        assert await snapshot(store, batch) == after

    with_store(body)


def test_a_fenced_epoch_is_refused_whole(with_store: StoreRun) -> None:
    async def body(store: PartitionStateStore) -> None:
        first, second = split(MESSAGES)
        old = await store.claim(0)
        await apply_batch(store, first, old)
        new = await store.claim(0)  # another worker took the partition over
        assert new != old
        before = await snapshot(store, decode(MESSAGES))
        stale = await plan(store, decode(second))
        with pytest.raises(FencedError) as refused:
            await store.apply(stale, old)
        assert refused.value.current_epoch == new
        assert await snapshot(store, decode(MESSAGES)) == before
        await store.apply(stale, new)  # the owner's write goes through
        offsets = (await store.metas([0]))[0].offsets
        assert {t: offsets[t] for t in stale.progress} == {
            t: tp.new_offset for t, tp in stale.progress.items()
        }

    with_store(body)


def test_a_crash_between_plan_and_apply_leaves_nothing(with_store: StoreRun) -> None:
    async def body(store: PartitionStateStore) -> int:
        batch = decode(MESSAGES)
        epoch = await store.claim(0)
        empty = await snapshot(store, batch)
        await plan(store, batch)  # planned, then the worker died: apply never called
        assert await snapshot(store, batch) == empty
        replanned = await apply_batch(store, MESSAGES, epoch)  # the restart applies it once
        assert len(replanned.applied) == len(batch.events)
        assert (await apply_batch(store, MESSAGES, epoch)).applied == []
        totals = await store.totals()
        return totals["t|views"] + totals.get("t|ghost_views", 0)

    # shown and ghost (holdout) views: every view message counted once
    views = with_store(body)
    assert views == sum(1 for m in MESSAGES if TOPICS[m.topic] == "view")


def _nonzero(fields: dict[str, int]) -> dict[str, int]:
    """Figures as the readers see them: a field back at 0 reads as one never written. Two batches
    can leave one: a follow counted unattributed by the first batch is credited by the second,
    which brings its view (the view topic behind the follow topic), and `u|follows` returns to 0."""
    return {k: v for k, v in fields.items() if v}


def test_two_batches_in_order_equal_one(with_store: StoreRun) -> None:
    async def body(store: PartitionStateStore) -> dict[str, int]:
        first, second = split(MESSAGES)
        epoch = await store.claim(0)
        early = await plan(store, decode(second))  # planned from offsets the first batch moves
        await apply_batch(store, first, epoch)
        with pytest.raises(OffsetConflict):
            await store.apply(early, epoch)
        await apply_batch(store, second, epoch)
        return _nonzero(await store.totals())

    async def whole(store: PartitionStateStore) -> dict[str, int]:
        await apply_batch(store, MESSAGES, await store.claim(0))
        return _nonzero(await store.totals())

    assert with_store(body) == with_store(whole)


def test_both_backends_hold_the_same_state(redis_url: str) -> None:
    """The in-memory backend is a faithful model of the Redis one (reach aside: HyperLogLog)."""

    async def run(store: PartitionStateStore) -> dict[str, Any]:
        epoch = await store.claim(0)
        first, second = split(MESSAGES, 0.3)
        for messages in (first, second, MESSAGES):
            await apply_batch(store, messages, epoch)
        snap = await snapshot(store, decode(MESSAGES))
        reach = snap.pop("reach")
        return {**snap, "reach": sum(reach.campaign.values()), "channels": sorted(reach.channel)}

    async def both() -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
        memory_state = MemoryState(PARTITIONS, 60, AudienceExpiry().as_mapping())
        in_memory = await run(MemoryStore(memory_state))
        client = aioredis.Redis.from_url(redis_url)
        keys = Keys(f"t{uuid.uuid4().hex[:8]}")
        in_redis = await run(
            RedisPartitionStore(client, keys, 3600, 3600, audience_expiry_s=AudienceExpiry().as_mapping())
        )
        sync = redis.Redis.from_url(redis_url)
        audiences = [
            (FigureReader(sync, keys, 1, 60).audience(a), memory_state.audience(a, partitions=[0]))
            for a in ("cart_abandoners", "engaged", "buyers")
        ]
        sync.close()
        await client.aclose()
        return in_memory, in_redis, audiences

    in_memory, in_redis, audiences = asyncio.run(both())
    reach_memory, reach_redis = in_memory.pop("reach"), in_redis.pop("reach")
    assert in_memory == in_redis
    assert abs(reach_redis - reach_memory) <= 0.02 * reach_memory
    for from_redis, from_memory in audiences:
        assert sorted(from_redis) == sorted(from_memory)
    assert any(from_memory for _, from_memory in audiences)


# --- the worker runtime's fatal-error policy, in process ------------------------------------------


class _Topic:
    async def send(self, **kwargs: Any) -> asyncio.Future[None]:  # dead letters (none here)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class _Consumer:
    def highwater(self, tp: Any) -> int:
        raise KeyError(tp)  # unknown before a fetch: the runtime skips the lag gauge


class _App:
    """The two things AttributionRuntime asks of its Faust app outside the agent."""

    consumer = _Consumer()

    def topic(self, *names: str, **options: Any) -> _Topic:
        return _Topic()


def test_a_failing_apply_calls_the_fatal_policy_and_acks_nothing(with_store: StoreRun) -> None:
    from stream_processors.metrics import PipelineMetrics
    from stream_processors.worker import AttributionRuntime
    from stream_processors.worker_config import WorkerConfig

    cfg = WorkerConfig(
        app_id="t",
        worker_id="w1",
        faust_broker_options={},
        redis_url="redis://unused",
        topic_prefix="t",
        partitions=PARTITIONS,
        rules=RULES,
        batch_max=1000,
        batch_within_s=0.1,
        user_ttl_s=3600,
        bucket_ttl_s=3600,
        rebalance_timeout_s=3.0,
        web_host="127.0.0.1",
        web_port=0,
    )
    first, second = split(MESSAGES)

    async def body(store: PartitionStateStore) -> None:
        fatal: list[BaseException] = []
        acked: list[Any] = []

        def ack(messages: Sequence[Any]) -> None:
            acked.extend(messages)

        worker = AttributionRuntime(_App(), cfg, PipelineMetrics(), store=store, on_fatal=fatal.append)  # type: ignore[arg-type]

        async def submit(messages: list[RawMessage]) -> None:
            await worker.submit(messages, ack)  # type: ignore[arg-type]  # what it reads of a Message
            await asyncio.gather(*worker._chains.values())

        await submit(first)
        assert len(acked) == len(first) and not fatal
        before = await snapshot(store, decode(MESSAGES))
        # Break the store for real: Redis gets a key of the wrong type where the batch adds to
        # its totals (apply_batch.lua refuses before writing); memory fails its apply.
        if isinstance(store, RedisPartitionStore):
            await store.redis.set(store.keys.totals(0), "not a hash")
            before["totals"] = None
        else:

            def broken(plan: Any, epoch: str) -> None:
                raise MemoryError("simulated")

            store.state.apply = broken  # type: ignore[attr-defined, method-assign]
        await submit(second)
        assert len(fatal) == 1 and len(acked) == len(first)  # the failed batch: nothing acked
        await submit(second)  # after the policy ran, nothing more is applied or acknowledged
        assert len(fatal) == 1 and len(acked) == len(first)
        after = await snapshot(store, decode(MESSAGES)) if before["totals"] is not None else None
        if after is not None:
            assert after == before
        else:
            meta = (await store.metas([0]))[0]
            assert meta.offsets == before["meta"].offsets  # refused whole: offsets did not move

    with_store(body)


def test_the_scripts_build_the_key_names_keys_declares() -> None:
    """Keys (Python) and the Lua scripts agree on the partition keys' suffixes."""
    import re

    from stream_processors.store.redis_lua import APPLY_SCRIPT, READ_SCRIPT

    used = set(re.findall(r"prefix \.\. '([a-z]+:)'", APPLY_SCRIPT + READ_SCRIPT))
    assert used and used <= set(Keys.SUFFIXES)
    keys = Keys("ns")
    assert keys.prefix(3) == "ns:{p3}:"
    for name in (
        keys.meta(3),
        keys.totals(3),
        keys.paths(3),
        keys.bucket(3, 60),
        keys.user(3, "u"),
        keys.event_ids(3, "t"),
        keys.audience(3, "buyers"),
        keys.reach(3, 60, "c", "kol"),
        keys.engaged_reach(3, 60, "c"),
    ):
        assert name.startswith(keys.prefix(3)) and name[len(keys.prefix(3)) :].startswith(Keys.SUFFIXES)


def test_the_apply_script_reads_exactly_the_named_arguments_the_client_sends() -> None:
    """apply_batch.lua's arguments are named: its APPLY_ARGS, every `arg.<name>` it reads and the
    client's apply_fields are one set of names."""
    import re

    from stream_processors.store.redis_lua import APPLY_SCRIPT

    declared = re.search(r"local APPLY_ARGS = \{(.*?)\}", APPLY_SCRIPT, re.S)
    assert declared
    names = re.findall(r"'(\w+)'", declared.group(1))
    batch = decode(MESSAGES[:50])
    plan = plan_batch(batch, PartitionMeta.from_hash({}), {}, RULES, wall_now=WALL_NOW, known_ids={})
    store = RedisPartitionStore(aioredis.Redis(), Keys("ns"), 3600, 3600)
    assert list(store.apply_fields(plan, "1")) == names
    assert set(re.findall(r"\barg\.(\w+)", APPLY_SCRIPT)) == set(names)


def test_an_apply_with_a_missing_argument_is_refused_with_nothing_written(redis_url: str) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(redis_url)
        keys = Keys(f"t{uuid.uuid4().hex[:8]}")
        store = RedisPartitionStore(client, keys, 3600, 3600)
        epoch = await store.claim(0)
        plan = plan_batch(decode(MESSAGES[:50]), PartitionMeta.from_hash({}), {}, RULES, wall_now=WALL_NOW)
        fields = store.apply_fields(plan, epoch)
        del fields["reach"]
        script_keys = [keys.meta(0), keys.totals(0), keys.paths(0)]
        with pytest.raises(redis.ResponseError, match="SEEDLOOP_BAD_ARGS nothing written"):
            await store._script(keys=script_keys, args=named_args(fields))
        assert await client.keys(f"{keys.namespace}:*") == [keys.meta(0).encode()]
        await store.close()

    asyncio.run(main())


def test_converted_journeys_record_their_value_for_the_markov_value_weights() -> None:
    """The stream learns value weights from the same path counters: each converted path also sums
    its value (`|v`), so the value split can differ from the count split."""
    from stream_processors.attribution.markov import weights_from_path_counts

    store = MemoryStore(MemoryState(PARTITIONS, RULES.engine.bucket_s))
    batch_plan = asyncio.run(plan(store, decode(simulated_messages(6 * 3600))))
    paths = batch_plan.journey_paths
    converted = {k.rsplit("|", 1)[0] for k, n in paths.items() if k.endswith("|1") and n}
    valued = {k.rsplit("|", 1)[0] for k, n in paths.items() if k.endswith("|v") and n > 0}
    assert converted and valued <= converted and len(valued) >= len(converted) // 2
    learned = weights_from_path_counts(paths)
    assert learned is not None
    counts, values = learned
    assert set(counts) == set(values) and abs(sum(values.values()) - 1) < 1e-9


def test_a_batch_past_a_gap_is_never_planned(with_store: StoreRun) -> None:
    """Messages after the stored offset must continue it: a batch that skips one (fetched before a
    rebalance, delivered after Faust sought back) would store an offset past the skipped message,
    whose redelivery would then be dropped as a replay."""
    from stream_processors.processor import OffsetGap

    first, second = split(MESSAGES)
    topic = second[0].topic
    skipped = min(m.offset for m in second if m.topic == topic)
    holey = [m for m in second if not (m.topic == topic and m.offset == skipped)]

    async def body(store: PartitionStateStore) -> None:
        epoch = await store.claim(0)
        await apply_batch(store, first, epoch)
        with pytest.raises(OffsetGap, match=f"applied up to {skipped - 1}"):
            await plan(store, decode(holey))
        # The whole continuation (with replays of the first batch in front) is fine.
        await apply_batch(store, first + second, epoch)

    with_store(body)
