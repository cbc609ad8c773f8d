from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_processors.attribution.markov import CONVERSION, NULL, START, JourneyLearner, MarkovChain

from .strategies import CHANNELS, DETERMINISTIC, channel_paths

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
@given(
    paths=st.lists(
        st.tuples(
            channel_paths, st.integers(min_value=0, max_value=5), st.integers(min_value=0, max_value=5)
        ),
        min_size=1,
        max_size=25,
    )
)
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
