"""Startup check: is Redis behind the offsets Kafka has committed for the worker group?

Commits only ever follow applies (the worker acknowledges a batch after its Redis call), so a
committed offset beyond what Redis says it applied means Redis lost data (restarted without
persistence, flushed, failed over to a stale replica). Carrying on would silently report lower
figures. Depending on SEEDLOOP_ON_STATE_LOSS the worker stops loudly (`stop`, the default) or
rewinds the group to the start of the topics and rebuilds (`rebuild`): replays are harmless,
because Redis skips every offset it has already applied.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from seedloop.settings import Settings
from seedloop.topics import ACTIONS
from stream_processors.redis_connect import sync_client
from stream_processors.store.redis_lua import FigureReader, Keys

log = logging.getLogger("seedloop.recovery")


class StateLossError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Behind:
    topic: str
    partition: int
    committed: int
    applied: int


def find_state_loss(settings: Settings, group_id: str) -> list[Behind]:
    consumer = Consumer({**settings.confluent_config(), "group.id": group_id, "enable.auto.commit": False})
    client = sync_client(settings.redis_url_value, settings.redis_mode)
    try:
        tps = [TopicPartition(settings.topic(a), p) for a in ACTIONS for p in range(settings.partitions)]
        committed = _committed(consumer, tps, timeout=30)
        metas = FigureReader(
            client, Keys(settings.topic_prefix), settings.partitions, settings.bucket_s
        ).metas()
        behind = []
        for tp in committed:
            # Kafka's committed offset is the next offset to read; Redis stores the last one applied.
            applied = metas[tp.partition].offsets.get(tp.topic, -1)
            if tp.offset > 0 and applied < tp.offset - 1:
                behind.append(Behind(tp.topic, tp.partition, tp.offset, applied))
        return behind
    finally:
        consumer.close()
        client.close()


def _committed(consumer: Consumer, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
    """The group's committed offsets, retried while the broker says so.

    A group coordinator that is still loading, moving or being created answers with a retriable
    error: on a new Apache Kafka cluster the first lookup creates `__consumer_offsets`, and after
    a broker failover the coordinator moves. Only those errors are retried, until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return list(consumer.committed(tps, timeout=max(1.0, deadline - time.monotonic())))
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if err is None or (not err.retriable() and err.code() not in _COORDINATOR_MOVING):
                raise
            if time.monotonic() >= deadline:
                raise
            log.info("group coordinator not ready, retrying", extra={"error": err.str()})
            time.sleep(0.5)


# Errors librdkafka does not flag as retriable but that only mean "ask again shortly".
_COORDINATOR_MOVING = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
)


def rewind_group(settings: Settings, group_id: str, wait_s: float = 45.0) -> None:
    """Forget the group's committed offsets, so its workers start again from the earliest retained
    offset (auto.offset.reset=earliest). Deleting the group is the operation every broker honours
    for an idle group (Tansu accepts an offset reset but aiokafka then never rejoins). Apache
    Kafka refuses while the group has members: a worker that crashed leaves its membership behind
    until its session times out, so the refusal is retried for `wait_s`; a member still there
    after that is a running worker, and refusing is then the safe outcome."""
    admin = AdminClient(settings.confluent_config())
    deadline = time.monotonic() + wait_s
    while True:
        future = admin.delete_consumer_groups([group_id], request_timeout=30)[group_id]
        try:
            future.result(timeout=30)
            return
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if err is not None and err.code() == KafkaError.GROUP_ID_NOT_FOUND:
                return  # nothing committed: nothing to forget
            if err is not None and err.code() == KafkaError.NON_EMPTY_GROUP and time.monotonic() < deadline:
                log.info(
                    "consumer group still has members; waiting for crashed ones to expire",
                    extra={"group": group_id},
                )
                time.sleep(1.0)
                continue
            raise StateLossError(
                f"cannot rewind consumer group {group_id!r} ({exc}); stop every worker of the group, "
                "then start them with SEEDLOOP_ON_STATE_LOSS=rebuild"
            ) from exc


def check_state(settings: Settings, group_id: str) -> None:
    behind = find_state_loss(settings, group_id)
    if not behind:
        return
    sample = ", ".join(
        f"{b.topic}[{b.partition}] committed {b.committed} > applied {b.applied}" for b in behind[:4]
    )
    if settings.on_state_loss == "stop":
        raise StateLossError(
            f"Redis is behind the offsets Kafka committed for {len(behind)} partition(s) ({sample}): "
            "Redis lost data. Refusing to continue with silently lower figures. Restore Redis, or restart "
            "the workers with SEEDLOOP_ON_STATE_LOSS=rebuild to rebuild it from Kafka."
        )
    log.warning(
        "Redis lost data; rebuilding from the start of the topics",
        extra={"partitions_behind": len(behind), "example": sample},
    )
    rewind_group(settings, group_id)
