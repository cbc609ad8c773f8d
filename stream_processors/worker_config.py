"""The worker's settings (built from seedloop's Settings by seedloop/runtime.py) and its Redis store."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schemas.events import ACTIONS
from stream_processors.processor import ProcessingRules
from stream_processors.redis_connect import RedisMode, async_client
from stream_processors.store.base import AudienceExpiry
from stream_processors.store.redis_lua import Keys, RedisPartitionStore


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    app_id: str
    worker_id: str
    faust_broker_options: Mapping[str, Any]
    redis_url: str
    topic_prefix: str
    partitions: int
    rules: ProcessingRules
    batch_max: int
    batch_within_s: float
    user_ttl_s: int
    bucket_ttl_s: int
    rebalance_timeout_s: float
    web_host: str
    web_port: int
    metrics_refresh_s: float = 5.0
    markov_refresh_s: float = 30.0
    # Campaigns and creators exported by name (top N by all-time spend); the rest are `other`.
    metrics_top_n: int = 50
    # Wall-clock expiry of the reach HyperLogLogs (one per partition, minute, campaign, channel).
    reach_ttl_s: int = 3 * 3600
    fetch_max_wait_ms: int = 50
    # Whether REDIS_URL names a Redis Cluster node. `auto` is resolved by `run_worker` before the
    # app is built (one INFO round trip), since no constructor here makes a network call; a store
    # built from an unresolved `auto` talks to a single server.
    redis_mode: RedisMode = "auto"

    @property
    def topic_actions(self) -> dict[str, str]:
        """topic -> action of the four action topics (Settings.action_topics is action -> topic)."""
        return {f"{self.topic_prefix}.{a}": a for a in ACTIONS}

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.topic_prefix}.dead_letters"


def redis_store(cfg: WorkerConfig) -> RedisPartitionStore:
    """The worker's Redis store (no connection is opened until first used)."""
    return RedisPartitionStore(
        async_client(cfg.redis_url, cluster=cfg.redis_mode == "cluster"),
        Keys(cfg.topic_prefix),
        cfg.user_ttl_s,
        cfg.bucket_ttl_s,
        reach_ttl_s=cfg.reach_ttl_s,
        audience_expiry_s=AudienceExpiry().as_mapping(),
        partitions=cfg.partitions,
        bucket_s=cfg.rules.engine.bucket_s,
    )
