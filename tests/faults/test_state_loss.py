"""Redis restarted and its data lost: the pipeline never carries on with silently lower figures."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from seedloop.embedded import EmbeddedStack
from seedloop.settings import Settings
from seedloop.topics import caught_up, ensure_topics
from stream_processors.store.redis_lua import FigureReader, Keys
from tests.conftest import WorkerProcess, wait_for
from tests.faults.test_worker_crashes import assert_redis_equals_recount
from tests.integration.test_pipeline import produce_simulated

pytestmark = pytest.mark.integration


def test_redis_data_loss_is_detected_and_rebuilt_from_kafka(
    settings: Settings, stack: EmbeddedStack, start_worker: Callable[..., WorkerProcess]
) -> None:
    ensure_topics(settings)
    worker = start_worker()
    events = produce_simulated(settings, sim_seconds=2 * 3600)
    client = redis.Redis.from_url(settings.redis_url_value)
    reader = FigureReader(client, Keys(settings.topic_prefix), settings.partitions, settings.bucket_s)
    wait_for(lambda: caught_up(settings, reader), 60, "the first pass")
    time.sleep(3)  # let Faust commit what it applied (commit interval 1 s)

    # Redis restarts without persistence while the worker runs: the next write finds no epoch.
    stack.redis.stop()
    stack.redis.start()
    more = produce_simulated(settings, sim_seconds=600, start_after=2 * 3600)
    worker.proc.wait(60)
    assert worker.proc.returncode != 0
    assert "lost this partition's state" in worker.log_text()

    # A plain restart refuses to carry on with lower figures...
    stopped = start_worker("worker-1")
    assert stopped.proc.wait(60) == 3
    assert "Redis is behind the offsets Kafka committed" in stopped.log_text()

    # ...and an explicit rebuild replays the topics into the empty Redis: nothing lost, nothing twice.
    start_worker("worker-1", SEEDLOOP_ON_STATE_LOSS="rebuild")
    client = redis.Redis.from_url(settings.redis_url_value)
    assert_redis_equals_recount(settings, client, events + more)
