"""Remarketing audiences kept current from the stream, readable by the ad scheduler.

    ns:{pN}:aud:cart_abandoners   users who added to cart and have not bought since (score: cart time)
    ns:{pN}:aud:engaged           users who engaged (clicked, followed) and never bought (score: last engagement)
    ns:{pN}:aud:buyers            buyers, for loyalty campaigns (score: last checkout)
    ns:{pN}:aud:last_checkout     hash user -> last checkout time (to order carts against checkouts)

Scores are event times; a member older than its audience's expiry (event time, against the
partition's watermark) is dropped. The writes are idempotent (ZADD GT keeps the latest time;
removals compare times), so a replayed batch changes nothing, and arrival order only matters
within the lateness the pipeline already tolerates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

from schemas.events import AddToCart, Checkout, Follow, View
from stream_processors.processor import BatchPlan
from stream_processors.state import Keys

AUDIENCES = ("cart_abandoners", "engaged", "buyers")


@dataclass(frozen=True, slots=True)
class AudienceExpiry:
    cart_abandoners_s: float = 7 * 86_400
    engaged_s: float = 30 * 86_400
    buyers_s: float = 180 * 86_400

    def of(self, audience: str) -> float:
        return float(getattr(self, f"{audience}_s"))


def audience_key(keys: Keys, partition: int, audience: str) -> str:
    return f"{keys.tag(partition)}:aud:{audience}"


class AudienceRecorder:
    def __init__(self, client: aioredis.Redis, keys: Keys, expiry: AudienceExpiry) -> None:
        self._redis = client
        self._keys = keys
        self._expiry = expiry

    async def record(self, plan: BatchPlan) -> None:
        p = plan.partition
        key = {a: audience_key(self._keys, p, a) for a in AUDIENCES}
        last_checkout_key = f"{self._keys.tag(p)}:aud:last_checkout"
        checkouts: dict[str, float] = {}
        carts: dict[str, float] = {}
        engaged: dict[str, float] = {}
        for decoded in plan.applied:
            e = decoded.event
            at = e.event_ts
            if isinstance(e, Checkout):
                checkouts[e.user_id] = max(at, checkouts.get(e.user_id, at))
            elif isinstance(e, AddToCart):
                carts[e.user_id] = max(at, carts.get(e.user_id, at))
            elif isinstance(e, Follow) or (isinstance(e, View) and e.engaged):
                engaged[e.user_id] = max(at, engaged.get(e.user_id, at))
        if not (checkouts or carts or engaged):
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for user, at in checkouts.items():
                pipe.zadd(key["buyers"], {user: at}, gt=True)
                pipe.zrem(key["engaged"], user)
            if carts or engaged:
                pipe.hmget(last_checkout_key, list({*carts, *engaged}))
            results = await pipe.execute()
        last_seen: dict[str, float] = {}
        if carts or engaged:
            users = list({*carts, *engaged})
            last_seen = {u: float(v) for u, v in zip(users, results[-1], strict=True) if v is not None}
        for user, at in checkouts.items():
            last_seen[user] = max(at, last_seen.get(user, at))
        async with self._redis.pipeline(transaction=False) as pipe:
            for user in checkouts:
                pipe.hset(last_checkout_key, user, repr(last_seen[user]))
            for user, at in carts.items():
                if at > last_seen.get(user, float("-inf")):
                    pipe.zadd(key["cart_abandoners"], {user: at}, gt=True)
            for user, at in engaged.items():
                if user not in last_seen:
                    pipe.zadd(key["engaged"], {user: at}, gt=True)
            await pipe.execute()
        await self._drop_bought_carts(key["cart_abandoners"], last_seen, checkouts)
        watermark = max((tp.watermark for tp in plan.progress.values()), default=None)
        if watermark is not None and watermark > 0:
            async with self._redis.pipeline(transaction=False) as pipe:
                for audience in AUDIENCES:
                    pipe.zremrangebyscore(key[audience], "-inf", watermark - self._expiry.of(audience))
                await pipe.execute()

    async def _drop_bought_carts(
        self, cart_key: str, last_seen: Mapping[str, float], checkouts: Mapping[str, float]
    ) -> None:
        """A cart at or before the user's last checkout was bought: not abandoned any more."""
        if not checkouts:
            return
        scores = await self._redis.zmscore(cart_key, list(checkouts))
        stale = [u for u, s in zip(checkouts, scores, strict=True) if s is not None and s <= last_seen[u]]
        if stale:
            await self._redis.zrem(cart_key, *stale)


def read_audience(
    client: redis.Redis,
    keys: Keys,
    partitions: int,
    audience: str,
    limit: int = 1000,
    partitions_filter: Iterable[int] | None = None,
) -> list[tuple[str, float]]:
    """Members, most recent first, across partitions (the scheduler's view)."""
    if audience not in AUDIENCES:
        raise KeyError(audience)
    parts = list(partitions_filter) if partitions_filter is not None else range(partitions)
    pipe = client.pipeline(transaction=False)
    for p in parts:
        pipe.zrevrange(audience_key(keys, p, audience), 0, limit - 1, withscores=True)
    members = [
        (m.decode() if isinstance(m, bytes) else str(m), float(s)) for rows in pipe.execute() for m, s in rows
    ]
    members.sort(key=lambda ms: -ms[1])
    return members[:limit]


def audience_sizes(client: redis.Redis, keys: Keys, partitions: int) -> dict[str, int]:
    pipe = client.pipeline(transaction=False)
    for audience in AUDIENCES:
        for p in range(partitions):
            pipe.zcard(audience_key(keys, p, audience))
    counts = pipe.execute()
    return {a: sum(counts[i * partitions : (i + 1) * partitions]) for i, a in enumerate(AUDIENCES)}
