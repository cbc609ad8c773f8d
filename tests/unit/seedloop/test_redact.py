"""Redaction (seedloop/redact.py) of every URL form the clients accept, of settings and client
configurations, and of log lines (seedloop/logs.py), which is where a secret would leak."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from redis.connection import parse_url

from seedloop.logs import JsonFormatter, KafkaClientLog, KeyValueFormatter
from seedloop.redact import MASK, redact_text, redact_url, redact_value, secrets_of, url_secrets
from seedloop.settings import Settings

PW = "Hunter2-p4ss"

# (URL as an operator writes it, the secret in it, the redacted form)
FORMS = [
    (f"redis://:{PW}@127.0.0.1:6379/0", PW, f"redis://:{MASK}@127.0.0.1:6379/0"),
    (f"redis://app:{PW}@redis.internal:6379/2", PW, f"redis://app:{MASK}@redis.internal:6379/2"),
    # A lone user-info: redis-py sends it as a user name, but it is where people paste passwords.
    (f"redis://{PW}@127.0.0.1:6379/0", PW, f"redis://{MASK}@127.0.0.1:6379/0"),
    (f"redis://127.0.0.1:6379/0?password={PW}", PW, f"redis://127.0.0.1:6379/0?password={MASK}"),
    (f"redis://h:6379/0?db=1&password={PW}&client_name=w1", PW,
     f"redis://h:6379/0?db=1&password={MASK}&client_name=w1"),
    (f"redis://h/0?username=app&password={PW}", PW, f"redis://h/0?username=app&password={MASK}"),
    (f"rediss://app:{PW}@[::1]:6380/0?ssl_cert_reqs=none", PW, f"rediss://app:{MASK}@[::1]:6380/0?ssl_cert_reqs=none"),
    (f"rediss://h:6380/0?password={PW}", PW, f"rediss://h:6380/0?password={MASK}"),
    (f"unix://:{PW}@/run/redis/redis.sock?db=0", PW, f"unix://:{MASK}@/run/redis/redis.sock?db=0"),
    (f"unix:///run/redis/redis.sock?db=0&password={PW}", PW, f"unix:///run/redis/redis.sock?db=0&password={MASK}"),
    # Percent-encoded: the secret as written and as decoded are both hidden.
    ("redis://:p%40ss%2Fw0rd@h:6379/0", "p@ss/w0rd", f"redis://:{MASK}@h:6379/0"),
    ("redis://h/0?password=p%26ss%3Dw0rd", "p&ss=w0rd", f"redis://h/0?password={MASK}"),
    # Any secret-looking option, not only `password`.
    (f"redis://h/0?token={PW}", PW, f"redis://h/0?token={MASK}"),
    (f"kafka://h:9092/?sasl.password={PW}", PW, f"kafka://h:9092/?sasl.password={MASK}"),
    (f"redis://h/0#{PW}", PW, f"redis://h/0#{MASK}"),
    # Passwords with an unencoded delimiter: the URL no longer splits where the password ends,
    # so nothing of it is shown.
    ("redis://:pa/ss-w0rd@h:6379/0", "pa/ss-w0rd", f"redis://{MASK}"),
    ("redis://:pa?ss-w0rd@h:6379/0", "pa?ss-w0rd", f"redis://{MASK}"),
    ("redis://:pa#ss-w0rd@h:6379/0", "pa#ss-w0rd", f"redis://{MASK}"),
    ("redis://:pa@ss-w0rd@h:6379/0", "pa@ss-w0rd", f"redis://:{MASK}@h:6379/0"),
    (f"redis://h:{PW}/0", PW, f"redis://{MASK}"),  # a password where the port goes
    (f":{PW}@h:6379/0", PW, MASK),  # no scheme: not a URL the clients accept
]


@pytest.mark.parametrize(("url", "secret", "expected"), FORMS, ids=[f[0][:40] for f in FORMS])
def test_every_url_form_is_redacted(url: str, secret: str, expected: str) -> None:
    shown = redact_url(url)
    assert shown == expected
    # Nor any piece of it (the part after an unencoded delimiter).
    for piece in [secret, *re.split(r"[/?#@:&=]", secret)]:
        assert len(piece) < 4 or piece not in shown, piece
    assert secret in url_secrets(url) or any(secret in s for s in url_secrets(url))
    # In free text too (an error message quoting the URL)...
    sentence = f"Error connecting to {url}. Retrying"
    if "://" in url:
        assert secret not in redact_text(sentence)
    # ... and by value once the URL is known (the log formatter knows the settings' URL).
    assert secret not in redact_text(sentence, url_secrets(url))
    assert secret not in redact_text(f"password is {secret}", url_secrets(url))


@pytest.mark.parametrize(
    "url",
    [f[0] for f in FORMS if f[0].startswith(("redis", "unix")) and not f[2].endswith(MASK) and "#" not in f[0]],
)
def test_a_redacted_url_still_says_where(url: str) -> None:
    """Redaction keeps what the operator needs: scheme, host, port, socket path, db, user, options."""
    original, shown = parse_url(url), parse_url(redact_url(url))
    for key in ("host", "port", "path", "db", "client_name", "ssl_cert_reqs", "connection_class"):
        assert shown.get(key) == original.get(key), key
    if ":" in url.split("@")[0].split("://")[1]:  # a lone user-info is masked, a user name is kept
        assert shown.get("username") == original.get("username")


def test_urls_without_secrets_are_unchanged() -> None:
    for url in ("redis://127.0.0.1:6379/0", "unix:///tmp/redis.sock?db=1", "http://127.0.0.1:6066/metrics"):
        assert redact_url(url) == url
    text = "serving on http://127.0.0.1:6066. Broker kafka://b1:9092, b2:9092"
    assert redact_text(text) == text


SETTINGS_SECRETS = ["K4fka-sasl-pw", "c0ntrol-t0ken", PW]


@pytest.mark.parametrize("url", [f[0] for f in FORMS if f[0].startswith(("redis", "unix"))])
def test_settings_redacted_and_their_secrets(url: str) -> None:
    secret = next(f[1] for f in FORMS if f[0] == url)
    settings = Settings(
        kafka_bootstrap_servers="127.0.0.1:9092",
        redis_url=SecretStr(url),
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="svc",
        kafka_sasl_password=SecretStr("K4fka-sasl-pw"),
        control_token=SecretStr("c0ntrol-t0ken"),
    )
    dumped = json.dumps(settings.redacted())
    for s in (secret, "K4fka-sasl-pw", "c0ntrol-t0ken"):
        assert s not in dumped
    assert settings.redacted()["redis_url"] == redact_url(url)
    assert settings.redacted()["kafka_sasl_password"] == MASK
    assert settings.redacted()["kafka_sasl_username"] == "svc"
    assert {"K4fka-sasl-pw", "c0ntrol-t0ken"} <= secrets_of(settings)
    assert any(secret in s for s in secrets_of(settings))


def test_client_configurations_are_redacted() -> None:
    conf = {
        "bootstrap.servers": "b1:9092",
        "security.protocol": "sasl_ssl",
        "sasl.username": "svc",
        "sasl.password": "K4fka-sasl-pw",
        "ssl.key.password": "k3y-pw-0000",
        "sasl.oauthbearer.client.secret": "0auth-s3cret",
        "nested": [{"token": "t0ken-0000"}, {"password": None}],
    }
    shown = redact_value(conf)
    text = json.dumps(shown)
    for s in ("K4fka-sasl-pw", "k3y-pw-0000", "0auth-s3cret", "t0ken-0000"):
        assert s not in text
    assert shown["sasl.username"] == "svc" and shown["bootstrap.servers"] == "b1:9092"
    assert shown["nested"][1]["password"] is None  # "not set" stays visible


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, list[logging.Formatter]]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("test.redact")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    formatters: list[logging.Formatter] = [
        KeyValueFormatter({"K4fka-sasl-pw", PW}), JsonFormatter({"K4fka-sasl-pw", PW})
    ]
    yield logger, stream, formatters
    logger.handlers[:] = []
    logger.propagate = True


def test_log_lines_never_carry_a_secret(
    captured: tuple[logging.Logger, io.StringIO, list[logging.Formatter]],
) -> None:
    """Whatever a caller hands the logger (a librdkafka config, a URL in a message, an exception
    quoting the password), the line written holds no secret: in both formats."""
    logger, stream, formatters = captured
    for formatter in formatters:
        logger.handlers[0].setFormatter(formatter)
        logger.info("kafka config", extra={"config": {"sasl.password": "K4fka-sasl-pw", "ssl.key.password": "k3y-pw-0000"}})
        logger.info("connecting to redis://127.0.0.1:6379/0?password=%s", PW)
        logger.warning("services", extra={"redis": f"redis://:{PW}@h:1/0"})
        try:
            raise ConnectionError(f"AUTH failed for {PW}")
        except ConnectionError:
            logger.exception("Redis failed")
    out = stream.getvalue()
    for s in (PW, "K4fka-sasl-pw", "k3y-pw-0000"):
        assert s not in out
    assert out.count(MASK) >= 8
    for line in out.splitlines():
        if line.startswith("{"):
            json.loads(line)  # still valid JSON after redaction


def test_librdkafka_log_connection_failures_are_deduplicated(caplog: pytest.LogCaptureFixture) -> None:
    log = KafkaClientLog("test.librdkafka", repeat_s=60)
    refused = "[thrd:127.0.0.1:1/bootstrap]: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after {}ms in state CONNECT)"
    with caplog.at_level(logging.DEBUG, logger="test.librdkafka"):
        for i in range(50):
            log.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#producer-1", refused.format(i))
        log.log(logging.INFO, "%s [%s] %s", "CONFWARN", "rdkafka#producer-1", "a notice")
    levels = [r.levelno for r in caplog.records]
    assert levels[0] == logging.WARNING
    assert levels[1:] == [logging.DEBUG] * 50  # 49 repeats and the notice
    # After the window, one WARNING again, counting what it held back.
    log._seen = {k: (t - 61, n) for k, (t, n) in log._seen.items()}
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="test.librdkafka"):
        log.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#producer-1", refused.format(1))
    assert caplog.records[0].levelno == logging.WARNING
    assert caplog.records[0].repeats_since_last == 49  # type: ignore[attr-defined]
    quiet = KafkaClientLog("test.librdkafka", quiet=True)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="test.librdkafka"):
        quiet.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#producer-1", refused.format(1))
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


def test_a_real_librdkafka_client_logs_through_python_logging(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """With our `logger`, librdkafka prints nothing raw on stderr (no `%3|...|FAIL|` lines)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": "127.0.0.1:1", "logger": KafkaClientLog("test.librdkafka")})
    with caplog.at_level(logging.DEBUG, logger="test.librdkafka"):
        producer.poll(1.5)
    del producer
    err = capfd.readouterr().err
    assert "|FAIL|" not in err and "Connection refused" not in err, err[:500]
    assert any("Connection refused" in r.getMessage() for r in caplog.records)
    assert sum(r.levelno >= logging.WARNING for r in caplog.records) == 1
