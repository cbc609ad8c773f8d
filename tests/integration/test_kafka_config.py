"""A Kafka that seedloop cannot work with is refused at start with one line naming the setting:
a topic with another partition count, a replication factor the cluster cannot give, a
`min.insync.replicas` above the topics' replicas (acks=all writes would wait forever)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from seedloop.apache_kafka import ApacheKafka
from seedloop.preflight import EXIT_CONFIG, ServiceError
from seedloop.settings import Settings
from seedloop.topics import ACTIONS, ensure_topics
from tests.conftest import REPO

pytestmark = pytest.mark.integration


def simulate(kafka: ApacheKafka, prefix: str, **env: str) -> tuple[int, str, float]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SEEDLOOP_", "KAFKA_", "REDIS_"))}
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "seedloop", "simulate", "--events", "100", "--no-bids"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        env={**base, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "REDIS_URL": "redis://127.0.0.1:1/0",
             "SEEDLOOP_TOPIC_PREFIX": prefix, "SEEDLOOP_SIMULATOR_PORT": "0", **env},
    )
    return run.returncode, run.stderr, time.monotonic() - started


def assert_one_clear_line(code: int, stderr: str, elapsed: float, *words: str) -> None:
    assert code == EXIT_CONFIG, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    problems = [line for line in stderr.splitlines() if " INFO " not in line and line.strip()]
    assert len(problems) == 1, problems
    assert all(w in stderr for w in words), stderr
    assert elapsed < 60, elapsed


def test_a_kafka_seedloop_cannot_use_is_refused_naming_the_setting(
    apache_kafka: Callable[..., ApacheKafka], unique_prefix: str
) -> None:
    kafka = apache_kafka(nodes=1, **{"min.insync.replicas": "2"})

    # Three replicas asked of a single broker.
    code, err, took = simulate(kafka, f"{unique_prefix}a", SEEDLOOP_REPLICATION_FACTOR="3")
    assert_one_clear_line(code, err, took, "SEEDLOOP_REPLICATION_FACTOR")

    # One replica, but the broker requires two in sync for acks=all.
    code, err, took = simulate(kafka, f"{unique_prefix}b")
    assert_one_clear_line(code, err, took, "min.insync.replicas=2", "SEEDLOOP_REPLICATION_FACTOR")
    assert "created topic" not in err, "unusable topics must not be created"

    # Topics that exist with another partition count (created by an earlier deployment).
    ensure_kw = {"kafka_bootstrap_servers": kafka.bootstrap, "redis_url": "redis://127.0.0.1:1/0",
                 "topic_prefix": f"{unique_prefix}c", "partitions": 4}
    with pytest.raises(ServiceError, match=r"min\.insync\.replicas"):
        ensure_topics(Settings(**ensure_kw))  # refused before creating anything
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    for fut in admin.create_topics([NewTopic(f"{unique_prefix}c.{a}", 4, 1) for a in ACTIONS]).values():
        fut.result()
    code, err, took = simulate(kafka, f"{unique_prefix}c", SEEDLOOP_PARTITIONS="6")
    assert_one_clear_line(code, err, took, "has 4 partitions", "SEEDLOOP_PARTITIONS")
