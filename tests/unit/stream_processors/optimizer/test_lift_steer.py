"""Lift-calibrated credit (lift_steer.py): k from the lift interval, shrunk toward 1, applied to the
attributed figures before the controller reads them."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from stream_processors.lift import GROUPS, GroupFigures, LiftEstimate, lift_field
from stream_processors.optimizer.controller import (
    BidOptimizer,
    CampaignSpec,
    ChannelFigures,
    ControlPolicy,
    RoundInput,
)
from stream_processors.optimizer.lift_steer import (
    DAY_S,
    NO_CALIBRATION,
    LiftSteerPolicy,
    calibrated_figures,
    calibration,
    calibrations_of,
    factors_of,
    trailing_window,
)
from stream_processors.optimizer.pacing import PacingPolicy

POLICY = LiftSteerPolicy()


def _estimate(incremental: float, half_width: float, held_out_users: int = 1000) -> LiftEstimate:
    e = GroupFigures(users=9 * held_out_users)
    h = GroupFigures(users=held_out_users)
    ci = (incremental - half_width, incremental + half_width)
    return LiftEstimate("c1", e, h, 0.0, (0.0, 0.0), incremental, ci, 0, None, None)


def test_a_tight_interval_gives_the_measured_ratio() -> None:
    # 70,000 incremental of 100,000 attributed, +-1,000: k is the ratio, barely shrunk
    cal = calibration(_estimate(70_000.0, 1_000.0), 100_000.0, POLICY)
    assert cal.raw == pytest.approx(0.7)
    assert cal.factor == pytest.approx(0.7, abs=0.002)
    assert cal.weight > 0.99


def test_a_wide_interval_is_shrunk_toward_one() -> None:
    # the same point estimate with +-60% of the attributed GMV: se 0.306, as wide as the prior
    cal = calibration(_estimate(70_000.0, 60_000.0), 100_000.0, POLICY)
    assert cal.standard_error == pytest.approx(60_000 / 1.959964 / 100_000, rel=1e-4)
    assert 0.4 < cal.weight < 0.6
    assert 0.8 < cal.factor < 0.9
    # wider still: k moves less
    wider = calibration(_estimate(70_000.0, 200_000.0), 100_000.0, POLICY)
    assert cal.factor < wider.factor < 1.0


def test_k_is_bounded_and_no_evidence_is_no_calibration() -> None:
    # a negative incremental GMV (noise) cannot zero a campaign's credit: the floor holds
    assert calibration(_estimate(-50_000.0, 1_000.0), 100_000.0, POLICY).factor == POLICY.k_min
    assert calibration(_estimate(500_000.0, 1_000.0), 100_000.0, POLICY).factor == POLICY.k_max
    assert calibration(None, 100_000.0, POLICY) is NO_CALIBRATION
    assert calibration(_estimate(70_000.0, 1_000.0), 0.0, POLICY) is NO_CALIBRATION
    # too few held-out users for the normal approximation: no calibration, however tight
    few = _estimate(70_000.0, 10.0, held_out_users=POLICY.min_held_out_users - 1)
    assert calibration(few, 100_000.0, POLICY) is NO_CALIBRATION


def _lift_fields(campaign: str, exposed: tuple[int, int, int], held: tuple[int, int, int]) -> dict[str, int]:
    """(users, gmv, gmv_sq) per group; checkouts left at 0."""
    out: dict[str, int] = {}
    for group, (users, gmv, sq) in zip(GROUPS, (exposed, held), strict=True):
        out[lift_field(campaign, group, "users")] = users
        out[lift_field(campaign, group, "gmv")] = gmv
        out[lift_field(campaign, group, "gmv_sq")] = sq
    return out


def test_calibrations_read_the_stored_lift_fields_against_attributed_gmv() -> None:
    # 9,000 exposed users bought 900,000 minor (100 each), 1,000 held-out 30,000 (30 each): the
    # incremental GMV is 9,000 x 70 = 630,000 minor = 6,300 major; attributed: 9,000 major
    # (sums of squares 0: the tightest interval, so k is the point estimate)
    fields = _lift_fields("c1", (9_000, 900_000, 0), (1_000, 30_000, 0))
    fields |= {lift_field("c1", g, "checkouts"): 100 for g in GROUPS}  # both groups bought
    # attributed GMV and spend on two channels, read through figures.campaign_figures
    fields |= {"c|c1|feed|last|gmv": 600_000, "c|c1|kol|last|gmv": 300_000, "c|c1|feed|spend": 50_000}
    cals = calibrations_of(fields, ["c1", "c2"], LiftSteerPolicy(prior_sd=10.0))
    assert cals["c1"].raw == pytest.approx(6_300 / 9_000)
    assert cals["c1"].factor == pytest.approx(0.7, abs=0.01)
    assert cals["c2"] is NO_CALIBRATION  # no lift figures at all
    assert factors_of(cals) == {"c1": cals["c1"].factor}


def test_the_trailing_window_follows_the_injected_clock() -> None:
    now = 1_800_000_000.0
    assert trailing_window(now, POLICY) == (now - 7 * DAY_S, now + 1)
    # a run that started a day ago reads from its start
    assert trailing_window(now, POLICY, start=now - DAY_S) == (now - DAY_S, now + 1)
    assert trailing_window(now + 3600, LiftSteerPolicy(window_s=2 * DAY_S)) == (
        now + 3600 - 2 * DAY_S,
        now + 3601,
    )


def test_calibrated_figures_scale_credit_not_spend_or_carts() -> None:
    figs: Mapping[tuple[str, str], ChannelFigures] = {
        ("c1", "feed"): ChannelFigures(500.0, 10.0, 2_000.0, 40.0, 450.0),
        ("c2", "feed"): ChannelFigures(100.0, 1.0, 100.0, 5.0),
    }
    out = calibrated_figures(figs, {"c1": 0.5})
    assert out[("c1", "feed")] == ChannelFigures(500.0, 5.0, 1_000.0, 40.0, 450.0)
    assert out[("c2", "feed")] is figs[("c2", "feed")]


def _spec(kind: str) -> CampaignSpec:
    target = 100.0 if kind == "cpa" else 3.0
    return CampaignSpec("c1", kind, target, 100_000.0, 50.0, 800.0, ("feed",), {"feed": 200.0})  # type: ignore[arg-type]


def _round(calibration: Mapping[str, float], kind: str) -> float:
    """The bid the optimizer moves to after one learned round whose attributed efficiency is exactly
    on target (CPA 100 or ROAS 3), with the given calibration."""
    window = {("c1", "feed"): ChannelFigures(2_000.0, 20.0, 6_000.0, 80.0)}
    inp = RoundInput(
        seconds_into_day=43_200.0,
        window=window,
        spent_today={"c1": 2_000.0},
        recent_spend={"c1": 80.0},
        recent_s=1800.0,
        bids={("c1", "feed"): 200.0},
        long_window=window,
        calibration=calibration,
    )
    opt = BidOptimizer([_spec(kind)], ControlPolicy(), PacingPolicy())
    (d,) = opt.step(inp)
    return d.decision.new_bid


@pytest.mark.parametrize("kind", ["cpa", "roas"])
def test_the_optimizer_bids_down_when_lift_says_half_the_credit_is_not_caused(kind: str) -> None:
    on_target = _round({}, kind)
    assert _round({"c1": 1.0}, kind) == on_target  # k = 1 is the attributed mode exactly
    assert _round({"c1": 0.5}, kind) < on_target
    assert _round({"c2": 0.5}, kind) == on_target  # another campaign's k changes nothing here
