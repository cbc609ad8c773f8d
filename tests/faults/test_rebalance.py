"""Workers join and leave while events flow: every partition keeps moving, nothing counts twice."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Sequence

import pytest
import redis

from seedloop.settings import Settings
from seedloop.topics import caught_up, ensure_topics
from stream_processors.store.redis_lua import FigureReader, Keys
from tests.conftest import WorkerProcess, wait_for
from tests.faults.test_worker_crashes import BackgroundProducer, assert_redis_equals_recount, scrape_counter

pytestmark = pytest.mark.integration


def owned_partitions(worker: WorkerProcess) -> int | None:
    """The worker's `seedloop_owned_partitions` gauge, or None while its HTTP server is not up."""
    try:
        return int(scrape_counter(worker.port, "seedloop_owned_partitions"))
    except OSError:
        return None


def wait_split(workers: Sequence[WorkerProcess], partitions: int, timeout: float) -> None:
    """Every worker owns some partitions and together they own all of them."""

    def split() -> bool:
        owned = [owned_partitions(w) or 0 for w in workers]
        return all(owned) and sum(owned) == partitions

    wait_for(split, timeout, f"the {len(workers)} workers to split the partitions")


def two_workers_applying(
    start_worker: Callable[..., WorkerProcess],
    settings: Settings,
    reader: FigureReader,
    split_timeout: float,
    apply_timeout: float,
) -> tuple[list[WorkerProcess], BackgroundProducer]:
    """worker-1 and worker-2 split the partitions, and a producer's events are being applied."""
    workers = [start_worker("worker-1"), start_worker("worker-2")]
    wait_split(workers, settings.partitions, split_timeout)
    producer = BackgroundProducer(settings, sim_seconds=5 * 3600, rate=2000).start()
    before = reader.totals().get("t|views", 0)
    wait_for(lambda: reader.totals().get("t|views", 0) > before + 2000, apply_timeout, "events being applied")
    return workers, producer


def applied_offsets(reader: FigureReader) -> dict[tuple[int, str], int]:
    return {(p, t): o for p, meta in reader.metas().items() for t, o in meta.offsets.items()}


def wait_all_partitions_move(reader: FigureReader, partitions: int, timeout: float, what: str) -> None:
    """Every partition's applied offset (some topic of it) grows: no partition is stalled."""
    before = applied_offsets(reader)

    def moved() -> bool:
        now = applied_offsets(reader)
        return all(
            any(o > before.get((p, t), -1) for (q, t), o in now.items() if q == p) for p in range(partitions)
        )

    wait_for(moved, timeout, what)


def test_workers_join_and_leave_mid_stream_without_stalls_or_double_counts(
    settings: Settings, start_worker: Callable[..., WorkerProcess], redis_client: redis.Redis
) -> None:
    ensure_topics(settings)
    reader = FigureReader(redis_client, Keys(settings.topic_prefix), settings.partitions, settings.bucket_s)
    w1 = start_worker("worker-1")
    wait_for(lambda: owned_partitions(w1) == settings.partitions, 45, "worker-1 to own every partition")
    producer = BackgroundProducer(settings, sim_seconds=6 * 3600, rate=2000).start()
    wait_all_partitions_move(reader, settings.partitions, 30, "worker-1 alone to apply on every partition")

    # Scale out: worker-2 joins while events flow and takes some partitions.
    w2 = start_worker("worker-2")
    wait_for(lambda: (owned_partitions(w2) or 0) > 0, 45, "worker-2 to be assigned partitions")
    wait_split([w1, w2], settings.partitions, 30)
    wait_all_partitions_move(reader, settings.partitions, 30, "every partition to move with two workers")

    # Scale in gracefully: SIGTERM; worker-1 takes every partition back and they all move again.
    w2.proc.send_signal(signal.SIGTERM)
    assert w2.proc.wait(30) == 0, w2.log_text()[-2000:]
    wait_for(lambda: owned_partitions(w1) == settings.partitions, 45, "worker-1 to take every partition back")
    wait_all_partitions_move(reader, settings.partitions, 30, "every partition to move after the scale-in")
    assert producer.thread.is_alive(), "the scale-in should happen while events flow; produce more"

    # And out again, still mid-stream.
    w3 = start_worker("worker-2")
    wait_for(lambda: (owned_partitions(w3) or 0) > 0, 45, "the new worker-2 to be assigned partitions")
    print(f"producer still running when the last worker joined: {producer.thread.is_alive()}")
    producer.join()

    started = time.monotonic()
    wait_for(lambda: caught_up(settings, reader), 60, "the workers to catch up after the last rebalance")
    print(f"caught up {time.monotonic() - started:.1f}s after the producer finished")
    assert_redis_equals_recount(settings, redis_client, producer.events)
    for w in (w1, w3):
        assert w.proc.poll() is None, w.log_text()[-2000:]
    assert "superseded" not in w1.log_text() + w2.log_text() + w3.log_text()
