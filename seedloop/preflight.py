"""Preflight: are the configured services usable, before a command builds anything on them?

Run at the start of every command that needs Kafka or Redis (simulate, worker, optimize, report,
and demo with external services). It turns what an operator meets first (a dead port, a
malformed REDIS_URL, wrong credentials) into one clear line naming what failed and the setting
to check, and a documented exit code, within SEEDLOOP_CONNECT_TIMEOUT_S; without it the clients'
own retries print hundreds of librdkafka lines and end in a traceback after ~31 s.

The same wording serves errors met later (a service lost mid-run): `kafka_problem` and
`redis_problem` turn an exception into a `Problem`, and `report` logs it.

Every line is secret-free by construction (hosts and setting names, never a URL or a library
message that could echo one), and the log formatter redacts it once more.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from redis.backoff import NoBackoff
from redis.retry import Retry

from seedloop.logs import KafkaClientLog
from seedloop.redact import redact_servers, redact_text, secrets_of
from seedloop.settings import Settings

log = logging.getLogger("seedloop")

# Exit codes, documented in `seedloop --help` (seedloop/cli.py EPILOG) and the README.
EXIT_FAILED = 1  # the command ran and failed (simulate: unacknowledged events; soak: events lost)
EXIT_CONFIG = 2  # usage or configuration error: a bad flag or setting, a malformed REDIS_URL
EXIT_STATE_LOSS = 3  # worker: Redis is behind Kafka's committed offsets (seedloop/recovery.py)
EXIT_REDIS = 4  # Redis unreachable, or it refused the credentials
EXIT_KAFKA = 5  # Kafka unreachable, or it refused the credentials or the TLS handshake

# Written so that the log redaction has nothing to mask in it (no user-info after a "://").
REDIS_URL_FORMS = (
    "redis://host:port/db, rediss://host:port/db or unix:///path/to/socket, "
    "with a password as user:password@ before the host or as ?password="
)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing the operator must fix: `line` says what and where (no secret), `detail` is the
    library's own words for the debug log."""

    line: str
    exit_code: int
    service: str
    error_class: str = ""
    detail: str = ""


class ServiceError(Exception):
    """A service the command needs is unusable: raised by the preflight check, or by a command
    that meets the same condition later (seedloop/report.py); seedloop/cli.py reports it."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(p.line for p in problems))
        self.problems = list(problems)

    @property
    def exit_code(self) -> int:
        return self.problems[0].exit_code


def report(problems: Sequence[Problem], settings: Settings | None = None) -> int:
    """Log each problem as one CRITICAL line (its detail at DEBUG); the exit code of the first."""
    secrets = secrets_of(settings) if settings is not None else set()
    for p in problems:
        if p.detail:
            log.debug("detail: %s", redact_text(p.detail, secrets), extra={"service": p.service})
        extra = {"service": p.service, "exit_code": p.exit_code}
        if p.error_class:
            extra["error_class"] = p.error_class
        log.critical(redact_text(p.line, secrets), extra=extra)
    return problems[0].exit_code


# --- Redis ---------------------------------------------------------------------------------


def redis_client(settings: Settings, timeout_s: float) -> redis.Redis:
    """A client that gives up after `timeout_s`: one connection attempt, no retries (redis-py
    retries a refused or timed-out connection 10 times by default). Raises ValueError for a
    malformed URL. Options in the URL itself (`?socket_timeout=`) win, as redis-py decides."""
    return redis.Redis.from_url(
        settings.redis_url_value,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def _malformed_reason(exc: Exception) -> str:
    """redis-py's complaint in words that cannot echo the URL (its port message quotes the port,
    which an operator who forgot the host may have filled with the password)."""
    text = str(exc)
    if "schemes" in text:
        return "it must start with redis://, rediss:// or unix://"
    if "Port" in text:
        return "its port is not a number from 0 to 65535"
    if "IPv6" in text:
        return "its host has an unbalanced [ or ]"
    m = re.search(r"Invalid value for '(\w+)'", text)
    if m:
        return f"the value of its option '{m.group(1)}' is invalid"
    m = re.search(r"unexpected keyword argument '(\w+)'", text)
    if m:
        return f"it has an option redis-py does not know: '{m.group(1)}'"
    return "redis-py cannot parse it"


def check_redis_url(settings: Settings) -> Problem | None:
    """The URL parses and names only options redis-py knows. No connection is made, so commands
    that do not use Redis (simulate) still refuse a malformed one: it is a configuration error
    that would otherwise surface on the next command."""
    try:
        client = redis_client(settings, settings.connect_timeout_s)
        # Builds (does not connect) a connection: where redis-py rejects unknown URL options.
        client.connection_pool.make_connection().disconnect()
    except (ValueError, TypeError) as exc:
        return Problem(
            f"REDIS_URL is not a valid Redis URL: {_malformed_reason(exc)} (expected {REDIS_URL_FORMS})",
            EXIT_CONFIG,
            "config",
            type(exc).__name__,
            str(exc),
        )
    return None


def redis_where(settings: Settings) -> str:
    """host:port (or unix:path) of REDIS_URL, for messages: never the URL with its user-info."""
    try:
        kwargs = redis.connection.parse_url(settings.redis_url_value)
    except ValueError:
        return "REDIS_URL"
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host') or 'localhost'}:{kwargs.get('port') or 6379}"


def redis_problem(settings: Settings, exc: BaseException, timeout_s: float | None = None) -> Problem:
    where = redis_where(settings)
    name = type(exc).__name__
    text = str(exc)
    if isinstance(exc, redis.AuthenticationError) or (
        isinstance(exc, redis.ResponseError) and re.search(r"NOAUTH|WRONGPASS|\bAUTH\b", text)
    ):
        # redis-py's words here are the server's ("invalid username-password pair"), no secret.
        return Problem(
            f"Redis at {where} refused the credentials: {text} (check the user and password in REDIS_URL)",
            EXIT_REDIS,
            "redis",
            name,
            text,
        )
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
        within = f" within {timeout_s:g}s" if timeout_s is not None else ""
        return Problem(
            f"cannot reach Redis at {where}{within} (check REDIS_URL)", EXIT_REDIS, "redis", name, text
        )
    return Problem(
        f"Redis at {where} answered an error: {name} (check REDIS_URL)", EXIT_REDIS, "redis", name, text
    )


def check_redis(settings: Settings, timeout_s: float) -> Problem | None:
    client = redis_client(settings, timeout_s)
    try:
        client.ping()
    except redis.RedisError as exc:
        return redis_problem(settings, exc, timeout_s)
    finally:
        client.close()
    return None


# --- Kafka ---------------------------------------------------------------------------------


class _FailureMemo(KafkaClientLog):
    """The preflight's librdkafka log: every line at DEBUG (the check reports the outcome itself),
    remembering the last failure, which tells a refused login or TLS handshake from a dead port."""

    def __init__(self) -> None:
        super().__init__(quiet=True)
        self.last_failure = ""

    def log(self, level: int, msg: str, *args: object) -> None:
        if level >= logging.WARNING and args:
            self.last_failure = str(args[-1])
        super().log(level, msg, *args)


def kafka_problem(
    settings: Settings, exc: BaseException, timeout_s: float | None = None, last_failure: str = ""
) -> Problem:
    where = redact_servers(settings.bootstrap)
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    code = err.code() if isinstance(err, KafkaError) else None
    name = err.name() if isinstance(err, KafkaError) else type(exc).__name__
    detail = "; ".join(s for s in (str(exc), last_failure) if s)
    # librdkafka's reason, without its "host:port/bootstrap: " prefix and "(after 3ms in state ...)"
    # suffix; it never contains the password (and the log formatter scrubs it anyway).
    reason = re.sub(r"\s*\(after \d+ms in state \w+\)\s*$", "", last_failure.rsplit("/bootstrap: ", 1)[-1])
    if code in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED) or re.search(
        r"SASL|[Aa]uthentication", last_failure
    ):
        return Problem(
            f"Kafka at {where} refused the SASL login{': ' + reason if reason else ''} (check "
            "KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD)",
            EXIT_KAFKA,
            "kafka",
            name,
            detail,
        )
    if code == KafkaError._SSL or re.search(r"SSL|TLS|certificate", last_failure):
        return Problem(
            f"the TLS handshake with Kafka at {where} failed{': ' + reason if reason else ''} (check "
            "KAFKA_SECURITY_PROTOCOL and KAFKA_SSL_CAFILE)",
            EXIT_KAFKA,
            "kafka",
            name,
            detail,
        )
    if code == KafkaError._INVALID_ARG:
        return Problem(
            "the Kafka client rejected its configuration (check KAFKA_BOOTSTRAP_SERVERS and KAFKA_*)",
            EXIT_CONFIG,
            "config",
            name,
            detail,
        )
    within = f" within {timeout_s:g}s" if timeout_s is not None else ""
    check = "KAFKA_BOOTSTRAP_SERVERS"
    if settings.kafka_security_protocol != "PLAINTEXT":
        # A TLS client against a plaintext listener (or the reverse) just hangs: no reason is logged.
        check += f" and KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol}"
    return Problem(
        f"cannot reach Kafka at {where}{within} (check {check})", EXIT_KAFKA, "kafka", name, detail
    )


def check_kafka(settings: Settings, timeout_s: float) -> Problem | None:
    memo = _FailureMemo()
    # confluent-kafka's stubs type config values as str | int | float; `logger` is an object.
    conf: dict[str, Any] = {**settings.confluent_config(), "logger": memo}
    try:
        admin = AdminClient(conf)
    except KafkaException as exc:
        return kafka_problem(settings, exc, timeout_s)
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        # librdkafka queues its log lines until the client is polled: serve them (at DEBUG) so
        # that the memo knows why, a refused login or TLS handshake rather than a dead port.
        admin.poll(0)
        return kafka_problem(settings, exc, timeout_s, memo.last_failure)
    admin.poll(0)
    return None


# --- both ----------------------------------------------------------------------------------


def preflight(settings: Settings, *, kafka: bool = True, redis_needed: bool = True) -> None:
    """Raise ServiceError listing every problem: configuration first (no connection is tried
    with a malformed URL), then Kafka and Redis, checked in parallel so that the whole check takes
    at most SEEDLOOP_CONNECT_TIMEOUT_S."""
    timeout = settings.connect_timeout_s
    if settings.redis_url is not None:
        malformed = check_redis_url(settings)
        if malformed is not None:
            raise ServiceError([malformed])
    checks: list[Callable[[], Problem | None]] = []
    if kafka:
        checks.append(lambda: check_kafka(settings, timeout))
    if redis_needed:
        checks.append(lambda: check_redis(settings, timeout))
    with ThreadPoolExecutor(max_workers=len(checks) or 1, thread_name_prefix="preflight") as pool:
        results = list(pool.map(lambda check: check(), checks))
    problems = [p for p in results if p is not None]
    if problems:
        raise ServiceError(problems)
