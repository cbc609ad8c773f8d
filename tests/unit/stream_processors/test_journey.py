"""The journey engine: exact and order-independent within the allowed lateness. (It takes distinct
events: duplicates are found per partition before it, see test_processor.py.)"""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import AddToCart, Checkout, Follow, UserAction, View
from stream_processors.attribution.journey import EngineConfig, Increments, UserState, apply_events
from stream_processors.attribution.models import Lookback

CFG = EngineConfig(lookback=Lookback(view_s=86_400, engaged_s=7 * 86_400), half_life_s=3600, lateness_s=10**9)
# c1 and c2 both promote s2 (one brand's two campaigns); "s" is nobody's product
PRODUCTS = {"c1": frozenset({"s1", "s2"}), "c2": frozenset({"s2"}), "c3": frozenset({"s3"})}
CFG_PRODUCTS = dataclasses.replace(CFG, campaign_products=PRODUCTS)
T0 = datetime(2026, 11, 11, tzinfo=UTC).timestamp()


def ts(offset_s: float) -> datetime:
    return datetime.fromtimestamp(T0 + offset_s, UTC)


def head(prefix: str, i: int, at: float) -> dict[str, Any]:
    """The fields every event of the test user starts with."""
    return {"event_id": f"{prefix}{i}", "user_id": "u1", "event_time": ts(at)}


def view(
    i: int,
    at: float,
    campaign: str = "c1",
    channel: str = "kol",
    creator: str | None = "k1",
    engaged: bool = False,
) -> View:
    return View(
        **head("v", i, at),
        campaign_id=campaign,
        channel=channel,
        creative_id="cr",
        creator_id=creator,
        cost_minor=30,
        engaged=engaged,
    )


def cart(i: int, at: float, spu: str, value: int = 500) -> AddToCart:
    return AddToCart(**head("a", i, at), spu_id=spu, value_minor=value, currency="CNY")


def checkout(i: int, at: float, value: int = 10_000, spu: str = "s") -> Checkout:
    return Checkout(**head("o", i, at), spu_id=spu, value_minor=value, currency="CNY", order_id=f"ord{i}")


def follow(i: int, at: float, creator: str = "k1") -> Follow:
    return Follow(**head("f", i, at), creator_id=creator)


def run(batches: list[list[UserAction]], cfg: EngineConfig = CFG) -> dict[tuple[int | None, str], int]:
    state, out = UserState(), Increments()
    for batch in batches:
        res = apply_events(state, batch, cfg, out, horizon=float("-inf"))
        state = UserState.from_json(res.state.to_json())  # as stored in Redis between batches
    return {k: v for k, v in out.by_key.items() if v}


def test_last_touch_credits_the_latest_view_in_lookback() -> None:
    figures = run([[view(1, 0, "c1"), view(2, 100, "c2", "feed"), checkout(1, 200)]])
    assert figures[(None, "c|c2|feed|last|checkouts")] == 1_000_000
    assert figures[(None, "c|c2|feed|last|gmv")] == 10_000
    assert figures[(None, "c|c1|kol|first|checkouts")] == 1_000_000
    assert (None, "c|c1|kol|last|checkouts") not in figures


def test_a_view_outside_the_lookback_gets_nothing_unless_engaged() -> None:
    old = 2 * 86_400
    plain = run([[view(1, 0), checkout(1, old)]])
    assert plain[(None, "u|checkouts")] == 1
    engaged = run([[view(1, 0, engaged=True), checkout(1, old)]])
    assert engaged[(None, "c|c1|kol|last|checkouts")] == 1_000_000


def test_following_the_creator_engages_earlier_views() -> None:
    figures = run([[view(1, 0), follow(1, 3600), checkout(1, 2 * 86_400)]])
    assert figures[(None, "c|c1|kol|last|checkouts")] == 1_000_000
    assert figures[(None, "c|c1|kol|last|follows")] == 1_000_000


def test_a_late_touch_reattributes_an_earlier_processed_conversion() -> None:
    in_order = run([[view(1, 0, "c1"), view(2, 50, "c2", "feed"), checkout(1, 100)]])
    late_touch = run([[view(1, 0, "c1"), checkout(1, 100)], [view(2, 50, "c2", "feed")]])
    assert in_order == late_touch


def test_credits_sum_exactly_to_the_value_under_every_model() -> None:
    events: list[UserAction] = [view(i, i * 977.0, f"c{i % 3}", "kol") for i in range(7)]
    events.append(checkout(1, 8000, value=99_999))
    figures = run([events])
    for model in ("last", "first", "linear", "time_decay", "position", "markov"):
        gmv = sum(
            v
            for (b, k), v in figures.items()
            if b is None and k.startswith("c|") and k.endswith(f"|{model}|gmv")
        )
        count = sum(
            v
            for (b, k), v in figures.items()
            if b is None and k.startswith("c|") and k.endswith(f"|{model}|checkouts")
        )
        assert gmv == 99_999 and count == 1_000_000, model


actions = st.lists(
    st.tuples(
        st.sampled_from(["view", "cart", "checkout", "follow"]),
        st.integers(0, 3 * 86_400),
        st.sampled_from(["c1", "c2", "c3"]),
        st.booleans(),
    ),
    min_size=1,
    max_size=25,
)


def build(spec: list[tuple[str, int, str, bool]]) -> list[UserAction]:
    """A cart or checkout buys the product numbered like its campaign field (c2 -> s2)."""
    out: list[UserAction] = []
    for i, (kind, at, campaign, flag) in enumerate(spec):
        spu = "s" + campaign[1:]
        if kind == "view":
            out.append(view(i, at, campaign, "kol", creator=f"k{campaign}", engaged=flag))
        elif kind == "cart":
            out.append(cart(i, at, spu))
        elif kind == "checkout":
            out.append(checkout(i, at, value=1000 + i, spu=spu))
        else:
            out.append(follow(i, at, creator=f"k{campaign}"))
    return out


@settings(max_examples=100, deadline=None, derandomize=True)
@given(actions, st.integers(0, 2**32 - 1), st.integers(1, 5), st.sampled_from([CFG, CFG_PRODUCTS]))
def test_final_figures_do_not_depend_on_arrival_order_or_batching(
    spec: list[tuple[str, int, str, bool]], shuffle_seed: int, n_batches: int, cfg: EngineConfig
) -> None:
    events = build(spec)
    reference = run([sorted(events, key=lambda e: e.event_ts)], cfg)
    shuffled = events[:]
    random.Random(shuffle_seed).shuffle(shuffled)
    cut = sorted(
        random.Random(shuffle_seed + 1).sample(range(1, len(shuffled) + 1), min(n_batches, len(shuffled)))
    )
    batches, start = [], 0
    for end in cut:
        batches.append(shuffled[start:end])
        start = end
    batches.append(shuffled[start:])
    assert run(batches, cfg) == reference


def test_a_purchase_credits_only_campaigns_promoting_the_product() -> None:
    # c3's view is the last touch, but c3 does not sell s2: the credit goes to c2, the last
    # touch of a campaign that does.
    events: list[UserAction] = [
        view(1, 0, "c1"),
        view(2, 50, "c2", "feed"),
        view(3, 100, "c3"),
        checkout(1, 200, spu="s2"),
    ]
    scoped = run([events], CFG_PRODUCTS)
    assert scoped[(None, "c|c2|feed|last|checkouts")] == 1_000_000
    assert scoped[(None, "c|c1|kol|first|checkouts")] == 1_000_000
    assert not any(k.startswith("c|c3|") and k.endswith(("|checkouts", "|gmv")) for _, k in scoped)
    # without the product map every touch is eligible, as before
    assert run([events])[(None, "c|c3|kol|last|checkouts")] == 1_000_000


def test_a_product_no_campaign_promotes_stays_unattributed() -> None:
    scoped = run([[view(1, 0, "c1"), checkout(1, 100, spu="s")]], CFG_PRODUCTS)
    assert scoped[(None, "u|checkouts")] == 1
    assert not any(k.startswith("c|") and k.endswith("|checkouts") for _, k in scoped)


def test_a_late_touch_of_another_product_does_not_reattribute() -> None:
    # The conversion's product survives the trip through Redis between the two batches.
    in_order = run([[view(1, 0, "c1"), view(2, 50, "c3"), checkout(1, 100, spu="s1")]], CFG_PRODUCTS)
    late = run([[view(1, 0, "c1"), checkout(1, 100, spu="s1")], [view(2, 50, "c3")]], CFG_PRODUCTS)
    assert late == in_order
    assert late[(None, "c|c1|kol|last|checkouts")] == 1_000_000


def test_state_written_before_products_were_stored_still_loads() -> None:
    old = b'{"t":[],"c":[[1.0,"o1","checkout",100,{}]],"s":{},"f":{},"b":1,"l":1.0}'
    (conv,) = UserState.from_json(old).conversions
    assert conv.spu_id is None and conv.kind == "checkout"


@settings(max_examples=100, deadline=None, derandomize=True)
@given(actions)
def test_product_scoped_credit_equals_the_independent_recount(spec: list[tuple[str, int, str, bool]]) -> None:
    from tests.recount import recount

    events = build(spec)
    expected = recount(
        events,
        CFG.lookback,
        CFG.half_life_s,
        {"CNY": 1.0},
        retention_s=CFG.retention_s,
        campaign_products=PRODUCTS,
    )
    got = {k: v for (b, k), v in run([events], CFG_PRODUCTS).items() if b is None}
    for key in {k for k in expected if k[:2] in ("c|", "u|", "v|", "l|")} | {
        k for k in got if k[:2] in ("c|", "u|", "v|", "l|")
    }:
        assert got.get(key, 0) == expected.get(key, 0), key


def test_campaign_lookbacks_override_the_default() -> None:
    short = dataclasses.replace(CFG, campaign_lookbacks={"c1": Lookback(view_s=3600, engaged_s=3600)})
    state, out = UserState(), Increments()
    events: list[UserAction] = [view(1, 0, "c1"), view(2, 0, "c2", "feed"), checkout(1, 7200)]
    apply_events(state, events, short, out, horizon=float("-inf"))
    # c1's own 1-hour lookback excludes its view; c2 keeps the default day.
    assert out.by_key[(None, "c|c2|feed|linear|checkouts")] == 1_000_000
    assert (None, "c|c1|kol|linear|checkouts") not in out.by_key


def test_creatives_get_all_time_credit() -> None:
    figures = run([[view(1, 0, "c1"), checkout(1, 10, value=500)]])
    assert figures[(None, "v|cr|last|checkouts")] == 1_000_000
    assert figures[(None, "v|cr|last|gmv")] == 500


# --------------------------------------------------------------------------- loyalty per campaign


def loyalty_of(figures: dict[tuple[int | None, str], int]) -> dict[str, int]:
    return {k: v for (b, k), v in figures.items() if b is None and k.startswith("l|")}


def test_a_campaign_counts_its_buyers_and_repeat_buyers_once_each() -> None:
    figures = run([[view(1, 0, "c1"), checkout(1, 100)], [checkout(2, 200), checkout(3, 300)]])
    assert loyalty_of(figures) == {"l|c1|buyers": 1, "l|c1|repeat_buyers": 1}


def test_a_checkout_without_an_eligible_touch_makes_no_campaign_buyer() -> None:
    # The view is two days old: outside the 1-day view lookback, so no campaign is credited.
    figures = run([[view(1, 0, "c1", creator=None), checkout(1, 2 * 86_400)]])
    assert loyalty_of(figures) == {}


def test_a_late_touch_makes_an_earlier_checkout_a_campaign_purchase() -> None:
    figures = run([[checkout(1, 100)], [view(1, 50, "c2", "feed")]])
    assert loyalty_of(figures) == {"l|c2|buyers": 1}


def test_a_follower_is_retained_when_active_again_after_the_retention_period() -> None:
    early = run([[view(1, 0, "c1"), follow(1, 60)], [view(2, 60 + 3600, "c3")]])
    assert loyalty_of(early) == {"l|c1|followers": 1}
    later = run([[view(1, 0, "c1"), follow(1, 60)], [view(2, 60 + 86_400, "c3")]])
    assert loyalty_of(later) == {"l|c1|followers": 1, "l|c1|retained_followers": 1}


def test_pruned_conversions_keep_their_loyalty() -> None:
    state, out = UserState(), Increments()
    apply_events(state, [view(1, 0, "c1"), checkout(1, 10), checkout(2, 20)], CFG, out, horizon=float("-inf"))
    before = loyalty_of(out.by_key)
    # A horizon past both checkouts finalises them: they leave the live state, the flags stay.
    state = UserState.from_json(state.to_json())
    apply_events(state, [view(2, 10_000, "c2")], CFG, out, horizon=5_000 + T0)
    assert not state.conversions and state.loyal_checkouts == {"c1": 2}
    assert loyalty_of(out.by_key) == before == {"l|c1|buyers": 1, "l|c1|repeat_buyers": 1}


@settings(max_examples=100, deadline=None, derandomize=True)
@given(actions)
def test_loyalty_equals_the_independent_recount(spec: list[tuple[str, int, str, bool]]) -> None:
    from tests.recount import recount

    events = build(spec)
    expected = recount(events, CFG.lookback, CFG.half_life_s, {"CNY": 1.0}, retention_s=CFG.retention_s)
    assert loyalty_of(run([events])) == {k: v for k, v in expected.items() if k.startswith("l|")}
