"""Remarketing audiences kept current from the stream, readable by the ad scheduler.

    cart_abandoners   users who added to cart and have not bought since (score: cart time)
    engaged           users who engaged (clicked, followed) and never bought (score: last engagement)
    buyers            buyers, for loyalty campaigns (score: last checkout)
    last_checkout     user -> last checkout time (to order carts against checkouts)

One sorted set (a hash for last_checkout) per partition in Redis (key names: store/redis_lua.py
`Keys.audience`). Scores are event times; a member older than its audience's expiry (event time,
against the partition's watermark) is dropped. The worker writes them inside the batch's atomic
apply (apply_batch.lua, from `processor.BatchSignals`; the in-memory store does the same steps),
so a crash neither loses nor repeats an update; the writes also commute (ZADD GT keeps the latest
time; removals compare times), so arrival order only matters within the lateness the pipeline
already tolerates.
"""

from __future__ import annotations

from collections.abc import Iterable

from stream_processors.redis_connect import SyncClient
from stream_processors.store.base import AUDIENCES, AudienceExpiry
from stream_processors.store.redis_lua import FigureReader, Keys

__all__ = ["AUDIENCES", "AudienceExpiry", "audience_sizes", "read_audience"]

# The two readers below are the Redis backend's (FigureReader.audience, .audience_sizes) for
# callers holding a client and Keys; audience queries do not read the bucket width.
_ANY_BUCKET_S = 60


def read_audience(
    client: SyncClient,
    keys: Keys,
    partitions: int,
    audience: str,
    limit: int = 1000,
    partitions_filter: Iterable[int] | None = None,
) -> list[tuple[str, float]]:
    """Members, most recent first, across partitions (the scheduler's view)."""
    return FigureReader(client, keys, partitions, _ANY_BUCKET_S).audience(audience, limit, partitions_filter)


def audience_sizes(client: SyncClient, keys: Keys, partitions: int) -> dict[str, int]:
    return FigureReader(client, keys, partitions, _ANY_BUCKET_S).audience_sizes()
