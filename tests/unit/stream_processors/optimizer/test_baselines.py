from __future__ import annotations

import math

import pytest

from stream_processors.optimizer.baselines import (
    PacingController,
    PidController,
    PidGains,
    PidState,
    log_error,
    make_controller,
    pid_step,
)
from stream_processors.optimizer.controller import (
    BidOptimizer,
    CampaignSpec,
    ChannelFigures,
    ControlPolicy,
    RoundInput,
    guarded_bid,
)
from stream_processors.optimizer.pacing import PacingPolicy, plan_fraction

BAND = math.log(1.10)
GUARD = ControlPolicy()


def _spec(kind: str = "cpa", target: float = 50.0, budget: float = 1e9) -> CampaignSpec:
    return CampaignSpec(
        "c1",
        kind,  # type: ignore[arg-type]
        target,
        budget,
        10.0,
        400.0,
        ("search", "feed"),
        {"search": 80.0, "feed": 40.0},
    )


def test_guarded_bid_limits_the_step_then_the_floor_and_cap() -> None:
    assert guarded_bid(100.0, 400.0, 10.0, 300.0, 0.25) == pytest.approx(125.0)
    assert guarded_bid(100.0, 10.0, 10.0, 300.0, 0.25) == pytest.approx(80.0)
    assert guarded_bid(290.0, 1000.0, 10.0, 300.0, 0.25) == 300.0
    assert guarded_bid(11.0, 1.0, 10.0, 300.0, 0.25) == 10.0
    assert guarded_bid(100.0, 105.0, 10.0, 300.0, 0.25) == 105.0


def test_pid_step_response_on_a_toy_plant_settles() -> None:
    # CPA = k * bid^1.4 (the elasticity the optimizer assumes): the target needs bid* = 100
    k, e, target = 50.0 / 100.0**1.4, 1.4, 50.0
    b0, bid = 60.0, 60.0
    gains, st = PidGains(kp=0.2, ki=0.08), PidState()
    errors = []
    for _ in range(80):
        err = math.log(target / (k * bid**e))
        errors.append(err)
        phi = pid_step(st, err, gains)
        bid = guarded_bid(bid, b0 * math.exp(phi), 10.0, 400.0, GUARD.max_step)
    assert abs(errors[0]) > BAND  # it starts out of band ...
    assert all(abs(x) <= BAND for x in errors[30:])  # ... and settles within +-10%
    assert abs(errors[-1]) < 0.01  # the integral removes the steady-state error
    assert bid == pytest.approx(100.0, rel=0.01)


def test_pid_does_not_wind_up_against_a_guardrail() -> None:
    st = PidState()
    pid_step(st, 0.5, PidGains(kp=0.1, ki=0.1), saturated=1)
    assert st.integral == 0.0  # held at the cap: pushing further up is not integrated
    pid_step(st, -0.5, PidGains(kp=0.1, ki=0.1), saturated=1)
    assert st.integral == -0.5  # away from the limit is


def test_log_error_is_symmetric_and_signed() -> None:
    assert log_error("cpa", 50.0, ChannelFigures(spend=500.0, conversions=10.0)) == pytest.approx(0.0)
    up = log_error("cpa", 50.0, ChannelFigures(spend=500.0, conversions=20.0))
    down = log_error("cpa", 50.0, ChannelFigures(spend=2000.0, conversions=20.0))
    assert up is not None and down is not None and up == pytest.approx(-down) and up > 0
    assert log_error("roas", 4.0, ChannelFigures(spend=100.0, gmv=800.0)) == pytest.approx(math.log(2))
    assert log_error("cpa", 50.0, ChannelFigures(spend=100.0)) is None


def _plant_input(spec: CampaignSpec, bids: dict[tuple[str, str], float], k: float) -> RoundInput:
    """A window whose CPA is k * (mean bid)^1.4, with plenty of conversions."""
    mean_bid = math.exp(sum(math.log(b) for b in bids.values()) / len(bids))
    cpa = k * mean_bid**1.4
    window = {key: ChannelFigures(spend=cpa * 50.0, conversions=50.0, gmv=50.0 * 200.0) for key in bids}
    return RoundInput(
        seconds_into_day=12 * 3600.0,
        window=window,
        spent_today={},
        recent_spend={},
        recent_s=3600.0,
        bids=bids,
    )


def test_pid_controller_moves_every_channel_toward_the_target_within_guardrails() -> None:
    spec = _spec()
    pid = PidController([spec], PidGains(kp=0.2, ki=0.08), GUARD)
    bids = {("c1", ch): b for ch, b in spec.start_bids.items()}
    k = 50.0 / 100.0**1.4  # on target at a geometric-mean bid of 100; the start is ~57
    for _ in range(60):
        decisions = pid.step(_plant_input(spec, bids, k))
        for d in decisions:
            assert d.decision.new_bid <= d.old_bid * (1 + GUARD.max_step) + 1e-9
            assert d.decision.new_bid >= d.old_bid / (1 + GUARD.max_step) - 1e-9
            assert spec.bid_floor <= d.decision.new_bid <= spec.bid_cap
            bids[(d.campaign_id, d.channel)] = d.decision.new_bid
    # one factor for the campaign: the channels keep their starting ratio
    assert bids[("c1", "search")] / bids[("c1", "feed")] == pytest.approx(2.0)
    mean_bid = math.sqrt(bids[("c1", "search")] * bids[("c1", "feed")])
    assert mean_bid == pytest.approx(100.0, rel=0.05)


def test_pid_controller_holds_while_learning_and_when_exhausted() -> None:
    spec = _spec(budget=100.0)
    pid = PidController([spec], PidGains(), GUARD)
    bids = {("c1", ch): b for ch, b in spec.start_bids.items()}
    few = RoundInput(
        seconds_into_day=3600.0,
        window={("c1", "search"): ChannelFigures(spend=100.0, conversions=1.0)},
        spent_today={},
        recent_spend={},
        recent_s=3600.0,
        bids=bids,
    )
    assert {d.decision.reason for d in pid.step(few)} == {"learning"}
    assert all(d.decision.new_bid == d.old_bid for d in pid.step(few))
    spent = RoundInput(
        seconds_into_day=3600.0,
        window={},
        spent_today={"c1": 100.0},
        recent_spend={},
        recent_s=3600.0,
        bids=bids,
    )
    assert {d.decision.reason for d in pid.step(spent)} == {"budget_exhausted"}


def _pacing_round(bids: dict[tuple[str, str], float], sid: float, spent: float, recent: float) -> RoundInput:
    return RoundInput(
        seconds_into_day=sid,
        window={},
        spent_today={"c1": spent},
        recent_spend={"c1": recent},
        recent_s=3600.0,
        bids=bids,
    )


def test_pacing_lowers_bids_when_ahead_and_raises_them_back_when_behind() -> None:
    spec = _spec(budget=2400.0)  # an even plan: 100 an hour
    pacer = PacingController([spec], PacingPolicy(), GUARD)
    bids = {("c1", ch): b for ch, b in spec.start_bids.items()}
    start = dict(bids)
    sid = 6 * 3600.0
    assert plan_fraction(sid) == pytest.approx(0.25)
    # ahead of plan: 1200 spent by 06:00 against a plan of 600, at 200 an hour
    for _ in range(3):
        for d in pacer.step(_pacing_round(bids, sid, 1200.0, 200.0)):
            assert d.decision.reason in ("pacing_ahead", "at_floor")
            assert d.decision.new_bid < d.old_bid
            assert d.decision.new_bid >= d.old_bid / (1 + GUARD.max_step) - 1e-9
            bids[(d.campaign_id, d.channel)] = d.decision.new_bid
    low = dict(bids)
    # behind plan: 300 spent by 12:00 against 1200, at 20 an hour: back up, past the start
    for _ in range(8):
        for d in pacer.step(_pacing_round(bids, 12 * 3600.0, 300.0, 20.0)):
            assert d.decision.new_bid >= d.old_bid
            assert d.decision.new_bid <= d.old_bid * (1 + GUARD.max_step) + 1e-9
            assert d.decision.new_bid <= spec.bid_cap
            bids[(d.campaign_id, d.channel)] = d.decision.new_bid
    for key in bids:
        assert bids[key] > low[key]
        assert bids[key] > start[key]  # bid modification both ways, unlike the optimizer's pacing
    assert max(bids.values()) <= spec.bid_cap


def test_make_controller() -> None:
    specs = [_spec()]
    assert isinstance(make_controller("optimizer", specs, GUARD, PacingPolicy()), BidOptimizer)
    assert isinstance(
        make_controller("pid", specs, GUARD, PacingPolicy(), PidGains(0.1, 0.1, 0.0)), PidController
    )
    assert isinstance(make_controller("pacing", specs, GUARD, PacingPolicy()), PacingController)
    with pytest.raises(ValueError):
        make_controller("static", specs, GUARD, PacingPolicy())
