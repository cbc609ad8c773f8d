"""What the campaign manager sees: the demo's live view in a real 80x24 terminal (tmux), and the
report as valid Markdown in a pipe."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from rich.console import Console

from seedloop import runtime
from seedloop.demo import live_view, print_report, sim_time_iso
from seedloop.report import report_markdown
from seedloop.settings import Settings
from tests.conftest import REPO

pytestmark = pytest.mark.integration


def _tables(markdown: str) -> list[list[str]]:
    """The Markdown tables of a document, each as its lines."""
    tables: list[list[str]] = []
    current: list[str] = []
    for line in markdown.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def assert_valid_markdown_tables(markdown: str) -> None:
    tables = _tables(markdown)
    assert len(tables) >= 2, markdown
    for table in tables:
        cells = {line.count("|") for line in table}
        assert len(cells) == 1 and all(line.endswith("|") for line in table), table


def _wide_report() -> dict[str, object]:
    scenario = runtime.scenario_of(Settings())
    campaigns = [
        {
            "campaign_id": c.campaign_id, "target_kind": c.target_kind, "target": c.target,
            "spend": 1_234_567.89, "views": 9_876_543, "follows": 12_345.6, "add_to_carts": 23_456.7,
            "checkouts": 3_456.7, "gmv": 12_345_678.9, "cpa": 357.12, "roas": 10.0, "bids": dict(c.channels),
            "loyalty": {"buyers": 1234, "repeat_buyers": 56, "followers": 7890, "retained_followers": 12},
        }
        for c in scenario.campaigns
    ]
    return {"model": "last", "currency": "CNY", "events_processed": 1_000_000, "dead_letters": 0,
            "bid_adjustments": 42, "totals": {"spend": 1.0, "gmv": 2.0}, "retention_s": 86_400,
            "campaigns": campaigns}


def test_report_through_a_pipe_is_valid_markdown() -> None:
    # The console the demo prints with, writing to a pipe-like file: rich sees no terminal and
    # would wrap at 80 columns; the report must come out unwrapped.
    text = report_markdown(_wide_report())
    assert max(len(line) for line in text.splitlines()) > 80  # the case that used to break
    console = Console(file=io.StringIO(), width=80)
    assert not console.is_terminal
    print_report(console, text)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert out == text + "\n"
    assert_valid_markdown_tables(out)


def test_live_view_fits_80_columns_with_full_campaign_names() -> None:
    scenario = runtime.scenario_of(Settings())
    console = Console(file=io.StringIO(), width=80, height=24)
    console.print(live_view(scenario, {}, {}, 12_345_678, 1794384720.0, 9999.0))
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert len(lines) <= 22 and max(len(line) for line in lines) <= 80, lines
    for c in scenario.campaigns:
        assert any(line.split()[:1] == [c.campaign_id] for line in lines), c.campaign_id
    assert sim_time_iso(1794384720.0) == "2026-11-11T08:12Z"


def _tmux(sock: str, *args: str) -> str:
    return subprocess.run(["tmux", "-L", sock, *args], capture_output=True, text=True, check=True).stdout


# 80x24: the smallest terminal it must fit; 120x40: where stale copies of the table used to pile up
# every optimizer round (its log lines bypassed rich's Live and broke the in-place redraw).
@pytest.mark.parametrize(("cols", "rows"), [(80, 24), (120, 40)])
def test_demo_live_view_in_a_terminal(tmp_path: Path, cols: int, rows: int) -> None:
    assert shutil.which("tmux"), "tmux is not installed: run `bash tests/tools.sh` (Debian's tmux)"
    sock = f"seedloop-test-{uuid.uuid4().hex[:8]}"
    rc_file = tmp_path / "rc"
    env = " ".join(
        f"{k}={v}" for k, v in {
            "SEEDLOOP_OPTIMIZER_INTERVAL_S": "2", "SEEDLOOP_REBALANCE_TIMEOUT_S": "3", "SEEDLOOP_WEB_PORT": "0",
            "SEEDLOOP_OPTIMIZER_PORT": "0", "SEEDLOOP_SIMULATOR_PORT": "0", "PYTHONPATH": str(REPO),
        }.items()
    )
    unset = " ".join(f"-u {k}" for k in os.environ if k.startswith(("SEEDLOOP_", "KAFKA_", "REDIS_")))
    command = (
        f"cd {REPO} && env {unset} {env} {sys.executable} -m seedloop demo --duration 15 --workers 1 "
        f"--report-dir {tmp_path}/report; echo $? > {rc_file}; sleep 600"
    )
    _tmux(sock, "new-session", "-d", "-x", str(cols), "-y", str(rows), command)
    try:
        captures: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(captures) < 2:
            # -J joins lines tmux wrapped, so a line too wide for 80 columns shows as one long line;
            # -S - includes the scrollback, where stale copies of the table would pile up.
            screen = _tmux(sock, "capture-pane", "-p", "-J", "-S", "-")
            if "seedloop demo" in screen and "c_pd_palette_kol" in screen:
                captures.append(screen)
                time.sleep(6)  # past an optimizer round (2 s) and several redraws
            else:
                time.sleep(0.5)
        while time.monotonic() < deadline + 60 and not rc_file.exists():
            time.sleep(0.5)
        final = _tmux(sock, "capture-pane", "-p", "-J", "-S", "-")
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)
    assert len(captures) == 2, f"the live table never appeared:\n{final}"
    scenario = runtime.scenario_of(Settings())
    for screen in captures:
        lines = screen.rstrip("\n").splitlines()
        # The live view: from its title on (the startup log lines above it are the log's business).
        view = lines[next(i for i, line in enumerate(lines) if re.search(r"seedloop demo \d+s", line)):]
        assert max(len(line) for line in view) <= min(cols, 80) and len(view) <= 24, screen
        assert len(re.findall(r"seedloop demo \d+s", screen)) == 1, screen  # redrawn in place
        assert re.search(r"sim 2026-\d\d-\d\dT\d\d:\d\dZ", screen), screen
        for c in scenario.campaigns:
            assert len(re.findall(rf"(?m)^{c.campaign_id} ", screen)) == 1, (c.campaign_id, screen)
        assert "K kol, B brand, F feed, S search" in " ".join(screen.split()), screen  # the legend
    assert captures[0] != captures[1]  # it is live
    assert rc_file.exists() and rc_file.read_text().strip() == "0", final
    assert len(re.findall(r"seedloop demo \d+s", final)) == 1, final
    (tmp_path / "captures.txt").write_text("\n=====\n".join([*captures, final]))
