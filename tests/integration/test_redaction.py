"""End to end: a REDIS_URL whose password is a query parameter (`?password=`, accepted by
redis-py) against a password-protected Redis. The demo prints the URL in its services line, each
worker logs its settings at start into logs/worker-*.log, and report.json carries the settings:
the password must be in none of them, while the redacted URL (so the place that would leak) is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from seedloop.embedded import EmbeddedStack, free_port
from tests.conftest import REPO

pytestmark = pytest.mark.integration

PW = "qu3ry-Param-pw-8e1b"


@pytest.fixture
def secure_stack(tmp_path: Path) -> Iterator[EmbeddedStack]:
    with EmbeddedStack(log_dir=tmp_path / "stack", redis_password=PW) as s:
        yield s


def test_a_query_parameter_password_is_never_printed(secure_stack: EmbeddedStack, tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{secure_stack.redis.port}/0?password={PW}"
    shown = f"redis://127.0.0.1:{secure_stack.redis.port}/0?password=**********"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEEDLOOP_", "KAFKA_", "REDIS_"))}
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": secure_stack.bootstrap,
        "REDIS_URL": url,
        "SEEDLOOP_TOPIC_PREFIX": f"r{uuid.uuid4().hex[:10]}",
        "SEEDLOOP_LOG_LEVEL": "DEBUG",  # every line the demo can print, librdkafka's included
        "SEEDLOOP_WEB_PORT": str(free_port()),
        "SEEDLOOP_OPTIMIZER_PORT": str(free_port()),
        "SEEDLOOP_OPTIMIZER_INTERVAL_S": "1",
        "SEEDLOOP_REBALANCE_TIMEOUT_S": "3",
    })
    report_dir = tmp_path / "report"
    out = subprocess.run(
        [sys.executable, "-m", "seedloop", "demo", "--duration", "3", "--workers", "1", "--no-live",
         "--report-dir", str(report_dir)],
        env=env, capture_output=True, text=True, timeout=240, cwd=REPO,
    )
    printed = out.stdout + out.stderr
    assert out.returncode == 0, printed[-4000:]

    # The places that print the URL did print it, redacted...
    assert f"redis={shown}" in out.stderr, out.stderr[-3000:]
    worker_logs = sorted((report_dir / "logs").glob("worker-*.log"))
    assert worker_logs
    worker_text = "".join(p.read_text(errors="replace") for p in worker_logs)
    assert "worker starting" in worker_text and shown in worker_text
    report = json.loads((report_dir / "report.json").read_text())
    assert report["settings"]["redis_url"] == shown
    # ... and the workers really used it (the password is right, not merely hidden).
    assert report["events_processed"] > 0

    # The password is nowhere: the demo's output, the workers' logs, the report files.
    assert PW not in printed
    for path in report_dir.rglob("*"):
        if path.is_file():
            assert PW not in path.read_text(errors="replace"), path
