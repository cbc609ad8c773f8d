"""`seedloop evaluate` as the on-call engineer runs it: progress on stderr, readable text, plots."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_evaluate_half_a_day_shows_progress_and_writes_plots(tmp_path: Path) -> None:
    # Half a day: 24 rounds, the shock at round 12; enough for every section, half the time of a day.
    out = subprocess.run(
        [sys.executable, "-m", "seedloop", "evaluate", "--days", "0.5", "--seed", "7", "--plots", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # stderr is a pipe: one line per finished step (five policy runs, evidence, levers, plots).
    progress = [line for line in out.stderr.splitlines() if line.startswith("seedloop evaluate: ")]
    for step in ("static done", "optimizer done", "oracle done", "optimizer (shocked) done",
                 "static (shocked) done", "optimizer_lift done", "evidence bound done", "lever headroom done",
                 "plots written"):
        assert any(f"seed 7: {step}" in line for line in progress), (step, out.stderr)
    assert "after never" not in out.stdout
    assert "never settled again" in out.stdout or "settled again after " in out.stdout, out.stdout[-2000:]
    # the lift section: the lift-steered optimizer beside the attributed one, intervals against the truth
    assert "conversion lift (holdout share " in out.stdout and "campaign-days" in out.stdout, out.stdout[-2000:]
    assert {p.name for p in tmp_path.glob("*.png")} == {
        f"{run}_{what}.png" for run in ("optimizer", "shock") for what in ("bids", "efficiency", "spend")
    }
