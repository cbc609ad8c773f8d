"""The bench's child processes (workers, the baseline agent, the peers): started with their log
in a file, checked for an early exit while a phase waits on them, stopped with
`embedded.stop_processes` (SIGTERM, one deadline, then SIGKILL)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from seedloop.embedded import free_port, stop_processes
from seedloop.settings import Settings

REPO = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float | None:
    """A live process's resident memory (VmRSS) in MiB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    return settings.child_env(SEEDLOOP_LOG_LEVEL="WARNING", **extra)


def service_args(settings: Settings, group: str, counter_key: str) -> list[str]:
    """The command-line options the baseline agent and the peers share: where the broker, Redis and
    topics are, their consumer group, and the Redis key they write their processed count to."""
    return [
        "--bootstrap",
        settings.bootstrap,
        "--redis",
        settings.redis_url_value,
        "--prefix",
        settings.topic_prefix,
        "--group",
        group,
        "--counter-key",
        counter_key,
    ]


class Child:
    """A worker or baseline process; stopped (then killed) on exit."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check(self) -> None:
        if not self.alive():
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.log_path.name} exited with {self.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        stop_processes([self.proc])
        self._log.close()


def start_worker(settings: Settings, group: str, worker_id: str, log_dir: Path) -> Child:
    env = child_env(
        settings,
        SEEDLOOP_CONSUMER_GROUP=group,
        SEEDLOOP_WORKER_ID=worker_id,
        SEEDLOOP_WEB_PORT=str(free_port()),
    )
    return Child([sys.executable, "-m", "seedloop", "worker"], env, log_dir / f"{group}-{worker_id}.log")
