"""The optimizer service: on a timer, read efficiency from Redis, decide, publish, remember.

Its own state (round counter, current bids) lives in Redis, so a restart continues the same
sequence of rounds: decision ids are `<campaign>:<channel>:<round>` and the scheduler ignores a
round it has already applied, so a restarted optimizer can neither duplicate nor contradict a
decision.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import redis
from confluent_kafka import Producer

from producers.scenario import Scenario
from schemas.codec import encode
from schemas.decisions import BidAdjustment
from stream_processors.figures import campaign_figures
from stream_processors.metrics import OptimizerMetrics
from stream_processors.optimizer.adjustments import DecisionAudit, bid_adjustment
from stream_processors.optimizer.controller import (
    BidOptimizer,
    ChannelDecision,
    ChannelFigures,
    ControlPolicy,
    RoundInput,
    efficiency_window,
    spend_by_campaign,
    with_lagged_spend,
)
from stream_processors.optimizer.lift_steer import LiftSteerPolicy, calibrations_of, factors_of, lift_span
from stream_processors.optimizer.pacing import PacingPolicy
from stream_processors.optimizer.specs import campaign_specs
from stream_processors.redis_connect import SyncClient
from stream_processors.store.base import FigureSource
from stream_processors.store.redis_lua import Keys

log = logging.getLogger("seedloop.optimizer")
DAY_S = 86_400
HOUR_S = 3600
DECISION_LOG_LEN = 1000


@dataclass(frozen=True, slots=True)
class OptimizerConfig:
    topic: str
    window_s: float
    policy: ControlPolicy
    mode: Literal["live", "dry_run"] = "live"
    model: str = "last"
    pacing: PacingPolicy = field(default_factory=PacingPolicy)
    # Conversions arrive this long after the spend that caused them: the efficiency window compares
    # conversions over [now - window, now] with spend over the same window shifted back by the lag.
    conversion_lag_s: float = 3600.0
    # Pacing projects the day from the spend rate over this recent stretch.
    pace_window_s: float = 3600.0
    # The checkout/cart ratio and the order value (both stable) are pooled over this long window.
    long_window_s: float = float(DAY_S)
    # The variable-memory windows of the efficiency estimate (ControlPolicy.change_*).
    memory_windows_s: tuple[float, ...] = (4 * 3600.0, 8 * 3600.0, float(DAY_S))
    # A bucket older than this behind the watermark can no longer change (the pipeline's allowed
    # lateness plus a margin), so its figures are read once and cached.
    final_after_s: float = 3600.0 + 300.0
    # What the optimizer steers by (Settings.optimizer_steer): "lift" multiplies each campaign's
    # attributed checkouts and GMV by its lift calibration k (lift_steer.py), measured over the
    # cohorts of `lift_steer.lift_span`; "attributed" steers by the attributed figures as they are.
    steer: Literal["attributed", "lift"] = "attributed"
    lift: LiftSteerPolicy = field(default_factory=LiftSteerPolicy)


# One event-time bucket as the optimizer keeps it: its attributed figures per campaign and channel.
# Not its conversion-lift fields: those are keyed by the COHORT bucket and keep growing for the lift
# window after it, long after the bucket's own figures are final (_calibration reads them afresh).
_Bucket = dict[tuple[str, str], ChannelFigures]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _field(campaign_id: str, channel: str) -> str:
    return f"{campaign_id}|{channel}"


class OptimizerService:
    """Redis keys (namespace `ns`): `ns:bids` current bids (`campaign|channel`), `ns:optimizer` round
    counter, `ns:optimizer:state` controller/pacing state (JSON), `ns:optimizer:paused` paused
    campaigns, `ns:optimizer:overrides` manual bids, `ns:optimizer:decisions` the latest decisions
    (JSON, newest first, both modes: dry-run decides and records but publishes nothing)."""

    def __init__(
        self,
        scenario: Scenario,
        reader: FigureSource,
        client: SyncClient,
        keys: Keys,
        kafka_config: Mapping[str, Any] | None,
        cfg: OptimizerConfig,
        metrics: OptimizerMetrics | None = None,
    ) -> None:
        self.scenario = scenario
        self.reader = reader
        self._buckets: dict[int, _Bucket] = {}
        self._round_buckets: dict[int, _Bucket] = {}
        self._figures_before_lift_span = False  # once true, true for good: the span only moves on
        self._lift_factors: tuple[float, dict[str, float]] | None = None  # (read at, k) of _calibration
        self.redis = client
        self.keys = keys
        self.cfg = cfg
        self.metrics = metrics or OptimizerMetrics()
        self._kafka_config = kafka_config
        self._producer: Producer | None = None
        self.published = 0
        self.specs = campaign_specs(scenario)
        for c in scenario.campaigns:
            self.metrics.daily_budget.labels(c.campaign_id).set(c.daily_budget)
            self.metrics.target.labels(c.campaign_id, c.target_kind).set(c.target)

    # --- keys -------------------------------------------------------------------------------------
    def _key(self, suffix: str) -> str:
        return self.keys.optimizer(suffix)

    def _producer_or_none(self) -> Producer | None:
        if self._kafka_config is None or self.cfg.mode == "dry_run":
            return None
        if self._producer is None:
            self._producer = Producer(
                {**self._kafka_config, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
            )
        return self._producer

    # --- control ----------------------------------------------------------------------------------
    def _check(self, campaign_id: str, channel: str | None = None) -> None:
        c = self.scenario.campaign(campaign_id)  # KeyError for an unknown campaign
        if channel is not None and channel not in c.channels:
            raise KeyError(f"{campaign_id} has no channel {channel}")

    def pause(self, campaign_id: str) -> None:
        """Pause a campaign: the next round publishes `paused` decisions; the scheduler stops serving it."""
        self._check(campaign_id)
        self.redis.sadd(self._key("paused"), campaign_id)

    def resume(self, campaign_id: str) -> None:
        self._check(campaign_id)
        self.redis.srem(self._key("paused"), campaign_id)

    def override(self, campaign_id: str, channel: str, bid: float) -> None:
        """Pin a bid (clamped to the campaign's floor and cap) until clear_override()."""
        self._check(campaign_id, channel)
        if not (bid > 0 and bid < float("inf")):
            raise ValueError("bid must be a positive number")
        self.redis.hset(self._key("overrides"), _field(campaign_id, channel), repr(float(bid)))

    def clear_override(self, campaign_id: str, channel: str) -> None:
        self.redis.hdel(self._key("overrides"), _field(campaign_id, channel))

    def overrides(self) -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = {}
        for k, v in self.redis.hgetall(self._key("overrides")).items():
            cid, ch = _text(k).split("|", 1)
            out[(cid, ch)] = float(v)
        return out

    def current_bids(self) -> dict[tuple[str, str], float]:
        stored = {_text(k): float(v) for k, v in self.redis.hgetall(self.keys.bids()).items()}
        bids: dict[tuple[str, str], float] = {}
        for c in self.scenario.campaigns:
            for channel, start in c.channels.items():
                bids[(c.campaign_id, channel)] = stored.get(_field(c.campaign_id, channel), start)
        return bids

    def paused(self) -> set[str]:
        return {_text(m) for m in self.redis.smembers(self._key("paused"))}

    def recent_decisions(self, n: int = 100) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.redis.lrange(self._key("decisions"), 0, n - 1)]

    def _bucket(self, bucket: int, now: float) -> _Bucket:
        cached = self._buckets.get(bucket) or self._round_buckets.get(bucket)
        if cached is not None:
            return cached
        figures: dict[tuple[str, str], ChannelFigures] = {}
        fields = self.reader.window(bucket, bucket + self.reader.bucket_s)
        for cid, fig in campaign_figures(fields, (self.cfg.model,)).items():
            for ch, per_model in fig.by_channel.items():
                e = per_model.get(self.cfg.model)
                if e is not None:
                    figures[(cid, ch)] = ChannelFigures(e.spend, e.checkouts, e.gmv, e.add_to_carts)
        out = figures
        if bucket + self.reader.bucket_s < now - self.cfg.final_after_s:
            self._buckets[bucket] = out
        else:
            self._round_buckets[bucket] = out  # the five windows of one round share a read
        return out

    def _buckets_of(self, start: float, end: float, now: float) -> list[_Bucket]:
        """The event-time buckets starting in [start, end). Each round re-reads only the buckets that
        may still change; a 24-hour window costs ~1,440 reads once, then ~65."""
        size = self.reader.bucket_s
        first = -(-int(start) // size) * size
        out = [self._bucket(bucket, now) for bucket in range(first, int(end), size)]
        # steer = "lift" reads the hour before the lift span (whether figures precede it)
        lift = self.cfg.lift
        kept = max(
            self.cfg.long_window_s, lift.window_s + lift.settle_s + HOUR_S if self.cfg.steer == "lift" else 0
        )
        horizon = now - 2 * DAY_S - kept
        for bucket in [b for b in self._buckets if b < horizon]:
            del self._buckets[bucket]
        return out

    def _window(self, start: float, end: float, now: float) -> dict[tuple[str, str], ChannelFigures]:
        """Figures of the event-time buckets starting in [start, end)."""
        sums: dict[tuple[str, str], list[float]] = {}
        for b in self._buckets_of(start, end, now):
            for key, f in b.items():
                acc = sums.setdefault(key, [0.0, 0.0, 0.0, 0.0])
                acc[0] += f.spend
                acc[1] += f.conversions
                acc[2] += f.gmv
                acc[3] += f.add_to_carts
        return {k: ChannelFigures(*v) for k, v in sums.items()}

    def _calibration(self, now: float) -> dict[str, float]:
        """steer = "lift": each campaign's k, read afresh once per `lift.refresh_s` of event time."""
        if self._lift_factors is None or not 0 <= now - self._lift_factors[0] < self.cfg.lift.refresh_s:
            self._lift_factors = (now, self._read_calibration(now))
        return self._lift_factors[1]

    def _read_calibration(self, now: float) -> dict[str, float]:
        """steer = "lift": each campaign's k over the lift span (lift_steer.lift_span). The span's
        fields are one window read each round, never cached: its cohorts' lift fields grow for the
        lift window after them (one pipelined read of the span's buckets; caching the closed part
        would save transfer, not round trips). Whether figures precede the span is read from the
        hour before it, final and cached by then."""
        if not self._figures_before_lift_span:
            begin = lift_span(now, self.cfg.lift, figures_before=False)[0]
            self._figures_before_lift_span = bool(self._window(begin - HOUR_S, begin, now))
        start, end = lift_span(now, self.cfg.lift, self._figures_before_lift_span)
        fields = self.reader.window(start, end)
        campaigns = [s.campaign_id for s in self.specs]
        cals = calibrations_of(fields, campaigns, self.cfg.lift, self.cfg.model)
        log.info("lift calibration", extra={"k": {cid: round(c.factor, 4) for cid, c in cals.items()}})
        return factors_of(cals)

    def _window_with_lag(self, seconds: float, now: float) -> dict[tuple[str, str], ChannelFigures]:
        """The last `seconds` of figures, with `lagged_spend` over the span shifted back by the lag."""
        lag = self.cfg.conversion_lag_s
        return with_lagged_spend(
            self._window(now - seconds, now + 1, now), self._window(now - seconds - lag, now - lag + 1, now)
        )

    def run_round(self) -> list[BidAdjustment]:
        now_event = self.reader.watermark()
        if now_event is None:
            return []
        round_no = int(self.redis.hincrby(self.keys.optimizer(), "round", 1))
        self._round_buckets = {}
        lag = self.cfg.conversion_lag_s
        lagged = self._window(now_event - self.cfg.window_s - lag, now_event - lag + 1, now_event)
        window = efficiency_window(
            self._window(now_event - self.cfg.window_s, now_event + 1, now_event), lagged
        )
        day_start = (now_event // DAY_S) * DAY_S
        spent_today = spend_by_campaign(self._window(day_start, now_event + 1, now_event))
        recent_spend = spend_by_campaign(
            self._window(now_event - self.cfg.pace_window_s, now_event + 1, now_event)
        )
        optimizer = BidOptimizer(self.specs, self.cfg.policy, self.cfg.pacing)
        state_key = self._key("state" if self.cfg.mode == "live" else "dry_state")
        optimizer.load_state({_text(k): v for k, v in self.redis.hgetall(state_key).items()})
        paused = self.paused()
        inp = RoundInput(
            seconds_into_day=now_event - day_start,
            window=window,
            spent_today=spent_today,
            recent_spend=recent_spend,
            recent_s=self.cfg.pace_window_s,
            bids=self.current_bids(),
            paused=paused,
            overrides=self.overrides(),
            long_window=self._window(now_event - self.cfg.long_window_s, now_event + 1, now_event),
            windows={w: self._window_with_lag(w, now_event) for w in self.cfg.memory_windows_s},
            calibration=self._calibration(now_event) if self.cfg.steer == "lift" else {},
        )
        self._report_pace(now_event - day_start, spent_today)
        decided_at = datetime.now(UTC)
        as_of = datetime.fromtimestamp(now_event, UTC)
        decisions = [
            self._adjustment(cd, round_no, decided_at, as_of, spent_today) for cd in optimizer.step(inp)
        ]
        self._publish(decisions)
        # Controller state moves on only once the decisions are acknowledged (live) or recorded.
        state = optimizer.dump_state()
        if state:
            self.redis.hset(state_key, mapping=state)  # type: ignore[arg-type]
        self.metrics.rounds.inc()
        self.metrics.last_round.set(time.time())
        return decisions

    def _report_pace(self, seconds_into_day: float, spent_today: Mapping[str, float]) -> None:
        """Spend so far against an even plan, per campaign (a gauge)."""
        for c in self.scenario.campaigns:
            plan_so_far = c.daily_budget * seconds_into_day / DAY_S
            spent = spent_today.get(c.campaign_id, 0.0)
            self.metrics.budget_pace.labels(c.campaign_id).set(spent / plan_so_far if plan_so_far > 0 else 0)

    def _adjustment(
        self,
        cd: ChannelDecision,
        round_no: int,
        decided_at: datetime,
        as_of: datetime,
        spent_today: Mapping[str, float],
    ) -> BidAdjustment:
        """One decision as the event the scheduler applies; counted in the metrics."""
        c = self.scenario.campaign(cd.campaign_id)
        d = cd.decision
        audit = DecisionAudit(self.cfg.mode == "dry_run", spent_today.get(cd.campaign_id, 0.0))
        adj = bid_adjustment(cd, c, round_no, decided_at, as_of, audit)
        self.metrics.decisions.labels(cd.campaign_id, cd.channel, d.reason).inc()
        self.metrics.bid.labels(cd.campaign_id, cd.channel).set(d.new_bid)
        if d.observed is not None:
            self.metrics.observed.labels(cd.campaign_id, cd.channel, c.target_kind).set(d.observed)
        return adj

    def _publish(self, decisions: list[BidAdjustment]) -> None:
        producer = self._producer_or_none()
        if producer is not None:
            failures: list[str] = []

            def on_delivery(err: Any, msg: Any) -> None:
                if err is not None:
                    failures.append(str(err))

            for adj in decisions:
                # Key = campaign and channel: compaction keeps the latest decision of each.
                producer.produce(
                    self.cfg.topic,
                    encode(adj),
                    f"{adj.campaign_id}:{adj.channel}".encode(),
                    on_delivery=on_delivery,
                )
            remaining = producer.flush(30)
            if failures or remaining:
                raise RuntimeError(f"bid adjustments not acknowledged: {failures[:3]} ({remaining} pending)")
            self.published += len(decisions)
            self.metrics.published.inc(len(decisions))
        if self.cfg.mode == "live":
            # Only after the broker acknowledged them do the decisions become the current bids.
            mapping = {f"{a.campaign_id}|{a.channel}": a.new_bid for a in decisions}
            if mapping:
                self.redis.hset(self.keys.bids(), mapping=mapping)  # type: ignore[arg-type]
        if decisions:
            pipe = self.redis.pipeline(transaction=False)
            pipe.lpush(self._key("decisions"), *[a.model_dump_json() for a in reversed(decisions)])
            pipe.ltrim(self._key("decisions"), 0, DECISION_LOG_LEN - 1)
            pipe.execute()
        self.redis.hset(
            self.keys.optimizer(), mapping={"last_round_at": time.time(), "published": self.published}
        )
        log.info(
            "control round",
            extra={
                "decisions": len(decisions),
                "mode": self.cfg.mode,
                "moved": sum(1 for a in decisions if a.new_bid != a.old_bid),
            },
        )

    def run_forever(self, interval_s: float, should_stop: Any = lambda: False) -> None:
        next_at = time.monotonic()
        while not should_stop():
            if time.monotonic() >= next_at:
                try:
                    self.run_round()
                except redis.RedisError:
                    log.exception("control round failed: Redis unavailable; retrying next round")
                next_at += interval_s
            time.sleep(min(0.2, max(0.0, next_at - time.monotonic())))


def new_instance_id() -> str:
    return uuid.uuid4().hex[:8]
