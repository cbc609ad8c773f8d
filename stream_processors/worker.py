"""The Faust worker: one agent over the four action topics, applying each partition batch to Redis.

Why one agent over four topics: the topics are co-partitioned (same partition count, key =
user_id), and Faust assigns partition N of every topic to the same worker, so one user's whole
journey is handled by one worker without a repartition (a `group_by` halves throughput,
DESIGN.md section 3). Cross-topic order is not guaranteed; the journey engine is order-independent
within the allowed lateness, so that does not matter.

Failure policy (crash-only): Faust acknowledges a batch once the agent body returns, even if it
raised. So every exception that could leave a batch neither applied nor dead-lettered ends the
process at once (`os._exit`) before Faust can acknowledge or commit; a supervisor (the demo,
compose `restart:`) starts it again, and replay is harmless because Redis skips applied offsets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import faust
import redis.asyncio as aioredis
from faust.types import TP, EventT
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stream_processors.attribution.markov import MarkovChain
from stream_processors.audiences import AudienceExpiry
from stream_processors.metrics import PipelineMetrics
from stream_processors.monitoring import install_monitoring
from stream_processors.processor import (
    DeadLetter,
    ProcessingRules,
    RawMessage,
    decode_batch,
    plan_batch,
)
from stream_processors.state import AsyncFigureReader, FencedError, Keys, OffsetConflict, PartitionStore

log = logging.getLogger("seedloop.worker")

EXIT_APPLY_FAILED = 70
# A Redis outage longer than this (doubling back-off, about 25 s in all) ends the worker loudly.
REDIS_RETRY_LIMIT_S = 12.8


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

    @property
    def action_topics(self) -> dict[str, str]:
        return {f"{self.topic_prefix}.{a}": a for a in ("view", "follow", "add_to_cart", "checkout")}

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.topic_prefix}.dead_letters"


def dead_letter_headers(dl: DeadLetter, worker_id: str) -> dict[str, bytes]:
    m = dl.message
    return {
        "source_topic": m.topic.encode(),
        "source_partition": str(m.partition).encode(),
        "source_offset": str(m.offset).encode(),
        "error_class": dl.reason.encode(),
        "error_message": dl.detail[:1000].encode(),
        "worker": worker_id.encode(),
    }


class AttributionRuntime:
    """Everything the agent does per batch; separated from the Faust wiring for readability."""

    def __init__(self, app: faust.App, cfg: WorkerConfig, metrics: PipelineMetrics) -> None:
        self.app = app
        self.cfg = cfg
        self.metrics = metrics
        self.keys = Keys(cfg.topic_prefix)
        self.redis = aioredis.Redis.from_url(cfg.redis_url)
        self.store = PartitionStore(
            self.redis,
            self.keys,
            cfg.user_ttl_s,
            cfg.bucket_ttl_s,
            reach_ttl_s=cfg.reach_ttl_s,
            audience_expiry_s=AudienceExpiry().as_mapping(),
        )
        self.epochs: dict[int, str] = {}
        self.owned: set[int] = set()
        self.channel_weights: dict[str, float] | None = None
        self.dead_letter_topic = app.topic(
            cfg.dead_letter_topic, value_serializer="raw", key_serializer="raw"
        )
        self.last_offsets: dict[tuple[str, int], int] = {}
        self.watermarks: dict[int, float] = {}
        self.reader = AsyncFigureReader(self.redis, self.keys, cfg.partitions, cfg.rules.engine.bucket_s)

    async def on_assigned(self, assigned: set[TP]) -> None:
        mine = {tp.partition for tp in assigned if tp.topic in self.cfg.action_topics}
        for partition in sorted(mine - self.owned):
            self.epochs[partition] = await self.store.claim(partition)
        for partition in self.owned - mine:
            self.epochs.pop(partition, None)
        self.owned = mine
        self.metrics.owned_partitions.set(len(mine))
        log.info("partitions assigned", extra={"partitions": sorted(mine), "worker": self.cfg.worker_id})

    async def process(self, events: Sequence[EventT]) -> None:
        by_partition: dict[int, list[RawMessage]] = defaultdict(list)
        consumed: Counter[str] = Counter()
        for event in events:
            msg = event.message
            consumed[msg.topic] += 1
            by_partition[msg.partition].append(
                RawMessage(msg.topic, msg.partition, msg.offset, msg.key, msg.value, msg.timestamp)
            )
        for topic, n in consumed.items():
            self.metrics.events_consumed.labels(topic).inc(n)
        # Partitions are independent (own keys, own offsets, own epoch): apply them concurrently so
        # one partition's Redis round trips overlap another's planning.
        await asyncio.gather(*(self._process_partition(p, msgs) for p, msgs in by_partition.items()))

    async def _process_partition(self, partition: int, messages: list[RawMessage]) -> None:
        started = time.perf_counter()
        batch = decode_batch(partition, messages, self.cfg.action_topics, self.cfg.rules)
        attempt = 0
        backoff = 0.2
        while True:
            attempt += 1
            try:
                epoch = self.epochs.get(partition) or await self._claim_late(partition)
                meta, states = await self.store.read(partition, batch.user_ids)
                plan = plan_batch(batch, meta, states, self.cfg.rules, self.channel_weights, wall_now=time.time())
                # Dead letters are durable before the batch counts as applied: a crash in between
                # replays the batch and may repeat a dead letter (each names its source offset), never lose one.
                await self._send_dead_letters(plan.dead_letters)
                await self.store.apply(plan, epoch)
                break
            except OffsetConflict as exc:
                # Also the outcome when an apply succeeded but its reply was lost: the re-read
                # finds the offsets moved and the re-plan skips what was applied.
                log.warning("offset conflict, re-reading", extra={"detail": str(exc), "attempt": attempt})
            except (RedisConnectionError, RedisTimeoutError) as exc:
                if backoff > REDIS_RETRY_LIMIT_S:
                    raise
                log.warning("Redis unavailable, retrying", extra={"error": str(exc), "retry_in_s": backoff})
                await asyncio.sleep(backoff)
                backoff *= 2
            except FencedError as exc:
                if exc.current_epoch == "":
                    # The epoch vanished: Redis restarted empty or was flushed. Exit; the startup
                    # check compares Redis with Kafka's committed offsets and stops or rebuilds.
                    raise RuntimeError(f"partition {partition}: Redis lost this partition's state") from exc
                if partition not in self.owned:
                    # Revoked mid-batch: the new owner replays these messages from Kafka.
                    log.warning("batch dropped for a partition revoked mid-batch", extra={"partition": partition})
                    return
                raise
            if attempt >= 10:
                raise RuntimeError(f"partition {partition}: offsets kept moving under us")
        self._record(plan, messages, time.perf_counter() - started)

    async def _claim_late(self, partition: int) -> str:
        self.epochs[partition] = await self.store.claim(partition)
        self.owned.add(partition)
        return self.epochs[partition]

    async def _send_dead_letters(self, dead: list[DeadLetter]) -> None:
        if not dead:
            return
        futures = []
        for dl in dead:
            futures.append(
                await self.dead_letter_topic.send(
                    key=dl.message.key,
                    value=dl.message.value or b"",
                    headers=dead_letter_headers(dl, self.cfg.worker_id),
                )
            )
            self.metrics.dead_letters.labels(dl.reason).inc()
            if dl.reason == "late":
                self.metrics.late_events.labels(self.cfg.action_topics.get(dl.message.topic, "unknown")).inc()
        await asyncio.gather(*futures)
        log.info("dead-lettered", extra={"count": len(dead), "reasons": sorted({d.reason for d in dead})})

    def _record(self, plan: Any, messages: list[RawMessage], elapsed: float) -> None:
        m = self.metrics
        m.batch_seconds.observe(elapsed)
        now = time.time()
        m.last_applied.set(now)
        applied: Counter[str] = Counter()
        observe = m.latency.observe
        for decoded in plan.applied:
            applied[decoded.event.action] += 1
            if decoded.message.timestamp:
                observe(max(0.0, now - decoded.message.timestamp))
        for action, n in applied.items():
            m.events_applied.labels(action).inc(n)
        for action, n in Counter(e.action for e in plan.duplicates).items():
            m.duplicates.labels(action).inc(n)
        for topic, n in plan.replayed.items():
            m.replayed.labels(topic).inc(n)
        for topic, tp in plan.progress.items():
            self.last_offsets[(topic, plan.partition)] = tp.new_offset
        watermark = max((tp.watermark for tp in plan.progress.values()), default=None)
        if watermark is not None and watermark > self.watermarks.get(plan.partition, float("-inf")):
            self.watermarks[plan.partition] = watermark
            m.watermark.labels(str(plan.partition)).set(watermark)
        self._update_lag()

    def _update_lag(self) -> None:
        consumer = self.app.consumer
        for (topic, partition), offset in self.last_offsets.items():
            try:
                high = consumer.highwater(TP(topic, partition))
            except Exception:  # highwater unknown before the first fetch
                continue
            if high is not None:
                self.metrics.consumer_lag.labels(topic, str(partition)).set(max(0, high - 1 - offset))

    async def refresh_markov(self) -> None:
        """Re-learn channel weights from the journeys every worker has recorded in Redis."""
        counts = await self.reader.journey_paths()
        paths: dict[tuple[str, ...], list[float]] = {}
        for name, n in counts.items():
            path, converted = name.rsplit("|", 1)
            acc = paths.setdefault(tuple(path.split(">")), [0.0, 0.0])
            acc[0 if converted == "1" else 1] += n
        if not any(v[0] for v in paths.values()):
            return
        chain = MarkovChain.from_paths((p, conv, null) for p, (conv, null) in paths.items())
        weights = chain.channel_weights()
        if weights:
            self.channel_weights = weights
            await self.redis.set(self.keys.markov_weights(), json.dumps(weights))


def consumer_app_options(rebalance_timeout_s: float, datadir_prefix: str) -> dict[str, Any]:
    """faust.App options of every consuming app we run: the worker and the benchmark's stock
    counting agent share them, so the benchmark's baseline differs from the worker only in what
    the agent does per event."""
    return {
        "value_serializer": "raw",
        "key_serializer": "raw",
        "topic_disable_leader": True,
        "broker_rebalance_timeout": rebalance_timeout_s,
        "broker_session_timeout": max(10.0, rebalance_timeout_s),
        "broker_heartbeat_interval": 1.0,
        "broker_commit_interval": 1.0,
        "consumer_auto_offset_reset": "earliest",
        "stream_wait_empty": False,
        "datadir": tempfile.mkdtemp(prefix=datadir_prefix),
        "store": "memory://",
    }


def build_app(cfg: WorkerConfig) -> faust.App:
    app = faust.App(
        cfg.app_id,
        **cfg.faust_broker_options,
        **consumer_app_options(cfg.rebalance_timeout_s, f"seedloop-{cfg.worker_id}-"),
        topic_partitions=cfg.partitions,
        producer_acks=-1,
        web_enabled=True,
        web_bind=cfg.web_host,
        web_port=cfg.web_port,
        web_host=cfg.web_host,
    )
    metrics = PipelineMetrics()
    runtime = AttributionRuntime(app, cfg, metrics)
    app.seedloop_runtime = runtime  # type: ignore[attr-defined]
    source = app.topic(*cfg.action_topics, value_serializer="raw", key_serializer="raw")

    @app.agent(source, concurrency=1)
    async def attribute(stream: faust.StreamT) -> None:
        async for events in stream.take_events(  # type: ignore[attr-defined]
            cfg.batch_max, within=cfg.batch_within_s
        ):
            try:
                await runtime.process(events)
            except BaseException as exc:
                log.critical(
                    "batch could not be applied; exiting before Faust acknowledges it",
                    exc_info=exc,
                    extra={"worker": cfg.worker_id},
                )
                logging.shutdown()
                os._exit(EXIT_APPLY_FAILED)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        await runtime.on_assigned(assigned)

    @app.timer(cfg.markov_refresh_s)
    async def refresh_markov() -> None:
        await runtime.refresh_markov()

    install_monitoring(app, runtime)
    return app


def shorten_fetch_wait(fetch_max_wait_ms: int) -> None:
    """Faust builds its aiokafka consumer with fetch_max_wait_ms=1500 and no setting to change it.
    A broker that does not answer a long-poll fetch as soon as data arrives (Tansu does not) then
    adds up to 1.5 s to every event's latency; a short wait costs a few more empty fetches."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    original = AIOKafkaConsumerThread._create_worker_consumer

    def create(self: AIOKafkaConsumerThread, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = fetch_max_wait_ms
        return consumer

    AIOKafkaConsumerThread._create_worker_consumer = create  # type: ignore[method-assign]


def run_worker(cfg: WorkerConfig, loglevel: str = "WARNING") -> None:
    shorten_fetch_wait(cfg.fetch_max_wait_ms)
    app = build_app(cfg)
    # Our structured logging is already configured; mode must not replace it.
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False, override_logging=False)
    worker.execute_from_commandline()
