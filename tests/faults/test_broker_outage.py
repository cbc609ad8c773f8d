"""The broker is unreachable for a while: producers buffer and retry, workers wait and recover by
themselves, and afterwards every figure still equals the recount (nothing lost, nothing twice).

"Unreachable" is modelled with SIGSTOP/SIGCONT of the broker process: its connections stay open
but nothing answers, as with a network partition or a stalled broker. A broker *restart* is not
tested here: the embedded broker (Tansu) keeps its data in memory only, so a restart loses every
message and is not a fault Kafka itself has; Apache Kafka's restart on its own data and a leader
lost in a three-broker cluster are tested in test_broker_durability.py.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest
import redis

from seedloop.embedded import EmbeddedStack
from seedloop.settings import Settings
from seedloop.topics import caught_up, ensure_topics
from stream_processors.store.redis_lua import FigureReader, Keys
from tests.conftest import WorkerProcess, wait_for
from tests.faults.test_rebalance import owned_partitions, two_workers_applying
from tests.faults.test_worker_crashes import assert_redis_equals_recount, scrape_counter

pytestmark = pytest.mark.integration

OUTAGE_S = 12.0


def test_broker_unreachable_mid_stream_then_everything_recovers_without_restarts(
    settings: Settings,
    stack: EmbeddedStack,
    start_worker: Callable[..., WorkerProcess],
    redis_client: redis.Redis,
) -> None:
    ensure_topics(settings)
    reader = FigureReader(redis_client, Keys(settings.topic_prefix), settings.partitions, settings.bucket_s)
    workers, producer = two_workers_applying(start_worker, settings, reader, 60, 30)
    pids = [w.proc.pid for w in workers]

    assert stack.broker.proc is not None
    stack.broker.proc.send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        time.sleep(OUTAGE_S / 2)
        # Nothing reaches Redis while the broker is away (at most what was already fetched).
        views_during = reader.totals().get("t|views", 0)
        time.sleep(OUTAGE_S / 2)
        assert reader.totals().get("t|views", 0) - views_during < 2000
        assert producer.thread.is_alive(), "the outage should happen while the producer still has events"
    finally:
        stack.broker.proc.send_signal(signal.SIGCONT)
    print(f"broker unreachable for {time.monotonic() - stopped_at:.1f}s")

    producer.join()  # every event acknowledged once (idempotent producer), none failed
    started = time.monotonic()
    wait_for(lambda: caught_up(settings, reader), 90, "the workers to catch up after the outage")
    print(f"caught up {time.monotonic() - started:.1f}s after the producer finished")
    assert_redis_equals_recount(settings, redis_client, producer.events)

    # The same processes recovered by themselves: no restart, no crash.
    for w, pid in zip(workers, pids, strict=True):
        assert w.proc.pid == pid and w.proc.poll() is None, w.log_text()[-3000:]
    assert sum(owned_partitions(w) or 0 for w in workers) == settings.partitions
    # Lag reported by the workers returns to zero once the caught-up offsets are in their metrics.
    wait_for(
        lambda: sum(scrape_counter(w.port, "seedloop_consumer_lag") for w in workers) == 0,
        30,
        "the workers' reported consumer lag to return to zero",
    )
