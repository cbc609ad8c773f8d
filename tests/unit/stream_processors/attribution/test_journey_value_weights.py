"""The stream's Markov credit with separate weights for conversion counts and for value."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.events import Checkout, UserAction, View
from stream_processors.attribution.journey import (
    MICRO,
    EngineConfig,
    Increments,
    JourneyObservation,
    UserState,
    apply_events,
)
from stream_processors.attribution.markov import MarkovChain, weights_from_path_counts
from stream_processors.attribution.models import Lookback

T0 = datetime(2026, 11, 11, tzinfo=UTC).timestamp()


def _view(i: int, at: float, channel: str) -> View:
    return View.model_validate(
        {
            "event_id": f"v{i}",
            "user_id": "u1",
            "event_time": datetime.fromtimestamp(T0 + at, UTC),
            "campaign_id": "c1",
            "channel": channel,
            "creative_id": "cr",
            "creator_id": None,
            "cost_minor": 30,
            "engaged": False,
        }
    )


def _checkout(i: int, at: float, value: int) -> Checkout:
    return Checkout(
        event_id=f"o{i}",
        user_id="u1",
        event_time=datetime.fromtimestamp(T0 + at, UTC),
        spu_id="s",
        value_minor=value,
        currency="CNY",
        order_id=f"ord{i}",
    )


CFG = EngineConfig(
    lookback=Lookback(view_s=86_400, engaged_s=7 * 86_400),
    half_life_s=3600,
    lateness_s=10**9,
    models=("markov",),
)
COUNT_WEIGHTS = {"kol": 0.5, "feed": 0.5}
VALUE_WEIGHTS = {"kol": 0.25, "feed": 0.75}
EVENTS: list[UserAction] = [_view(1, 0, "kol"), _view(2, 10, "feed"), _checkout(1, 20, 10_000)]


def _credit(**weights: dict[str, float] | None) -> dict[str, int]:
    out = Increments()
    apply_events(UserState(), EVENTS, CFG, out, horizon=float("-inf"), **weights)  # type: ignore[arg-type]
    return {name: n for (bucket, name), n in out.by_key.items() if bucket is None and "|markov|" in name}


def test_value_split_by_value_weights_counts_by_channel_weights() -> None:
    got = _credit(channel_weights=COUNT_WEIGHTS, value_weights=VALUE_WEIGHTS)
    assert got["c|c1|kol|markov|checkouts"] == got["c|c1|feed|markov|checkouts"] == MICRO // 2
    assert got["c|c1|kol|markov|gmv"] == 2_500
    assert got["c|c1|feed|markov|gmv"] == 7_500


def test_without_value_weights_the_channel_weights_split_value_as_before() -> None:
    assert _credit(channel_weights=COUNT_WEIGHTS) == _credit(
        channel_weights=COUNT_WEIGHTS, value_weights=COUNT_WEIGHTS
    )
    assert _credit(channel_weights=COUNT_WEIGHTS)["c|c1|kol|markov|gmv"] == 5_000
    # No weights learned yet: linear for both.
    assert _credit()["c|c1|kol|markov|gmv"] == 5_000


def test_late_touch_reattributes_value_with_value_weights() -> None:
    state = UserState()
    out = Increments()
    apply_events(
        state,
        [EVENTS[0], EVENTS[2]],
        CFG,
        out,
        horizon=float("-inf"),
        channel_weights=COUNT_WEIGHTS,
        value_weights=VALUE_WEIGHTS,
    )
    apply_events(
        state,
        [EVENTS[1]],
        CFG,
        out,
        horizon=float("-inf"),
        channel_weights=COUNT_WEIGHTS,
        value_weights=VALUE_WEIGHTS,
    )
    in_order = _credit(channel_weights=COUNT_WEIGHTS, value_weights=VALUE_WEIGHTS)
    late = {name: n for (bucket, name), n in out.by_key.items() if bucket is None and "|markov|" in name}
    assert {k: v for k, v in late.items() if v} == in_order


def test_converted_journeys_carry_their_value_to_the_learner() -> None:
    result = apply_events(UserState(), EVENTS, CFG, Increments(), horizon=float("-inf"))
    assert result.journeys == [JourneyObservation(("kol", "feed"), True, 10_000)]
    # What the stream's path counters would hold for them, and the weights learned from those.
    counts = {"kol>feed|1": 1, "kol>feed|v": 10_000, "feed|1": 1, "feed|v": 30_000, "kol|0": 2}
    chain = MarkovChain.from_valued_paths(
        [(("kol", "feed"), 1, 10_000, 0), (("feed",), 1, 30_000, 0), (("kol",), 0, 0, 2)]
    )
    assert weights_from_path_counts(counts) == chain.weights()
