"""Agreement with the established `ChannelAttribution` package (PyPI `channelattribution`, 2.2.5).

API used, from the package's own docstrings (cypack/ChannelAttribution.pyx) and manual
(https://cran.r-project.org/web/packages/ChannelAttribution/ChannelAttribution.pdf):

* ``heuristic_models(Data, var_path, var_conv, var_value=None, sep=">", flg_pro=True)`` -> DataFrame with
  ``channel_name``, ``{first,last,linear}_touch_conversions`` and ``..._value``;
* ``markov_model(Data, var_path, var_conv, var_value=None, var_null=None, order=1, nsim_start=1e5,
  max_step=None, out_more=False, sep=">", ncore=1, nfold=10, seed=0, conv_par=0.05, ...)`` -> with
  ``out_more=True`` a dict of DataFrames: ``result`` (``total_conversions``, ``total_conversion_value``)
  and ``removal_effects`` (``removal_effects_conversion``).

Its Markov model is a Monte-Carlo estimate, so it is compared within a few percent; the heuristics are
deterministic and compared to floating-point precision.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from stream_processors.attribution.markov import MarkovChain
from stream_processors.attribution.paths import PathRecord, attribute_paths

# The reference implementation is part of the test extras: missing, the tests fail (never skip).
try:
    import ChannelAttribution as ca
    import pandas as pd
except ImportError as exc:  # pragma: no cover - an incomplete test environment
    pytest.fail(f"the reference implementation is missing ({exc}): pip install -e '.[test]'", pytrace=False)

CHANNELS = ("kol", "brand", "feed", "search", "email")
# Ground truth the journeys are drawn from: how much each channel lifts the odds of converting.
LIFT = {"kol": 0.25, "brand": 0.05, "feed": 0.12, "search": 0.2, "email": 0.02}
UNIT_VALUE = 25.0  # constant value per conversion: see MarkovChain.attribute on value attribution


def _journeys(seed: int, n: int) -> list[PathRecord]:
    """n random user journeys (1-7 touches), aggregated per distinct path as attribution tools expect."""
    rng = random.Random(seed)
    agg: dict[tuple[str, ...], list[int]] = {}
    for _ in range(n):
        length = min(7, 1 + int(rng.expovariate(0.5)))
        path = tuple(rng.choices(CHANNELS, weights=(3, 2, 4, 3, 1), k=length))
        p = min(0.95, 0.03 + sum(LIFT[c] for c in set(path)))
        slot = agg.setdefault(path, [0, 0])
        slot[0 if rng.random() < p else 1] += 1
    return [PathRecord(p, float(c), UNIT_VALUE * c, float(nl)) for p, (c, nl) in agg.items()]


@pytest.fixture(scope="module")
def records() -> list[PathRecord]:
    return _journeys(seed=20240611, n=600)


@pytest.fixture(scope="module")
def frame(records: list[PathRecord]) -> Any:
    return pd.DataFrame(
        {
            "path": [" > ".join(r.channels) for r in records],
            # The package reads counts as unsigned integers.
            "total_conversions": [int(r.conversions) for r in records],
            "total_conversion_value": [r.value for r in records],
            "total_null": [int(r.nulls) for r in records],
        }
    )


def test_fixture_is_big_and_mixed(records: list[PathRecord]) -> None:
    assert sum(r.conversions + r.nulls for r in records) == 600
    assert len(records) >= 150  # distinct paths
    assert sum(r.conversions for r in records) > 50
    assert sum(r.nulls for r in records) > 50
    assert any(len(r.channels) >= 5 for r in records)


@pytest.mark.parametrize(
    ("ours", "theirs"), [("first", "first_touch"), ("last", "last_touch"), ("linear", "linear_touch")]
)
def test_heuristics_match_exactly(records: list[PathRecord], frame: Any, ours: str, theirs: str) -> None:
    ref = ca.heuristic_models(
        frame, "path", "total_conversions", var_value="total_conversion_value", flg_pro=False
    )
    ref = ref.set_index("channel_name")
    got = attribute_paths(records, ours)  # type: ignore[arg-type]
    assert set(got) == set(ref.index)
    for channel, credit in got.items():
        assert credit["conversions"] == pytest.approx(
            float(ref.loc[channel, f"{theirs}_conversions"]), rel=1e-9, abs=1e-12
        )
        assert credit["value"] == pytest.approx(
            float(ref.loc[channel, f"{theirs}_value"]), rel=1e-9, abs=1e-12
        )


def _run_reference_markov(frame: Any, seed: int, nsim_start: int, max_step: int | None = None) -> Any:
    """The package's Markov model on a paths frame, with all its outputs (out_more)."""
    return ca.markov_model(
        frame,
        "path",
        "total_conversions",
        var_value="total_conversion_value",
        var_null="total_null",
        out_more=True,
        nsim_start=nsim_start,
        max_step=max_step,
        seed=seed,
        verbose=False,
        flg_pro=False,
    )


def _markov_reference(frame: Any, max_step: int | None) -> tuple[Any, Any]:
    out = _run_reference_markov(frame, seed=7, nsim_start=300_000, max_step=max_step)
    return out["result"].set_index("channel_name"), out["removal_effects"].set_index("channel_name")


def test_markov_matches_within_a_few_percent(records: list[PathRecord], frame: Any) -> None:
    # The package stops each simulated journey after max_step steps (default: the longest path in the
    # data) and counts it as lost; with loops that truncation lowers its removal effects a little. A
    # generous max_step makes it estimate exactly the quantity solved here.
    result, effects = _markov_reference(frame, max_step=200)
    chain = MarkovChain.from_paths((r.channels, r.conversions, r.nulls) for r in records)
    ours = chain.removal_effects()
    for channel, effect in ours.items():
        assert effect == pytest.approx(float(effects.loc[channel, "removal_effects_conversion"]), rel=0.03)

    got = attribute_paths(records, "markov")
    for channel, credit in got.items():
        assert credit["conversions"] == pytest.approx(
            float(result.loc[channel, "total_conversions"]), rel=0.03
        )
        assert credit["value"] == pytest.approx(
            float(result.loc[channel, "total_conversion_value"]), rel=0.03
        )


def test_markov_matches_default_truncation_within_five_percent(records: list[PathRecord], frame: Any) -> None:
    result, _ = _markov_reference(frame, max_step=None)
    got = attribute_paths(records, "markov")
    for channel, credit in got.items():
        assert credit["conversions"] == pytest.approx(
            float(result.loc[channel, "total_conversions"]), rel=0.05
        )


# --- The package's own example data: 10,000 paths (Data.csv), value differing by last channel ----------

# The package seeds fold f of a run with `seed + f` (mt19937, nfold=10 folds), so seeds closer than 10
# share folds and their spread understates the noise: these are spaced 1000 apart.
REF_SEEDS = tuple(range(0, 8000, 1000))
# Each run reports one fold of nsim_start/10 simulated journeys. At 2e5 a run takes ~0.3 s and its value
# per channel still swings 1-6% (sd) between seeds on channels above 2% of conversions.
REF_NSIM = 200_000


def _data_csv() -> Any:
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("cypack")
    if spec is None or spec.origin is None:
        pytest.fail(
            "channelattribution's example data (cypack/data/Data.csv) is not installed", pytrace=False
        )
    path = Path(spec.origin).parent / "data" / "Data.csv"
    if not path.is_file():
        pytest.fail(f"{path} missing: reinstall channelattribution", pytrace=False)
    return path


@pytest.fixture(scope="module")
def data_csv_reference() -> tuple[list[PathRecord], dict[str, tuple[list[float], list[float]]]]:
    """Our records of Data.csv, and the reference's conversions and value per channel, one per seed."""
    from stream_processors.attribution.paths import read_paths

    path = _data_csv()
    frame = pd.read_csv(path, sep=";")
    per_channel: dict[str, tuple[list[float], list[float]]] = {}
    for seed in REF_SEEDS:
        out = _run_reference_markov(frame, seed=seed, nsim_start=REF_NSIM)
        for row in out["result"].itertuples():
            conv, value = per_channel.setdefault(str(row.channel_name), ([], []))
            conv.append(float(row.total_conversions))
            value.append(float(row.total_conversion_value))
    return read_paths(path), per_channel


def _tolerance(samples: list[float]) -> tuple[float, float]:
    """(mean, relative tolerance): 4 standard errors of the seeds' mean, plus 1% for what averaging
    cannot remove (the reference stops journeys at the longest observed path and reports the fold
    nearest the median: a bias of up to ~1% on this data against the exact solution)."""
    import statistics

    mean = statistics.fmean(samples)
    se = statistics.stdev(samples) / len(samples) ** 0.5
    return mean, 0.01 + 4.0 * se / mean


def test_markov_value_matches_reference_on_data_csv(
    data_csv_reference: tuple[list[PathRecord], dict[str, tuple[list[float], list[float]]]],
) -> None:
    records, reference = data_csv_reference
    got = attribute_paths(records, "markov")
    total_conv = sum(r.conversions for r in records)
    total_value = sum(r.value for r in records)
    assert set(got) == set(reference)
    big = [c for c, credit in got.items() if credit["conversions"] > 0.02 * total_conv]
    assert len(big) == 7  # alpha, iota, eta, beta, theta, lambda, epsilon
    old_misses = []
    for channel in big:
        conv_mean, conv_tol = _tolerance(reference[channel][0])
        value_mean, value_tol = _tolerance(reference[channel][1])
        assert got[channel]["conversions"] == pytest.approx(conv_mean, rel=conv_tol), channel
        assert got[channel]["value"] == pytest.approx(value_mean, rel=value_tol), channel
        # The former split (value = conversions x overall value per conversion) against the same bar.
        old_value = got[channel]["conversions"] * total_value / total_conv
        if abs(old_value / value_mean - 1.0) > value_tol:
            old_misses.append(channel)
    # The tolerance is tight enough to see that bias: alpha, a quarter of the conversions, closes the
    # cheapest ones (3.5 per conversion against 3.78 overall) and was over-credited by ~7.5%.
    assert "alpha" in old_misses
