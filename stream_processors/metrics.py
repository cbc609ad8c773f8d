"""Every Prometheus metric seedloop exports, defined once.

Dashboards and alert rules are checked against the names registered here (tests/deploy), so a
metric that is renamed here and not there fails the build instead of a dashboard going blank.

Campaign-level figures are exported by each worker for the partitions it currently owns
(`seedloop_campaign_*`), so `sum by (campaign)` over all workers is the true figure: no worker
ever reports another's partitions. Ratios (CPA, ROAS, eCPM, conversion rates) are never exported
pre-computed from a partial sum; dashboards divide sums (see deploy/).

Label cardinality is bounded: campaigns and creators outside the top N by all-time spend over
all partitions (SEEDLOOP_METRICS_TOP_N, default 50) are exported as `other`. Every worker ranks
from the same Redis totals, so they agree on who is `other` and `sum by (campaign)` stays right.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar, get_args, overload

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from schemas.codec import DecodeReason
from schemas.events import ACTIONS

WINDOWS_MINUTES: tuple[int, ...] = (1, 5, 15, 60)

MetricT = TypeVar("MetricT")

# Every reason a message is dead-lettered for (the `reason` label): the decoder's, then the
# placement, catalogue and event-time checks of stream_processors/processor.py. Each series is
# created at 0, so a healthy pipeline's dashboards and alerts read 0 rather than "No data".
# tests/unit/stream_processors/test_metrics_preinit.py fails when processor.py gains a reason
# that is not listed here.
DEAD_LETTER_REASONS: tuple[str, ...] = (
    *get_args(DecodeReason),
    "key_mismatch",
    "wrong_partition",
    "unknown_campaign",
    "unknown_channel",
    "unknown_currency",
    "ghost_view_cost",
    "late",
    "future",
    "duplicate",
)


class TopicCounter(Counter):
    """A Counter labelled by topic whose first series for a topic also creates that topic's
    series, at 0, in its companions. The worker learns its topics when it consumes them, and
    only then can the per-topic counters of rarer things (replays) exist at 0 beside it."""

    _companions: tuple[Counter, ...] = ()

    def with_companions(self, *companions: Counter) -> TopicCounter:
        self._companions = companions
        return self

    def labels(self, *labelvalues: Any, **labelkwargs: Any) -> Any:
        for companion in self._companions:
            companion.labels(*labelvalues, **labelkwargs)
        return super().labels(*labelvalues, **labelkwargs)


class BatchHistogram(Collector):
    """A histogram observed a batch at a time. prometheus_client's Histogram takes a lock and
    walks its buckets per observation (~0.8 us); per-event latency over a 2,000-event batch needs
    one lock and a bisect per value. Exposed exactly like a Histogram (_bucket, _count, _sum)."""

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._doc = documentation
        self._bounds = sorted(buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        bounds = self._bounds
        counts = [0] * len(self._counts)
        total = 0.0
        for value in values:
            counts[bisect.bisect_left(bounds, value)] += 1  # buckets are `le`: inclusive upper bounds
            total += value
        with self._lock:
            for i, n in enumerate(counts):
                self._counts[i] += n
            self._sum += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for bound, n in zip([*self._bounds, float("inf")], counts, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily(self._name, self._doc, buckets=buckets, sum_value=total)


class Metric(Generic[MetricT]):
    """A metric declared on a metrics class, created on each instance's own registry (so a test
    or a second worker in the process never shares series). Once created, the instance attribute
    of the same name is the metric itself: this descriptor only answers before that."""

    def __init__(self, kind: Callable[..., MetricT], name: str, documentation: str, **options: Any) -> None:
        self.kind = kind
        self.name = name
        self.documentation = documentation
        self.options = options
        self.attribute = ""

    def __set_name__(self, owner: type, attribute: str) -> None:
        self.attribute = attribute

    def create(self, registry: CollectorRegistry) -> MetricT:
        return self.kind(self.name, self.documentation, registry=registry, **self.options)

    @overload
    def __get__(self, instance: None, owner: type) -> Metric[MetricT]: ...
    @overload
    def __get__(self, instance: object, owner: type) -> MetricT: ...
    def __get__(self, instance: object | None, owner: type) -> Metric[MetricT] | MetricT:
        if instance is None:
            return self
        raise AttributeError(f"{owner.__name__}.{self.attribute} is created by {owner.__name__}.__init__")


class MetricSet:
    """Creates every `Metric` its class declares, in declaration order, on `registry` (a new one
    by default: one per process, no global state)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        for declared in vars(type(self)).values():
            if isinstance(declared, Metric):
                setattr(self, declared.attribute, declared.create(self.registry))


# Per-campaign figures over rolling event-time windows, for the partitions this worker owns.
CAMPAIGN_LABELS = ("campaign", "channel", "window")
# Per creator (KOL/KOS): the `k|` figures, top-N creators by all-time spend, the rest `other`.
CREATOR_LABELS = ("creator", "window")


class PipelineMetrics(MetricSet):
    """The worker's metrics. One instance per process, on its own registry (no global state)."""

    events_consumed = Metric(
        TopicCounter, "seedloop_events_consumed", "Messages read from an action topic", labelnames=["topic"]
    )
    events_applied = Metric(
        Counter,
        "seedloop_events_applied",
        "Valid events applied to Redis state (after dedup)",
        labelnames=["action"],
    )
    duplicates = Metric(
        Counter,
        "seedloop_duplicate_events",
        "Events skipped because their event_id was seen",
        labelnames=["action"],
    )
    replayed = Metric(
        Counter,
        "seedloop_replayed_events",
        "Messages skipped because their offset was already applied (replay after a crash or rebalance)",
        labelnames=["topic"],
    )
    dead_letters = Metric(
        Counter, "seedloop_dead_letters", "Messages sent to the dead-letter topic", labelnames=["reason"]
    )
    late_events = Metric(
        Counter, "seedloop_late_events", "Events older than the allowed lateness", labelnames=["action"]
    )
    # A healthy pipeline shows 0 here (every series exists from the start): in event-time order
    # a partition's honest events are seconds apart. A jump of more than the allowed lateness
    # past everything the partition accepted comes from a client whose clock is wrong, or from
    # forged times; it cannot move the watermark unless WATERMARK_QUORUM events agree
    # (processor.py). outcome="counted": accepted; "dead_lettered": past the future bound.
    event_time_outliers = Metric(
        Counter,
        "seedloop_event_time_outliers",
        "Events dated more than the allowed lateness after every event their partition had accepted "
        "(counted), or past the future bound (dead_lettered)",
        labelnames=["action", "outcome"],
    )
    batch_seconds = Metric(
        Histogram,
        "seedloop_batch_apply_seconds",
        "Time to attribute and apply one partition batch to Redis",
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    )
    latency = Metric(
        BatchHistogram,
        "seedloop_event_to_redis_latency_seconds",
        "From an event's production time to its effect being visible in Redis",
        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
    )
    consumer_lag = Metric(
        Gauge, "seedloop_consumer_lag", "Messages not yet consumed", labelnames=["topic", "partition"]
    )
    watermark = Metric(
        Gauge,
        "seedloop_event_time_watermark_seconds",
        "Largest event time applied (simulated clock), per partition owned",
        labelnames=["partition"],
    )
    last_applied = Metric(
        Gauge, "seedloop_last_apply_timestamp_seconds", "Wall-clock time of the last applied batch"
    )
    owned_partitions = Metric(Gauge, "seedloop_owned_partitions", "Partitions this worker currently owns")
    campaign_views = Metric(
        Gauge, "seedloop_campaign_views", "Views (impressions)", labelnames=CAMPAIGN_LABELS
    )
    campaign_spend = Metric(
        Gauge, "seedloop_campaign_spend", "Advertiser spend, campaign currency", labelnames=CAMPAIGN_LABELS
    )
    campaign_conversions = Metric(
        Gauge,
        "seedloop_campaign_conversions",
        "Attributed conversions (fractional under multi-touch models)",
        labelnames=[*CAMPAIGN_LABELS, "model", "kind"],
    )
    campaign_gmv = Metric(
        Gauge,
        "seedloop_campaign_gmv",
        "Attributed checkout value, campaign currency",
        labelnames=[*CAMPAIGN_LABELS, "model"],
    )
    # Reach: unique users, HyperLogLog per partition. Users are partitioned by user_id, so the
    # partitions' user sets are disjoint and the sum over partitions (and so over workers) is
    # the reach; HLL's standard error is 0.81% (see monitoring.py).
    campaign_reach = Metric(
        Gauge,
        "seedloop_campaign_reach",
        "Unique users who viewed the campaign in the window, any channel (HyperLogLog estimate)",
        labelnames=["campaign", "window"],
    )
    campaign_channel_reach = Metric(
        Gauge,
        "seedloop_campaign_channel_reach",
        "Unique users who viewed the campaign on this channel in the window (HyperLogLog estimate)",
        labelnames=CAMPAIGN_LABELS,
    )
    campaign_engaged_reach = Metric(
        Gauge,
        "seedloop_campaign_engaged_reach",
        "Unique users with an engaged view (opened, liked, commented) of the campaign in the window",
        labelnames=["campaign", "window"],
    )
    creator_views = Metric(
        Gauge, "seedloop_creator_views", "Views of the creator's content", labelnames=CREATOR_LABELS
    )
    creator_spend = Metric(
        Gauge,
        "seedloop_creator_spend",
        "Advertiser spend on the creator's content, campaign currency",
        labelnames=CREATOR_LABELS,
    )
    creator_checkouts = Metric(
        Gauge,
        "seedloop_creator_checkouts",
        "Checkouts attributed to the creator's content",
        labelnames=[*CREATOR_LABELS, "model"],
    )
    creator_gmv = Metric(
        Gauge,
        "seedloop_creator_gmv",
        "Checkout value attributed to the creator's content, campaign currency",
        labelnames=[*CREATOR_LABELS, "model"],
    )
    creator_followers = Metric(
        Gauge,
        "seedloop_creator_followers",
        "Users who follow the creator (all-time, first follow per user)",
        labelnames=["creator"],
    )
    # Loyalty (the L of AIPL), all-time over the partitions this worker owns.
    buyers = Metric(Gauge, "seedloop_buyers", "Distinct users with at least one checkout")
    repeat_buyers = Metric(Gauge, "seedloop_repeat_buyers", "Distinct users with two or more checkouts")
    campaign_loyalty = Metric(
        Gauge,
        "seedloop_campaign_loyalty_users",
        "Loyalty per campaign, all-time distinct users: buyers and repeat_buyers (checkouts "
        "credited to the campaign), followers and retained_followers (a follow credited to it; "
        "retained: active again SEEDLOOP_RETENTION_S after)",
        labelnames=["campaign", "segment"],
    )
    # Conversion lift (stream_processors/lift.py), all-time cohorts. Unlike the figures above, an
    # estimate does not sum over partitions: every worker exports it computed from ALL partitions
    # (the same value on each), so dashboards read `max by (campaign, ...)`, never `sum`.
    campaign_lift_users = Metric(
        Gauge,
        "seedloop_campaign_lift_users",
        "Users whose first view of the campaign was shown (group=exposed) or a ghost view of its "
        "holdout group (held_out), all-time, all partitions (same on every worker: max by)",
        labelnames=["campaign", "group"],
    )
    campaign_lift_checkouts_per_user = Metric(
        Gauge,
        "seedloop_campaign_lift_checkouts_per_user",
        "Checkouts of the campaign's products within the lift window of a user's first exposure, "
        "per user of the group (the group's conversion rate), all partitions",
        labelnames=["campaign", "group"],
    )
    campaign_lift_gmv_per_user = Metric(
        Gauge,
        "seedloop_campaign_lift_gmv_per_user",
        "GMV of those checkouts per user of the group, base currency, all partitions",
        labelnames=["campaign", "group"],
    )
    campaign_incremental_checkouts = Metric(
        Gauge,
        "seedloop_campaign_incremental_checkouts",
        "Checkouts the campaign's ads caused: exposed users x (exposed - held-out checkouts per "
        "user); bound=estimate, low, high (95% interval), all partitions",
        labelnames=["campaign", "bound"],
    )
    campaign_incremental_gmv = Metric(
        Gauge,
        "seedloop_campaign_incremental_gmv",
        "GMV the campaign's ads caused (the same difference for GMV), base currency; bound=estimate, "
        "low, high (95% interval), all partitions",
        labelnames=["campaign", "bound"],
    )
    campaign_iroas = Metric(
        Gauge,
        "seedloop_campaign_iroas",
        "Incremental ROAS: incremental GMV / the campaign's all-time spend; bound=estimate, low, "
        "high (95% interval), all partitions",
        labelnames=["campaign", "bound"],
    )
    metrics_refresh = Metric(
        Gauge,
        "seedloop_metrics_refresh_timestamp_seconds",
        "Wall-clock time the campaign and creator gauges were last refreshed",
    )
    metrics_refresh_seconds = Metric(
        Histogram,
        "seedloop_metrics_refresh_seconds",
        "Time to read Redis and refresh the campaign and creator gauges",
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    )

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        # Every labelled counter exists at 0 for its known label values from the start: `rate()`
        # then reads 0 on a healthy pipeline (not "No data") and sees the first increase.
        for action in ACTIONS:
            self.events_applied.labels(action)
            self.duplicates.labels(action)
            self.late_events.labels(action)
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason)
        # Topics are known once consumed: a topic's replay counter is created with its first message.
        self.events_consumed.with_companions(self.replayed)
        for action in ACTIONS:
            for outcome in ("counted", "dead_lettered"):
                self.event_time_outliers.labels(action, outcome)

    @property
    def figure_gauges(self) -> dict[str, Gauge]:
        """The gauges a refresh replaces as a whole (monitoring.refresh_campaign_gauges)."""
        return {
            name: value
            for name, value in vars(self).items()
            if isinstance(value, Gauge) and (name.startswith(("campaign_", "creator_")) or "buyers" in name)
        }


class OptimizerMetrics(MetricSet):
    decisions = Metric(
        Counter,
        "seedloop_optimizer_decisions",
        "Bid decisions taken",
        labelnames=["campaign", "channel", "reason"],
    )
    published = Metric(Counter, "seedloop_bid_adjustments_published", "Bid adjustments published to Kafka")
    bid = Metric(
        Gauge, "seedloop_bid", "Current bid (CPM, campaign currency)", labelnames=["campaign", "channel"]
    )
    observed = Metric(
        Gauge,
        "seedloop_optimizer_observed",
        "Efficiency the optimizer saw (CPA or ROAS, per target_kind)",
        labelnames=["campaign", "channel", "target_kind"],
    )
    target = Metric(
        Gauge,
        "seedloop_campaign_target",
        "Campaign target (CPA or ROAS)",
        labelnames=["campaign", "target_kind"],
    )
    daily_budget = Metric(
        Gauge,
        "seedloop_campaign_daily_budget",
        "Campaign daily budget, campaign currency",
        labelnames=["campaign"],
    )
    budget_pace = Metric(
        Gauge,
        "seedloop_campaign_budget_pace",
        "Spend today divided by the plan for the time of day (1 = on plan)",
        labelnames=["campaign"],
    )
    last_round = Metric(
        Gauge, "seedloop_optimizer_last_round_timestamp_seconds", "Wall-clock time of the last control round"
    )
    rounds = Metric(Counter, "seedloop_optimizer_rounds", "Control rounds run")


class SimulatorMetrics(MetricSet):
    produced = Metric(
        Counter, "seedloop_sim_events_produced", "Events acknowledged by the broker", labelnames=["topic"]
    )
    delivery_failures = Metric(
        Counter,
        "seedloop_sim_delivery_failures",
        "Events the broker did not acknowledge",
        labelnames=["topic"],
    )
    adjustments_applied = Metric(
        Counter, "seedloop_sim_bid_adjustments_applied", "Bid adjustments the ad scheduler applied"
    )
