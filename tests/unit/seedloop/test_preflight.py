"""The preflight check (seedloop/preflight.py) in-process, without a broker or Redis: a closed
port, a port that accepts and never answers, a malformed REDIS_URL. Each ends within the
configured timeout with one secret-free line and its exit code."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from seedloop.embedded import free_port
from seedloop.preflight import (
    EXIT_CONFIG,
    EXIT_KAFKA,
    EXIT_REDIS,
    ServiceError,
    check_kafka,
    check_redis,
    check_redis_url,
    preflight,
)
from seedloop.settings import Settings

PW = "Pr3flight-pw-0c1d"
TIMEOUT = 2.0
# Python and librdkafka start-up, thread joins; the box is shared and slow.
MARGIN = 2.5


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel completes the handshake) and never answers:
    the hung or firewalled service, which only a timeout ends."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def settings_for(kafka: str, redis_url: str) -> Settings:
    return Settings(kafka_bootstrap_servers=kafka, redis_url=SecretStr(redis_url), connect_timeout_s=TIMEOUT)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("localhost:6379", "must start with redis://"),
        (f"redis://127.0.0.1:{PW}/0", "port is not a number"),
        (f"redis://127.0.0.1:notaport/0?password={PW}", "port is not a number"),
        (f"redis://[::1/0?password={PW}", "unbalanced"),
        (f"redis://127.0.0.1:6379/0?db=x&password={PW}", "option 'db' is invalid"),
        (f"redis://127.0.0.1:6379/0?passwrd={PW}", "option redis-py does not know: 'passwrd'"),
        (f"http://:{PW}@127.0.0.1:6379/0", "must start with redis://"),
    ],
)
def test_a_malformed_redis_url_is_a_configuration_error(url: str, reason: str) -> None:
    started = time.monotonic()
    problem = check_redis_url(settings_for("127.0.0.1:1", url))
    assert time.monotonic() - started < 1.0  # no connection is tried
    assert problem is not None and problem.exit_code == EXIT_CONFIG
    assert problem.line.startswith("REDIS_URL is not a valid Redis URL: ") and reason in problem.line
    assert PW not in problem.line


def test_well_formed_urls_pass_the_syntax_check() -> None:
    for url in (f"redis://:{PW}@h:6379/0", f"rediss://u:{PW}@h:6380/1?ssl_cert_reqs=none",
                f"unix:///run/redis.sock?db=2&password={PW}", "redis://h/0?socket_timeout=3"):
        assert check_redis_url(settings_for("127.0.0.1:1", url)) is None, url


def test_redis_on_a_closed_port() -> None:
    port = free_port()
    settings = settings_for("127.0.0.1:1", f"redis://127.0.0.1:{port}/0?password={PW}")
    started = time.monotonic()
    problem = check_redis(settings, TIMEOUT)
    assert time.monotonic() - started < TIMEOUT
    assert problem is not None and problem.exit_code == EXIT_REDIS
    assert problem.line == f"cannot reach Redis at 127.0.0.1:{port} within {TIMEOUT:g}s (check REDIS_URL)"


def test_redis_that_never_answers_times_out(silent_port: int) -> None:
    settings = settings_for("127.0.0.1:1", f"redis://:{PW}@127.0.0.1:{silent_port}/0")
    started = time.monotonic()
    problem = check_redis(settings, TIMEOUT)
    elapsed = time.monotonic() - started
    # One attempt: redis-py's default would retry 10 times.
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + MARGIN, elapsed
    assert problem is not None and problem.exit_code == EXIT_REDIS
    assert f"cannot reach Redis at 127.0.0.1:{silent_port}" in problem.line and PW not in problem.line


def test_kafka_on_a_closed_port() -> None:
    port = free_port()
    settings = settings_for(f"127.0.0.1:{port}", "redis://127.0.0.1:1/0")
    started = time.monotonic()
    problem = check_kafka(settings, TIMEOUT)
    assert time.monotonic() - started < TIMEOUT + MARGIN
    assert problem is not None and problem.exit_code == EXIT_KAFKA
    assert problem.line == (
        f"cannot reach Kafka at 127.0.0.1:{port} within {TIMEOUT:g}s (check KAFKA_BOOTSTRAP_SERVERS)"
    )


def test_kafka_that_never_answers_times_out(silent_port: int) -> None:
    settings = settings_for(f"127.0.0.1:{silent_port}", "redis://127.0.0.1:1/0")
    started = time.monotonic()
    problem = check_kafka(settings, TIMEOUT)
    assert time.monotonic() - started < TIMEOUT + MARGIN
    assert problem is not None and problem.exit_code == EXIT_KAFKA
    assert f"cannot reach Kafka at 127.0.0.1:{silent_port}" in problem.line


def test_both_checked_in_parallel_and_both_reported(silent_port: int) -> None:
    """Two silent services cost one timeout, not two; the operator learns of both at once;
    a malformed URL is reported before any connection is tried."""
    settings = settings_for(f"127.0.0.1:{silent_port}", f"redis://127.0.0.1:{silent_port}/0?password={PW}")
    started = time.monotonic()
    with pytest.raises(ServiceError) as caught:
        preflight(settings)
    assert time.monotonic() - started < TIMEOUT + MARGIN
    assert [p.exit_code for p in caught.value.problems] == [EXIT_KAFKA, EXIT_REDIS]
    assert caught.value.exit_code == EXIT_KAFKA

    malformed = settings_for(f"127.0.0.1:{silent_port}", f"redis://127.0.0.1:x{PW}/0")
    started = time.monotonic()
    with pytest.raises(ServiceError) as caught:
        preflight(malformed)
    assert time.monotonic() - started < 1.0
    assert [p.exit_code for p in caught.value.problems] == [EXIT_CONFIG]
    assert PW not in str(caught.value)


def test_kafka_problems_say_which_setting() -> None:
    from confluent_kafka import KafkaError, KafkaException

    from seedloop.preflight import kafka_problem

    transport = KafkaException(KafkaError(KafkaError._TRANSPORT, "Failed to get metadata"))
    sasl = Settings(kafka_bootstrap_servers="b1:9092,b2:9092", redis_url=SecretStr("redis://h/0"),
                    kafka_security_protocol="SASL_SSL", kafka_sasl_username="svc",
                    kafka_sasl_password=SecretStr(PW))
    login = kafka_problem(sasl, transport, 3, "sasl_ssl://b1:9092/bootstrap: SASL authentication error: "
                          "Authentication failed during authentication (after 12ms in state AUTH_REQ)")
    assert login.exit_code == EXIT_KAFKA
    assert login.line == (
        "Kafka at b1:9092,b2:9092 refused the SASL login: SASL authentication error: Authentication failed during "
        "authentication (check KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and "
        "KAFKA_SASL_PASSWORD)"
    )
    tls = kafka_problem(sasl, transport, 3, "ssl://b1:9092/bootstrap: SSL handshake failed: certificate verify failed")
    assert tls.line.startswith("the TLS handshake with Kafka at b1:9092,b2:9092 failed: SSL handshake failed")
    hung = kafka_problem(sasl, transport, 3)
    assert hung.line == (
        "cannot reach Kafka at b1:9092,b2:9092 within 3s (check KAFKA_BOOTSTRAP_SERVERS and "
        "KAFKA_SECURITY_PROTOCOL=SASL_SSL)"
    )
    # User-info in the bootstrap list (not a Kafka form, but operators try it) is masked.
    odd = sasl.model_copy(update={"kafka_bootstrap_servers": f"svc:{PW}@b1:9092"})
    assert PW not in kafka_problem(odd, transport, 3).line
