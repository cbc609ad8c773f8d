"""Runs the simulator against Kafka in (compressed) real time, and closes the loop: bid
adjustments read from Kafka change the scheduler's bids, so they change what happens next."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from producers.kafka_sink import BidAdjustmentReader, EventSink
from producers.simulator import Simulator
from schemas.codec import encode
from schemas.events import UserAction
from stream_processors.metrics import SimulatorMetrics

log = logging.getLogger("seedloop.simulator")


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
    metrics: SimulatorMetrics | None = None,
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
                    metrics.adjustments_applied.inc()
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
                for action, n in Counter(event.action for event in chunk).items():
                    metrics.produced.labels(action).inc(n)
        produced += len(chunk)
        sink.poll(0)
        if on_progress is not None and now - last_report >= 1.0:
            on_progress(produced, sim.now)
            last_report = now
        # Keep to the simulated clock: sleep off what is left of this step.
        time.sleep(max(0.0, limits.step_s - (time.monotonic() - now)))
    remaining = sink.flush(60)
    if remaining:
        log.error("events still unacknowledged after flush", extra={"remaining": remaining})
    return produced
