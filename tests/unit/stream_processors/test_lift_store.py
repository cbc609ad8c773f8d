"""The lift figures of the largest checkout the schema allows go through the Redis + Lua apply.

Every stored figure is an int64 hash field (HINCRBY): an increment or a sum past it makes the apply
script refuse the whole batch, and the partition never moves again. A checkout of 1e12 minor (the
schema's bound) once made `gmv_sq` move by ~1e24; here it is applied on a real valkey (started by
the module on a free port) and read back.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import redis.asyncio as aioredis

from schemas.codec import encode
from schemas.events import Checkout, UserAction, View
from seedloop import runtime
from seedloop.settings import Settings
from stream_processors.lift import lift_field, lift_groups
from stream_processors.processor import RawMessage, decode_batch, plan_batch
from stream_processors.store.base import AudienceExpiry
from stream_processors.store.redis_lua import Keys, RedisPartitionStore

SETTINGS = Settings(partitions=1, topic_prefix="t", holdout_share=0.1)
SCENARIO = runtime.scenario_of(SETTINGS)
RULES = runtime.processing_rules(SETTINGS, SCENARIO)
TOPICS = {SETTINGS.topic(a): a for a in ("view", "follow", "add_to_cart", "checkout")}
T0 = datetime(2026, 11, 11, tzinfo=UTC)
BIG = 10**12  # schemas.events.MinorUnits' bound
INT64_MAX = 2**63 - 1


def events() -> list[UserAction]:
    """A held-out user of c_pmpm_launch (a ghost view), then two checkouts of its serum at 1e12."""
    at = T0.timestamp()
    ghost = View(
        event_id="v1",
        user_id="u1",
        event_time=T0,
        campaign_id="c_pmpm_launch",
        channel="kol",
        creative_id="cr1",
        creator_id="kol_lina_skin",
        cost_minor=0,
        held_out=True,
    )
    buys = [
        Checkout(
            event_id=f"o{i}",
            user_id="u1",
            event_time=datetime.fromtimestamp(at + 60 * i, UTC),
            spu_id="spu_pmpm_serum",
            value_minor=BIG,
            currency="CNY",
            order_id=f"ord{i}",
        )
        for i in (1, 2)
    ]
    return [ghost, *buys]


def messages(evs: list[UserAction]) -> list[RawMessage]:
    return [
        RawMessage(SETTINGS.topic(e.action), 0, i, e.user_id.encode(), encode(e), e.event_ts)
        for i, e in enumerate(evs)
    ]


def test_a_checkout_of_the_schemas_largest_amount_is_applied_through_redis(redis_url: str) -> None:
    async def main() -> dict[str, int]:
        client = aioredis.Redis.from_url(redis_url)
        store = RedisPartitionStore(
            client,
            Keys(f"t{uuid.uuid4().hex[:8]}"),
            3600,
            3600,
            audience_expiry_s=AudienceExpiry().as_mapping(),
        )
        try:
            epoch = await store.claim(0)
            batch = decode_batch(0, messages(events()), TOPICS, RULES)
            assert not batch.dead_letters and len(batch.events) == 3
            meta, states, known = await store.read(0, batch.user_ids, batch.event_ids)
            plan = plan_batch(batch, meta, states, RULES, wall_now=T0.timestamp() + 600, known_ids=known)
            await store.apply(plan, epoch)  # refused whole (ResponseError) if a field would overflow
            return await store.totals()
        finally:
            await store.close()

    totals = asyncio.run(main())
    held_out = lift_groups(totals)["c_pmpm_launch"]["held_out"]
    assert (held_out.users, held_out.checkouts, held_out.gmv_minor) == (1, 2, 2 * BIG)
    assert held_out.gmv_sq == 10**16  # the capped whole-unit square, not (2e12)^2 = 4e24
    assert all(abs(v) <= INT64_MAX for v in totals.values())
    assert totals[lift_field("c_pmpm_launch", "held_out", "checkouts_sq")] == 4
