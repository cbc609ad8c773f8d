"""The bench's pure parts: the drain rate's window, the drains' medians, the latency figures,
the peers' command line and the printed table (the harness end to end: tests/integration/test_bench.py)."""

from __future__ import annotations

import itertools
import json
import math

import pytest
from pydantic import SecretStr

from seedloop import bench_drain
from seedloop.bench import drain_figures
from seedloop.bench_children import service_args
from seedloop.bench_drain import drain_rate
from seedloop.bench_latency import latency_figures
from seedloop.bench_peers.runner import group_timeouts
from seedloop.bench_report import format_bench
from seedloop.settings import REPO_SEEDS, Settings


def test_the_drain_rate_is_the_slope_between_10_and_90_percent(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = itertools.count(0.0, 1.0)
    monkeypatch.setattr(bench_drain.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(bench_drain.time, "sleep", lambda s: None)
    # A slow start (group join), then 100 events a sample: the start is outside the window.
    counts = iter([0, 0, 0, 5, *range(105, 1001, 100), 1000])
    out = drain_rate(lambda: next(counts), 1000, [], timeout=100)
    assert out["eps"] == pytest.approx(100.0)
    assert out["events"] == 1000


def test_drain_figures_are_medians_of_the_runs_and_their_ratios() -> None:
    drains = {
        "baseline": [{"eps": 100.0}, {"eps": 300.0}, {"eps": 200.0}],
        "baseline_eager": [{"eps": 400.0}],
        "pipeline": [{"eps": 150.0, "worker_rss_mb": [90.0, None]}, {"eps": 50.0, "worker_rss_mb": [110.0]}],
    }
    out = drain_figures(drains, 3000)
    assert out["baseline_eps"] == 200.0 and out["pipeline_eps"] == 100.0
    assert out["ratio"] == 0.5 and out["ratio_same_delivery"] == 0.25
    assert out["baseline_runs_eps"] == [100.0, 300.0, 200.0]
    assert out["drain_worker_rss_mb"] == 100.0 and out["drain_events"] == 3000
    assert drain_figures({}, 0)["ratio"] is None


def test_latency_counts_from_the_warm_up_and_reports_what_never_became_visible() -> None:
    records = [("t", 0, 0, 9.0), ("t", 0, 1, 10.0), ("t", 0, 2, 10.5), ("t", 1, 0, 11.0)]
    visible = {("t", 0, 0): 9.5, ("t", 0, 1): 10.1, ("t", 0, 2): 10.7}
    out = latency_figures(records, lambda t, p, o: visible.get((t, p, o)), counted_from=10.0)
    assert out["latency_events"] == 2 and out["latency_not_visible"] == 1
    assert out["latency_p50_ms"] == pytest.approx(100.0) and out["latency_max_ms"] == pytest.approx(200.0)
    assert math.isnan(latency_figures([], lambda t, p, o: None, 0.0)["latency_p99_ms"])


def test_peers_get_the_services_and_the_faust_apps_group_timeouts() -> None:
    settings = Settings(
        kafka_bootstrap_servers="127.0.0.1:9",
        redis_url=SecretStr("redis://127.0.0.1:7/0"),
        topic_prefix="b1",
        seeds_dir=REPO_SEEDS,
    )
    args = service_args(settings, "g", "k")
    assert args == ["--bootstrap", "127.0.0.1:9", "--redis", "redis://127.0.0.1:7/0", "--prefix", "b1",
                    "--group", "g", "--counter-key", "k"]  # fmt: skip
    timeouts = group_timeouts(3.0)
    assert timeouts["session.timeout.ms"] == timeouts["max.poll.interval.ms"] == 10_000
    assert json.loads(json.dumps(timeouts)) == timeouts  # travels on the command line as JSON


def test_the_table_names_every_figure_and_dashes_what_was_not_measured() -> None:
    table = format_bench({"baseline_eps": 3813.2, "ratio": 0.64, "latency_p99_ms": float("nan")})
    lines = table.splitlines()
    assert lines[0].split() == ["figure", "value", "baseline", "/", "note"]
    assert any(line.startswith("baseline_eps") and "3,813" in line for line in lines)
    assert any(line.startswith("ratio pipeline / baseline") and "0.64" in line for line in lines)
    assert any(line.startswith("latency_p99_ms") and "n/a" in line for line in lines)
    assert any(line.startswith("scaleout_factor") and line.split()[1] == "-" for line in lines)
