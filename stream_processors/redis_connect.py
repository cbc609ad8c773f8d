"""Redis clients for a `REDIS_URL` that names a single server or any node of a Redis Cluster.

Every key a partition writes carries the partition's hash tag `{pN}` (store/redis_lua.py `Keys`), so each
atomic batch (one Lua call) lives in one cluster slot; global keys (bids, Markov weights, the
optimizer's state) are single keys. The only difference the caller sees is the client class:
redis-py's cluster client routes each command, script and non-transactional pipeline to the node
owning its slot. Whether the URL is a cluster is asked once (`INFO cluster`) when a command
starts, not guessed from the URL, so the same `REDIS_URL` form works for both.
"""

from __future__ import annotations

from typing import Any, Literal

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

RedisMode = Literal["auto", "standalone", "cluster"]
SyncClient = redis.Redis | RedisCluster
AsyncClient = aioredis.Redis | AsyncRedisCluster


def is_cluster(url: str, **options: Any) -> bool:
    """True when the server at `url` runs in cluster mode (`cluster_enabled:1`)."""
    probe = redis.Redis.from_url(url, **options)
    try:
        return bool(probe.info("cluster").get("cluster_enabled"))
    finally:
        probe.close()


def resolve_mode(url: str, mode: RedisMode, **options: Any) -> Literal["standalone", "cluster"]:
    if mode != "auto":
        return mode
    return "cluster" if is_cluster(url, **options) else "standalone"


def sync_client(url: str, mode: RedisMode = "auto", **options: Any) -> SyncClient:
    """A blocking client; `auto` asks the server which kind it is (one round trip)."""
    if resolve_mode(url, mode, **options) == "cluster":
        return RedisCluster.from_url(url, **options)
    return redis.Redis.from_url(url, **options)


def async_client(url: str, cluster: bool, **options: Any) -> AsyncClient:
    """An asyncio client of a known kind (resolve `auto` first with `resolve_mode`: an event
    loop's constructor is no place for a blocking round trip)."""
    if cluster:
        return AsyncRedisCluster.from_url(url, **options)
    return aioredis.Redis.from_url(url, **options)
