from __future__ import annotations

import json

from stream_processors.optimizer.controller import (
    BidOptimizer,
    CampaignSpec,
    ChannelFigures,
    ControlPolicy,
    RoundInput,
)
from stream_processors.optimizer.pacing import PacingPolicy

POLICY = ControlPolicy()


def _optimizer() -> BidOptimizer:
    spec = CampaignSpec(
        "c1", "cpa", 100.0, 1000.0, 50.0, 800.0, ("feed", "kol"), {"feed": 200.0, "kol": 300.0}
    )
    return BidOptimizer([spec], POLICY, PacingPolicy())


def _input(**kw: object) -> RoundInput:
    base: dict[str, object] = dict(
        seconds_into_day=43_200.0,
        window={
            ("c1", "feed"): ChannelFigures(2000.0, 10.0, 0.0),
            ("c1", "kol"): ChannelFigures(500.0, 10.0, 0.0),
        },
        spent_today={"c1": 500.0},
        recent_spend={"c1": 20.0},
        recent_s=1800.0,
        bids={("c1", "feed"): 200.0, ("c1", "kol"): 300.0},
    )
    base.update(kw)
    return RoundInput(**base)  # type: ignore[arg-type]


def test_state_round_trips_through_json_and_restart_continues() -> None:
    a = _optimizer()
    a.step(_input())
    raw = {k: v.encode() for k, v in json.loads(json.dumps(a.dump_state())).items()}
    b = _optimizer()
    b.load_state(raw)
    assert b.dump_state() == a.dump_state()
    da, db = a.step(_input()), b.step(_input())
    assert [d.decision for d in da] == [d.decision for d in db]


def test_override_and_pause() -> None:
    out = _optimizer().step(_input(overrides={("c1", "kol"): 5000.0}))
    kol = next(d for d in out if d.channel == "kol")
    assert kol.decision.reason == "manual_override" and kol.decision.new_bid == 800.0
    out = _optimizer().step(_input(paused=["c1"]))
    assert {d.decision.reason for d in out} == {"paused"}
    assert all(d.decision.new_bid == d.old_bid for d in out)


def _spent_500_by(seconds_into_day: float, recent_spend: float) -> RoundInput:
    """Campaign c1 (budget 1000) has spent 500 today, `recent_spend` of it in the last hour."""
    return RoundInput(
        seconds_into_day=seconds_into_day,
        window={},
        spent_today={"c1": 500.0},
        recent_spend={"c1": recent_spend},
        recent_s=3600.0,
        bids={("c1", "feed"): 200.0},
    )


def test_the_optimizer_remembers_when_pacing_last_bound() -> None:
    spec = CampaignSpec("c1", "cpa", 100.0, 1000.0, 50.0, 800.0, ("feed",), {"feed": 200.0})
    opt = BidOptimizer([spec], POLICY, PacingPolicy())
    # half the day's budget gone in the first hour: pacing must hold the bid down
    opt.step(_spent_500_by(3600.0, recent_spend=500.0))
    assert opt.pacing_states["c1"].multiplier < 1.0
    assert opt.pacing_states["c1"].rounds_since_bound == 0
    slow = _spent_500_by(7200.0, recent_spend=0.0)
    for _ in range(3):
        opt.step(slow)
    assert opt.pacing_states["c1"].multiplier == 1.0
    assert opt.pacing_states["c1"].rounds_since_bound == 3
    from stream_processors.optimizer.pacing import PacingState

    assert PacingState.from_json(opt.pacing_states["c1"].to_json()).rounds_since_bound == 3
    assert PacingState.from_json('{"multiplier": 0.5}').rounds_since_bound is None  # state from before
