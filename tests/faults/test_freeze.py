"""A worker frozen past its session timeout (a long GC pause, a stopped VM) comes back as a zombie:
the other worker has taken its partitions and claimed new epochs, so the zombie's stale writes are
fenced in Redis and nothing counts twice."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest
import redis

from seedloop.settings import Settings
from seedloop.topics import ensure_topics
from stream_processors.store.redis_lua import FigureReader, Keys
from stream_processors.worker import EXIT_APPLY_FAILED
from tests.conftest import WorkerProcess, wait_for
from tests.faults.test_rebalance import owned_partitions, wait_split
from tests.faults.test_worker_crashes import BackgroundProducer, assert_redis_equals_recount

# On Apache Kafka only: a frozen member's eviction is the group coordinator's session-timeout
# logic, and Apache Kafka's is the one production runs (the embedded tier has its own fault tests).
pytestmark = [pytest.mark.integration, pytest.mark.one_tier("local")]

# Faust's broker_session_timeout is max(10 s, rebalance timeout): frozen longer than that, a worker
# is evicted from the group and its partitions go to the other worker.
FREEZE_S = 15.0


def epochs(reader: FigureReader) -> dict[int, int]:
    return {p: int(meta.epoch or 0) for p, meta in reader.metas().items()}


def test_frozen_worker_is_fenced_when_it_wakes_and_nothing_counts_twice(
    settings: Settings, start_worker: Callable[..., WorkerProcess], redis_client: redis.Redis
) -> None:
    ensure_topics(settings)
    reader = FigureReader(redis_client, Keys(settings.topic_prefix), settings.partitions, settings.bucket_s)
    w1 = start_worker("worker-1")
    w2 = start_worker("worker-2")
    wait_split([w1, w2], settings.partitions, 60)
    producer = BackgroundProducer(settings, sim_seconds=6 * 3600, rate=2000).start()
    # Freeze worker-2 while it is busy, so it holds fetched but unapplied messages.
    before = reader.totals().get("t|views", 0)
    wait_for(lambda: reader.totals().get("t|views", 0) > before + 2000, 30, "events being applied")
    frozen_epochs = epochs(reader)
    w2.proc.send_signal(signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        # worker-1 notices the eviction, takes every partition and claims new epochs for them.
        wait_for(
            lambda: owned_partitions(w1) == settings.partitions,
            45,
            "worker-1 to take the frozen worker's partitions",
        )
        taken_over = epochs(reader)
        assert any(taken_over[p] > frozen_epochs[p] for p in taken_over), (frozen_epochs, taken_over)
        time.sleep(max(0.0, FREEZE_S - (time.monotonic() - frozen_at)))
    finally:
        assignments_before_waking = w2.log_text().count("partitions assigned")
        w2.proc.send_signal(signal.SIGCONT)
    print(f"worker-2 frozen for {time.monotonic() - frozen_at:.1f}s")

    # The zombie wakes with a batch planned under its old epoch: Redis refuses it (FencedError)
    # and the zombie drops that batch unacknowledged and waits for the group to assign it
    # partitions again; if it learned of the revocation first, it drops the batch without trying;
    # if it had nothing in flight, it simply rejoins the group and is assigned partitions anew.
    def woke_safely() -> bool:
        text = w2.log_text()
        return (
            "superseded" in text
            or "revoked mid-batch" in text
            or text.count("partitions assigned") > assignments_before_waking
        )

    wait_for(woke_safely, 30, "the frozen worker to be fenced or to rejoin", interval=0.5)
    log_text = w2.log_text()
    print(
        f"worker-2 after waking: superseded in log: {'superseded' in log_text}, "
        f"dropped a revoked batch: {'revoked mid-batch' in log_text}, "
        f"assigned again: {log_text.count('partitions assigned') > assignments_before_waking}"
    )
    assert w2.proc.poll() is None, log_text[-3000:]

    producer.join()
    assert_redis_equals_recount(settings, redis_client, producer.events)
    # Both carried on: a fenced write costs a replay by the rightful owner, never a restart.
    for w in (w1, w2):
        assert w.proc.poll() is None, w.log_text()[-2000:]
    assert EXIT_APPLY_FAILED not in (w1.proc.poll(), w2.proc.poll())
