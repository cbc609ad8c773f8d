"""The lift estimator on hand-computed inputs: means, sample variances, intervals, iROAS."""

from __future__ import annotations

import math

import pytest

from stream_processors.lift import (
    GROUPS,
    Group,
    GroupFigures,
    lift_estimates,
    lift_field,
    lift_groups,
    sample_variance,
    z_of,
)


def group_fields(campaign: str, group: Group, checkouts: list[int], gmv: list[int]) -> dict[str, int]:
    """The five stored sums of a group whose users counted these checkouts and GMV."""
    return {
        lift_field(campaign, group, "users"): len(checkouts),
        lift_field(campaign, group, "checkouts"): sum(checkouts),
        lift_field(campaign, group, "checkouts_sq"): sum(n * n for n in checkouts),
        lift_field(campaign, group, "gmv"): sum(gmv),
        lift_field(campaign, group, "gmv_sq"): sum(g * g for g in gmv),
    }


# Exposed: 4 users bought 0, 1, 2, 1 times for 0, 1000, 2500, 500; held out: 3 users, 0, 1, 0 for 0, 800, 0.
FIELDS = {
    **group_fields("c1", "exposed", [0, 1, 2, 1], [0, 1000, 2500, 500]),
    **group_fields("c1", "held_out", [0, 1, 0], [0, 800, 0]),
}


def test_the_estimate_equals_the_hand_computed_difference_of_means_and_its_interval() -> None:
    (est,) = lift_estimates(FIELDS, {"c1": 1000}).values()
    assert est.campaign_id == "c1"
    assert est.exposed == GroupFigures(4, 4, 6, 4000, 7_500_000)
    assert est.held_out == GroupFigures(3, 1, 1, 800, 640_000)
    # checkouts: means 1 and 1/3, sample variances 2/3 and 1/3
    assert est.incremental_checkouts == pytest.approx(4 * (1 - 1 / 3))
    half = 1.959963984540054 * 4 * math.sqrt((2 / 3) / 4 + (1 / 3) / 3)
    assert half == pytest.approx(4.131966882)
    assert est.incremental_checkouts_ci == pytest.approx((8 / 3 - half, 8 / 3 + half))
    # GMV: means 1000 and 800/3, sample variances 14e6/12 and 1.28e6/6
    assert est.incremental_gmv_minor == pytest.approx(2933.3333333)
    half = 1.959963984540054 * 4 * math.sqrt((14e6 / 12) / 4 + (1.28e6 / 6) / 3)
    assert half == pytest.approx(4722.0265046)
    lo, hi = est.incremental_gmv_ci
    assert (lo, hi) == pytest.approx((2933.3333333 - half, 2933.3333333 + half))
    assert est.spend_minor == 1000
    assert est.iroas == pytest.approx(2.9333333333)
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


def test_no_estimate_while_either_group_has_fewer_than_two_users() -> None:
    one_held_out = {
        **group_fields("c1", "exposed", [0, 1, 2], [0, 5, 9]),
        **group_fields("c1", "held_out", [1], [3]),
    }
    assert lift_estimates(one_held_out, {"c1": 100}) == {}
    only_exposed = group_fields("c1", "exposed", [0, 1, 2], [0, 5, 9])
    assert lift_estimates(only_exposed, {"c1": 100}) == {}
    # ... while the groups themselves are still readable (zeros for the missing one).
    assert lift_groups(only_exposed)["c1"]["held_out"] == GroupFigures()
    assert set(lift_groups(only_exposed)["c1"]) == set(GROUPS)


def test_zero_spend_gives_no_iroas_but_still_the_increments() -> None:
    est = lift_estimates(FIELDS, {})["c1"]
    assert est.spend_minor == 0 and est.iroas is None and est.iroas_ci is None
    assert est.incremental_gmv_minor == pytest.approx(2933.3333333)


def test_identical_groups_give_zero_lift_and_an_interval_around_it() -> None:
    same = {
        **group_fields("c2", "exposed", [0, 1, 0, 1], [0, 10, 0, 10]),
        **group_fields("c2", "held_out", [0, 1], [0, 10]),
    }
    est = lift_estimates(same, {"c2": 50})["c2"]
    assert est.incremental_checkouts == 0 and est.incremental_gmv_minor == 0
    lo, hi = est.incremental_gmv_ci
    assert lo < 0 < hi and lo == pytest.approx(-hi)


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
