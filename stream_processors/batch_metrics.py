"""What the worker's metrics learn from each applied batch: counts, latency, watermarks, lag."""

from __future__ import annotations

import contextlib
import time
from collections import Counter

import faust
from faust.types import TP

from schemas.events import ACTION_MODELS
from stream_processors.metrics import PipelineMetrics
from stream_processors.processor import BatchPlan

ACTION_OF = {model: action for action, model in ACTION_MODELS.items()}


class AppliedBatchMetrics:
    """Records applied batches into `metrics`; keeps each partition's last applied offsets (for
    the consumer lag against the broker's high watermarks) and its latest watermark."""

    def __init__(self, app: faust.App, metrics: PipelineMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self.last_offsets: dict[tuple[str, int], int] = {}
        self.watermarks: dict[int, float] = {}

    def record(self, plan: BatchPlan, elapsed: float) -> None:
        """A batch was applied: its counts, latency, offsets and watermark."""
        m = self.metrics
        m.batch_seconds.observe(elapsed)
        now = time.time()
        m.last_applied.set(now)
        applied = Counter(type(d.event) for d in plan.applied)
        # Latency from the broker's timestamp (produce time) to now, when the batch is visible.
        m.latency.observe_many(
            [
                now - d.message.timestamp if d.message.timestamp < now else 0.0
                for d in plan.applied
                if d.message.timestamp
            ]
        )
        for event_type, n in applied.items():
            m.events_applied.labels(ACTION_OF[event_type]).inc(n)
        for action, n in Counter(e.action for e in plan.duplicates).items():
            m.duplicates.labels(action).inc(n)
        for (kind, outcome), n in plan.outliers.items():
            m.event_time_outliers.labels(kind, outcome).inc(n)
        for topic, n in plan.replayed.items():
            m.replayed.labels(topic).inc(n)
        for topic, tp in plan.progress.items():
            self.last_offsets[(topic, plan.partition)] = tp.new_offset
        watermark = max((tp.watermark for tp in plan.progress.values()), default=None)
        if watermark is not None and watermark > self.watermarks.get(plan.partition, float("-inf")):
            self.watermarks[plan.partition] = watermark
            m.watermark.labels(str(plan.partition)).set(watermark)
        self.update_lag()

    def forget(self, partitions: set[int]) -> None:
        """Partitions revoked from this worker: their lag is another worker's to report now. Left
        in place, the lag they had when revoked would stay on this worker's /metrics for good
        (no batch of theirs updates it again), and the sum over workers would never return to 0."""
        for topic, partition in [key for key in self.last_offsets if key[1] in partitions]:
            del self.last_offsets[(topic, partition)]
            with contextlib.suppress(KeyError):  # never set: no batch applied since the assignment
                self.metrics.consumer_lag.remove(topic, str(partition))

    def update_lag(self) -> None:
        consumer = self.app.consumer
        for (topic, partition), offset in self.last_offsets.items():
            try:
                high = consumer.highwater(TP(topic, partition))
            except Exception:  # highwater unknown before the first fetch
                continue
            if high is not None:
                self.metrics.consumer_lag.labels(topic, str(partition)).set(max(0, high - 1 - offset))
