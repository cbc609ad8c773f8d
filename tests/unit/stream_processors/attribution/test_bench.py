from __future__ import annotations

from pathlib import Path

from stream_processors.attribution.bench import (
    format_figures,
    make_journeys,
    markov_learn_benchmark,
    run_benchmark,
)
from stream_processors.attribution.models import MODEL_NAMES


def test_journeys_are_realistic_and_seeded() -> None:
    journeys = make_journeys(500, seed=4)
    assert journeys == make_journeys(500, seed=4)
    lengths = {len(touches) for touches, _, _ in journeys}
    assert min(lengths) == 1 and max(lengths) <= 8
    assert all(t.at <= at for touches, at, _ in journeys for t in touches)


def test_run_benchmark_reports_every_model_against_the_baseline() -> None:
    figures = run_benchmark(events=300, seed=2)
    assert figures["baseline_events_per_s"] > 0
    for model in MODEL_NAMES:
        assert figures[f"{model}_events_per_s"] > 0
        assert figures[f"{model}_slowdown"] > 0
    text = format_figures(figures)
    assert all(model in text for model in MODEL_NAMES)
    assert "baseline" in text


def test_markov_learn_benchmark(tmp_path: Path) -> None:
    paths = tmp_path / "paths.csv"
    paths.write_text(
        "path;total_conversions;total_conversion_value;total_null\na > b;1;10;1\nb;1;30;2\na;0;0;3\n"
    )
    figures = markov_learn_benchmark(str(paths), repeats=3)
    assert figures["channels"] == 2
    assert figures["solve_us"] > 0 and figures["build_us"] > 0
