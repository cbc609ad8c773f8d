"""BatchHistogram is exposed exactly like prometheus_client's Histogram for the same observations."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from stream_processors.metrics import BatchHistogram, PipelineMetrics

BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0)


def samples(registry: CollectorRegistry) -> dict[str, float]:
    out = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#") and "_created" not in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_batch_histogram_matches_the_stock_histogram() -> None:
    values = [0.0, 0.01, 0.011, 0.1, 0.3, 0.5, 0.75, 1.0, 4.9, 5.0, 7.0, 120.0]
    stock_registry, batch_registry = CollectorRegistry(), CollectorRegistry()
    stock = Histogram("lat_seconds", "doc", buckets=BUCKETS, registry=stock_registry)
    batch = BatchHistogram("lat_seconds", "doc", buckets=BUCKETS, registry=batch_registry)
    for v in values:
        stock.observe(v)
    batch.observe_many(values[:5])
    batch.observe_many(values[5:])
    got = samples(batch_registry)
    assert got == samples(stock_registry)
    assert got['lat_seconds_bucket{le="0.01"}'] == 2 and got["lat_seconds_count"] == len(values)


def test_each_metrics_instance_has_its_own_registry_and_series() -> None:
    first, second = PipelineMetrics(), PipelineMetrics()
    first.events_applied.labels("view").inc(3)
    assert first.registry.get_sample_value("seedloop_events_applied_total", {"action": "view"}) == 3
    assert second.registry.get_sample_value("seedloop_events_applied_total", {"action": "view"}) == 0
    # The class keeps the declaration, the instance the metric.
    assert PipelineMetrics.events_applied.name == "seedloop_events_applied"
    assert isinstance(first.events_applied, Counter)
