"""The lift estimator on hand-computed inputs: means, sample variances, intervals, iROAS, the
minimum group size, the variance floor of a group without a buyer, and the int64-safe GMV squares."""

from __future__ import annotations

import math
from statistics import variance

import pytest

from stream_processors.lift import (
    GMV_SQ_CAP_MINOR,
    GROUPS,
    MIN_GROUP_USERS,
    Group,
    GroupFigures,
    gmv_square,
    gmv_squares_minor,
    lift_estimates,
    lift_field,
    lift_groups,
    sample_variance,
    z_of,
)
from stream_processors.money import MINOR


def group_fields(campaign: str, group: Group, checkouts: list[int], gmv: list[int]) -> dict[str, int]:
    """The five stored sums of a group whose users counted these checkouts and GMV (minor units;
    `gmv_sq` squares whole major units, as stored)."""
    return {
        lift_field(campaign, group, "users"): len(checkouts),
        lift_field(campaign, group, "checkouts"): sum(checkouts),
        lift_field(campaign, group, "checkouts_sq"): sum(n * n for n in checkouts),
        lift_field(campaign, group, "gmv"): sum(gmv),
        lift_field(campaign, group, "gmv_sq"): sum((g // 100) ** 2 for g in gmv),
    }


def padded(values: list[int], users: int) -> list[int]:
    """Per-user values: these buyers, then users who bought nothing."""
    return values + [0] * (users - len(values))


Z95 = 1.959963984540054
# Exposed: 40 users, three bought 1, 2, 1 times for 259, 599, 139 yuan; held out: 30 users, one bought once for 139.
E_CHECKOUTS, E_GMV = padded([1, 2, 1], 40), padded([25_900, 59_900, 13_900], 40)
H_CHECKOUTS, H_GMV = padded([1], 30), padded([13_900], 30)
FIELDS = {
    **group_fields("c1", "exposed", E_CHECKOUTS, E_GMV),
    **group_fields("c1", "held_out", H_CHECKOUTS, H_GMV),
}


def test_the_estimate_equals_the_hand_computed_difference_of_means_and_its_interval() -> None:
    (est,) = lift_estimates(FIELDS, {"c1": 1000}).values()
    assert est.campaign_id == "c1"
    assert est.exposed == GroupFigures(40, 4, 6, 99_700, 259**2 + 599**2 + 139**2)
    assert est.held_out == GroupFigures(30, 1, 1, 13_900, 139**2)
    # checkouts: means 0.1 and 1/30, sample variances from the per-user values
    assert est.incremental_checkouts == pytest.approx(40 * (0.1 - 1 / 30))
    half = Z95 * 40 * math.sqrt(variance(E_CHECKOUTS) / 40 + variance(H_CHECKOUTS) / 30)
    assert est.incremental_checkouts_ci == pytest.approx((8 / 3 - half, 8 / 3 + half))
    # GMV: means 2492.5 and 1390/3. Each user's square is back from whole major units plus the middle
    # of the sub-unit term (MINOR * g): g^2 + 100 g for these whole-unit amounts.
    assert est.incremental_gmv_minor == pytest.approx(40 * (2492.5 - 1390 / 3))

    def approx_variance(gmv: list[int]) -> float:
        n, total = len(gmv), sum(gmv)
        return (n * sum(g * g + 100 * g for g in gmv) - total * total) / (n * (n - 1))

    half = Z95 * 40 * math.sqrt(approx_variance(E_GMV) / 40 + approx_variance(H_GMV) / 30)
    lo, hi = est.incremental_gmv_ci
    assert (lo, hi) == pytest.approx((40 * (2492.5 - 1390 / 3) - half, 40 * (2492.5 - 1390 / 3) + half))
    # ... within 1% of the interval from the exact minor-unit squares (g >= 100 major units here)
    exact = Z95 * 40 * math.sqrt(variance(E_GMV) / 40 + variance(H_GMV) / 30)
    assert exact < half < 1.01 * exact
    assert est.spend_minor == 1000
    assert est.iroas == pytest.approx(40 * (2492.5 - 1390 / 3) / 1000)
    assert est.iroas_ci == pytest.approx((lo / 1000, hi / 1000))


def test_a_narrower_confidence_gives_a_narrower_interval_around_the_same_estimate() -> None:
    wide = lift_estimates(FIELDS, {"c1": 1000}, confidence=0.95)["c1"]
    narrow = lift_estimates(FIELDS, {"c1": 1000}, confidence=0.5)["c1"]
    assert narrow.incremental_gmv_minor == wide.incremental_gmv_minor
    assert (
        wide.incremental_gmv_ci[0]
        < narrow.incremental_gmv_ci[0]
        < narrow.incremental_gmv_ci[1]
        < wide.incremental_gmv_ci[1]
    )
    assert z_of(0.5) == pytest.approx(0.6744897502)
    with pytest.raises(ValueError):
        z_of(1.0)


def test_no_estimate_while_either_group_has_fewer_than_the_minimum_users() -> None:
    assert MIN_GROUP_USERS == 30
    exposed = group_fields("c1", "exposed", E_CHECKOUTS, E_GMV)
    short_held_out = {**exposed, **group_fields("c1", "held_out", padded([1], 29), padded([13_900], 29))}
    assert lift_estimates(short_held_out, {"c1": 100}) == {}
    short_exposed = {
        **group_fields("c1", "exposed", padded([1, 2], 29), padded([25_900, 27_800], 29)),
        **group_fields("c1", "held_out", H_CHECKOUTS, H_GMV),
    }
    assert lift_estimates(short_exposed, {"c1": 100}) == {}
    assert lift_estimates(exposed, {"c1": 100}) == {}  # no held-out group at all
    # ... while the groups themselves are still readable (zeros for the missing one).
    assert lift_groups(exposed)["c1"]["held_out"] == GroupFigures()
    assert set(lift_groups(exposed)["c1"]) == set(GROUPS)
    assert set(lift_estimates(FIELDS, {})) == {"c1"}  # 40 and 30 users: estimated


def test_a_group_without_a_checkout_takes_the_other_groups_variance() -> None:
    # 30 held-out users, nobody bought: their sample variance is 0, yet a rate of 0 is not known.
    fields = {
        **group_fields("c1", "exposed", E_CHECKOUTS, E_GMV),
        **group_fields("c1", "held_out", [0] * 30, [0] * 30),
    }
    est = lift_estimates(fields, {})["c1"]
    half = Z95 * 40 * math.sqrt(variance(E_CHECKOUTS) / 40 + variance(E_CHECKOUTS) / 30)
    assert est.incremental_checkouts == pytest.approx(4)
    assert est.incremental_checkouts_ci == pytest.approx((4 - half, 4 + half))
    # wider than the interval that trusted the held-out group's variance of 0
    assert est.incremental_checkouts_ci[1] - 4 > Z95 * 40 * math.sqrt(variance(E_CHECKOUTS) / 40)
    gmv_half = est.incremental_gmv_ci[1] - est.incremental_gmv_minor
    exposed_only = Z95 * 40 * math.sqrt(variance(E_GMV) / 40)
    assert gmv_half > exposed_only * math.sqrt(1 + 40 / 30) * 0.99
    # and the other way round: an exposed group without a buyer takes the held-out variance
    reverse = {
        **group_fields("c1", "exposed", [0] * 40, [0] * 40),
        **group_fields("c1", "held_out", H_CHECKOUTS, H_GMV),
    }
    est = lift_estimates(reverse, {})["c1"]
    half = Z95 * 40 * math.sqrt(variance(H_CHECKOUTS) / 40 + variance(H_CHECKOUTS) / 30)
    assert est.incremental_checkouts_ci == pytest.approx((-40 / 30 - half, -40 / 30 + half))


def test_zero_spend_gives_no_iroas_but_still_the_increments() -> None:
    est = lift_estimates(FIELDS, {})["c1"]
    assert est.spend_minor == 0 and est.iroas is None and est.iroas_ci is None
    assert est.incremental_gmv_minor == pytest.approx(40 * (2492.5 - 1390 / 3))


def test_identical_groups_give_zero_lift_and_an_interval_around_it() -> None:
    same = {
        **group_fields("c2", "exposed", padded([1, 1], 60), padded([1000, 1000], 60)),
        **group_fields("c2", "held_out", padded([1], 30), padded([1000], 30)),
    }
    est = lift_estimates(same, {"c2": 50})["c2"]
    assert est.incremental_checkouts == 0 and est.incremental_gmv_minor == 0
    lo, hi = est.incremental_gmv_ci
    assert lo < 0 < hi and lo == pytest.approx(-hi)


def test_gmv_squares_are_whole_major_units_capped_and_fit_int64() -> None:
    assert gmv_square(199) == 1 and gmv_square(200) == 4 and gmv_square(99) == 0
    # the schema's largest checkout (1e12 minor): capped at GMV_SQ_CAP_MINOR, one user's square 1e16
    assert gmv_square(10**12) == gmv_square(GMV_SQ_CAP_MINOR) == (GMV_SQ_CAP_MINOR // MINOR) ** 2 == 10**16
    assert gmv_square(10**12) < 2**63 // 900  # ~900 such users still fit the int64 field
    # back in minor^2: the whole-unit square plus the middle of the sub-unit term, within MINOR * g
    for g in (0, 1, 99, 150, 12_345, 10**9 + 7):
        assert abs(gmv_squares_minor(gmv_square(g), g) - g * g) <= MINOR * g


def test_variance_is_exact_where_floats_would_cancel() -> None:
    # 1e9 +- 1 minor units: sum of squares ~3e18, the spread 2 (a float `q - s*s/n` gives 0 or noise).
    values = [10**9 - 1, 10**9, 10**9 + 1]
    assert sample_variance(3, sum(values), sum(v * v for v in values)) == 1.0
    assert sample_variance(2, 6, 18) == 0.0
    with pytest.raises(ValueError):
        sample_variance(1, 1, 1)


def test_other_fields_are_ignored_and_field_names_round_trip() -> None:
    fields = {**FIELDS, "l|c1|buyers": 3, "c|c1|kol|spend": 7, "t|views": 9}
    assert lift_groups(fields) == lift_groups(FIELDS)
    assert lift_field("c1", "held_out", "gmv_sq") == "x|c1|held_out|gmv_sq"
