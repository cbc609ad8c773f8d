"""The memory phase: the latency worker processes views of distinct new users; its RSS and Redis's
`used_memory` are sampled along the way (a curve, so flatness is visible)."""

from __future__ import annotations

import json
import time
from typing import Any

import redis
from confluent_kafka import Producer

from seedloop.bench_children import Child, rss_mb
from seedloop.bench_drain import applied_counter
from seedloop.settings import Settings

# Produced this many at a time, and never more than `AHEAD` beyond what the worker applied.
SLICE = 10_000
AHEAD = 20_000


def redis_used_bytes(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def _produce_users(producer: Producer, topic: str, head: str, first: int, end: int) -> None:
    """Views of the new users `first`..`end`-1 (ids m00000000...), waiting where the queue is full."""
    for i in range(first, end):
        uid = f"m{i:08d}"
        value = f'{{"event_id":"mem-{i}","user_id":"{uid}",{head}}}'.encode()
        while True:
            try:
                producer.produce(topic, value, uid.encode())
                break
            except BufferError:
                producer.poll(0.05)


def memory_phase(
    settings: Settings,
    client: redis.Redis,
    worker: Child,
    template: dict[str, Any],
    sink_config: dict[str, Any],
    users: int,
    budget_s: float,
) -> dict[str, Any]:
    """Views of `users` distinct new users; RSS and Redis memory sampled as they are applied."""
    count = applied_counter(settings, client)
    base_applied = count()
    base_redis = redis_used_bytes(client)
    base_rss = rss_mb(worker.proc.pid)
    producer = Producer(sink_config)
    topic = settings.topic("view")
    head = json.dumps({k: v for k, v in template.items() if k not in ("event_id", "user_id")})[1:-1]
    started = time.monotonic()
    # Produce in slices ahead of the worker (the producer is ~20x faster), so the broker never
    # holds many more than the worker will read inside the time box.
    produced = 0
    curve: list[dict[str, Any]] = [{"users": 0, "worker_rss_mb": base_rss, "redis_mb": base_redis / 2**20}]
    next_mark = max(1, users // 10)
    applied = 0
    while True:
        applied = count() - base_applied
        if produced - applied < AHEAD and produced < users:
            _produce_users(producer, topic, head, produced, min(users, produced + SLICE))
            produced = min(users, produced + SLICE)
            producer.poll(0)
        if applied >= next_mark or applied >= users:
            curve.append(
                {
                    "users": applied,
                    "worker_rss_mb": rss_mb(worker.proc.pid),
                    "redis_mb": redis_used_bytes(client) / 2**20,
                }
            )
            next_mark += max(1, users // 10)
        if applied >= users or time.monotonic() - started > budget_s:
            break
        worker.check()
        time.sleep(0.1)
    producer.flush(10)
    end_redis = redis_used_bytes(client)
    end_rss = rss_mb(worker.proc.pid)
    curve.append({"users": applied, "worker_rss_mb": end_rss, "redis_mb": end_redis / 2**20})
    return {
        "memory_users": applied,
        "memory_users_target": users,
        "worker_rss_mb": end_rss,
        "worker_rss_start_mb": base_rss,
        "redis_mb": end_redis / 2**20,
        "redis_bytes_per_user": (end_redis - base_redis) / applied if applied else None,
        "memory_curve": curve,
    }
