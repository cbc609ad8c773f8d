from __future__ import annotations

from pathlib import Path

import redis

from producers.scenario import load_scenario
from producers.scheduler import AdScheduler
from stream_processors.optimizer.controller import ControlPolicy
from stream_processors.optimizer.service import OptimizerConfig, OptimizerService
from stream_processors.store.redis_lua import FigureReader, Keys

SEEDS = Path(__file__).resolve().parents[4] / "seeds"


def test_dry_run_never_builds_a_producer() -> None:
    # redis.Redis() connects lazily: nothing here talks to a server.
    client = redis.Redis(host="127.0.0.1", port=1)
    keys = Keys("t")
    scenario = load_scenario(SEEDS)
    cfg = OptimizerConfig(topic="t.bid_adjustments", window_s=3600.0, policy=ControlPolicy(), mode="dry_run")
    svc = OptimizerService(
        scenario, FigureReader(client, keys, 1, 60), client, keys, {"bootstrap.servers": "127.0.0.1:1"}, cfg
    )
    assert svc._producer_or_none() is None


def test_scheduler_ignores_dry_run_decisions() -> None:
    from datetime import UTC, datetime

    from schemas.decisions import BidAdjustment

    scenario = load_scenario(SEEDS)
    sched = AdScheduler(scenario)
    c = scenario.campaigns[0]
    ch = next(iter(c.channels))
    now = datetime.now(UTC)
    adj = BidAdjustment(
        decision_id="x:1",
        campaign_id=c.campaign_id,
        channel=ch,
        decided_at=now,
        as_of=now,
        round=1,
        old_bid=c.channels[ch],
        new_bid=c.bid_cap,
        reason="toward_target",
        target_kind=c.target_kind,
        target=c.target,
        dry_run=True,
    )
    assert sched.apply(adj) is False
    assert sched.bid(c.campaign_id, ch) == c.channels[ch]
