"""Topic creation and offsets, with confluent-kafka's admin client."""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from seedloop.settings import Settings
from stream_processors.state import FigureReader

log = logging.getLogger("seedloop.topics")
ACTIONS = ("view", "follow", "add_to_cart", "checkout")


def topic_specs(settings: Settings) -> list[NewTopic]:
    n, rf = settings.partitions, settings.replication_factor
    specs = [NewTopic(settings.topic(a), n, rf) for a in ACTIONS]
    specs.append(NewTopic(settings.topic("bid_adjustments"), n, rf, config={"cleanup.policy": "compact"}))
    specs.append(
        NewTopic(settings.topic("dead_letters"), n, rf, config={"retention.ms": str(30 * 86_400_000)})
    )
    return specs


def ensure_topics(settings: Settings, timeout: float = 30.0) -> None:
    """Create missing topics; an existing topic with another partition count is an error, since
    co-partitioning (user_id -> the same partition in every action topic) depends on it."""
    admin = AdminClient(settings.confluent_config())
    existing = admin.list_topics(timeout=timeout).topics
    missing = [s for s in topic_specs(settings) if s.topic not in existing]
    if missing:
        for topic, fut in admin.create_topics(missing, operation_timeout=timeout).items():
            try:
                fut.result()
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
            log.info("created topic", extra={"topic": topic})
    meta = admin.list_topics(timeout=timeout).topics
    for a in ACTIONS:
        count = len(meta[settings.topic(a)].partitions)
        if count != settings.partitions:
            raise RuntimeError(
                f"topic {settings.topic(a)} has {count} partitions, settings say "
                f"{settings.partitions}: the action topics must be co-partitioned"
            )


def end_offsets(settings: Settings, topics: list[str], timeout: float = 10.0) -> dict[tuple[str, int], int]:
    """Next offset to be written per topic-partition (the high watermark).

    Read from fetch responses, not from a ListOffsets request: Tansu 0.6 answers ListOffsets
    (latest) with wrong figures for idempotently produced partitions (we measured 4381 on four
    partitions holding 4569-4760 messages each), while every fetch response carries the true
    high watermark. The method is equally valid on Apache Kafka.
    """
    conf: dict[str, Any] = {
        **settings.confluent_config(),
        "group.id": "seedloop-offsets-probe",
        "enable.partition.eof": True,
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 10,
    }
    consumer = Consumer(conf)
    try:
        tps = [TopicPartition(t, p, OFFSET_END) for t in topics for p in range(settings.partitions)]
        consumer.assign(tps)
        pending = {(tp.topic, tp.partition) for tp in tps}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            # An EOF (or a message) means a fetch answered for that partition: its watermark is fresh.
            pending.discard((msg.topic(), msg.partition()))
        if pending:
            raise TimeoutError(f"no fetch response within {timeout:.0f}s for {sorted(pending)[:4]}")
        out: dict[tuple[str, int], int] = {}
        for tp in tps:
            _, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), cached=True)
            out[(tp.topic, tp.partition)] = high
        return out
    finally:
        consumer.close()


def caught_up(settings: Settings, reader: FigureReader) -> bool:
    """True when Redis has applied every message the broker holds in the action topics."""
    ends = end_offsets(settings, [settings.topic(a) for a in ACTIONS])
    metas = reader.metas()
    return all(end == 0 or metas[p].offsets.get(topic, -1) >= end - 1 for (topic, p), end in ends.items())
