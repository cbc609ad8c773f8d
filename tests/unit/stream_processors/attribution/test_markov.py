from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_processors.attribution.markov import (
    CONVERSION,
    NULL,
    START,
    JourneyLearner,
    MarkovChain,
    weights_from_path_counts,
)

from .strategies import CHANNELS, DETERMINISTIC, path_counts

# start -> a (3) | b (1); a -> b (1) | null (2); b -> conversion (2).
# P = 3/4 * 1/3 + 1/4 = 1/2; without a: 1/4 (effect 1/2); without b: 0 (effect 1).
HAND = [(("a", "b"), 1.0, 0.0), (("b",), 1.0, 0.0), (("a",), 0.0, 2.0)]


def test_hand_worked_chain() -> None:
    chain = MarkovChain.from_paths(HAND)
    assert chain.channels == ("a", "b")
    assert chain.conversion_probability() == pytest.approx(0.5, rel=1e-12)
    assert chain.removal_effects() == pytest.approx({"a": 0.5, "b": 1.0}, rel=1e-12)
    assert chain.channel_weights() == pytest.approx({"a": 1 / 3, "b": 2 / 3}, rel=1e-12)
    assert chain.attribute(2.0, 30.0) == {
        "a": pytest.approx((2 / 3, 10.0), rel=1e-12),
        "b": pytest.approx((4 / 3, 20.0), rel=1e-12),
    }
    assert chain.transition_probabilities()[START] == pytest.approx({"a": 0.75, "b": 0.25})


def test_consecutive_repeats_are_collapsed_like_channelattribution() -> None:
    repeated = MarkovChain.from_paths([(("a", "a", "b", "b", "b"), 2.0, 1.0), (("c", "c"), 0.0, 1.0)])
    plain = MarkovChain.from_paths([(("a", "b"), 2.0, 1.0), (("c",), 0.0, 1.0)])
    assert repeated.transition_probabilities() == plain.transition_probabilities()
    assert repeated.removal_effects() == plain.removal_effects()


def test_loops_are_solved_exactly() -> None:
    # a -> b -> a loop: from a, P(conv) = p_a; p_a = 1/2 p_b... solved by hand below.
    # Paths: a>b>a (conv 1), a>b (null 1). Counts: start->a 2; a->b 2; b->a 1, b->null 1; a->conv 1.
    # p_a = (2/3) p_b + (1/3); p_b = (1/2) p_a  =>  p_a = 1/2.
    chain = MarkovChain.from_paths([(("a", "b", "a"), 1.0, 0.0), (("a", "b"), 0.0, 1.0)])
    assert chain.conversion_probability() == pytest.approx(0.5, rel=1e-12)
    # Removing b cuts a -> b: p_a = 1/3.
    assert chain.removal_effects() == pytest.approx({"a": 1.0, "b": 1 - (1 / 3) / 0.5}, rel=1e-12)


def test_never_converting_chain() -> None:
    chain = MarkovChain.from_paths([(("a", "b"), 0.0, 3.0)])
    assert chain.conversion_probability() == 0.0
    assert chain.removal_effects() == {"a": 0.0, "b": 0.0}
    assert chain.channel_weights() == {}
    assert chain.attribute(0.0, 0.0) == {"a": (0.0, 0.0), "b": (0.0, 0.0)}


def test_zero_weight_paths_list_channels_without_transitions() -> None:
    chain = MarkovChain.from_paths([(("a",), 1.0, 0.0), (("z",), 0.0, 0.0), ((), 5.0, 0.0)])
    assert chain.channels == ("a", "z")
    assert chain.removal_effects() == {"a": 1.0, "z": 0.0}


@pytest.mark.parametrize("bad", [(("a",), -1.0, 0.0), (("a",), 1.0, math.nan), ((START,), 1.0, 0.0)])
def test_from_paths_rejects(bad: tuple[tuple[str, ...], float, float]) -> None:
    with pytest.raises(ValueError):
        MarkovChain.from_paths([bad])


@pytest.mark.parametrize(
    "transitions",
    [{CONVERSION: {"a": 1.0}}, {"a": {START: 1.0}}, {START: {"a": -1.0}}, {START: {"a": math.inf}}],
)
def test_constructor_rejects(transitions: dict[str, dict[str, float]]) -> None:
    with pytest.raises(ValueError):
        MarkovChain(transitions)


@DETERMINISTIC
@given(paths=path_counts)
def test_removal_effects_are_non_negative_and_weights_a_distribution(
    paths: list[tuple[list[str], int, int]],
) -> None:
    chain = MarkovChain.from_paths((p, float(c), float(n)) for p, c, n in paths)
    p_full = chain.conversion_probability()
    assert 0.0 <= p_full <= 1.0
    effects = chain.removal_effects()
    assert set(effects) == {c for p, _, _ in paths for c in p}
    assert all(0.0 <= e <= 1.0 for e in effects.values())
    weights = chain.channel_weights()
    if any(c > 0 for _, c, _ in paths):
        assert p_full > 0.0
        assert math.fsum(weights.values()) == pytest.approx(1.0, abs=1e-12)
        split = chain.attribute(10.0, 100.0)
        assert math.fsum(c for c, _ in split.values()) == pytest.approx(10.0)
        assert math.fsum(v for _, v in split.values()) == pytest.approx(100.0)
    else:
        assert weights == {}


def test_learner_matches_from_paths_and_round_trips() -> None:
    rng = random.Random(3)
    learner = JourneyLearner()
    paths: list[tuple[list[str], float, float]] = []
    for _ in range(2_000):
        journey = [rng.choice(CHANNELS) for _ in range(rng.randint(1, 6))]
        converted = rng.random() < 0.3
        learner.observe(journey, converted)
        paths.append((journey, 1.0 if converted else 0.0, 0.0 if converted else 1.0))
    direct = MarkovChain.from_paths(paths)
    assert learner.chain().removal_effects() == pytest.approx(direct.removal_effects(), rel=1e-12)

    snapshot = learner.to_dict()
    restored = JourneyLearner.from_dict(json.loads(json.dumps(snapshot)))
    assert restored.to_dict() == snapshot
    assert restored.chain().channel_weights() == learner.chain().channel_weights()

    # Bounded memory: counters only per (from, to) state pair, however many journeys were seen.
    counters = sum(len(row) for row in snapshot["transitions"].values())
    assert counters <= (len(CHANNELS) + 3) ** 2


def test_learner_weight_and_validation() -> None:
    a = JourneyLearner()
    a.observe(["kol", "feed"], True, weight=3.0)
    b = JourneyLearner()
    for _ in range(3):
        b.observe(["kol", "kol", "feed"], True)
    assert a.to_dict() == b.to_dict()
    with pytest.raises(ValueError):
        a.observe(["kol"], True, weight=-1.0)
    with pytest.raises(ValueError):
        a.observe([NULL], False)
    with pytest.raises(ValueError, match="version"):
        JourneyLearner.from_dict({"version": 99})
    with pytest.raises(ValueError):
        JourneyLearner.from_dict({"version": 1, "channels": [], "transitions": {START: {"kol": -2}}})
    assert JourneyLearner().chain().channel_weights() == {}


# Value chain: start -> a (2) | b (2); a, b -> conversion (1) | null (1); a converts at 10, b at 30.
# P = 1/2 and each channel's removal halves it (count weights 1/2, 1/2); E[value] = 1/4*10 + 1/4*30 = 10,
# 7.5 without a and 2.5 without b: value removal effects 1/4 and 3/4.
VALUED = [(("a",), 1.0, 10.0, 1.0), (("b",), 1.0, 30.0, 1.0)]


def test_value_removal_effects_hand_worked() -> None:
    chain = MarkovChain.from_valued_paths(VALUED)
    assert chain.removal_effects() == pytest.approx({"a": 0.5, "b": 0.5}, rel=1e-12)
    assert chain.value_removal_effects() == pytest.approx({"a": 0.25, "b": 0.75}, rel=1e-12)
    assert chain.weights() == (
        pytest.approx({"a": 0.5, "b": 0.5}, rel=1e-12),
        pytest.approx({"a": 0.25, "b": 0.75}, rel=1e-12),
    )
    split = chain.attribute(2.0, 40.0)
    assert split["a"] == pytest.approx((1.0, 10.0), rel=1e-12)
    assert split["b"] == pytest.approx((1.0, 30.0), rel=1e-12)


def test_value_weights_without_values_equal_count_weights() -> None:
    unvalued = MarkovChain.from_paths((p, c, n) for p, c, _, n in VALUED)
    assert not unvalued.has_values
    assert unvalued.value_weights() == unvalued.channel_weights()
    # Zero value everywhere: no value weights; attribute() then splits any given value by counts.
    free = MarkovChain.from_valued_paths((p, c, 0.0, n) for p, c, _, n in VALUED)
    assert free.value_weights() == {}
    split = free.attribute(2.0, 8.0)
    assert split["a"] == pytest.approx((1.0, 4.0)) and split["b"] == pytest.approx((1.0, 4.0))


@DETERMINISTIC
@given(
    paths=path_counts,
    unit=st.floats(min_value=0.01, max_value=1e6),
)
def test_constant_value_per_conversion_gives_count_weights(
    paths: list[tuple[list[str], int, int]], unit: float
) -> None:
    # The value chain differs from the count chain only by the value carried into (conversion): with
    # one price for every conversion the two sets of weights coincide.
    chain = MarkovChain.from_valued_paths((p, float(c), unit * c, float(n)) for p, c, n in paths)
    counts, values = chain.weights()
    assert values.keys() == counts.keys()
    for c, w in counts.items():
        assert values[c] == pytest.approx(w, rel=1e-9, abs=1e-12)


def test_from_valued_paths_rejects_bad_value() -> None:
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError):
            MarkovChain.from_valued_paths([(("a",), 1.0, bad, 0.0)])
    with pytest.raises(ValueError):
        MarkovChain({START: {"a": 1.0}}, conversion_values={CONVERSION: 1.0})


def test_learner_values_and_version_1_snapshots() -> None:
    learner = JourneyLearner()
    for channels, conversions, value, nulls in VALUED:
        learner.observe(channels, True, weight=conversions, value=value)
        learner.observe(channels, False, weight=nulls)
    direct = MarkovChain.from_valued_paths(VALUED)
    assert learner.chain().weights() == direct.weights()
    snapshot = json.loads(json.dumps(learner.to_dict()))
    assert snapshot["version"] == 2
    assert JourneyLearner.from_dict(snapshot).chain().weights() == direct.weights()
    # A version-1 snapshot (no values) still loads; its value weights are its count weights.
    old = {"version": 1, "channels": snapshot["channels"], "transitions": snapshot["transitions"]}
    restored = JourneyLearner.from_dict(old)
    counts, values = restored.chain().weights()
    assert values == counts == pytest.approx({"a": 0.5, "b": 0.5})
    assert restored.to_dict() == old


def test_weights_from_path_counts() -> None:
    # The stream's journey-path counters for VALUED, with a field of an unknown kind that must be skipped.
    counts = {"a|1": 1, "a|0": 1, "a|v": 10, "b|1": 1, "b|0": 1, "b|v": 30, "b|later": 99}
    assert weights_from_path_counts(counts) == MarkovChain.from_valued_paths(VALUED).weights()
    # Counters written before value was tracked have no "|v" field: value weights = count weights.
    old = {k: v for k, v in counts.items() if not k.endswith("|v")}
    count_w, value_w = weights_from_path_counts(old) or ({}, {})
    assert value_w == count_w == pytest.approx({"a": 0.5, "b": 0.5})
    # Multi-touch paths are split on ">"; nothing converted yet: no weights (keep those in use).
    assert weights_from_path_counts({"a>b|1": 2, "a>b|v": 5}) == ({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5})
    assert weights_from_path_counts({"a>b|0": 3}) is None
    assert weights_from_path_counts({}) is None
