"""Kill things and compare the output with the input, record by record (tests/recount.py)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

import pytest
import redis

from schemas.codec import encode
from schemas.events import UserAction
from seedloop import runtime
from seedloop.settings import Settings
from seedloop.topics import caught_up, ensure_topics
from stream_processors.store.redis_lua import FigureReader, Keys
from tests.conftest import WorkerProcess, wait_for
from tests.integration.test_pipeline import simulator_with_holdout
from tests.recount import recount_for

pytestmark = pytest.mark.integration


class BackgroundProducer:
    """Produces the seeded simulation at a steady rate while the test breaks things."""

    def __init__(
        self, settings: Settings, sim_seconds: float, rate: float, holdout_share: float = 0.0
    ) -> None:
        scenario = runtime.scenario_of(settings)
        sim = simulator_with_holdout(settings, scenario, holdout_share)
        self.events: list[UserAction] = sim.advance(sim.now + sim_seconds)
        self.sink = runtime.event_sink(settings, scenario)
        self.rate = rate
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            started = time.monotonic()
            for i, e in enumerate(self.events):
                self.sink.produce(e, encode(e))
                if i % 500 == 0:
                    ahead = i / self.rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
            assert self.sink.close(60) == 0
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    def start(self) -> BackgroundProducer:
        self.thread.start()
        return self

    def join(self) -> None:
        self.thread.join(120)
        assert not self.thread.is_alive(), "producer did not finish"
        if self.error:
            raise self.error
        assert self.sink.totals.events == len(self.events) and self.sink.totals.failed == 0


def scrape_counter(port: int, name: str) -> float:
    import urllib.request

    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(name))


def assert_redis_equals_recount(settings: Settings, client: redis.Redis, events: list[UserAction]) -> None:
    reader = FigureReader(client, Keys(settings.topic_prefix), settings.partitions, settings.bucket_s)
    wait_for(lambda: caught_up(settings, reader), 120, "the workers to apply every message")
    expected = recount_for(settings, events)
    stored = {k: v for k, v in reader.totals().items() if v and not k.startswith("k|")}
    missing = {
        k: (expected.get(k), stored.get(k))
        for k in set(expected) | set(stored)
        if expected.get(k) != stored.get(k)
    }
    assert not missing, f"{len(missing)} figures differ, e.g. {sorted(missing.items())[:5]}"
    assert expected["t|views"] > 1000
    assert any(k.startswith("x|") for k in expected)  # lift figures are compared too


def test_sigkill_mid_stream_three_times_with_two_workers_loses_and_doubles_nothing(
    settings: Settings, start_worker: Callable[..., WorkerProcess], redis_client: redis.Redis
) -> None:
    ensure_topics(settings)
    workers = {"worker-1": start_worker("worker-1"), "worker-2": start_worker("worker-2")}
    reader = FigureReader(redis_client, Keys(settings.topic_prefix), settings.partitions, settings.bucket_s)
    # With a holdout: the ghost views' lift figures must survive the kills exactly-once too.
    producer = BackgroundProducer(settings, sim_seconds=5 * 3600, rate=2500, holdout_share=0.2).start()
    kills = 0
    for round_no in range(3):
        victim = f"worker-{round_no % 2 + 1}"
        # Kill only while it is applying: wait until figures are moving.
        before = reader.totals().get("t|views", 0)
        wait_for(lambda b=before: reader.totals().get("t|views", 0) > b + 500, 60, "events being applied")
        workers[victim].proc.send_signal(signal.SIGKILL)
        workers[victim].proc.wait(10)
        kills += 1
        workers[victim] = start_worker(victim)
    producer.join()
    assert kills == 3
    assert_redis_equals_recount(settings, redis_client, producer.events)
    for w in workers.values():
        assert w.proc.poll() is None, w.log_text()[-2000:]
    # Replays really happened (messages below the stored offset were skipped), so the equality
    # above is a test of the offset guard, not of luck.
    replayed = sum(scrape_counter(w.port, "seedloop_replayed_events_total") for w in workers.values())
    print(f"replayed messages skipped by the offset guard after the last kills: {replayed}")
