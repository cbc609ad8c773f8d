"""The live optimizer's lift steering (OptimizerConfig.steer = "lift"): k read from the stored lift
and attributed fields over the trailing lift window, on an injected clock (the watermark `now`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest
import redis

from producers.scenario import load_scenario
from stream_processors.lift import GROUPS, lift_field
from stream_processors.optimizer.controller import ControlPolicy
from stream_processors.optimizer.lift_steer import LiftSteerPolicy
from stream_processors.optimizer.service import OptimizerConfig, OptimizerService
from stream_processors.store.redis_lua import Keys

SEEDS = Path(__file__).resolve().parents[4] / "seeds"
HOUR = 3600
NOW = 1_800_000_000 // HOUR * HOUR


class _Buckets:
    """A FigureSource of fixed hourly buckets (only what the service reads of one)."""

    bucket_s = HOUR
    partitions = 1

    def __init__(self, by_bucket: Mapping[int, Mapping[str, int]]) -> None:
        self.by_bucket = by_bucket
        self.reads = 0

    def window(self, start: float, end: float, partitions: Iterable[int] | None = None) -> dict[str, int]:
        self.reads += 1
        return dict(self.by_bucket.get(int(start), {}))


def _campaign_fields(
    cid: str, gmv_major: int, exposed: tuple[int, int, int], held: tuple[int, int, int]
) -> dict[str, int]:
    """Attributed spend and GMV on one channel, and the lift groups' (users, gmv, gmv_sq) in minor units."""
    out = {f"c|{cid}|feed|spend": 50_000, f"c|{cid}|feed|last|gmv": gmv_major * 100}
    for group, (users, gmv, sq) in zip(GROUPS, (exposed, held), strict=True):
        out[lift_field(cid, group, "users")] = users
        out[lift_field(cid, group, "gmv")] = gmv
        out[lift_field(cid, group, "gmv_sq")] = sq
    return out


def _service(reader: _Buckets, steer: str, window_s: float) -> OptimizerService:
    client = redis.Redis(host="127.0.0.1", port=1)  # connects lazily: never used here
    cfg = OptimizerConfig(
        topic="t.bid_adjustments",
        window_s=HOUR,
        policy=ControlPolicy(),
        mode="dry_run",
        steer=steer,  # type: ignore[arg-type]
        lift=LiftSteerPolicy(window_s=window_s, prior_sd=10.0),
    )
    return OptimizerService(load_scenario(SEEDS), reader, client, Keys("t"), None, cfg)  # type: ignore[arg-type]


def test_lift_steering_reads_k_over_the_trailing_window_of_the_clock() -> None:
    cid = load_scenario(SEEDS).campaigns[0].campaign_id
    # an hour ago: 9,000 exposed users bought 100 each (minor), 1,000 held-out 30 each: incremental
    # 9,000 x 70 = 630,000 minor = 6,300 of 9,000 attributed -> k 0.7
    recent = _campaign_fields(cid, 9_000, (9_000, 900_000, 9_000 * 40_000), (1_000, 30_000, 1_000 * 3_600))
    # three days ago: the same campaign with no lift at all (k would be ~0.1 with it)
    old = _campaign_fields(cid, 90_000, (9_000, 900_000, 9_000 * 40_000), (1_000, 900_000, 1_000 * 3_600_000))
    reader = _Buckets({NOW - HOUR: recent, NOW - 3 * 24 * HOUR: old})
    k = _service(reader, "lift", 2 * 24 * HOUR)._calibration(NOW)
    assert k[cid] == pytest.approx(0.7, abs=0.01)
    assert set(k) == {cid}  # campaigns without lift figures keep k = 1 (left out)
    # a window long enough to take in the old bucket: its attributed GMV and null lift pull k down
    assert _service(reader, "lift", 4 * 24 * HOUR)._calibration(NOW)[cid] < 0.3


def test_attributed_steering_keeps_no_lift_fields() -> None:
    cid = load_scenario(SEEDS).campaigns[0].campaign_id
    reader = _Buckets({NOW - HOUR: _campaign_fields(cid, 9_000, (10, 10, 10), (10, 0, 0))})
    svc = _service(reader, "attributed", 7 * 24 * HOUR)
    assert svc._bucket(NOW - HOUR, NOW).lift == {}
    assert svc._bucket(NOW - HOUR, NOW).figures[(cid, "feed")].gmv == 9_000.0
