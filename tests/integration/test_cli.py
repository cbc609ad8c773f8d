"""The commands a user runs, as subprocesses, against real embedded services."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from seedloop.settings import Settings
from tests.conftest import REPO, settings_env

# The subject is the CLI (its output, exit codes, reports), not the broker: one service tier.
pytestmark = [pytest.mark.integration, pytest.mark.one_tier]


def test_demo_closes_the_loop_and_writes_reports(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEEDLOOP_", "KAFKA_", "REDIS_"))}
    env.update({"SEEDLOOP_OPTIMIZER_INTERVAL_S": "2", "SEEDLOOP_REBALANCE_TIMEOUT_S": "3",
                "SEEDLOOP_WEB_PORT": "0"})
    out = subprocess.run(
        [sys.executable, "-m", "seedloop", "demo", "--duration", "30", "--workers", "1", "--no-live",
         "--report-dir", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=200, cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["events_produced"] > 10_000
    assert report["events_processed"] == report["events_produced"] - report["dead_letters"]
    assert report["totals"]["checkouts"] > 0 and report["totals"]["gmv"] > 0
    assert report["bid_adjustments"] >= 1
    attributed = [c for c in report["campaigns"] if c["checkouts"] > 0]
    assert attributed and all(c["roas"] is not None and c["gmv"] > 0 for c in attributed)
    # The loop closed: at least one bid differs from the seeded starting bid.
    seeds = {c["campaign_id"]: c for c in json.loads((REPO / "seeds" / "campaigns.json").read_text())}
    assert any(
        abs(bid - seeds[c["campaign_id"]]["channels"][ch]) > 1e-9 for c in report["campaigns"] for ch, bid in c["bids"].items()
    )
    # Loyalty per campaign is in the report: buyers through some campaign, never more repeat
    # buyers than buyers.
    assert any(c["loyalty"]["buyers"] > 0 for c in report["campaigns"])
    assert all(c["loyalty"]["repeat_buyers"] <= c["loyalty"]["buyers"] for c in report["campaigns"])
    # The default holdout (5%) gives every campaign both lift groups; events processed count the
    # ghost views (produced, never paid), so they still equal what was produced.
    lifts = [c["lift"] for c in report["campaigns"]]
    assert all(lift is not None and lift["exposed"]["users"] > lift["held_out"]["users"] > 0 for lift in lifts)
    assert any(lift["incremental_gmv_ci"] is not None for lift in lifts)
    md = (tmp_path / "report.md").read_text()
    assert "| c_pmpm_launch |" in md and "bid adjustments published" in md
    assert "Loyalty per campaign" in md and "Conversion lift" in md
    # stdout is a pipe here: the report printed must be the same valid Markdown, not wrapped at 80.
    from tests.integration.test_demo_display import assert_valid_markdown_tables

    assert md in out.stdout
    assert_valid_markdown_tables(out.stdout)
    # Progress lines show simulated time as ISO-8601 UTC, not epoch seconds.
    assert re.search(r"progress .*sim_time=2026-11-\d\dT\d\d:\d\dZ", out.stderr), out.stderr[-2000:]


def test_simulate_json_reports_what_the_broker_acknowledged(settings: Settings) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "seedloop", "simulate", "--events", "3000", "--json", "--no-bids", "--rate", "20000"],
        env=settings_env(settings), capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["events"] == 3000 and result["failed"] == 0
    totals = result["totals"]
    assert sum(totals[k] for k in ("views", "follows", "add_to_carts", "checkouts")) == 3000
    assert sum(c["views"] for c in result["campaigns"].values()) == totals["views"]
    assert abs(sum(c["spend"] for c in result["campaigns"].values()) - totals["spend"]) < 1e-6


def test_commands_explain_themselves() -> None:
    for cmd in ([], ["demo"], ["simulate"], ["worker"], ["optimize"], ["report"], ["attribute"], ["evaluate"], ["stack"]):
        out = subprocess.run([sys.executable, "-m", "seedloop", *cmd, "--help"], capture_output=True, text=True,
                             timeout=30, cwd=REPO)
        assert out.returncode == 0 and "usage: seedloop" in out.stdout


def test_missing_services_give_a_clear_error() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEEDLOOP_", "KAFKA_", "REDIS_"))}
    out = subprocess.run([sys.executable, "-m", "seedloop", "worker"], env=env, capture_output=True, text=True,
                         timeout=30, cwd=REPO)
    assert out.returncode == 2 and "KAFKA_BOOTSTRAP_SERVERS" in out.stderr


def test_help_documents_the_exit_codes() -> None:
    out = subprocess.run([sys.executable, "-m", "seedloop", "--help"], capture_output=True, text=True, timeout=30,
                         cwd=REPO)
    assert out.returncode == 0
    # "  4    Redis unreachable ...\n       (continued)" -> {"4": "Redis unreachable ... (continued)"}
    entries = dict(re.findall(r"^ {2}(\d+) +(.*(?:\n {5,}.*)*)", out.stdout.split("exit codes:")[1], re.M))
    for code, words in (("2", "configuration error"), ("3", "SEEDLOOP_ON_STATE_LOSS"), ("4", "REDIS_URL"),
                        ("5", "KAFKA_BOOTSTRAP_SERVERS"), ("70", "batch could not be applied")):
        assert words in " ".join(entries[code].split()), (code, entries.get(code))
    assert "SEEDLOOP_CONNECT_TIMEOUT_S" in out.stdout
    sub = subprocess.run([sys.executable, "-m", "seedloop", "worker", "--help"], capture_output=True, text=True,
                         timeout=30, cwd=REPO)
    assert "--connect-timeout" in sub.stdout


def test_report_piped_is_valid_markdown(settings: Settings) -> None:
    from seedloop.topics import ensure_topics
    from tests.integration.test_demo_display import assert_valid_markdown_tables

    ensure_topics(settings)  # a fresh prefix: the report reads end offsets of its topics
    out = subprocess.run([sys.executable, "-m", "seedloop", "report"], env=settings_env(settings),
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| c_pd_palette_kol |" in out.stdout
    assert_valid_markdown_tables(out.stdout)
