"""The latency phase: events produced at a fixed rate with the Kafka timestamp = produce time; a
poller sees when each one's applied offset (stored with its figures in one Lua call) appears in
Redis. Latency = first seen - produce time, with the poller's 5 ms resolution."""

from __future__ import annotations

import bisect
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import redis
from confluent_kafka import KafkaError, Message, Producer

from seedloop.settings import Settings

# (topic, partition, offset, Kafka timestamp in seconds) of one acknowledged event
Record = tuple[str, int, int, float]


class OffsetPoller(threading.Thread):
    """Records, per topic-partition, when each applied offset first became visible in Redis."""

    def __init__(self, settings: Settings, client: redis.Redis, interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self._metas = [(p, f"{settings.topic_prefix}:{{p{p}}}:meta") for p in range(settings.partitions)]
        self._client = client
        self._interval = interval
        self._halt = threading.Event()
        self.seen: dict[tuple[str, int], tuple[list[int], list[float]]] = {}

    def run(self) -> None:
        while not self._halt.is_set():
            with self._client.pipeline(transaction=False) as pipe:
                for _, key in self._metas:
                    pipe.hgetall(key)
                rows = pipe.execute()
            now = time.time()
            for (p, _), row in zip(self._metas, rows, strict=True):
                for k, v in row.items():
                    name = k.decode()
                    if name.startswith("off:"):
                        offs, times = self.seen.setdefault((name[4:], p), ([], []))
                        off = int(v)
                        if not offs or off > offs[-1]:
                            offs.append(off)
                            times.append(now)
            time.sleep(self._interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def visible_at(self, topic: str, partition: int, offset: int) -> float | None:
        offs, times = self.seen.get((topic, partition), ([], []))
        i = bisect.bisect_left(offs, offset)
        return times[i] if i < len(offs) else None


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    idx = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[idx]


def _produce_paced(
    producer: Producer,
    payloads: Iterator[tuple[str, bytes, bytes]],
    rate: float,
    seconds: float,
    on_delivery: Callable[[KafkaError | None, Message], None],
) -> int:
    """Produce at `rate` for `seconds` (catching up every 2 ms); how many were produced."""
    started = time.monotonic()
    produced = 0
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(rate * elapsed) - produced
        for _ in range(max(0, due)):
            topic, key, value = next(payloads)
            producer.produce(topic, value, key, on_delivery=on_delivery)
            produced += 1
        producer.poll(0)
        time.sleep(0.002)
    producer.flush(30)
    return produced


def _wait_visible(poller: OffsetPoller, records: Sequence[Record]) -> None:
    """Until the last 200 acknowledged events are visible (30 s at most)."""
    deadline = time.monotonic() + 30
    while records and time.monotonic() < deadline:
        if all(poller.visible_at(t, p, o) is not None for t, p, o, _ in records[-200:]):
            break
        time.sleep(0.05)
    time.sleep(0.05)


def latency_figures(
    records: Sequence[Record], visible_at: Callable[[str, int, int], float | None], counted_from: float
) -> dict[str, Any]:
    """Percentiles of (first visible - Kafka timestamp) over the records from `counted_from` on."""
    lat: list[float] = []
    by_second: dict[int, list[float]] = {}
    missing = 0
    counted = [r for r in records if r[3] >= counted_from]
    t0 = min((r[3] for r in counted), default=0.0)
    for topic, p, off, ts in counted:
        seen = visible_at(topic, p, off)
        if seen is None:
            missing += 1
        else:
            ms = max(0.0, seen - ts) * 1000
            lat.append(ms)
            by_second.setdefault(int(ts - t0), []).append(ms)
    lat.sort()
    return {
        "latency_p50_ms": _percentile(lat, 0.5),
        "latency_p99_ms": _percentile(lat, 0.99),
        "latency_max_ms": lat[-1] if lat else None,
        "latency_events": len(lat),
        "latency_not_visible": missing,
        # p50 per second of the run: a rising series means the worker fell behind (a queue grew)
        "latency_p50_by_second_ms": [statistics.median(v) for _, v in sorted(by_second.items())],
    }


def measure_latency(
    settings: Settings,
    client: redis.Redis,
    sink_config: dict[str, Any],
    payloads: Iterator[tuple[str, bytes, bytes]],
    rate: float,
    duration: float,
    warmup: float = 0.0,
) -> dict[str, Any]:
    """Produce at `rate` for `warmup` + `duration` s; latency = first visible in Redis - Kafka
    timestamp, over the events produced after the warm-up (the ramp from idle is not counted)."""
    records: list[Record] = []
    failures = [0]

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failures[0] += 1
            return
        records.append(
            (str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0), msg.timestamp()[1] / 1000)
        )

    producer = Producer(sink_config)
    poller = OffsetPoller(settings, client)
    poller.start()
    counted_from = time.time() + warmup
    try:
        produced = _produce_paced(producer, payloads, rate, warmup + duration, on_delivery)
        _wait_visible(poller, records)
    finally:
        poller.stop()
    figures = latency_figures(records, poller.visible_at, counted_from)
    return {
        "latency_p50_ms": figures["latency_p50_ms"],
        "latency_p99_ms": figures["latency_p99_ms"],
        "latency_max_ms": figures["latency_max_ms"],
        "latency_rate_eps": rate,
        "latency_events": figures["latency_events"],
        "latency_not_visible": figures["latency_not_visible"],
        "latency_failed": failures[0],
        "latency_achieved_eps": produced / (warmup + duration),
        "latency_warmup_s": warmup,
        "latency_p50_by_second_ms": figures["latency_p50_by_second_ms"],
    }
