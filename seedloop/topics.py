"""seedloop's Kafka topics: the one definition of their names, keys, partitions and configs.

Everything that needs topics follows it: the services create what is missing at start
(`ensure_topics`), the compose deployment's `topics-init` creates them all before any service
starts (`python -m seedloop.topics`), and `deploy/topics.json` is this definition written out for
compose's environment (`python -m seedloop.topics --json`; tests/deploy/test_compose.py fails when
the file differs). Names are `<SEEDLOOP_TOPIC_PREFIX>.<suffix>`; every topic has
`SEEDLOOP_PARTITIONS` partitions: the action topics must (co-partitioned by user_id), and
`end_offsets` reads the same partition numbers of any topic.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from schemas.events import ACTIONS
from seedloop.preflight import EXIT_CONFIG, Problem, ServiceError
from seedloop.settings import Settings
from stream_processors.store.redis_lua import FigureReader

log = logging.getLogger("seedloop.topics")

__all__ = [
    "ACTIONS",
    "TOPICS",
    "TopicDefinition",
    "caught_up",
    "end_offsets",
    "ensure_topics",
    "topic_specs",
    "topics_document",
]

_DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class TopicDefinition:
    suffix: str  # the name after `<prefix>.`
    key: str  # what the messages are keyed by (documentation for operators; the producers decide)
    config: Mapping[str, str] = field(default_factory=dict)


# User actions are keyed by user_id: one user's journey stays in one partition number of every
# action topic, so attribution needs no repartition. Seven days of retention; lz4 is what the
# producer already compresses with, so the broker stores batches as they arrive.
_ACTION_CONFIG = {"cleanup.policy": "delete", "retention.ms": str(7 * _DAY_MS), "compression.type": "lz4"}

TOPICS: tuple[TopicDefinition, ...] = (
    *(TopicDefinition(action, "user_id", _ACTION_CONFIG) for action in ACTIONS),
    # Compacted, keyed "<campaign_id>:<channel>" (a bid is per campaign and channel): the latest
    # decision per key survives, which is what a restarting ad scheduler reads from the beginning.
    TopicDefinition(
        "bid_adjustments",
        "campaign_id:channel",
        {
            "cleanup.policy": "compact",
            "min.compaction.lag.ms": "60000",
            "delete.retention.ms": str(_DAY_MS),
            "segment.ms": "3600000",
        },
    ),
    # The original bytes, with source topic/partition/offset and the error in headers; kept a month.
    TopicDefinition(
        "dead_letters", "original key", {"cleanup.policy": "delete", "retention.ms": str(30 * _DAY_MS)}
    ),
)


def topic_specs(settings: Settings) -> list[NewTopic]:
    """The topics to create for these settings, as confluent-kafka's admin client takes them."""
    return [
        NewTopic(
            settings.topic(t.suffix),
            settings.partitions,
            settings.replication_factor,
            config=dict(t.config),
        )
        for t in TOPICS
    ]


def topics_document(settings: Settings) -> dict[str, Any]:
    """The definition for these settings as `deploy/topics.json` holds it."""
    return {
        "_comment": (
            "Generated from seedloop/topics.py for the environment docker-compose.yml gives the "
            f"services (x-seedloop-env): SEEDLOOP_TOPIC_PREFIX={settings.topic_prefix} "
            f"SEEDLOOP_PARTITIONS={settings.partitions} "
            "python -m seedloop.topics --json > deploy/topics.json. Do not edit by hand: "
            "tests/deploy/test_compose.py fails when this file differs from the code. compose's "
            "topics-init service creates these topics (python -m seedloop.topics)."
        ),
        "prefix": settings.topic_prefix,
        "partitions": settings.partitions,
        "replication_factor": settings.replication_factor,
        "topics": [
            {
                "name": settings.topic(t.suffix),
                "key": t.key,
                "partitions": settings.partitions,
                "replication_factor": settings.replication_factor,
                "config": dict(t.config),
            }
            for t in TOPICS
        ],
    }


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create the missing topics; returns the names created. A topic or broker that seedloop
    cannot work with is a `ServiceError` of one line naming the setting (exit 2): another
    partition count (co-partitioning by user_id and `end_offsets` depend on it), a replication
    factor the cluster cannot give, or `min.insync.replicas` above a topic's replicas (every
    acks=all write would wait forever)."""
    admin = AdminClient(settings.confluent_config())
    specs = topic_specs(settings)
    existing = admin.list_topics(timeout=timeout).topics
    # Existing topics first: an earlier deployment's partition count is the mistake to name.
    _check_partitions(settings, {s.topic: existing[s.topic] for s in specs if s.topic in existing})
    missing = [s for s in specs if s.topic not in existing]
    created: list[str] = []
    if missing:
        _check_broker_min_insync(admin, settings.replication_factor, timeout)
        for topic, fut in admin.create_topics(missing, operation_timeout=timeout).items():
            try:
                fut.result()
            except KafkaException as exc:
                err = exc.args[0]
                # Another service created it between our listing and our request.
                if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                if err.code() in (
                    KafkaError.INVALID_REPLICATION_FACTOR,
                    KafkaError.INVALID_CONFIG,
                    KafkaError.POLICY_VIOLATION,
                    KafkaError.INVALID_PARTITIONS,
                ):
                    raise _config_error(
                        f"Kafka refused to create topic {topic}: {err.str()} (check SEEDLOOP_PARTITIONS "
                        f"= {settings.partitions} and SEEDLOOP_REPLICATION_FACTOR = {settings.replication_factor} "
                        "against the cluster)"
                    ) from exc
                raise
            created.append(topic)
            log.info("created topic", extra={"topic": topic})
    meta = _await_metadata(admin, [s.topic for s in specs], timeout)
    _check_partitions(settings, {s.topic: meta[s.topic] for s in specs})
    _check_min_insync(admin, meta, [s.topic for s in specs], timeout)
    return created


def _check_partitions(settings: Settings, meta: Mapping[str, Any]) -> None:
    for topic, topic_meta in meta.items():
        count = len(topic_meta.partitions)
        if count != settings.partitions:
            raise _config_error(
                f"topic {topic} has {count} partitions, settings say {settings.partitions} "
                "(check SEEDLOOP_PARTITIONS): the action topics must be co-partitioned and every topic "
                "must have the same partition count"
            )


def _config_error(line: str) -> ServiceError:
    return ServiceError([Problem(line, EXIT_CONFIG, "kafka", "KafkaConfig")])


def _await_metadata(admin: AdminClient, topics: Sequence[str], timeout: float) -> dict[str, Any]:
    """The topics' metadata, once every broker we ask knows them: a topic just created reaches
    the other brokers' metadata a moment later (Apache Kafka propagates it asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        meta = admin.list_topics(timeout=timeout).topics
        absent = [t for t in topics if t not in meta or not meta[t].partitions or meta[t].error is not None]
        if not absent:
            return dict(meta)
        if time.monotonic() >= deadline:
            raise _config_error(
                f"topics {', '.join(absent[:3])} are missing {timeout:.0f}s after creating them "
                "(check the broker's logs and that clients may create topics)"
            )
        time.sleep(0.2)


def _check_broker_min_insync(admin: AdminClient, replication_factor: int, timeout: float) -> None:
    """Before creating topics: the broker's default `min.insync.replicas` applies to them, so a
    replication factor below it would create topics nobody can write to with acks=all."""
    brokers = admin.list_topics(timeout=timeout).brokers
    if not brokers:
        return
    resource = ConfigResource(ConfigResource.Type.BROKER, str(min(brokers)))
    try:
        entry = (
            admin.describe_configs([resource], request_timeout=timeout)[resource]
            .result()
            .get("min.insync.replicas")
        )
    except KafkaException:
        return  # a broker that does not describe its configs (the embedded one): checked per topic below
    if entry is not None and entry.value is not None and int(entry.value) > replication_factor:
        raise _config_error(
            f"the brokers require min.insync.replicas={entry.value} but SEEDLOOP_REPLICATION_FACTOR is "
            f"{replication_factor}: acks=all writes to new topics could never succeed (check "
            "SEEDLOOP_REPLICATION_FACTOR, or the brokers' min.insync.replicas)"
        )


def _check_min_insync(
    admin: AdminClient, meta: Mapping[str, Any], topics: Sequence[str], timeout: float
) -> None:
    """Refuse a topic whose `min.insync.replicas` exceeds its replicas: seedloop's producers
    write with acks=all, which such a topic rejects (NOT_ENOUGH_REPLICAS) until the delivery
    timeout, so without this check the simulator and the workers' dead letters would hang."""
    for name, configs in _describe_topic_configs(admin, topics, timeout).items():
        entry = configs.get("min.insync.replicas")
        if entry is None or entry.value is None:
            continue  # a broker without the setting (the embedded one) requires one in-sync replica
        replicas = min(len(p.replicas) for p in meta[name].partitions.values())
        if int(entry.value) > replicas:
            raise _config_error(
                f"topic {name} has {replicas} replica(s) but min.insync.replicas={entry.value}: "
                "acks=all writes can never succeed (lower the topic's or broker's min.insync.replicas, or "
                f"recreate the topics with SEEDLOOP_REPLICATION_FACTOR >= {entry.value})"
            )


def _describe_topic_configs(admin: AdminClient, topics: Sequence[str], timeout: float) -> dict[str, Any]:
    """Each topic's configs. A DescribeConfigs request goes to any broker, and one that has not
    yet received a just-created topic's metadata answers UNKNOWN_TOPIC_OR_PART (seen on a
    three-broker Apache Kafka cluster), so that answer is retried until `timeout`."""
    deadline = time.monotonic() + timeout
    configs: dict[str, Any] = {}
    pending = list(topics)
    while True:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in pending]
        unknown: list[str] = []
        for resource, fut in admin.describe_configs(resources, request_timeout=timeout).items():
            try:
                configs[resource.name] = fut.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART or time.monotonic() >= deadline:
                    raise
                unknown.append(resource.name)
        if not unknown:
            return configs
        pending = unknown
        time.sleep(0.2)


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


DESCRIPTION = """\
Create seedloop's topics on KAFKA_BOOTSTRAP_SERVERS (idempotent): <SEEDLOOP_TOPIC_PREFIX>.view,
.follow, .add_to_cart, .checkout, .bid_adjustments, .dead_letters, each with SEEDLOOP_PARTITIONS
partitions and SEEDLOOP_REPLICATION_FACTOR replicas, and their configs (retention, compaction).
An existing topic with another partition count is an error. The compose deployment's topics-init
service runs this before any other seedloop service starts.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m seedloop.topics",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the topic definitions for these settings (deploy/topics.json) and connect to nothing",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for the broker (default 60)"
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValueError as exc:
        print(f"seedloop.topics: invalid settings: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(topics_document(settings), indent=2))
        return 0
    if not settings.kafka_bootstrap_servers:
        print("seedloop.topics: set KAFKA_BOOTSTRAP_SERVERS", file=sys.stderr)
        return 2
    from seedloop.logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    created = set(ensure_topics(settings, timeout=args.timeout))
    for spec in topic_specs(settings):
        state = "created" if spec.topic in created else "exists"
        print(f"{state} {spec.topic} partitions={settings.partitions}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
