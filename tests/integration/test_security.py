"""Secrets and exposure: a password-protected Redis works and its password is never printed; a
wrong password fails fast and clearly; HTTP listens on loopback by default; the worker's HTTP serves
only seedloop's routes; Kafka SASL settings reach both Kafka clients (confluent-kafka and
Faust/aiokafka)."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import faust
import pytest
import redis
from confluent_kafka import Consumer, Producer
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from seedloop import runtime
from seedloop.embedded import EmbeddedStack, free_port, stop_processes
from seedloop.settings import REPO_SEEDS, Settings
from seedloop.topics import caught_up, ensure_topics
from stream_processors.store.redis_lua import FigureReader, Keys
from tests.conftest import WorkerProcess, run_cli, service_settings, spawn_seedloop, spawn_worker, wait_for
from tests.integration.test_pipeline import produce_simulated

# The optimizer, HTTP and monitoring are the subject here, not the broker: one tier is enough.
pytestmark = [pytest.mark.integration, pytest.mark.one_tier]

PASSWORD = "s3cr3t-Redis-pw-5d1e"
WRONG = "not-the-pw-9c2b"
KAFKA_PASSWORD = "k4fka-SASL-pw-77aa"


@pytest.fixture
def secure_stack(tmp_path: Path) -> Iterator[EmbeddedStack]:
    with EmbeddedStack(log_dir=tmp_path / "stack", redis_password=PASSWORD) as s:
        yield s


@pytest.fixture
def secure_settings(secure_stack: EmbeddedStack, unique_prefix: str) -> Settings:
    assert PASSWORD in secure_stack.redis_url
    return service_settings(secure_stack.bootstrap, secure_stack.redis_url, unique_prefix)


class Workers:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[WorkerProcess] = []

    def start(self, settings: Settings, name: str, **env: str) -> WorkerProcess:
        """A worker logging at DEBUG (its settings included), against `settings`' services."""
        w = spawn_worker(settings, name, self.tmp_path / f"{name}.log", SEEDLOOP_LOG_LEVEL="DEBUG", **env)
        self.started.append(w)
        return w

    def stop(self) -> None:
        stop_processes(w.proc for w in self.started)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    w = Workers(tmp_path)
    yield w
    w.stop()


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on `port`, from /proc/net/tcp and tcp6."""
    found: set[str] = set()
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            addr_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A = LISTEN
                continue
            raw = bytes.fromhex(addr_hex)
            # /proc prints each 32-bit word in host byte order.
            words = struct.unpack(f"<{len(raw) // 4}I", raw)
            found.add(socket.inet_ntop(family, struct.pack(f">{len(words)}I", *words)))
    return found


def non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent; picks the outgoing interface
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def test_password_protected_redis_works_and_the_password_is_never_printed(
    secure_settings: Settings, secure_stack: EmbeddedStack, workers: Workers
) -> None:
    settings = secure_settings
    # The server really demands the password.
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=secure_stack.redis.port).ping()
    ensure_topics(settings)
    worker = workers.start(settings, "worker-1")
    produce_simulated(settings, sim_seconds=1800)
    client = redis.Redis.from_url(settings.redis_url_value)
    try:
        reader = FigureReader(client, Keys(settings.topic_prefix), settings.partitions, settings.bucket_s)
        wait_for(lambda: caught_up(settings, reader), 60, "the worker to apply every event")
        assert reader.totals().get("t|views", 0) > 100
    finally:
        client.close()
    assert worker.proc.poll() is None, worker.log_text()[-3000:]

    # HTTP is served, on loopback only (SEEDLOOP_WEB_HOST defaults to 127.0.0.1).
    wait_for(lambda: bool(listening_addresses(worker.port)), 20, "the worker's HTTP listener")
    assert listening_addresses(worker.port) == {"127.0.0.1"}, listening_addresses(worker.port)
    with socket.create_connection(("127.0.0.1", worker.port), timeout=5):
        pass
    other = non_loopback_address()
    if other is not None:
        with pytest.raises(OSError), socket.create_connection((other, worker.port), timeout=2):
            pass

    # Neither the worker's log (at DEBUG, settings included) nor the report prints the password.
    log_text = worker.log_text()
    assert "worker starting" in log_text
    assert PASSWORD not in log_text
    report = run_cli(settings, "report", "--json")
    out = report.stdout + report.stderr
    assert report.returncode == 0, out[-3000:]
    assert json.loads(report.stdout)["campaigns"]
    assert PASSWORD not in out

    redacted = json.dumps(settings.redacted())
    assert PASSWORD not in redacted
    assert settings.redacted()["redis_url"] == f"redis://:**********@127.0.0.1:{secure_stack.redis.port}/0"
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)


@pytest.mark.parametrize("url_password", [WRONG, None], ids=["wrong-password", "no-password"])
def test_bad_redis_credentials_fail_fast_and_clearly(
    secure_settings: Settings, secure_stack: EmbeddedStack, workers: Workers, url_password: str | None
) -> None:
    auth = f":{url_password}@" if url_password else ""
    bad = secure_settings.with_services(
        secure_settings.bootstrap, f"redis://{auth}127.0.0.1:{secure_stack.redis.port}/0"
    )
    worker = workers.start(bad, "worker-bad")
    try:
        code = worker.proc.wait(45)
    except subprocess.TimeoutExpired:
        pytest.fail(
            "a worker with bad Redis credentials hangs instead of failing:\n" + worker.log_text()[-3000:]
        )
    log_text = worker.log_text()
    assert code != 0, log_text[-3000:]
    lowered = log_text.lower()
    assert any(
        s in lowered
        for s in (
            "invalid username-password",
            "wrongpass",
            "authentication required",
            "noauth",
            "authenticationerror",
        )
    ), log_text[-3000:]
    assert PASSWORD not in log_text
    if url_password:
        assert url_password not in log_text


def test_bad_redis_credentials_are_reported_as_one_structured_log_record(
    secure_settings: Settings, secure_stack: EmbeddedStack, workers: Workers
) -> None:
    """With SEEDLOOP_LOG_FORMAT=json every line is a JSON record, the failure included: today the
    startup check's redis.AuthenticationError escapes `cmd_worker` as a raw ~55-line Python
    traceback (exit 1), which log pipelines cannot parse and operators must read from the bottom.
    Proposed fix in seedloop/cli.py: catch redis.AuthenticationError (and ConnectionError) around
    `check_state`/`run_worker`, log.critical one line naming REDIS_URL's host (never its password),
    return a distinct exit code."""
    bad = secure_settings.with_services(
        secure_settings.bootstrap, f"redis://:{WRONG}@127.0.0.1:{secure_stack.redis.port}/0"
    )
    worker = workers.start(bad, "worker-bad")
    assert worker.proc.wait(45) != 0
    records, stray = [], []
    for line in worker.log_text().splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            stray.append(line)
    assert not stray, f"{len(stray)} non-JSON lines, e.g. {stray[:3]} ... {stray[-1:]}"
    assert any(
        r.get("level") in ("error", "critical")
        and "redis" in json.dumps(r).lower()
        and "auth" in json.dumps(r).lower()
        for r in records
    ), records[-3:]


def test_kafka_sasl_settings_reach_both_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit level (no broker): the KAFKA_SASL_* environment reaches librdkafka's properties and
    the aiokafka arguments Faust derives from its credentials; the password is redacted."""
    for k, v in {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "seedloop-svc",
        "KAFKA_SASL_PASSWORD": KAFKA_PASSWORD,
    }.items():
        monkeypatch.setenv(k, v)
    settings = Settings(seeds_dir=REPO_SEEDS)

    conf = settings.confluent_config()
    assert conf["security.protocol"].upper() == "SASL_PLAINTEXT"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.username"] == "seedloop-svc"
    assert conf["sasl.password"] == KAFKA_PASSWORD
    # librdkafka accepts exactly these properties (it validates them in the constructor).
    Producer({**conf, "log_level": 0}).flush(0)
    Consumer({**conf, "group.id": "sasl-check", "log_level": 0}).close()
    # Every confluent client of ours builds on confluent_config: the event sink and the optimizer.
    scenario = runtime.scenario_of(settings)
    sink_conf = runtime.event_sink(settings, scenario).producer_config
    assert sink_conf["sasl.password"] == KAFKA_PASSWORD and sink_conf["sasl.mechanism"] == "SCRAM-SHA-512"

    opts = runtime.worker_config(settings, scenario).faust_broker_options
    assert opts["broker"] == "kafka://127.0.0.1:1"
    creds = opts["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    auth = credentials_to_aiokafka_auth(creds)
    assert auth["security_protocol"] == "SASL_PLAINTEXT"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert auth["sasl_plain_username"] == "seedloop-svc"
    assert auth["sasl_plain_password"] == KAFKA_PASSWORD
    app = faust.App("sasl-check", **opts)
    assert app.conf.broker_credentials is creds

    # SASL over TLS with PLAIN: the same settings, with a TLS context on the Faust side.
    tls = settings.model_copy(update={"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "PLAIN"})
    assert tls.confluent_config()["security.protocol"].upper() == "SASL_SSL"
    tls_auth = credentials_to_aiokafka_auth(tls.faust_broker_options()["broker_credentials"])
    assert tls_auth["security_protocol"] == "SASL_SSL" and tls_auth["ssl_context"] is not None
    assert tls_auth["sasl_mechanism"] == "PLAIN" and tls_auth["sasl_plain_password"] == KAFKA_PASSWORD

    text = json.dumps(settings.redacted()) + repr(settings) + repr(creds)
    assert KAFKA_PASSWORD not in text
    assert settings.redacted()["kafka_sasl_password"] == "**********"


def http_get(port: int, path: str) -> tuple[int, str, bytes]:
    """Status, content type and body of GET `path`, whatever the status."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.headers.get_content_type(), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get_content_type(), err.read()


# What the worker's HTTP serves (README, "HTTP"); everything else Faust would add is refused.
WORKER_ROUTES = [
    "/metrics",
    "/live",
    "/api/campaigns",
    "/api/campaigns?window=15m&model=last",
    "/api/campaigns/c_tea_kol",
    "/api/creators",
    "/api/history?minutes=60&model=last",
    "/api/lift",
    "/api/lift?window=60m&confidence=0.9",
]
FAUST_PAGES = [
    "/",
    "/router/",
    "/router",
    "/table/",
    "/table/anything/",
    "/graph/",
    "/stats/",
    "/performance/",
    "/nope",
    "/api/nope",
]


def test_the_worker_serves_only_seedloop_routes(
    settings: Settings, start_worker: Callable[..., WorkerProcess]
) -> None:
    """Faust's web server also mounts its own pages (an index at `/`, `/router/`, `/table/`): they
    describe the cluster's assignment and tables to anyone who can connect. Only seedloop's routes
    answer; the rest is a JSON 404."""
    ensure_topics(settings)
    worker = start_worker()
    wait_for(lambda: _answers(worker.port), 60, "the worker's HTTP server")
    for path in WORKER_ROUTES:
        status, _, body = http_get(worker.port, path)
        assert status == 200, (path, status, body[:300])
    for path in FAUST_PAGES:
        status, content_type, body = http_get(worker.port, path)
        assert status == 404, (path, status, body[:300])
        assert content_type == "application/json" and json.loads(body)["error"], (path, body[:300])
    # A wrong method on one of seedloop's routes is still a 405; on one of Faust's, a 404.
    for path, status in (("/metrics", 405), ("/router/", 404), ("/table/", 404)):
        req = urllib.request.Request(f"http://127.0.0.1:{worker.port}{path}", method="POST", data=b"")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == status, (path, refused.value.code)
    assert worker.proc.poll() is None, worker.log_text()[-3000:]


def _answers(port: int) -> bool:
    try:
        return http_get(port, "/metrics")[0] == 200
    except OSError:
        return False


def test_the_optimizer_listens_on_loopback_and_never_logs_its_token(
    settings: Settings, tmp_path: Path
) -> None:
    """`seedloop optimize` binds its HTTP to SEEDLOOP_WEB_HOST (127.0.0.1 unless configured), and
    neither its log nor its answers contain the control token."""
    token = "ctl-" + "t0k3n" * 6
    port = free_port()
    log_path = tmp_path / "optimizer.log"
    proc = spawn_seedloop(
        settings,
        "optimize",
        log_path,
        SEEDLOOP_OPTIMIZER_PORT=str(port),
        SEEDLOOP_CONTROL_TOKEN=token,
        SEEDLOOP_LOG_LEVEL="DEBUG",
    )
    try:
        wait_for(lambda: bool(listening_addresses(port)), 60, "the optimizer's HTTP listener")
        assert listening_addresses(port) == {"127.0.0.1"}, listening_addresses(port)
        other = non_loopback_address()
        if other is not None:
            with pytest.raises(OSError), socket.create_connection((other, port), timeout=2):
                pass
        assert http_get(port, "/api/bids")[0] == 200
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/campaigns/c_tea_kol/pause",
            method="POST",
            headers={"Authorization": f"Bearer {token}x"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == 401 and token not in refused.value.read().decode()
    finally:
        stop_processes([proc], timeout=20)
    assert token not in log_path.read_text(errors="replace")
