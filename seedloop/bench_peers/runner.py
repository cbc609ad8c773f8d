"""Drains the bench's events with a peer (quixstreams or the plain loop), as a child process
supervised like the baseline agent (bench_children.Child), measured like it (bench_drain.drain_measured)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from seedloop.bench_children import Child, child_env, service_args
from seedloop.bench_drain import DrainJob, counter_key_reader, drain_measured
from seedloop.settings import Settings

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
# Where `quix_python` looks when this interpreter lacks quixstreams: a venv inside the ignored
# .venv (quixstreams pins confluent-kafka < 2.13, seedloop needs >= 2.16: not one environment).
QUIX_VENV = REPO / ".venv" / "bench-peers"
QUIX_PYTHON_ENV = "SEEDLOOP_BENCH_QUIX_PYTHON"
QUIX_INSTALL_HINT = (
    f"python -m venv {QUIX_VENV.relative_to(REPO)} && "
    f"{QUIX_VENV.relative_to(REPO)}/bin/pip install 'quixstreams>=3,<4' 'redis[hiredis]>=5,<9' "
    f"(or set {QUIX_PYTHON_ENV} to a python that has them)"
)


def group_timeouts(rebalance_timeout_s: float) -> dict[str, int]:
    """The group settings the Faust apps get (stream_processors.worker.consumer_app_options):
    10 s session, 1 s heartbeat. librdkafka sends max.poll.interval.ms as the JoinGroup rebalance
    timeout and wants it >= the session timeout; with its 300 s default the broker may hold a new
    group's first join for a long time (outside the measured window, but it slows every run)."""
    session_ms = int(max(10.0, rebalance_timeout_s) * 1000)
    return {
        "session.timeout.ms": session_ms,
        "heartbeat.interval.ms": 1000,
        "max.poll.interval.ms": session_ms,
    }


def quix_python() -> tuple[str | None, str]:
    """(an interpreter that imports quixstreams, redis and orjson, or None; why not / which)."""
    candidates: list[str] = []
    if os.environ.get(QUIX_PYTHON_ENV):
        candidates.append(os.environ[QUIX_PYTHON_ENV])
    elif importlib.util.find_spec("quixstreams") is not None:
        candidates.append(sys.executable)
    elif (QUIX_VENV / "bin" / "python").exists():
        candidates.append(str(QUIX_VENV / "bin" / "python"))
    if not candidates:
        return None, f"quixstreams is not installed: {QUIX_INSTALL_HINT}"
    python = candidates[0]
    probe = subprocess.run(
        [python, "-c", "import quixstreams, redis, orjson; print(quixstreams.__version__)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.returncode != 0:
        return None, f"{python} cannot import quixstreams/redis/orjson: {probe.stderr.strip()[-300:]}"
    return python, f"quixstreams {probe.stdout.strip()} ({python})"


def start_peer(
    kind: str, settings: Settings, group: str, counter_key: str, log_dir: Path, python: str, state_dir: Path
) -> Child:
    script = HERE / ("quix_app.py" if kind == "quix" else "plain_loop.py")
    argv = [
        python,
        str(script),
        *service_args(settings, group, counter_key),
        "--sums-key",
        f"bench:{kind}:sums:{group}",
        "--group-config",
        json.dumps(group_timeouts(settings.rebalance_timeout_s)),
    ]
    if kind == "quix":
        argv += ["--state-dir", str(state_dir)]
    return Child(argv, child_env(settings), log_dir / f"{group}.log")


def run_peer(kind: str, job: DrainJob, tag: str, python: str = sys.executable) -> dict[str, Any]:
    """One drain of the bench's events by `kind`, a fresh consumer group on a flushed Redis:
    events/s (bench_drain.drain_rate) and events per CPU-second over the same window."""
    client = job.client
    client.flushdb()
    group = f"bench-{kind}-{tag}"
    key = f"bench:{kind}:{tag}"
    with tempfile.TemporaryDirectory(prefix=f"seedloop-{kind}-") as state_dir:
        child = start_peer(kind, job.settings, group, key, job.log_dir, python, Path(state_dir))
        try:
            out = drain_measured(counter_key_reader(client, key), job.total, [child], client, job.timeout)
            # Not a speed figure: what the job produced (the quix app flushes once a second), so a
            # reader sees when a peer's answer differs (the plain loop reads the four topics in
            # whatever order librdkafka fetches them; quixstreams aligns them by timestamp).
            time.sleep(1.2)
            sums: dict[bytes, bytes] = client.hgetall(f"bench:{kind}:sums:{group}")  # type: ignore[assignment]
            out["credited_checkouts"] = sum(int(v) for k, v in sums.items() if k.endswith(b":checkouts"))
            return out
        finally:
            child.stop()


def peer_interpreters() -> tuple[dict[str, str], dict[str, str]]:
    """({peer: the python that runs it}, {peer: why it is not measured})."""
    pythons = {"plain": sys.executable}
    skipped: dict[str, str] = {}
    quix, why = quix_python()
    if quix is None:
        skipped["quix"] = why
    else:
        pythons = {"quix": quix, **pythons}
    return pythons, skipped
