from __future__ import annotations

import math
import random
from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_processors.attribution.models import (
    MODEL_NAMES,
    Lookback,
    ModelName,
    Touch,
    allocate,
    eligible_touches,
    model_weights,
    split_exact,
)

from .strategies import CHANNELS, DETERMINISTIC, totals, touch_lists, touches

DAY = 86_400.0
LOOKBACK = Lookback(view_s=DAY, engaged_s=7 * DAY)
WIDE = Lookback(view_s=1e9, engaged_s=1e9)
WEIGHTS = {"kol": 0.4, "brand": 0.1, "feed": 0.3, "search": 0.2}


def touch(at: float, channel: str = "kol", engaged: bool = False, creative: str = "cr") -> Touch:
    return Touch(
        at=at, campaign_id="c", channel=channel, creative_id=creative, creator_id=None, engaged=engaged
    )


def weights(model: ModelName, ts: list[Touch], conversion_at: float = 100.0, **kw: object) -> list[float]:
    return model_weights(model, ts, conversion_at, half_life_s=kw.pop("half_life_s", 10.0), **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- hand-worked examples


def test_last_and_first() -> None:
    ts = [touch(1), touch(2), touch(3)]
    assert weights("last", ts) == [0.0, 0.0, 1.0]
    assert weights("first", ts) == [1.0, 0.0, 0.0]


def test_linear() -> None:
    assert weights("linear", [touch(i) for i in range(4)]) == [0.25] * 4


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, [1.0]),
        (2, [0.5, 0.5]),
        (3, [0.4, 0.2, 0.4]),
        (4, [0.4, 0.1, 0.1, 0.4]),
        (6, [0.4] + [0.05] * 4 + [0.4]),
    ],
)
def test_position(n: int, expected: list[float]) -> None:
    assert weights("position", [touch(i) for i in range(n)]) == pytest.approx(expected, rel=1e-12)


def test_time_decay_halves_per_half_life() -> None:
    # Ages 20, 10, 0 with a 10 s half-life: raw weights 1/4, 1/2, 1 -> 1/7, 2/7, 4/7.
    w = weights("time_decay", [touch(80), touch(90), touch(100)], 100.0, half_life_s=10.0)
    assert w == pytest.approx([1 / 7, 2 / 7, 4 / 7], rel=1e-12)


def test_time_decay_does_not_underflow_for_old_journeys() -> None:
    # 2^(-age/half_life) underflows to 0.0 for every touch here; the result must still be a distribution.
    w = weights("time_decay", [touch(0.0), touch(1.0)], 1e9, half_life_s=1.0)
    assert w == pytest.approx([1 / 3, 2 / 3], rel=1e-12)


@pytest.mark.parametrize("half_life", [0.0, -1.0, math.inf, math.nan])
def test_time_decay_rejects_bad_half_life(half_life: float) -> None:
    with pytest.raises(ValueError, match="half_life_s"):
        weights("time_decay", [touch(1)], half_life_s=half_life)


def test_markov_splits_channel_weight_over_its_touches() -> None:
    ts = [touch(1, "kol"), touch(2, "feed"), touch(3, "kol")]
    # kol 0.6 shared by two touches, feed 0.4 alone.
    assert weights("markov", ts, channel_weights={"kol": 0.6, "feed": 0.4}) == pytest.approx([0.3, 0.4, 0.3])


def test_markov_renormalises_over_present_channels() -> None:
    ts = [touch(1, "kol"), touch(2, "search")]
    assert weights("markov", ts, channel_weights=WEIGHTS) == pytest.approx([2 / 3, 1 / 3])
    assert weights("markov", ts, channel_weights={"kol": 0.5, "feed": 0.5}) == pytest.approx([1.0, 0.0])


@pytest.mark.parametrize(
    "channel_weights",
    [None, {}, {"feed": 1.0}, {"kol": 0.0, "search": 0.0}, {"kol": -1.0, "search": math.nan}],
)
def test_markov_falls_back_to_linear(channel_weights: dict[str, float] | None) -> None:
    ts = [touch(1, "kol"), touch(2, "search"), touch(3, "kol")]
    assert weights("markov", ts, channel_weights=channel_weights) == pytest.approx([1 / 3] * 3)


def test_empty_in_empty_out_and_unknown_model() -> None:
    for model in MODEL_NAMES:
        assert weights(model, []) == []
    with pytest.raises(ValueError, match="unknown attribution model"):
        weights("shapley", [touch(1)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown attribution model"):
        weights("shapley", [])  # type: ignore[arg-type]


def test_split_exact_examples() -> None:
    assert split_exact(100, [1 / 3] * 3) == [34, 33, 33]
    assert split_exact(10, [0.25] * 4) == [3, 3, 2, 2]  # equal remainders: earlier index wins
    assert split_exact(-100, [1 / 3] * 3) == [-33, -33, -34]
    assert split_exact(0, [0.5, 0.5]) == [0, 0]
    assert split_exact(7, [0.0, 1.0, 0.0]) == [0, 7, 0]
    assert split_exact(1, [0.4, 0.1, 0.1, 0.4]) == [1, 0, 0, 0]
    assert split_exact(0, []) == []
    # Exact beyond float precision: 2**60 + 1 split in halves.
    assert split_exact(2**60 + 1, [0.5, 0.5]) == [2**59 + 1, 2**59]


@pytest.mark.parametrize(
    ("total", "ws"), [(5, []), (5, [0.0, 0.0]), (5, [-0.1, 1.1]), (5, [math.nan, 1.0]), (5, [math.inf])]
)
def test_split_exact_rejects(total: int, ws: list[float]) -> None:
    with pytest.raises(ValueError):
        split_exact(total, ws)


def test_eligible_touches_windows_are_inclusive_and_typed() -> None:
    conv = 10 * DAY
    ts = [
        touch(conv - DAY, "kol"),  # view, exactly 1 day: in
        touch(conv - DAY - 1, "feed"),  # view, just over: out
        touch(conv - 7 * DAY, "search", engaged=True),  # engaged, exactly 7 days: in
        touch(conv - 7 * DAY - 1, "brand", engaged=True),  # engaged, just over: out
        touch(conv + 1, "kol"),  # after the conversion: out
        touch(conv, "brand"),  # same instant: in
    ]
    got = eligible_touches(ts, conv, LOOKBACK)
    assert [t.channel for t in got] == ["search", "kol", "brand"]


def test_eligible_touches_tiebreak_ignores_arrival_order() -> None:
    ts = [touch(5, "search"), touch(5, "brand"), touch(5, "kol", creative="b"), touch(5, "kol", creative="a")]
    expected = eligible_touches(ts, 10, WIDE)
    assert [(t.channel, t.creative_id) for t in expected] == [
        ("brand", "cr"),
        ("kol", "a"),
        ("kol", "b"),
        ("search", "cr"),
    ]
    for seed in range(5):
        shuffled = ts[:]
        random.Random(seed).shuffle(shuffled)
        assert eligible_touches(shuffled, 10, WIDE) == expected


def test_allocate_examples() -> None:
    conv = 10 * DAY
    ts = [
        touch(conv - 3 * DAY, "kol", engaged=True),
        touch(conv - 3 * DAY, "feed"),
        touch(conv - 60, "search"),
    ]
    # The feed view is outside the 1-day view lookback.
    got = allocate("position", ts, conv, 1001, lookback=LOOKBACK, half_life_s=DAY)
    assert [(t.channel, c) for t, c in got] == [("kol", 501), ("search", 500)]
    assert allocate("linear", ts, conv + 30 * DAY, 1001, lookback=LOOKBACK, half_life_s=DAY) == []
    assert allocate("markov", [], conv, 5, lookback=LOOKBACK, half_life_s=DAY) == []


# ---------------------------------------------------------------- properties


@DETERMINISTIC
@given(
    ts=touch_lists,
    total=totals,
    lag=st.floats(min_value=0.0, max_value=1e6),
    model=st.sampled_from(MODEL_NAMES),
)
def test_credits_sum_exactly_to_total(ts: list[Touch], total: int, lag: float, model: ModelName) -> None:
    conv = max(t.at for t in ts) + lag
    lookback = Lookback(view_s=3e5, engaged_s=1e6)
    got = allocate(model, ts, conv, total, lookback=lookback, half_life_s=5e4, channel_weights=WEIGHTS)
    eligible = eligible_touches(ts, conv, lookback)
    assert [t for t, _ in got] == eligible
    if got:
        assert sum(c for _, c in got) == total
        w = model_weights(model, eligible, conv, half_life_s=5e4, channel_weights=WEIGHTS)
        assert all(x >= 0.0 for x in w)
        assert math.fsum(w) == pytest.approx(1.0, abs=1e-12)


@DETERMINISTIC
@given(
    t=touches, total=totals, model=st.sampled_from(MODEL_NAMES), lag=st.floats(min_value=0.0, max_value=1e5)
)
def test_one_touch_gets_everything(t: Touch, total: int, model: ModelName, lag: float) -> None:
    got = allocate(
        model,
        [t],
        t.at + lag,
        total,
        lookback=Lookback(1e5, 1e5),
        half_life_s=3600.0,
        channel_weights=WEIGHTS,
    )
    assert got == [(t, total)]


@DETERMINISTIC
@given(ts=touch_lists, total=totals, data=st.data())
def test_linear_is_order_independent(ts: list[Touch], total: int, data: st.DataObject) -> None:
    conv = 2e6
    base = allocate("linear", ts, conv, total, lookback=WIDE, half_life_s=1.0)
    # Same touches, timestamps permuted among them: who came first changes, the credits do not.
    perm = data.draw(st.permutations([t.at for t in ts]))
    moved = [
        Touch(at, t.campaign_id, t.channel, t.creative_id, t.creator_id, t.engaged)
        for t, at in zip(ts, perm, strict=True)
    ]
    other = allocate("linear", moved, conv, total, lookback=WIDE, half_life_s=1.0)
    assert Counter(c for _, c in other) == Counter(c for _, c in base)
    # Same touches in another arrival order: identical pairs (for every model, thanks to the tiebreak).
    shuffled = data.draw(st.permutations(ts))
    for model in MODEL_NAMES:
        a = allocate(model, ts, conv, total, lookback=WIDE, half_life_s=1e5, channel_weights=WEIGHTS)
        b = allocate(model, shuffled, conv, total, lookback=WIDE, half_life_s=1e5, channel_weights=WEIGHTS)
        assert a == b


@DETERMINISTIC
@given(
    total=totals,
    ws=st.lists(
        st.one_of(st.just(0.0), st.floats(min_value=1e-12, max_value=1e6, allow_nan=False)),
        min_size=1,
        max_size=10,
    ).filter(lambda w: sum(w) > 0),
)
def test_split_exact_parts_within_one(total: int, ws: list[float]) -> None:
    parts = split_exact(total, ws)
    assert sum(parts) == total
    exact_sum = sum(Fraction(w) for w in ws)
    for part, w in zip(parts, ws, strict=True):
        quota = Fraction(total) * Fraction(w) / exact_sum
        assert abs(part - quota) < 1
        if w == 0.0:
            assert part == 0


@DETERMINISTIC
@given(
    ts=touch_lists,
    conv=st.floats(min_value=0.0, max_value=1.2e6),
    view=st.floats(min_value=0.0, max_value=5e5),
    engaged_extra=st.floats(min_value=0.0, max_value=5e5),
)
def test_eligible_touches_respects_lookbacks(
    ts: list[Touch], conv: float, view: float, engaged_extra: float
) -> None:
    lookback = Lookback(view_s=view, engaged_s=view + engaged_extra)
    got = eligible_touches(ts, conv, lookback)
    expected = [
        t
        for t in ts
        if t.at <= conv and conv - t.at <= (lookback.engaged_s if t.engaged else lookback.view_s)
    ]
    assert Counter(got) == Counter(expected)
    assert [t.at for t in got] == sorted(t.at for t in got)
    # An engaged touch is never dropped where a view at the same instant is kept.
    assert not any(
        t.engaged and Touch(t.at, t.campaign_id, t.channel, t.creative_id, t.creator_id, False) in got
        for t in ts
        if t not in got
    )


def test_channels_fixture_matches_weights() -> None:
    assert set(WEIGHTS) == set(CHANNELS)
