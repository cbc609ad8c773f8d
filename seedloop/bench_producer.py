"""The producer phase: the simulator's events generated, then encoded and produced until the broker
acknowledged every one (the drain data), the producer timed `repeats` times."""

from __future__ import annotations

import statistics
import time
from typing import Any

from seedloop import runtime
from seedloop.settings import Settings
from seedloop.topics import ensure_topics


def _produce_timed(settings: Settings, scenario: Any, events: list[Any]) -> tuple[float, int]:
    """Encode + produce + wait for every acknowledgement; (events/s, acknowledged)."""
    from schemas.codec import encode

    sink = runtime.event_sink(settings, scenario)
    sink.produce(events[0], encode(events[0]))  # connect and learn metadata outside the clock
    if sink.flush(30):
        raise RuntimeError("producer: the broker did not acknowledge the first event")
    t0 = time.perf_counter()
    chunk = 10_000
    for i in range(1, len(events), chunk):
        part = events[i : i + chunk]
        sink.produce_many(part, [encode(e) for e in part])
    remaining = sink.flush(120)
    produce_s = time.perf_counter() - t0
    if remaining or sink.totals.failed:
        raise RuntimeError(f"producer: {remaining} unacknowledged, {sink.totals.failed} failed")
    return (len(events) - 1) / produce_s, sink.totals.events


def produce_drain_data(settings: Settings, n: int, repeats: int = 1) -> dict[str, Any]:
    """Generate n simulator events and produce them (the drain data); the producer is timed
    `repeats` times (the extra runs go to scratch topics) and the median reported."""
    scenario = runtime.scenario_of(settings)
    sim = runtime.simulator_of(settings, scenario)
    events: list[Any] = []
    t0 = time.perf_counter()
    while len(events) < n:
        events.extend(sim.advance(sim.now + 600))
    gen_s = time.perf_counter() - t0
    generated = len(events)
    events = events[:n]
    eps, acknowledged = _produce_timed(settings, scenario, events)
    runs = [eps]
    for r in range(1, repeats):
        scratch = settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}s{r}"})
        ensure_topics(scratch)
        runs.append(_produce_timed(scratch, scenario, events)[0])
    producer_eps = statistics.median(runs)
    simulator_eps = generated / gen_s
    return {
        "producer_eps": producer_eps,
        "producer_runs_eps": runs,
        "simulator_eps": simulator_eps,
        # one thread doing both: 1 / (1/gen + 1/produce)
        "simulate_produce_eps": 1 / (1 / simulator_eps + 1 / producer_eps),
        "acknowledged": acknowledged,
        "sim": sim,
        "scenario": scenario,
    }
