"""`seedloop soak`'s samples span the run: first and last compare its two ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seedloop.embedded import free_port
from seedloop.soak import sample_interval, steady_samples
from tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_short_soak_samples_span_the_run(tmp_path: Path) -> None:
    out_file = tmp_path / "soak.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEEDLOOP_", "KAFKA_", "REDIS_"))}
    # A free port, not 0: Faust refuses port 0, and soak does not restart a worker that died.
    env.update({"SEEDLOOP_WEB_PORT": str(free_port()), "SEEDLOOP_REBALANCE_TIMEOUT_S": "3"})
    # --sample 30 on a 20 s run: the case that gave a single sample (first = last).
    out = subprocess.run(
        [sys.executable, "-m", "seedloop", "soak", "--duration", "20", "--sample", "30", "--rate", "500",
         "--json", str(out_file)],
        env=env, capture_output=True, text=True, timeout=240, cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out_file.read_text())
    samples = result["samples"]
    assert samples[0]["phase"] == "start" and samples[-1]["phase"] == "caught up"
    assert len(samples) >= 5, samples
    assert samples[-1]["t_s"] - samples[0]["t_s"] >= 20, samples
    assert samples[0]["produced"] < samples[-1]["produced"] == result["produced"]
    # first/last memory come from two different samples, past the warm-up, at the run's two ends.
    steady = steady_samples(samples, samples[0]["t_s"], 20)
    assert len(steady) >= 2 and steady[-1]["t_s"] - steady[0]["t_s"] >= 10, steady
    assert result["worker_rss_mb_first_last"] == [steady[0]["worker_rss_mb"], steady[-1]["worker_rss_mb"]]
    assert result["redis_mb_first_last"] == [steady[0]["redis_mb"], steady[-1]["redis_mb"]]


def test_sampling_of_a_60s_soak_with_the_default_interval() -> None:
    interval = sample_interval(60, 30)
    assert interval == 15
    load_start = 8.0
    times = [load_start + i * interval for i in range(5)] + [68.5, 72.0]
    samples = [{"t_s": t} for t in times]
    steady = steady_samples(samples, load_start, 60)
    assert steady[0]["t_s"] == load_start + 15 and steady[-1]["t_s"] == 72.0
    # Too few past the warm-up: all samples, never one sample as both first and last.
    assert steady_samples([{"t_s": 8.0}, {"t_s": 70.0}], 8.0, 600) == [{"t_s": 8.0}, {"t_s": 70.0}]
