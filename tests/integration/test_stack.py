"""`seedloop stack --kafka apache`: the production broker on a laptop, without Docker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_stack_with_apache_kafka_serves_a_real_broker_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEEDLOOP_", "KAFKA_", "REDIS_"))}
    data = tmp_path / "kafka-data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "seedloop", "stack", "--kafka", "apache", "--kafka-data", str(data)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        exports = dict(proc.stdout.readline().strip().split("=", 1) for _ in range(2))
        bootstrap = exports["KAFKA_BOOTSTRAP_SERVERS"]
        # Apache Kafka answers (the embedded broker reports its own cluster id format and no
        # controller quorum; this one has a KRaft controller).
        meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=20)
        assert len(meta.brokers) == 1 and meta.controller_id == 1
        run = subprocess.run(
            [sys.executable, "-m", "seedloop", "simulate", "--events", "2000", "--json", "--no-bids"],
            cwd=REPO, env={**env, **exports, "SEEDLOOP_SIMULATOR_PORT": "0"},
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        assert json.loads(run.stdout)["events"] >= 2000
        assert (data / "node-1" / "data" / "meta.properties").is_file()
    finally:
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        code = proc.wait(60)
    assert code == 0, proc.stderr.read()[-2000:] if proc.stderr else ""
    print(f"stack stopped {time.monotonic() - started:.1f}s after Ctrl-C")
    # Kept for the next run: the data folder was named.
    assert (data / "node-1" / "data").is_dir()
