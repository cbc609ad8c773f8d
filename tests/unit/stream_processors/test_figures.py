"""Pure figures: ranking and `other` folding for bounded labels, loyalty, the AIPL funnel."""

from __future__ import annotations

from stream_processors.figures import (
    OTHER,
    Efficiency,
    aipl_funnel,
    campaign_figures,
    campaign_loyalty,
    campaign_spend,
    creator_figures,
    creator_followers,
    creator_spend,
    events_processed,
    fold_campaigns,
    fold_creators,
    label_of,
    loyalty,
    loyalty_rates,
    top_n,
)

MODELS = ("last", "linear")
FIELDS = {
    "c|a|kol|views": 10,
    "c|a|kol|spend": 500,
    "c|a|feed|views": 4,
    "c|a|feed|spend": 100,
    "c|a|kol|last|checkouts": 2_000_000,
    "c|a|kol|last|gmv": 3000,
    "c|a|kol|linear|checkouts": 1_500_000,
    "c|b|feed|views": 3,
    "c|b|feed|spend": 300,
    "c|b|feed|last|checkouts": 1_000_000,
    "c|c|feed|views": 5,
    "c|c|feed|spend": 300,
    "c|c|feed|last|gmv": 700,
    "k|kol1|views": 10,
    "k|kol1|spend": 500,
    "k|kol1|last|checkouts": 2_000_000,
    "k|kol1|followers": 7,
    "k|kol2|spend": 20,
    "k|kol2|followers": 1,
    "t|buyers": 8,
    "t|repeat_buyers": 2,
}


def test_spend_rankings_and_top_n_break_ties_by_id() -> None:
    assert campaign_spend(FIELDS) == {"a": 6.0, "b": 3.0, "c": 3.0}
    assert creator_spend(FIELDS) == {"kol1": 5.0, "kol2": 0.2}
    assert top_n(campaign_spend(FIELDS), 2) == {"a", "b"}
    assert top_n(campaign_spend(FIELDS), 0) == frozenset()
    assert top_n(campaign_spend(FIELDS), 10) == {"a", "b", "c"}
    assert label_of("c", {"a", "b"}) == OTHER and label_of("a", {"a"}) == "a"


def test_folding_into_other_keeps_the_sums() -> None:
    figs = campaign_figures(FIELDS, MODELS)
    folded = fold_campaigns(figs, frozenset({"a"}))
    assert set(folded) == {"a", OTHER}
    other = folded[OTHER].total("last")
    assert other.views == 8 and other.spend == 6.0 and other.checkouts == 1.0 and other.gmv == 7.0
    for model in MODELS:
        before, after = Efficiency(), Efficiency()
        for f in figs.values():
            before.add(f.total(model))
        for f in folded.values():
            after.add(f.total(model))
        assert before == after
    # Folding does not alias the input figures.
    assert figs["b"].total("last").views == 3
    creators = fold_creators(creator_figures(FIELDS, "last"), frozenset({"kol1"}))
    assert creators["kol1"].checkouts == 2.0 and creators[OTHER].spend == 0.2


def test_followers_and_loyalty() -> None:
    assert creator_followers(FIELDS) == {"kol1": 7, "kol2": 1}
    assert loyalty(FIELDS) == {"buyers": 8, "repeat_buyers": 2, "repeat_rate": 0.25}
    assert loyalty({})["repeat_rate"] is None


def test_aipl_funnel() -> None:
    eff = campaign_figures(FIELDS, MODELS)["a"].total("last")
    funnel = aipl_funnel(eff, reach=7, engaged_users=2)
    assert funnel["awareness"] == {"views": 14, "reach": 7, "frequency": 2.0, "spend": 6.0, "ecpm": eff.ecpm}
    assert funnel["interest"]["engaged_rate"] == round(2 / 7, 6)
    assert funnel["purchase"]["checkouts"] == 2.0 and funnel["purchase"]["cpa"] == 3.0
    assert funnel["purchase"]["roas"] == 5.0
    empty = aipl_funnel(Efficiency())
    assert empty["purchase"]["cpa"] is None and empty["awareness"]["frequency"] is None


def test_campaign_loyalty_reads_the_loyalty_fields_with_their_rates() -> None:
    fields = {
        "l|c1|buyers": 4,
        "l|c1|repeat_buyers": 1,
        "l|c2|followers": 5,
        "l|c2|retained_followers": 2,
        "t|buyers": 9,
        "c|c1|kol|views": 3,
    }
    loyal = campaign_loyalty(fields)
    assert loyal == {
        "c1": {"buyers": 4, "repeat_buyers": 1, "followers": 0, "retained_followers": 0},
        "c2": {"buyers": 0, "repeat_buyers": 0, "followers": 5, "retained_followers": 2},
    }
    assert loyalty_rates(loyal["c1"])["repeat_rate"] == 0.25
    assert loyalty_rates(loyal["c2"])["follower_retention"] == 0.4
    assert loyalty_rates({})["repeat_rate"] is None


def test_ratios_without_a_denominator_are_none() -> None:
    none = Efficiency(spend=5.0, gmv=10.0)
    assert (none.cpa, none.cost_per_follow, none.cost_per_add_to_cart, none.ecpm) == (None, None, None, None)
    assert Efficiency(gmv=10.0).roas is None
    full = Efficiency(spend=5.0, views=1000, follows=2.0, add_to_carts=4.0, checkouts=0.5, gmv=10.0)
    assert (full.cpa, full.roas, full.cost_per_follow, full.cost_per_add_to_cart, full.ecpm) == (
        10.0,
        2.0,
        2.5,
        1.25,
        5.0,
    )


def test_campaign_lift_in_currency_units_with_and_without_an_estimate() -> None:
    from stream_processors.figures import campaign_lift, campaign_spend_minor
    from stream_processors.lift import lift_estimates, lift_field

    def group(campaign: str, g: str, checkouts: list[int], gmv: list[int]) -> dict[str, int]:
        sums = {"users": len(checkouts), "checkouts": sum(checkouts), "gmv": sum(gmv)}
        sums |= {"checkouts_sq": sum(n * n for n in checkouts), "gmv_sq": sum((v // 100) ** 2 for v in gmv)}
        return {lift_field(campaign, g, m): v for m, v in sums.items()}  # type: ignore[arg-type]

    fields = {
        **FIELDS,
        # 40 and 30 users (an estimate needs lift.MIN_GROUP_USERS in each group)
        **group("a", "exposed", [1, 2, 1] + [0] * 37, [1000, 2500, 500] + [0] * 37),
        **group("a", "held_out", [1] + [0] * 29, [800] + [0] * 29),
        **group("b", "exposed", [1, 0], [300, 0]),  # no held-out user yet: no estimate
    }
    assert campaign_spend_minor(fields) == {"a": 600, "b": 300, "c": 300}
    lift = campaign_lift(fields)
    a = lift["a"]
    assert a["exposed"] == {
        "users": 40,
        "checkouts": 4,
        "gmv": 40.0,
        "checkouts_per_user": 0.1,
        "gmv_per_user": 1.0,
    }
    assert a["held_out"]["gmv_per_user"] == round(8 / 30, 6) and a["spend"] == 6.0
    est = lift_estimates(fields, {"a": 600})["a"]
    assert a["incremental_gmv"] == round(est.incremental_gmv_minor / 100, 6) == round(29.333333, 6)
    assert a["incremental_gmv_ci"] == [round(b / 100, 6) for b in est.incremental_gmv_ci]
    assert est.iroas is not None and a["iroas"] == round(est.iroas, 6)
    assert a["iroas_ci"][0] < a["iroas"] < a["iroas_ci"][1]
    b = lift["b"]
    assert b["exposed"]["users"] == 2 and b["held_out"]["users"] == 0
    assert b["held_out"]["checkouts_per_user"] is None
    assert b["incremental_gmv"] is None and b["iroas_ci"] is None


def test_events_processed_counts_every_action_and_the_ghost_views() -> None:
    fields = {"t|views": 90, "t|ghost_views": 5, "t|follows": 3, "t|add_to_carts": 2, "t|checkouts": 1, "t|gmv": 700}
    assert events_processed(fields) == 101
    assert events_processed({}) == 0
