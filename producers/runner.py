"""Runs the simulator against Kafka in (compressed) real time, and closes the loop: bid
adjustments read from Kafka change the scheduler's bids, so they change what happens next."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from producers.kafka_sink import BidAdjustmentReader, DeliveryTotals, EventSink
from producers.simulator import Simulator
from schemas.codec import encode
from schemas.events import ACTIONS, UserAction
from stream_processors.metrics import SimulatorMetrics

log = logging.getLogger("seedloop.simulator")


class ProductionMetrics:
    """Feeds the simulator's Prometheus metrics from the sink's delivery accounting, so that
    `seedloop_sim_events_produced_total{topic}` counts what the broker acknowledged (its help
    text), not what was handed to the producer.

    The sink counts failures in total only. A topic's failures are known exactly once nothing of
    that topic can still be pending: its events handed over, minus those acknowledged, minus
    everything not yet acknowledged or failed (of any topic) is a lower bound of its failures
    that reaches the truth when the producer has drained (after `flush`). The counter follows
    that bound, so it never counts a failure that did not happen.
    """

    def __init__(self, metrics: SimulatorMetrics, topics: Mapping[str, str]) -> None:
        self.metrics = metrics
        self.topics = dict(topics)
        self.handed: Counter[str] = Counter()
        self._acked: Counter[str] = Counter()
        self._failed: Counter[str] = Counter()
        # Every series exists from the start at 0: `rate()` and alerts see the first increase.
        for topic in self.topics.values():
            metrics.produced.labels(topic)
            metrics.delivery_failures.labels(topic)

    @classmethod
    def for_prefix(cls, metrics: SimulatorMetrics, topic_prefix: str) -> ProductionMetrics:
        return cls(metrics, {a: f"{topic_prefix}.{a}" for a in ACTIONS})

    def update(self, totals: DeliveryTotals) -> None:
        unresolved = sum(self.handed.values()) - totals.events - totals.failed
        for action, topic in self.topics.items():
            acked = totals.by_action[action]
            if acked > self._acked[action]:
                self.metrics.produced.labels(topic).inc(acked - self._acked[action])
                self._acked[action] = acked
            if totals.failed:
                failed = self.handed[action] - acked - unresolved
                if failed > self._failed[action]:
                    self.metrics.delivery_failures.labels(topic).inc(failed - self._failed[action])
                    self._failed[action] = failed


class MetricsServer:
    """`metrics` on http://host:port/metrics, served by prometheus_client in a daemon thread."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve_metrics(metrics: SimulatorMetrics, host: str, port: int) -> MetricsServer:
    """Start serving `metrics`; port 0 takes a free port. A port in use is an error (OSError):
    a simulator whose metrics nobody can scrape should not run unnoticed."""
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    served = MetricsServer(server, thread)
    log.info("simulator metrics served", extra={"http": f"{host}:{served.port}"})
    return served


@dataclass(frozen=True, slots=True)
class RunLimits:
    max_events: int | None = None
    duration_s: float | None = None
    rate: float = 2000.0  # events/s ceiling: the simulated clock slows down rather than exceed it
    speed: float = 720.0  # simulated seconds per wall second
    step_s: float = 0.05  # wall seconds between clock advances


def run_simulation(
    sim: Simulator,
    sink: EventSink,
    reader: BidAdjustmentReader | None,
    limits: RunLimits,
    metrics: ProductionMetrics | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_progress: Callable[[int, float], None] | None = None,
) -> int:
    """Produce until a limit is reached; returns the number of events handed to the producer."""
    if limits.max_events is None and limits.duration_s is None:
        raise ValueError("give max_events or duration_s")
    started = time.monotonic()
    sim_origin = sim.now
    produced = 0
    backlog: list[UserAction] = []
    last_report = started
    while not should_stop():
        now = time.monotonic()
        elapsed = now - started
        if limits.duration_s is not None and elapsed >= limits.duration_s:
            break
        if limits.max_events is not None and produced >= limits.max_events:
            break
        if reader is not None:
            for adj in reader.poll():
                if sim.scheduler.apply(adj) and metrics is not None:
                    metrics.metrics.adjustments_applied.inc()
        if not backlog:
            # The simulated clock follows wall time at `speed`; when the rate ceiling holds events
            # back, the clock waits for the backlog to drain, so it slows down instead of skipping.
            backlog = sim.advance(max(sim.now, sim_origin + elapsed * limits.speed))
        allowance = int(limits.rate * elapsed) + int(limits.rate * limits.step_s) - produced
        if limits.max_events is not None:
            allowance = min(allowance, limits.max_events - produced)
        chunk, backlog = backlog[: max(0, allowance)], backlog[max(0, allowance) :]
        if chunk:
            sink.produce_many(chunk, [encode(event) for event in chunk])
            if metrics is not None:
                metrics.handed.update(event.action for event in chunk)
        produced += len(chunk)
        sink.poll(0)
        if metrics is not None:
            metrics.update(sink.totals)
        if on_progress is not None and now - last_report >= 1.0:
            on_progress(produced, sim.now)
            last_report = now
        # Keep to the simulated clock: sleep off what is left of this step.
        time.sleep(max(0.0, limits.step_s - (time.monotonic() - now)))
    remaining = sink.flush(60)
    if metrics is not None:
        metrics.update(sink.totals)
    if remaining:
        log.error("events still unacknowledged after flush", extra={"remaining": remaining})
    return produced
