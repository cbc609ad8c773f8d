"""The consumer lag a worker reports covers only the partitions it owns."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from stream_processors.batch_metrics import AppliedBatchMetrics
from stream_processors.metrics import PipelineMetrics


def _lag(metrics: PipelineMetrics) -> dict[tuple[str, str], float]:
    return {
        (s.labels["topic"], s.labels["partition"]): s.value
        for family in metrics.registry.collect()
        if family.name == "seedloop_consumer_lag"
        for s in family.samples
    }


def test_a_revoked_partition_leaves_the_lag_this_worker_reports() -> None:
    highwater = {("t.view", 0): 11, ("t.view", 1): 21}
    app: Any = SimpleNamespace(consumer=SimpleNamespace(highwater=lambda tp: highwater[(tp.topic, tp.partition)]))
    metrics = PipelineMetrics()
    applied = AppliedBatchMetrics(app, metrics)
    applied.last_offsets.update({("t.view", 0): 4, ("t.view", 1): 20})
    applied.update_lag()
    assert _lag(metrics) == {("t.view", "0"): 6.0, ("t.view", "1"): 0.0}
    # Partition 0 moves to another worker mid-stream: its lag of 6 must not stay here for good.
    applied.forget({0})
    applied.update_lag()
    assert _lag(metrics) == {("t.view", "1"): 0.0}
    applied.forget({0, 5})  # again, and a partition never applied here: nothing to remove
    assert _lag(metrics) == {("t.view", "1"): 0.0}
