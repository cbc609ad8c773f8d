"""Faults only a durable broker allows: Apache Kafka SIGKILLed and restarted on its own data, and
the leader of a busy partition lost in a three-broker cluster. Either way the producer and the
workers recover by themselves (no process restarted) and every figure equals the recount.

Both run on this test's own Apache Kafka (the session's shared broker must not be killed) and
Debian's redis-server; the embedded broker keeps its data in memory only, so neither fault exists
there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import AdminClient

from seedloop.apache_kafka import ApacheKafka
from seedloop.embedded import ManagedProcess, redis_process
from seedloop.logs import kafka_client_log
from seedloop.settings import Settings
from seedloop.topics import caught_up, ensure_topics
from stream_processors.store.redis_lua import FigureReader, Keys
from tests.conftest import REPO, WorkerProcess, wait_for, worker_starter
from tests.faults.test_rebalance import two_workers_applying
from tests.faults.test_worker_crashes import BackgroundProducer, assert_redis_equals_recount, scrape_counter
from tests.services import redis_server_binary

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[ManagedProcess]:
    proc = redis_process(workdir=tmp_path, log_path=tmp_path / "redis.log", binary=redis_server_binary())
    proc.start()
    yield proc
    proc.stop()


def settings_for(kafka: ApacheKafka, rds: ManagedProcess, prefix: str, replication: int) -> Settings:
    return Settings(
        kafka_bootstrap_servers=kafka.bootstrap,
        redis_url=f"redis://127.0.0.1:{rds.port}/0",
        topic_prefix=prefix,
        partitions=4,
        replication_factor=replication,
        seeds_dir=REPO / "seeds",
        rebalance_timeout_s=3.0,
        retention_s=3600.0,
    )


def run_through_fault(
    settings: Settings, tmp_path: Path, strike: Callable[[], None], recover: Callable[[], None], what: str
) -> tuple[BackgroundProducer, list[WorkerProcess]]:
    """Two workers and a steady producer; `strike` while events are being applied, `recover` a
    while later; then every figure must equal the recount, with the same worker processes."""
    ensure_topics(settings)
    client = redis.Redis.from_url(settings.redis_url_value)
    reader = FigureReader(client, Keys(settings.topic_prefix), settings.partitions, settings.bucket_s)
    with worker_starter(settings, tmp_path) as start_worker:
        workers, producer = two_workers_applying(start_worker, settings, reader, 90, 60)
        pids = [w.proc.pid for w in workers]
        struck = time.monotonic()
        strike()
        assert producer.thread.is_alive(), f"{what} should strike while the producer still has events"
        recover()
        print(f"{what}: recovered from in {time.monotonic() - struck:.1f}s")
        producer.join()  # every event acknowledged (acks=all, idempotent), none failed
        started = time.monotonic()
        assert_redis_equals_recount(settings, client, producer.events)
        print(
            f"caught up {time.monotonic() - started:.1f}s after the producer finished; "
            f"{len(producer.events)} events, figures equal the recount"
        )
        for w, pid in zip(workers, pids, strict=True):
            assert w.proc.pid == pid and w.proc.poll() is None, w.log_text()[-3000:]
        replayed = sum(scrape_counter(w.port, "seedloop_replayed_events_total") for w in workers)
        print(f"replayed messages skipped by the offset guard: {replayed:.0f}")
        assert caught_up(settings, reader)
    client.close()
    return producer, workers


def test_broker_sigkilled_and_restarted_on_its_data_loses_and_doubles_nothing(
    apache_kafka: Callable[..., ApacheKafka], own_redis: ManagedProcess, unique_prefix: str, tmp_path: Path
) -> None:
    kafka = apache_kafka(nodes=1)
    settings = settings_for(kafka, own_redis, unique_prefix, replication=1)

    def restart() -> None:
        time.sleep(5)  # the producer buffers, the workers' fetches fail and retry
        kafka.start_node(0)

    run_through_fault(
        settings, tmp_path, lambda: kafka.kill_node(0), restart, "broker SIGKILLed, restarted on its data dir"
    )


def admin_of(kafka: ApacheKafka) -> AdminClient:
    # librdkafka's complaints about the killed node go through our logging, not raw to stderr.
    return AdminClient({"bootstrap.servers": kafka.bootstrap, "logger": kafka_client_log()})


def partition_leader(admin: AdminClient, topic: str, partition: int) -> int:
    return int(admin.list_topics(topic, timeout=10).topics[topic].partitions[partition].leader)


def test_leader_of_a_busy_partition_lost_in_a_three_broker_cluster(
    apache_kafka: Callable[..., ApacheKafka], own_redis: ManagedProcess, unique_prefix: str, tmp_path: Path
) -> None:
    kafka = apache_kafka(nodes=3)
    assert kafka.config["min.insync.replicas"] == "2"
    settings = settings_for(kafka, own_redis, unique_prefix, replication=3)
    killed: list[int] = []
    admin = admin_of(kafka)

    def kill_leader() -> None:
        leader = partition_leader(admin, settings.topic("view"), 0)
        killed.append(leader)
        kafka.kill_node(leader - 1)  # node ids are 1-based

    def bring_it_back() -> None:
        leader = killed[0]
        # A new leader is elected from the in-sync replicas; two remain, so acks=all still holds.
        wait_for(
            lambda: partition_leader(admin, settings.topic("view"), 0) not in (leader, -1),
            30,
            "a new leader for the busy partition",
        )
        time.sleep(8)
        kafka.start_node(leader - 1)
        kafka.wait_for_brokers(3, 60)

    run_through_fault(settings, tmp_path, kill_leader, bring_it_back, "leader of view[0] SIGKILLed")
    assert killed
    # The returned broker caught up: every partition of the action topics is fully replicated again.
    meta = admin.list_topics(timeout=10).topics
    wait_for(
        lambda: all(
            len(p.isrs) == 3
            for a in ("view", "checkout")
            for p in admin.list_topics(settings.topic(a), timeout=10)
            .topics[settings.topic(a)]
            .partitions.values()
        ),
        60,
        "the returned broker to rejoin every in-sync replica set",
    )
    assert settings.topic("view") in meta
