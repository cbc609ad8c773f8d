"""Remarketing audiences kept current from the stream, readable by the ad scheduler.

    ns:{pN}:aud:cart_abandoners   users who added to cart and have not bought since (score: cart time)
    ns:{pN}:aud:engaged           users who engaged (clicked, followed) and never bought (score: last engagement)
    ns:{pN}:aud:buyers            buyers, for loyalty campaigns (score: last checkout)
    ns:{pN}:aud:last_checkout     hash user -> last checkout time (to order carts against checkouts)

Scores are event times; a member older than its audience's expiry (event time, against the
partition's watermark) is dropped. The worker writes them inside the batch's atomic apply
(apply_batch.lua, from `processor.BatchSignals`), so a crash neither loses nor repeats an update;
the writes also commute (ZADD GT keeps the latest time; removals compare times), so arrival order
only matters within the lateness the pipeline already tolerates.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from stream_processors.redis_connect import SyncClient
from stream_processors.state import Keys

AUDIENCES = ("cart_abandoners", "engaged", "buyers")


@dataclass(frozen=True, slots=True)
class AudienceExpiry:
    cart_abandoners_s: float = 7 * 86_400
    engaged_s: float = 30 * 86_400
    buyers_s: float = 180 * 86_400

    def of(self, audience: str) -> float:
        return float(getattr(self, f"{audience}_s"))

    def as_mapping(self) -> dict[str, float]:
        return {audience: self.of(audience) for audience in AUDIENCES}


def audience_key(keys: Keys, partition: int, audience: str) -> str:
    return f"{keys.tag(partition)}:aud:{audience}"


def read_audience(
    client: SyncClient,
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


def audience_sizes(client: SyncClient, keys: Keys, partitions: int) -> dict[str, int]:
    pipe = client.pipeline(transaction=False)
    for audience in AUDIENCES:
        for p in range(partitions):
            pipe.zcard(audience_key(keys, p, audience))
    counts = pipe.execute()
    return {a: sum(counts[i * partitions : (i + 1) * partitions]) for i, a in enumerate(AUDIENCES)}
