from __future__ import annotations

import pytest

from stream_processors.optimizer.pacing import DAY_S, PacingPolicy, PacingState, pace, plan_fraction

SHAPE = tuple([0.5] * 8 + [1.5] * 16)


def test_plan_fraction_even_and_shaped() -> None:
    assert plan_fraction(0.0) == 0.0
    assert plan_fraction(DAY_S / 2) == pytest.approx(0.5)
    assert plan_fraction(DAY_S) == pytest.approx(1.0)
    assert plan_fraction(8 * 3600.0, SHAPE) == pytest.approx(4 / 28)


def _pace_at_noon(state: PacingState, spent_today: float, recent_spend: float) -> float:
    """The multiplier pacing sets at noon on the shaped plan, half an hour of recent spend."""
    policy = PacingPolicy(hour_shape=SHAPE)
    decision = pace(
        state,
        policy,
        budget=1000.0,
        spent_today=spent_today,
        seconds_into_day=DAY_S / 2,
        recent_spend=recent_spend,
        recent_s=1800.0,
    )
    return decision.multiplier


def test_overspending_lowers_multiplier_underspending_raises_to_one() -> None:
    # noon, more than half the budget already gone and spending fast: slow down
    assert _pace_at_noon(PacingState(), spent_today=600.0, recent_spend=60.0) < 1.0
    low = PacingState(multiplier=0.3)
    assert 0.3 < _pace_at_noon(low, spent_today=100.0, recent_spend=1.0) <= 1.0
    assert PacingState.from_json(low.to_json()) == low


def test_multiplier_bounded() -> None:
    policy = PacingPolicy()
    state = PacingState()
    for _ in range(50):
        pace(
            state,
            policy,
            budget=1000.0,
            spent_today=999.0,
            seconds_into_day=3600.0,
            recent_spend=500.0,
            recent_s=1800.0,
        )
    assert state.multiplier == pytest.approx(policy.min_multiplier)


def test_just_past_midnight_yesterdays_evening_is_not_overspending() -> None:
    # 00:30, the last hour's spend half from 23:30-24:00 (heavy) and half from 00:00-00:30 (light):
    # a spend rate on the plan's shape must not read as running ahead
    shape = tuple([0.4] + [1.0] * 22 + [1.6])
    policy = PacingPolicy(hour_shape=shape)
    budget = 2400.0
    day_mass = sum(shape)
    recent = budget / day_mass * (0.5 * 1.6 + 0.5 * 0.4)
    plan = budget * 0.5 * 0.4 / day_mass
    d = pace(
        PacingState(),
        policy,
        budget=budget,
        spent_today=plan,
        seconds_into_day=1800.0,
        recent_spend=recent,
        recent_s=3600.0,
    )
    assert d.multiplier == pytest.approx(1.0)
    assert d.headroom is not None and d.headroom == pytest.approx(1.0, rel=0.02)
