"""Micro-benchmark of allocate(): conversions attributed per second, per model, on one core.

Run: ``python -m stream_processors.attribution.bench [events] [seed]``. The baseline is a loop that only
touches the same inputs (sums totals and journey lengths), measured in the same run, so the ratio is
comparable across machines where the absolute rates are not.

``python -m stream_processors.attribution.bench --markov PATHS_FILE`` times learning the Markov weights
(both maps, what the stream's refresh computes) from a paths file such as ChannelAttribution's Data.csv.
"""

from __future__ import annotations

import gc
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence

from .markov import MarkovChain
from .models import MODEL_NAMES, Lookback, ModelName, Touch, allocate
from .paths import read_paths

_CHANNELS = ("kol", "brand", "feed", "search")
_DAY = 86_400.0
_LOOKBACK = Lookback(view_s=1 * _DAY, engaged_s=7 * _DAY)
_HALF_LIFE_S = 2 * _DAY
# Plausible learned removal-effect weights; their exact values do not affect the cost.
_CHANNEL_WEIGHTS = {"kol": 0.4, "brand": 0.15, "feed": 0.25, "search": 0.2}
_REPEATS = 5

Journey = tuple[list[Touch], float, int]


def make_journeys(events: int, seed: int) -> list[Journey]:
    """Journeys of 1-8 touches, most short, spread over the engaged lookback so some fall outside the
    view lookback, with a conversion value in minor units."""
    rng = random.Random(seed)
    journeys: list[Journey] = []
    for _ in range(events):
        n = min(8, 1 + int(rng.expovariate(0.45)))
        conversion_at = 1.7e9 + rng.uniform(0.0, 30 * _DAY)
        touches = [
            Touch(
                at=conversion_at - rng.uniform(0.0, 7.5 * _DAY),
                campaign_id=f"c{rng.randrange(20)}",
                channel=rng.choice(_CHANNELS),
                creative_id=f"cr{rng.randrange(100)}",
                creator_id=f"k{rng.randrange(50)}" if rng.random() < 0.5 else None,
                engaged=rng.random() < 0.3,
            )
            for _ in range(n)
        ]
        journeys.append((touches, conversion_at, rng.randrange(100, 100_000)))
    return journeys


def _baseline(journeys: Sequence[Journey]) -> int:
    acc = 0
    for touches, _at, total in journeys:
        acc += total + len(touches)
    return acc


def _model_loop(model: ModelName) -> Callable[[Sequence[Journey]], int]:
    def run(journeys: Sequence[Journey]) -> int:
        acc = 0
        for touches, at, total in journeys:
            acc += len(
                allocate(
                    model,
                    touches,
                    at,
                    total,
                    lookback=_LOOKBACK,
                    half_life_s=_HALF_LIFE_S,
                    channel_weights=_CHANNEL_WEIGHTS,
                )
            )
        return acc

    return run


def _median_rate(fn: Callable[[Sequence[Journey]], int], journeys: Sequence[Journey]) -> float:
    samples: list[float] = []
    for _ in range(_REPEATS):
        # As timeit does: a collection landing in one repeat and not another is noise, not cost.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            start = time.perf_counter()
            fn(journeys)
            elapsed = time.perf_counter() - start
        finally:
            if gc_was_enabled:
                gc.enable()
        samples.append(len(journeys) / elapsed if elapsed > 0 else float("inf"))
    return statistics.median(samples)


def run_benchmark(events: int = 200_000, seed: int = 1) -> dict[str, float]:
    """-> {"events", "baseline_events_per_s", "<model>_events_per_s", "<model>_slowdown"} where slowdown
    is baseline rate / model rate (how many times the trivial loop's cost one allocate() costs)."""
    if events < 1:
        raise ValueError("events must be >= 1")
    journeys = make_journeys(events, seed)
    baseline = _median_rate(_baseline, journeys)
    figures: dict[str, float] = {"events": float(events), "baseline_events_per_s": baseline}
    for model in MODEL_NAMES:
        rate = _median_rate(_model_loop(model), journeys)
        figures[f"{model}_events_per_s"] = rate
        figures[f"{model}_slowdown"] = baseline / rate
    return figures


def format_figures(figures: dict[str, float]) -> str:
    lines = [
        f"allocate() micro-benchmark: {int(figures['events'])} conversions, 1-8 touches, "
        f"median of {_REPEATS}, one core",
        f"{'model':<12}{'events/s':>14}{'x baseline':>12}",
        f"{'baseline':<12}{figures['baseline_events_per_s']:>14,.0f}{1.0:>12.1f}",
    ]
    for model in MODEL_NAMES:
        lines.append(
            f"{model:<12}{figures[f'{model}_events_per_s']:>14,.0f}{figures[f'{model}_slowdown']:>12.1f}"
        )
    return "\n".join(lines)


def markov_learn_benchmark(paths_file: str, repeats: int = 50) -> dict[str, float]:
    """-> {"channels", "solve_us", "build_us"}: best-of-`repeats` microseconds to solve both weight maps
    (MarkovChain.weights: full chain and one removal per channel, counts and value) and to build the
    chain from the file's paths."""
    with open(paths_file, encoding="utf-8-sig", newline="") as fh:
        records = read_paths(fh)

    def build() -> MarkovChain:
        return MarkovChain.from_valued_paths((r.channels, r.conversions, r.value, r.nulls) for r in records)

    chain = build()
    solve = build_ = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        chain.weights()
        solve = min(solve, time.perf_counter() - start)
        start = time.perf_counter()
        build()
        build_ = min(build_, time.perf_counter() - start)
    return {"channels": float(len(chain.channels)), "solve_us": solve * 1e6, "build_us": build_ * 1e6}


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] == "--markov":
        f = markov_learn_benchmark(argv[1])
        print(
            f"Markov weights ({int(f['channels'])} channels): solve {f['solve_us']:.0f} us, "
            f"chain from paths {f['build_us']:.0f} us (best of 50)"
        )
        return 0
    events = int(argv[0]) if argv else 200_000
    seed = int(argv[1]) if len(argv) > 1 else 1
    print(format_figures(run_benchmark(events, seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
