"""The live optimizer's lift steering (OptimizerConfig.steer = "lift"): k read from the stored lift
and attributed fields over the lift span (lift_steer.lift_span), on an injected clock (the
watermark `now`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest
import redis

from producers.scenario import load_scenario
from stream_processors.lift import GROUPS, lift_field
from stream_processors.optimizer.controller import ChannelFigures, ControlPolicy
from stream_processors.optimizer.lift_steer import LiftSteerPolicy
from stream_processors.optimizer.service import OptimizerConfig, OptimizerService
from stream_processors.store.redis_lua import Keys

SEEDS = Path(__file__).resolve().parents[4] / "seeds"
HOUR = 3600
DAY = 24 * HOUR
NOW = 1_800_000_000 // HOUR * HOUR


class _Buckets:
    """A FigureSource of hourly buckets (only what the service reads): a window sums its buckets."""

    bucket_s = HOUR
    partitions = 1

    def __init__(self, by_bucket: Mapping[int, Mapping[str, int]]) -> None:
        self.by_bucket = dict(by_bucket)  # a test may add to a bucket later (its checkouts arriving)
        self.reads = 0

    def window(self, start: float, end: float, partitions: Iterable[int] | None = None) -> dict[str, int]:
        self.reads += 1
        out: dict[str, int] = {}
        for bucket, fields in self.by_bucket.items():
            if start <= bucket < end:
                for name, v in fields.items():
                    out[name] = out.get(name, 0) + v
        return out


def _campaign_fields(
    cid: str, gmv_major: int, exposed: tuple[int, int, int], held: tuple[int, int, int]
) -> dict[str, int]:
    """Attributed spend and GMV on one channel, and the lift groups' (users, gmv, gmv_sq) in minor units."""
    out = {f"c|{cid}|feed|spend": 50_000, f"c|{cid}|feed|last|gmv": gmv_major * 100}
    for group, (users, gmv, sq) in zip(GROUPS, (exposed, held), strict=True):
        out[lift_field(cid, group, "users")] = users
        out[lift_field(cid, group, "gmv")] = gmv
        out[lift_field(cid, group, "gmv_sq")] = sq
        out[lift_field(cid, group, "checkouts")] = users // 10  # both groups bought: variances of their own
    return out


def _service(reader: _Buckets, steer: str, window_s: float, settle_s: float = DAY) -> OptimizerService:
    client = redis.Redis(host="127.0.0.1", port=1)  # connects lazily: never used here
    cfg = OptimizerConfig(
        topic="t.bid_adjustments",
        window_s=HOUR,
        policy=ControlPolicy(),
        mode="dry_run",
        steer=steer,  # type: ignore[arg-type]
        lift=LiftSteerPolicy(window_s=window_s, settle_s=settle_s, prior_sd=10.0),
    )
    return OptimizerService(load_scenario(SEEDS), reader, client, Keys("t"), None, cfg)  # type: ignore[arg-type]


def test_lift_steering_reads_k_over_the_trailing_window_of_the_clock() -> None:
    cid = load_scenario(SEEDS).campaigns[0].campaign_id
    # an hour ago: 9,000 exposed users bought 100 each (minor), 1,000 held-out 30 each: incremental
    # 9,000 x 70 = 630,000 minor = 6,300 of 9,000 attributed -> k 0.7
    recent = _campaign_fields(cid, 9_000, (9_000, 900_000, 0), (1_000, 30_000, 0))
    # five days ago: the same campaign with no lift at all (k would be ~0.1 with it)
    old = _campaign_fields(cid, 90_000, (9_000, 900_000, 0), (1_000, 900_000, 0))
    reader = _Buckets({NOW - HOUR: recent, NOW - 5 * DAY: old})
    # a run younger than its span (nothing in the hour before NOW - 3 days): the span runs to now
    k = _service(reader, "lift", 2 * DAY)._calibration(NOW)
    assert k[cid] == pytest.approx(0.7, abs=0.01)
    assert set(k) == {cid}  # campaigns without lift figures keep k = 1 (left out)
    # a span long enough to take in the old bucket: its attributed GMV and null lift pull k down
    assert _service(reader, "lift", 4 * DAY)._calibration(NOW)[cid] < 0.3


def test_a_cohorts_lift_fields_are_read_afresh_as_its_checkouts_arrive() -> None:
    """The review's repro: a cohort bucket past the figures' finality kept its first lift fields."""
    cid = load_scenario(SEEDS).campaigns[0].campaign_id
    cohort = NOW - 2 * HOUR  # older than final_after_s: its attributed figures are cached
    # first read: the exposed group bought no more than the held-out one (k at the floor, 0.2)
    reader = _Buckets({cohort: _campaign_fields(cid, 9_000, (9_000, 270_000, 0), (1_000, 30_000, 0))})
    svc = _service(reader, "lift", 2 * DAY)
    assert svc._calibration(NOW)[cid] == pytest.approx(0.2)
    # the cohort's later checkouts arrive: the exposed group's GMV grows to 100 per user (k 0.7)
    reader.by_bucket[cohort] = _campaign_fields(cid, 9_000, (9_000, 900_000, 0), (1_000, 30_000, 0))
    fresh = _service(reader, "lift", 2 * DAY)._calibration(NOW + 900)[cid]
    assert fresh == pytest.approx(0.7, abs=0.01)
    # k is read afresh once per refresh_s (900 s) of event time: until then the round reuses it
    assert svc._calibration(NOW + 60)[cid] == pytest.approx(0.2)
    assert svc._calibration(NOW + 900)[cid] == fresh


def _steady_state(run_days: int, spread_days: int, true_k: float) -> _Buckets:
    """One campaign, one cohort an hour (900 exposed, 100 held-out users), each cohort's attributed
    GMV (1,000 major) and its incremental GMV (true_k x that) spread evenly over `spread_days` after
    its exposure, censored at NOW; organic GMV of 5 minor per user in both groups."""
    cid = load_scenario(SEEDS).campaigns[0].campaign_id
    spread, start = spread_days * DAY, NOW - run_days * DAY
    buckets: dict[int, dict[str, int]] = {}
    for cohort in range(start, NOW, HOUR):
        done = min(1.0, (NOW - cohort) / spread)
        incremental = true_k * 100_000 * done  # minor
        exposed_gmv, held_gmv = 900 * 5 + incremental, 100 * 5
        # sums of squares 0: the tightest interval (k is the point estimate, not shrunk)
        fields = _campaign_fields(
            cid,
            0,
            (900, round(exposed_gmv), 0),
            (100, held_gmv, 0),
        )
        # the attributed GMV checked out in this hour: every cohort of the last `spread` adds its share
        fields[f"c|{cid}|feed|last|gmv"] = round(100_000 * min(cohort - start + HOUR, spread) / spread)
        buckets[cohort] = fields
    return _Buckets(buckets)


def test_k_of_a_steady_state_is_the_true_ratio() -> None:
    """Constant hourly cohorts, effects spread over 3 days, a run of 20 days (> 2 x the 7-day span):
    the settled cohorts against the attributed GMV of the same span give the true k."""
    cid = load_scenario(SEEDS).campaigns[0].campaign_id
    reader = _steady_state(20, 3, 0.6)
    k = _service(reader, "lift", 7 * DAY, settle_s=3 * DAY)._calibration(NOW)[cid]
    assert k == pytest.approx(0.6, rel=0.02)
    # settling less than the spread misses the span's late effects: low by (S - d)^2 / (2 S W)
    k_short = _service(reader, "lift", 7 * DAY, settle_s=2 * DAY)._calibration(NOW)[cid]
    assert k_short == pytest.approx(0.6 * (1 - 1 / 42), rel=0.02)
    # the trailing window of old (settle 0): cohorts censored at now against every attributed GMV
    k_trailing = _service(reader, "lift", 7 * DAY, settle_s=0.0)._calibration(NOW)[cid]
    assert k_trailing == pytest.approx(0.6 * (7 - 1.5) / 7, rel=0.02)


def test_attributed_steering_keeps_no_lift_fields() -> None:
    cid = load_scenario(SEEDS).campaigns[0].campaign_id
    reader = _Buckets({NOW - HOUR: _campaign_fields(cid, 9_000, (10, 10, 10), (10, 0, 0))})
    svc = _service(reader, "attributed", 7 * 24 * HOUR)
    assert svc._bucket(NOW - HOUR, NOW) == {(cid, "feed"): ChannelFigures(500.0, 0.0, 9_000.0, 0.0)}
