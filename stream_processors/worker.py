"""The Faust worker: one agent over the four action topics, applying each partition batch to Redis.

Why one agent over four topics: the topics are co-partitioned (same partition count, key =
user_id), and Faust assigns partition N of every topic to the same worker, so one user's whole
journey is handled by one worker without a repartition (a `group_by` halves throughput).
Cross-topic order is not guaranteed; the journey engine is order-independent
within the allowed lateness, so that does not matter.

How messages arrive: seedloop's Faust transport hands each fetch's messages of the four topics
to `deliver` as one list (batch delivery, `stream_processors/faust_transport.py`), not one Faust
event at a time through the agent's stream; the agent subscribes the topics and owns the batches
in flight. On a Faust the transport's delivery loop was not written for, the agent's stream
gets the events (`noack_take`) and hands them to the same `deliver`.

Failure policy (crash-only): a message is acknowledged only once its batch is applied (see
`AttributionRuntime.submit`, which overlaps one batch's Redis work with the next batch's fetching
and decoding). Every exception
that could leave a batch neither applied nor dead-lettered goes to the fatal-error policy
(`AttributionRuntime(on_fatal=...)`) before any of its events is acknowledged. The default policy
ends the process at once (`os._exit`), so Faust cannot commit past it; a supervisor (the demo,
compose `restart:`) starts it again, and replay is harmless because the store skips applied
offsets. Tests inject a policy that records the error instead (no child process needed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import faust
from faust.types import TP, Message
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stream_processors.attribution.markov import weights_from_path_counts
from stream_processors.batch_metrics import AppliedBatchMetrics
from stream_processors.faust_transport import BatchDelivery, consumer_app_options, install_transport
from stream_processors.metrics import PipelineMetrics
from stream_processors.monitoring import install_monitoring
from stream_processors.processor import (
    DeadLetter,
    DecodedBatch,
    RawMessage,
    decode_batch,
    plan_batch,
)
from stream_processors.redis_connect import resolve_mode
from stream_processors.store.base import FencedError, OffsetConflict, PartitionStateStore
from stream_processors.web import FigureView
from stream_processors.worker_config import WorkerConfig, redis_store

log = logging.getLogger("seedloop.worker")

EXIT_APPLY_FAILED = 70
# A Redis outage longer than this (doubling back-off, about 25 s in all) ends the worker loudly.
REDIS_RETRY_LIMIT_S = 12.8

# What to do when a batch can neither be applied nor dropped safely: called before any of the
# batch's events is acknowledged. It may return (a test's policy records the error): the runtime
# then applies and acknowledges nothing more. (A NoReturn function, like exit_process, is one.)
FatalPolicy = Callable[[BaseException], None]


def exit_process(exc: BaseException) -> NoReturn:
    """The production policy (crash-only): end the process now, so Faust cannot commit past the
    batch; the supervisor restarts the worker and the replay is skipped by offset."""
    logging.shutdown()
    os._exit(EXIT_APPLY_FAILED)


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
    """Everything the agent does per batch; separated from the Faust wiring for readability.

    `store` defaults to the Redis store of `cfg`; `on_fatal` to `exit_process`."""

    def __init__(
        self,
        app: faust.App,
        cfg: WorkerConfig,
        metrics: PipelineMetrics,
        store: PartitionStateStore | None = None,
        on_fatal: FatalPolicy = exit_process,
    ) -> None:
        self.app = app
        self.cfg = cfg
        self.metrics = metrics
        self.store: PartitionStateStore = store if store is not None else redis_store(cfg)
        self.on_fatal = on_fatal
        # The error handed to on_fatal, if any: from then on no batch is applied or acknowledged.
        self.fatal: BaseException | None = None
        engine = cfg.rules.engine
        self.figure_view = FigureView(
            engine.models,
            cfg.rules.catalogue.campaign_channels,
            engine.bucket_s,
            cfg.partitions,
            cfg.metrics_top_n,
        )
        self.epochs: dict[int, str] = {}
        # Partitions revoked from us, or claimed by another worker since we were last assigned
        # them (a write of ours was fenced): their batches are dropped unacknowledged until the
        # group assigns them to us again. Never claimed back meanwhile: that would fence the owner.
        self.not_ours: set[int] = set()
        # Per partition, bumped whenever its batches in flight become stale: on a revocation, on an
        # assignment (Faust then seeks back to the committed offsets and delivers them again) and
        # when a batch of it is dropped. A batch is applied only under the generation it was
        # submitted in, so nothing fetched before a drop is applied after it (that would store an
        # offset past the dropped messages, and their redelivery would be skipped as a replay).
        self.generations: Counter[int] = Counter()
        self.owned: set[int] = set()
        self.channel_weights: dict[str, float] | None = None
        self.value_weights: dict[str, float] | None = None
        self.dead_letter_topic = app.topic(
            cfg.dead_letter_topic, value_serializer="raw", key_serializer="raw"
        )
        self.applied_metrics = AppliedBatchMetrics(app, metrics)
        # Batches in flight (see submit): per partition the task of its latest batch, and the
        # batches in arrival order.
        self._chains: dict[int, asyncio.Future[None]] = {}
        self._inflight: deque[asyncio.Future[list[None]]] = deque()
        self.max_inflight_batches = 2

    @property
    def metrics_refresh_s(self) -> float:
        return self.cfg.metrics_refresh_s

    async def on_assigned(self, assigned: set[TP]) -> None:
        mine = {tp.partition for tp in assigned if tp.topic in self.cfg.topic_actions}
        for partition in sorted(mine - self.owned):
            self.epochs[partition] = await self.store.claim(partition)
        for partition in self.owned - mine:
            self.epochs.pop(partition, None)
        self.owned = mine
        self.not_ours -= mine
        for partition in mine:
            self.generations[partition] += 1
        self.metrics.owned_partitions.set(len(mine))
        log.info("partitions assigned", extra={"partitions": sorted(mine), "worker": self.cfg.worker_id})

    def on_revoked(self, revoked: set[TP]) -> None:
        """Before a rebalance assigns partitions again: what we owned may go to another worker,
        so a batch still in flight for it must not be applied, nor a new epoch claimed for it.
        An assignment that gives a partition back claims a new epoch: the other worker may have
        owned it in between (we were evicted), and Faust seeks every partition back to its
        committed offset after a rebalance, so the dropped batches are read again."""
        gone = {tp.partition for tp in revoked if tp.topic in self.cfg.topic_actions}
        for partition in gone:
            self.epochs.pop(partition, None)
        self.owned -= gone
        self.not_ours |= gone
        for partition in gone:
            self.generations[partition] += 1
        self.applied_metrics.forget(gone)
        self.metrics.owned_partitions.set(len(self.owned))

    async def submit(self, messages: Sequence[Message], ack: Callable[[Sequence[Message]], object]) -> None:
        """Decode a batch and chain each partition's apply behind that partition's previous batch.

        Returns without waiting for Redis, so that Faust fetches and buffers the next batch (and
        this method decodes it) while Redis applies this one: the worker thread is not left idle
        while valkey runs a batch's script. What keeps it exactly-once:
        * per partition, batches apply strictly in order (each task awaits its predecessor, and a
          batch is read and planned only after the previous one is applied);
        * a message is acknowledged to Faust (`ack`, so its offset can be committed) only once its
          batch is applied; a batch that fails ends the process before any of it is acknowledged.
        At most `max_inflight_batches` batches are in flight; the next waits for the oldest.
        """
        by_partition: dict[int, tuple[list[RawMessage], list[Message]]] = {}
        consumed: Counter[str] = Counter()
        for msg in messages:
            consumed[msg.topic] += 1
            entry = by_partition.get(msg.partition)
            if entry is None:
                entry = by_partition[msg.partition] = ([], [])
            entry[0].append(
                RawMessage(msg.topic, msg.partition, msg.offset, msg.key, msg.value, msg.timestamp)
            )
            entry[1].append(msg)
        for topic, n in consumed.items():
            self.metrics.events_consumed.labels(topic).inc(n)
        tasks = []
        for partition, (raw, partition_messages) in by_partition.items():
            started = time.perf_counter()
            batch = decode_batch(partition, raw, self.cfg.topic_actions, self.cfg.rules, self.cfg.partitions)
            task = asyncio.ensure_future(
                self._apply_in_order(
                    self._chains.get(partition),
                    partition,
                    batch,
                    partition_messages,
                    ack,
                    started,
                    self.generations[partition],
                )
            )
            self._chains[partition] = task
            tasks.append(task)
        self._inflight.append(asyncio.gather(*tasks))
        while len(self._inflight) > self.max_inflight_batches or (
            self._inflight and self._inflight[0].done()
        ):
            await self._inflight.popleft()

    def cancel_inflight(self) -> None:
        """The agent is stopping: unapplied batches stay unacknowledged and are read again."""
        for chained in self._chains.values():
            chained.cancel()
        self._chains.clear()
        self._inflight.clear()

    async def _apply_in_order(
        self,
        previous: asyncio.Future[None] | None,
        partition: int,
        batch: DecodedBatch,
        messages: Sequence[Message],
        ack: Callable[[Sequence[Message]], object],
        started: float,
        generation: int,
    ) -> None:
        try:
            if previous is not None:
                await previous
            if generation != self.generations[partition]:
                log.info(
                    "stale batch dropped: fetched before a rebalance or a dropped batch",
                    extra={"partition": partition},
                )
                return
            # After a fatal error (in any partition) nothing more is applied or acknowledged: a
            # later batch of the partition would skip the failed one, and its acknowledgement
            # would let Faust commit past it.
            applied = self.fatal is None and await self._apply_partition(partition, batch, started)
            if applied and self.fatal is None:
                ack(messages)
        except asyncio.CancelledError:
            raise  # stopping: nothing acknowledged, the batch is read again after a restart
        except BaseException as exc:
            # Crash-only: the policy runs before any of this batch's events is acknowledged, so
            # Faust cannot commit past them; the restart replays them (the store skips what was applied).
            log.critical(
                "batch could not be applied; exiting before it is acknowledged",
                exc_info=exc,
                extra={"worker": self.cfg.worker_id, "partition": partition},
            )
            self.fatal = exc
            self.on_fatal(exc)

    async def _apply_partition(self, partition: int, batch: DecodedBatch, started: float) -> bool:
        """Read, plan and apply one partition batch; False if the partition was revoked meanwhile."""
        attempt = 0
        backoff = 0.2
        while True:
            attempt += 1
            try:
                if partition in self.not_ours:
                    log.warning(
                        "batch dropped for a partition revoked mid-batch", extra={"partition": partition}
                    )
                    self.generations[partition] += 1
                    return False
                epoch = self.epochs.get(partition) or await self._claim_late(partition)
                meta, states, known_ids = await self.store.read(partition, batch.user_ids, batch.event_ids)
                plan = plan_batch(
                    batch,
                    meta,
                    states,
                    self.cfg.rules,
                    self.channel_weights,
                    wall_now=time.time(),
                    known_ids=known_ids,
                    value_weights=self.value_weights,
                )
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
                self._drop_superseded(partition, epoch, exc)
                return False
            if attempt >= 10:
                raise RuntimeError(f"partition {partition}: offsets kept moving under us")
        self.applied_metrics.record(plan, time.perf_counter() - started)
        return True

    def _drop_superseded(self, partition: int, epoch: str, exc: FencedError) -> None:
        """The partition's epoch is no longer ours: the batch is dropped (raises if Redis lost the
        partition's state instead)."""
        if exc.current_epoch == "":
            # The epoch vanished: Redis restarted empty or was flushed. Exit; the startup
            # check compares Redis with Kafka's committed offsets and stops or rebuilds.
            raise RuntimeError(f"partition {partition}: Redis lost this partition's state") from exc
        # Another worker claimed the partition: the group reassigned it (we were revoked
        # mid-batch, or evicted while busy or frozen and not told yet). Redis refused the
        # whole write, so dropping the batch unacknowledged is safe: the new owner reads
        # these messages again from the committed offsets. Claiming it back would fence the
        # rightful owner, so the partition waits for the group's next assignment.
        if self.epochs.get(partition) == epoch:
            self.owned.discard(partition)
            self.epochs.pop(partition, None)
            self.not_ours.add(partition)
            self.generations[partition] += 1
        log.warning(
            "batch dropped: partition %d was claimed by another worker (epoch %s superseded by %s)",
            partition,
            epoch,
            exc.current_epoch,
            extra={"partition": partition, "worker": self.cfg.worker_id},
        )

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
                self.metrics.late_events.labels(self.cfg.topic_actions.get(dl.message.topic, "unknown")).inc()
        await asyncio.gather(*futures)
        log.info("dead-lettered", extra={"count": len(dead), "reasons": sorted({d.reason for d in dead})})

    async def refresh_markov(self) -> None:
        """Re-learn the Markov weights (conversions, and value by value-weighted removal effects)
        from the journeys every worker has recorded in Redis."""
        learned = weights_from_path_counts(await self.store.journey_paths())
        if learned is None:
            return
        weights, value_weights = learned
        if weights:
            self.channel_weights, self.value_weights = weights, (value_weights or None)
            await self.store.save_channel_weights(weights, value_weights)


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
    # Before anything uses the app's transport: our consumer (fetch wait, eager and batch
    # delivery) for this app only.
    transport = install_transport(app, fetch_max_wait_ms=cfg.fetch_max_wait_ms, eager_delivery=True)
    metrics = PipelineMetrics()
    runtime = AttributionRuntime(app, cfg, metrics)
    app.seedloop_runtime = runtime  # type: ignore[attr-defined]
    source = app.topic(*cfg.topic_actions, value_serializer="raw", key_serializer="raw")

    def acknowledge(messages: Sequence[Message]) -> None:
        consumer = app.consumer
        for message in messages:
            consumer.ack(message)

    async def deliver(messages: list[Message]) -> None:
        try:
            await runtime.submit(messages, acknowledge)
        except Exception as exc:
            log.critical(
                "batch could not be decoded or scheduled; exiting before it is acknowledged",
                exc_info=exc,
                extra={"worker": cfg.worker_id},
            )
            logging.shutdown()
            os._exit(EXIT_APPLY_FAILED)

    if transport.eager_delivery:  # batch delivery lives in the same (copied) delivery loop
        transport.batch_delivery = BatchDelivery(deliver, frozenset(cfg.topic_actions), cfg.batch_max)

    @app.agent(source, concurrency=1)
    async def attribute(stream: faust.StreamT) -> None:
        # Empty under batch delivery; it subscribes the topics, and stopping it cancels the batches
        # in flight (unacknowledged: read again). noack_take: Faust does not acknowledge a batch
        # when the body returns; `deliver` acks each message once its batch is applied.
        try:
            async for events in stream.noack_take(cfg.batch_max, within=cfg.batch_within_s):  # type: ignore[attr-defined]
                await deliver([event.message for event in events])
        finally:
            runtime.cancel_inflight()

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        runtime.on_revoked(revoked)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        await runtime.on_assigned(assigned)

    @app.timer(cfg.markov_refresh_s)
    async def refresh_markov() -> None:
        await runtime.refresh_markov()

    install_monitoring(app, runtime)
    return app


def run_worker(cfg: WorkerConfig, loglevel: str = "WARNING") -> None:
    cfg = dataclasses.replace(cfg, redis_mode=resolve_mode(cfg.redis_url, cfg.redis_mode))
    app = build_app(cfg)
    # Our structured logging is already configured; mode must not replace it.
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False, override_logging=False)
    worker.execute_from_commandline()
