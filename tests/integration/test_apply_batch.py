"""apply_batch.lua against a real Redis: a batch is applied whole or not at all.

Redis does not roll back a script that fails part-way, so the script checks everything that could
make one of its writes fail before the first write. Each case plants what would make a write fail
(a key of the wrong type, a field that is not an integer or would overflow, a string that is not a
HyperLogLog) in the test's namespace: the apply must fail with nothing written and the offsets
unchanged; once the key is repaired, the replay applies the batch exactly once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from confluent_kafka import murmur2

from schemas.codec import encode
from schemas.events import AddToCart, Checkout, UserAction, View
from seedloop.embedded import redis_process
from stream_processors.attribution.journey import EngineConfig
from stream_processors.attribution.models import Lookback
from stream_processors.audiences import AudienceExpiry
from stream_processors.processor import (
    WATERMARK_QUORUM,
    Catalogue,
    ProcessingRules,
    RawMessage,
    decode_batch,
    plan_batch,
)
from stream_processors.store.redis_lua import Keys, RedisPartitionStore
from tests.conftest import SERVICE_TIERS
from tests.services import redis_server_binary

pytestmark = pytest.mark.integration

PARTITIONS = 4
T0 = datetime(2026, 11, 11, 8, tzinfo=UTC).timestamp()
TOPICS = {"t.view": "view", "t.add_to_cart": "add_to_cart", "t.checkout": "checkout"}
RULES = ProcessingRules(
    engine=EngineConfig(lookback=Lookback(view_s=86_400, engaged_s=7 * 86_400), half_life_s=3600, lateness_s=3600),
    max_future_s=86_400,
    catalogue=Catalogue({"c1": frozenset({"kol"})}, "CNY", {"CNY": 1.0}),
)
USERS = [u for u in (f"u{i}" for i in range(100)) if murmur2(u.encode(), PARTITIONS) == 0][:3]
BUCKET = int(T0 // 60) * 60
INT64_MAX = 2**63 - 1


def batch_events() -> list[UserAction]:
    """Views of three users over two minutes (one engaged), then an add-to-cart and a checkout:
    the batch writes user states, totals, buckets, journey paths, reach, audiences and ids."""
    events: list[UserAction] = []
    for i in range(WATERMARK_QUORUM + 4):
        events.append(
            View(
                event_id=f"v{i}",
                user_id=USERS[i % 3],
                event_time=datetime.fromtimestamp(T0 + 10 * i, UTC),
                campaign_id="c1",
                channel="kol",
                creative_id="cr1",
                cost_minor=30,
                engaged=i == 1,
            )
        )
    at = datetime.fromtimestamp(T0 + 200, UTC)
    events.append(AddToCart(event_id="a1", user_id=USERS[0], event_time=at, spu_id="s1", value_minor=500, currency="CNY"))
    events.append(
        Checkout(event_id="o1", user_id=USERS[0], event_time=at, spu_id="s1", value_minor=500, currency="CNY",
                 order_id="ord1")
    )
    return events


def messages() -> list[RawMessage]:
    offsets: dict[str, int] = {}
    out = []
    for e in batch_events():
        topic = f"t.{e.action}"
        offsets[topic] = offsets.get(topic, -1) + 1
        out.append(RawMessage(topic, 0, offsets[topic], e.user_id.encode(), encode(e)))
    return out


@pytest.fixture(scope="module", params=[t for t in SERVICE_TIERS if t in ("embedded", "local")])
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A Redis server of the tier: the embedded valkey, or Debian's redis-server (local)."""
    server = redis_process(binary=redis_server_binary() if request.param == "local" else None)
    server.start()
    try:
        yield f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.stop()


def apply_once(url: str, namespace: str) -> None:
    """What the worker does for one partition batch: claim, read, plan, apply."""

    async def run() -> None:
        client = aioredis.Redis.from_url(url)
        try:
            store = RedisPartitionStore(client, Keys(namespace), 3600, 3600, audience_expiry_s=AudienceExpiry().as_mapping())
            epoch = (await client.hget(Keys(namespace).meta(0), "epoch")) or await store.claim(0)
            batch = decode_batch(0, messages(), TOPICS, RULES, PARTITIONS)
            meta, states, known = await store.read(0, batch.user_ids, batch.event_ids)
            plan = plan_batch(batch, meta, states, RULES, wall_now=T0, known_ids=known)
            await store.apply(plan, epoch if isinstance(epoch, str) else epoch.decode())
        finally:
            await client.aclose()

    asyncio.run(run())


def snapshot(client: redis.Redis, namespace: str, skip: str | None = None) -> dict[str, Any]:
    """Every key of the namespace by value (key names without the namespace). HyperLogLogs by
    their count: PFCOUNT may rewrite a cached count inside the bytes, not the value."""
    out: dict[str, Any] = {}
    for raw in client.scan_iter(match=f"{namespace}:*", count=1000):
        key = raw.decode()
        if key == skip:
            continue
        kind = client.type(key).decode()
        value: Any
        if kind == "hash":
            value = client.hgetall(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "string":
            text = client.get(key) or b""
            value = ("hll", client.pfcount(key)) if text.startswith(b"HYLL") else text
        else:
            value = (kind, client.dump(key))
        out[key[len(namespace) :]] = value
    return out


def written(client: redis.Redis, namespace: str) -> dict[str, Any]:
    """What a batch wrote: the snapshot without the epoch that claiming the partition wrote."""
    snap = snapshot(client, namespace)
    meta = snap.get(":{p0}:meta", {})
    meta.pop(b"epoch", None)
    if not meta:
        snap.pop(":{p0}:meta", None)
    return snap


Plant = Callable[[redis.Redis, str], None]
CASES: dict[str, tuple[Plant, Plant]] = {
    # what HINCRBY of a bucket meets: a string where the bucket's hash should be
    "bucket hash holds a string": (
        lambda r, ns: r.set(f"{ns}:{{p0}}:b:{BUCKET}", "planted"),
        lambda r, ns: r.delete(f"{ns}:{{p0}}:b:{BUCKET}"),
    ),
    "all-time field would overflow int64": (
        lambda r, ns: r.hset(f"{ns}:{{p0}}:tot", "t|views", INT64_MAX - 3),
        lambda r, ns: r.hdel(f"{ns}:{{p0}}:tot", "t|views"),
    ),
    "all-time field is not an integer": (
        lambda r, ns: r.hset(f"{ns}:{{p0}}:tot", "t|spend", "12abc"),
        lambda r, ns: r.hdel(f"{ns}:{{p0}}:tot", "t|spend"),
    ),
    "journey paths hold a list": (
        lambda r, ns: r.rpush(f"{ns}:{{p0}}:paths", "planted"),
        lambda r, ns: r.delete(f"{ns}:{{p0}}:paths"),
    ),
    "reach key is a string, not a HyperLogLog": (
        lambda r, ns: r.set(f"{ns}:{{p0}}:r:{BUCKET + 60}:c1:kol", "not an hll"),
        lambda r, ns: r.delete(f"{ns}:{{p0}}:r:{BUCKET + 60}:c1:kol"),
    ),
    "an audience holds a set": (
        lambda r, ns: r.sadd(f"{ns}:{{p0}}:aud:buyers", "planted"),
        lambda r, ns: r.delete(f"{ns}:{{p0}}:aud:buyers"),
    ),
    "a stored last checkout is not a time": (
        lambda r, ns: r.hset(f"{ns}:{{p0}}:aud:last_checkout", USERS[0], "soon"),
        lambda r, ns: r.hdel(f"{ns}:{{p0}}:aud:last_checkout", USERS[0]),
    ),
    "event id set holds a hash": (
        lambda r, ns: r.hset(f"{ns}:{{p0}}:ids:t.checkout", "planted", 1),
        lambda r, ns: r.delete(f"{ns}:{{p0}}:ids:t.checkout"),
    ),
}


@pytest.fixture(scope="module")
def reference(redis_url: str) -> dict[str, Any]:
    """The batch applied once to a clean namespace."""
    namespace = f"ref{uuid.uuid4().hex[:8]}"
    apply_once(redis_url, namespace)
    with redis.Redis.from_url(redis_url) as client:
        snap = written(client, namespace)
    assert snap[":{p0}:tot"][b"t|views"] == str(WATERMARK_QUORUM + 4).encode()
    assert {k.split(":")[2] for k in snap} >= {"tot", "paths", "u", "b", "r", "aud", "ids", "meta"}
    return snap


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_batch_that_cannot_be_applied_writes_nothing_and_its_replay_applies_once(
    redis_url: str, reference: dict[str, Any], case: str
) -> None:
    plant, repair = CASES[case]
    namespace = f"t{uuid.uuid4().hex[:8]}"
    with redis.Redis.from_url(redis_url) as client:
        client.hset(Keys(namespace).meta(0), "epoch", "1")
        plant(client, namespace)
        before = snapshot(client, namespace)

        with pytest.raises(redis.ResponseError, match="SEEDLOOP_UNAPPLIABLE"):
            apply_once(redis_url, namespace)
        assert snapshot(client, namespace) == before, "a failed apply wrote something"

        repair(client, namespace)
        apply_once(redis_url, namespace)
        assert written(client, namespace) == reference
        apply_once(redis_url, namespace)  # replayed again: skipped by offset
        assert written(client, namespace) == reference


def test_the_overflow_check_is_exact_at_the_int64_limit(redis_url: str) -> None:
    views = WATERMARK_QUORUM + 4
    with redis.Redis.from_url(redis_url) as client:
        fits = f"t{uuid.uuid4().hex[:8]}"
        client.hset(Keys(fits).meta(0), "epoch", "1")
        client.hset(Keys(fits).totals(0), "t|views", INT64_MAX - views)
        apply_once(redis_url, fits)
        assert int(client.hget(Keys(fits).totals(0), "t|views") or 0) == INT64_MAX

        past = f"t{uuid.uuid4().hex[:8]}"
        client.hset(Keys(past).meta(0), "epoch", "1")
        client.hset(Keys(past).totals(0), "t|views", INT64_MAX - views + 1)
        with pytest.raises(redis.ResponseError, match=r"SEEDLOOP_UNAPPLIABLE.*t\|views"):
            apply_once(redis_url, past)
        assert client.hget(Keys(past).meta(0), "off:t.view") is None
