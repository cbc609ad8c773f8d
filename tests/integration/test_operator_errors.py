"""What an operator meets first, as the commands they run: a dead Kafka or Redis port, a
malformed REDIS_URL. Each command ends within SEEDLOOP_CONNECT_TIMEOUT_S (plus start-up) with its
documented exit code and one clear line on stderr naming what failed and the setting to check:
no traceback, no librdkafka spam, no password."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from seedloop.embedded import EmbeddedStack, free_port
from tests.conftest import REPO

pytestmark = pytest.mark.integration

PW = "0perat0r-Redis-pw-41f2"
TIMEOUT_S = 3
# Python start-up and imports on a shared 2-core box, and the client's shutdown.
MARGIN_S = 7.0
SERVICE_COMMANDS = [["simulate", "--events", "100", "--no-bids"], ["worker"], ["optimize", "--once"], ["report"]]
IDS = ["simulate", "worker", "optimize", "report"]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    """A real broker and a password-protected Redis, for the half of each case that works."""
    with EmbeddedStack(log_dir=tmp_path_factory.mktemp("stack"), redis_password=PW) as stack:
        yield stack


@dataclass
class Outcome:
    code: int
    elapsed: float
    stderr: str
    stdout: str


def run(args: list[str], **env: str) -> Outcome:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SEEDLOOP_", "KAFKA_", "REDIS_"))}
    base.update({"SEEDLOOP_TOPIC_PREFIX": f"op{os.getpid()}{time.monotonic_ns() % 10**6}",
                 "SEEDLOOP_WEB_PORT": str(free_port()), "SEEDLOOP_OPTIMIZER_PORT": str(free_port()),
                 "SEEDLOOP_SIMULATOR_PORT": str(free_port())})
    base.update(env)
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "seedloop", *args], env=base, capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    return Outcome(out.returncode, time.monotonic() - started, out.stderr, out.stdout)


def assert_one_clear_line(out: Outcome, code: int, line: str) -> None:
    text = out.stderr + out.stdout
    assert out.code == code, text[-3000:]
    assert line in out.stderr, out.stderr[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert "|FAIL|" not in text  # librdkafka's raw `%3|...|FAIL|` lines
    assert len(out.stderr.splitlines()) < 10, out.stderr[-3000:]
    assert PW not in text


def redis_url(stack: EmbeddedStack) -> str:
    return f"redis://127.0.0.1:{stack.redis.port}/0?password={PW}"


@pytest.mark.parametrize("args", SERVICE_COMMANDS, ids=IDS)
def test_kafka_on_a_dead_port(args: list[str], live: EmbeddedStack) -> None:
    dead = free_port()
    out = run(args, KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{dead}", REDIS_URL=redis_url(live),
              SEEDLOOP_CONNECT_TIMEOUT_S=str(TIMEOUT_S))
    assert out.elapsed < TIMEOUT_S + MARGIN_S, out.elapsed
    assert_one_clear_line(
        out, 5, f"seedloop: cannot reach Kafka at 127.0.0.1:{dead} within {TIMEOUT_S}s (check KAFKA_BOOTSTRAP_SERVERS)"
    )


@pytest.mark.parametrize("args", SERVICE_COMMANDS[1:], ids=IDS[1:])
def test_redis_on_a_dead_port(args: list[str], live: EmbeddedStack) -> None:
    dead = free_port()
    out = run(args, KAFKA_BOOTSTRAP_SERVERS=live.bootstrap, REDIS_URL=f"redis://127.0.0.1:{dead}/0?password={PW}",
              SEEDLOOP_CONNECT_TIMEOUT_S=str(TIMEOUT_S))
    assert out.elapsed < TIMEOUT_S + MARGIN_S, out.elapsed
    assert_one_clear_line(out, 4, f"seedloop: cannot reach Redis at 127.0.0.1:{dead} within {TIMEOUT_S}s (check REDIS_URL)")


@pytest.mark.parametrize("args", SERVICE_COMMANDS, ids=IDS)
def test_a_malformed_redis_url(args: list[str], live: EmbeddedStack) -> None:
    """A configuration error, found before any connection (so even with the broker down), and
    the line quotes neither the URL nor its password."""
    out = run(args, KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
              REDIS_URL=f"redis://127.0.0.1:{PW}/0", SEEDLOOP_CONNECT_TIMEOUT_S=str(TIMEOUT_S))
    assert out.elapsed < MARGIN_S, out.elapsed
    assert_one_clear_line(out, 2, "seedloop: REDIS_URL is not a valid Redis URL: its port is not a number")


def test_the_default_timeout_is_10_seconds_and_the_flag_wins(live: EmbeddedStack) -> None:
    dead = free_port()
    out = run(["simulate", "--events", "100"], KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{dead}", REDIS_URL=redis_url(live))
    assert 9.0 <= out.elapsed < 10 + MARGIN_S, out.elapsed
    assert_one_clear_line(out, 5, f"cannot reach Kafka at 127.0.0.1:{dead} within 10s")

    out = run(["report", "--connect-timeout", "2"], KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{dead}",
              REDIS_URL=redis_url(live), SEEDLOOP_CONNECT_TIMEOUT_S="60")
    assert out.elapsed < 2 + MARGIN_S, out.elapsed
    assert_one_clear_line(out, 5, f"cannot reach Kafka at 127.0.0.1:{dead} within 2s")


def test_wrong_redis_password_names_the_setting_not_the_password(live: EmbeddedStack) -> None:
    out = run(["report"], KAFKA_BOOTSTRAP_SERVERS=live.bootstrap,
              REDIS_URL=f"redis://127.0.0.1:{live.redis.port}/0?password=Wr0ng-{PW[::-1]}")
    assert_one_clear_line(out, 4, f"seedloop: Redis at 127.0.0.1:{live.redis.port} refused the credentials")
    assert "REDIS_URL" in out.stderr and PW[::-1] not in out.stderr


def test_invalid_settings_do_not_echo_secrets() -> None:
    """pydantic's message quotes the input (here the whole environment, SASL password included);
    ours names the variable and the rule."""
    out = run(["report"], KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", REDIS_URL=f"redis://h:1/0?password={PW}",
              KAFKA_SECURITY_PROTOCOL="SASL_SSL", KAFKA_SASL_PASSWORD=f"k-{PW}")
    assert_one_clear_line(out, 2, "KAFKA_SASL_USERNAME is required with a SASL security protocol")
    out = run(["report"], KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", REDIS_URL=f"redis://h:1/0?password={PW}",
              SEEDLOOP_CONNECT_TIMEOUT_S=PW)
    assert_one_clear_line(out, 2, "SEEDLOOP_CONNECT_TIMEOUT_S: Input should be a valid number")


def test_the_stack_fixture_is_alive(live: EmbeddedStack) -> None:
    """Guards the cases above: with both services up the same commands get past the preflight."""
    out = run(["optimize", "--once", "--dry-run"], KAFKA_BOOTSTRAP_SERVERS=live.bootstrap, REDIS_URL=redis_url(live),
              SEEDLOOP_CONNECT_TIMEOUT_S=str(TIMEOUT_S))
    assert out.code == 0, out.stderr[-3000:]
    assert PW not in out.stderr + out.stdout



def test_a_refused_kafka_login_is_told_from_a_dead_port(live: EmbeddedStack) -> None:
    """The embedded broker has no SASL users: the SASL handshake fails, and the line says so (the
    reason librdkafka logged, the settings to check) instead of "cannot reach"."""
    out = run(["report"], KAFKA_BOOTSTRAP_SERVERS=live.bootstrap, REDIS_URL=redis_url(live),
              KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", KAFKA_SASL_USERNAME="svc", KAFKA_SASL_PASSWORD=f"k-{PW}",
              SEEDLOOP_CONNECT_TIMEOUT_S=str(TIMEOUT_S))
    assert out.elapsed < TIMEOUT_S + MARGIN_S, out.elapsed
    assert_one_clear_line(out, 5, f"seedloop: Kafka at {live.bootstrap} refused the SASL login")
    assert "KAFKA_SASL_PASSWORD" in out.stderr
