"""The simulator's Prometheus metrics: acknowledged events and delivery failures per topic, served
on HTTP (the compose healthcheck and the seedloop-simulator scrape job read them)."""

from __future__ import annotations

import urllib.request
from collections import Counter
from pathlib import Path

from prometheus_client import CollectorRegistry

from producers.kafka_sink import DeliveryTotals, EventSink
from producers.runner import ProductionMetrics, RunLimits, run_simulation, serve_metrics
from producers.scenario import load_scenario
from producers.scheduler import AdScheduler
from producers.simulator import SimConfig, Simulator
from producers.traffic import TrafficModel, load_truth
from schemas.events import ACTIONS
from stream_processors.metrics import SimulatorMetrics

SEEDS = Path(__file__).resolve().parents[3] / "seeds"


def sample(registry: CollectorRegistry, name: str, topic: str) -> float | None:
    return registry.get_sample_value(name, {"topic": topic})


def totals(acked: dict[str, int], failed: int) -> DeliveryTotals:
    t = DeliveryTotals(events=sum(acked.values()), failed=failed)
    t.by_action.update(acked)
    return t


def test_every_topic_series_exists_at_zero_before_the_first_event() -> None:
    metrics = SimulatorMetrics()
    ProductionMetrics.for_prefix(metrics, "seedloop")
    for action in ACTIONS:
        assert sample(metrics.registry, "seedloop_sim_events_produced_total", f"seedloop.{action}") == 0
        assert sample(metrics.registry, "seedloop_sim_delivery_failures_total", f"seedloop.{action}") == 0
    assert metrics.registry.get_sample_value("seedloop_sim_bid_adjustments_applied_total") == 0


def test_produced_counts_acknowledged_events_and_failures_only_once_known() -> None:
    metrics = SimulatorMetrics()
    feed = ProductionMetrics.for_prefix(metrics, "p")
    feed.handed.update({"view": 10, "follow": 5})

    # Nothing acknowledged yet: handing events to the producer counts nothing.
    feed.update(totals({}, failed=0))
    assert sample(metrics.registry, "seedloop_sim_events_produced_total", "p.view") == 0

    # 12 acknowledged, 2 failed, 1 still pending (of either topic): only the failure that can be
    # told apart is counted (view: 10 handed - 8 acked - 1 pending = at least 1 failed).
    feed.update(totals({"view": 8, "follow": 4}, failed=2))
    assert sample(metrics.registry, "seedloop_sim_events_produced_total", "p.view") == 8
    assert sample(metrics.registry, "seedloop_sim_events_produced_total", "p.follow") == 4
    assert sample(metrics.registry, "seedloop_sim_delivery_failures_total", "p.view") == 1
    assert sample(metrics.registry, "seedloop_sim_delivery_failures_total", "p.follow") == 0

    # Drained: the pending follow failed too; every failure is now attributed, exactly.
    feed.update(totals({"view": 8, "follow": 4}, failed=3))
    assert sample(metrics.registry, "seedloop_sim_delivery_failures_total", "p.view") == 2
    assert sample(metrics.registry, "seedloop_sim_delivery_failures_total", "p.follow") == 1


def test_a_broker_that_never_answers_shows_as_failures_per_topic() -> None:
    """A real producer whose broker does not exist: every event times out, and after the run's
    final flush the failures per topic are exactly the events handed over per topic."""
    scenario = load_scenario(SEEDS)
    sim = Simulator(scenario, TrafficModel(load_truth(SEEDS)), AdScheduler(scenario), SimConfig(seed=7, users=2_000))
    # Port 9 (discard) on loopback: nothing listens, so nothing is ever acknowledged.
    sink = EventSink({"bootstrap.servers": "127.0.0.1:9", "message.timeout.ms": 1500}, "p", scenario.rates_to_base())
    metrics = SimulatorMetrics()
    feed = ProductionMetrics.for_prefix(metrics, "p")
    produced = run_simulation(sim, sink, None, RunLimits(max_events=300, rate=100_000, speed=3600), metrics=feed)
    assert produced == 300 and sink.totals.failed == 300
    failures = Counter(
        {a: sample(metrics.registry, "seedloop_sim_delivery_failures_total", f"p.{a}") for a in ACTIONS}
    )
    assert failures == Counter({a: float(n) for a, n in feed.handed.items()})
    assert sum(failures.values()) == 300
    assert all(sample(metrics.registry, "seedloop_sim_events_produced_total", f"p.{a}") == 0 for a in ACTIONS)


def test_metrics_are_served_over_http() -> None:
    metrics = SimulatorMetrics()
    ProductionMetrics.for_prefix(metrics, "seedloop")
    metrics.adjustments_applied.inc(3)
    server = serve_metrics(metrics, "127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as resp:
            body = resp.read().decode()
    finally:
        server.stop()
    assert 'seedloop_sim_events_produced_total{topic="seedloop.checkout"} 0.0' in body
    assert "seedloop_sim_bid_adjustments_applied_total 3.0" in body
