"""The one settings object: environment variables (and CLI flags, which override them).

`KAFKA_BOOTSTRAP_SERVERS` and `REDIS_URL` name external services; when unset, the runtime
starts the embedded broker and Redis (seedloop/embedded.py). Everything else is `SEEDLOOP_*`.
Secrets are `SecretStr`, so they print as '**********' in logs, reprs and reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.events import ACTIONS

# The `seeds` folder beside the `seedloop` package: the repository's seeds/ in a checkout or an
# editable install, the `seeds` package (pyproject.toml ships it) in site-packages otherwise.
REPO_SEEDS = Path(__file__).resolve().parent.parent / "seeds"

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEEDLOOP_", frozen=True, extra="forbid")

    # --- external services (unset = embedded) ---
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "SEEDLOOP_KAFKA_BOOTSTRAP_SERVERS"),
    )
    redis_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "SEEDLOOP_REDIS_URL")
    )
    redis_mode: Literal["auto", "standalone", "cluster"] = Field(
        default="auto",
        description="auto: ask the server at REDIS_URL whether it is a Redis Cluster node (INFO cluster) "
        "and use the cluster client if so; standalone or cluster: do not ask",
    )
    kafka_security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT",
        validation_alias=AliasChoices("KAFKA_SECURITY_PROTOCOL", "SEEDLOOP_KAFKA_SECURITY_PROTOCOL"),
    )
    kafka_sasl_mechanism: SaslMechanism = Field(
        default="PLAIN",
        validation_alias=AliasChoices("KAFKA_SASL_MECHANISM", "SEEDLOOP_KAFKA_SASL_MECHANISM"),
    )
    kafka_sasl_username: str | None = Field(
        default=None, validation_alias=AliasChoices("KAFKA_SASL_USERNAME", "SEEDLOOP_KAFKA_SASL_USERNAME")
    )
    kafka_sasl_password: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("KAFKA_SASL_PASSWORD", "SEEDLOOP_KAFKA_SASL_PASSWORD")
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None, validation_alias=AliasChoices("KAFKA_SSL_CAFILE", "SEEDLOOP_KAFKA_SSL_CAFILE")
    )

    # --- topics ---
    # Dot-separated words: the topics are `<prefix>.<name>`, so a trailing dot would make `seedloop..view`.
    topic_prefix: str = Field(default="seedloop", pattern=r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
    partitions: int = Field(default=4, ge=1, le=256)
    replication_factor: int = Field(default=1, ge=1, le=5)

    # --- simulation ---
    seeds_dir: Path = REPO_SEEDS
    seed: int = 7
    rate: float = Field(default=2000.0, gt=0, le=1_000_000, description="target events/s produced")
    sim_speed: float = Field(default=720.0, gt=0, le=100_000, description="simulated seconds per real second")
    sim_start: str = "2026-11-11T08:00:00+00:00"
    users: int = Field(default=200_000, ge=10)

    # --- worker / attribution ---
    worker_id: str = "worker-1"
    consumer_group: str = "seedloop-attribution"
    batch_max: int = Field(default=2000, ge=1, le=100_000)
    batch_within_s: float = Field(default=0.2, gt=0, le=10)
    lookback_view_s: float = Field(default=86_400.0, gt=0, description="plain-view lookback (1 day)")
    lookback_engaged_s: float = Field(
        default=7 * 86_400.0, gt=0, description="engaged-touch lookback (7 days)"
    )
    half_life_s: float = Field(default=6 * 3600.0, gt=0, description="time-decay half-life")
    attribution_scope: Literal["product", "any"] = Field(
        default="product",
        description="product: an add-to-cart or checkout credits only ads of campaigns promoting the SPU "
        "bought; any: every ad in the lookback, whatever it promoted",
    )
    allowed_lateness_s: float = Field(
        default=3600.0, ge=0, description="event-time lateness before dead-lettering"
    )
    max_future_s: float = Field(
        default=86_400.0, ge=0, description="how far past max(wall clock, watermark) an event time may be"
    )
    bucket_s: int = Field(default=60, ge=1, description="event-time bucket of the rolling windows")
    retention_s: float = Field(
        default=86_400.0,
        gt=0,
        description="a campaign's follower is retained when active again this long after following (day 1)",
    )
    state_ttl_s: int = Field(
        default=14 * 86_400, ge=60, description="Redis expiry of per-user state (wall clock)"
    )
    rebalance_timeout_s: float = Field(default=6.0, gt=0)
    fetch_max_wait_ms: int = Field(default=50, ge=1, le=5000, description="worker's Kafka long-poll wait")
    on_state_loss: Literal["stop", "rebuild"] = Field(
        default="stop", description="when Redis is behind Kafka's committed offsets: stop loudly, or rebuild"
    )
    markov_refresh_s: float = Field(
        default=30.0, gt=0, description="how often the Markov weights are re-learned"
    )

    # --- web / metrics ---
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=0, le=65535)
    optimizer_port: int = Field(default=6067, ge=0, le=65535)
    simulator_port: int = Field(default=6068, ge=0, le=65535)
    control_token: SecretStr | None = None
    metrics_refresh_s: float = Field(
        default=5.0, gt=0, le=3600, description="wall seconds between refreshes of the campaign gauges"
    )
    metrics_top_n: int = Field(
        default=50, ge=1, le=10_000, description="campaigns/creators exported by name; the rest as `other`"
    )
    reach_ttl_s: int = Field(
        default=3 * 3600, ge=60, description="wall-clock expiry of the per-minute reach HyperLogLogs"
    )
    holdout_share: float = Field(
        default=0.05,
        ge=0,
        le=0.5,
        description=(
            "share of each campaign's users held out of its ads (ghost views, no cost) to measure "
            "conversion lift; 0 disables lift measurement"
        ),
    )
    lift_window_s: float = Field(
        default=7 * 86_400.0,
        gt=0,
        description="conversions counted for lift this long after a user's first exposure",
    )

    # --- optimizer ---
    optimizer_interval_s: float = Field(default=5.0, gt=0, description="wall seconds between control rounds")
    optimizer_window_s: float = Field(default=3 * 3600.0, gt=0, description="event-time window it judges")
    optimizer_mode: Literal["live", "dry_run"] = "live"
    optimizer_steer: Literal["attributed", "lift"] = Field(
        default="attributed",
        description="what the optimizer steers by: attributed figures, or attributed figures calibrated by measured lift",
    )
    min_conversions: float = Field(default=5.0, ge=0, description="learning phase: conversions before acting")
    max_step: float = Field(default=0.25, gt=0, lt=1, description="largest relative bid move per round")

    log_format: Literal["json", "console"] = "console"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    connect_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="how long a command waits for Kafka and Redis at start before it gives up with one clear line",
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL") and not self.kafka_sasl_username:
            raise ValueError("KAFKA_SASL_USERNAME is required with a SASL security protocol")
        if self.lookback_engaged_s < self.lookback_view_s:
            raise ValueError("the engaged-touch lookback must be at least the plain-view lookback")
        if self.holdout_share > 0 and self.lift_window_s <= self.allowed_lateness_s + self.max_future_s:
            # A checkout may arrive this late or this early against its user's first view; a
            # shorter window could count it on one replay and not on another.
            raise ValueError(
                "SEEDLOOP_LIFT_WINDOW_S must exceed SEEDLOOP_ALLOWED_LATENESS_S + SEEDLOOP_MAX_FUTURE_S "
                "for exact lift figures"
            )
        if self.holdout_share > 0 and self.state_ttl_s < self.lift_window_s:
            # A user state that expires inside the window starts a second episode: the user would
            # be counted twice, and their cohort bucket could expire under later checkouts.
            raise ValueError(
                "SEEDLOOP_STATE_TTL_S must be at least SEEDLOOP_LIFT_WINDOW_S while a holdout is measured"
            )
        return self

    # --- derived names ---
    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}.{name}"

    @property
    def action_topics(self) -> dict[str, str]:
        return {a: self.topic(a) for a in ACTIONS}

    @property
    def redis_url_value(self) -> str:
        if self.redis_url is None:
            raise RuntimeError("REDIS_URL is not set and no embedded Redis was started")
        return self.redis_url.get_secret_value()

    @property
    def bootstrap(self) -> str:
        if not self.kafka_bootstrap_servers:
            raise RuntimeError("KAFKA_BOOTSTRAP_SERVERS is not set and no embedded broker was started")
        return self.kafka_bootstrap_servers

    def with_services(self, bootstrap: str, redis_url: str) -> Settings:
        return self.model_copy(
            update={"kafka_bootstrap_servers": bootstrap, "redis_url": SecretStr(redis_url)}
        )

    def confluent_config(self) -> dict[str, Any]:
        """librdkafka properties shared by our producers, consumers and admin clients (security
        passes through). librdkafka's own log goes through our logging (redacted, connection-refused
        spam deduplicated: seedloop/logs.py) rather than raw to stderr, for every client alike."""
        from seedloop.logs import kafka_client_log

        conf: dict[str, Any] = {
            "logger": kafka_client_log(),
            "bootstrap.servers": self.bootstrap,
            # An idle connection closed by the broker is routine; don't print it as a failure.
            "log.connection.close": False,
            "security.protocol": self.kafka_security_protocol.lower(),
        }
        if self.kafka_security_protocol.startswith("SASL"):
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
            conf["sasl.username"] = self.kafka_sasl_username
            conf["sasl.password"] = (
                self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else ""
            )
        if self.kafka_ssl_cafile is not None:
            conf["ssl.ca.location"] = str(self.kafka_ssl_cafile)
        return conf

    def faust_broker_options(self) -> dict[str, Any]:
        """Keyword arguments for faust.App: the same security settings, in aiokafka's terms."""
        opts: dict[str, Any] = {"broker": f"kafka://{self.bootstrap}"}
        if self.kafka_security_protocol == "PLAINTEXT":
            return opts
        import ssl

        import faust

        ssl_context = None
        if self.kafka_security_protocol.endswith("SSL"):
            ssl_context = ssl.create_default_context(
                cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None
            )
        if self.kafka_security_protocol.startswith("SASL"):
            password = self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else ""
            mechanism = self.kafka_sasl_mechanism
            creds: Any
            if mechanism == "PLAIN":
                creds = faust.SASLCredentials(
                    username=self.kafka_sasl_username, password=password, ssl_context=ssl_context
                )
            else:
                creds = faust.SASLCredentials(
                    username=self.kafka_sasl_username,
                    password=password,
                    ssl_context=ssl_context,
                    mechanism=mechanism,
                )
            opts["broker_credentials"] = creds
        elif ssl_context is not None:
            opts["broker_credentials"] = faust.SSLCredentials(ssl_context)
        return opts

    def child_env(self, **extra: str) -> dict[str, str]:
        """The environment for a child process (a worker) that must use these settings' services:
        this process's environment without its SEEDLOOP_* values, plus these settings and `extra`."""
        import os

        env = {k: v for k, v in os.environ.items() if not k.startswith("SEEDLOOP_")}
        env.update(
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "REDIS_URL": self.redis_url_value,
                "SEEDLOOP_REDIS_MODE": self.redis_mode,
                "SEEDLOOP_TOPIC_PREFIX": self.topic_prefix,
                "SEEDLOOP_PARTITIONS": str(self.partitions),
                "SEEDLOOP_SEEDS_DIR": str(self.seeds_dir),
                "SEEDLOOP_REBALANCE_TIMEOUT_S": str(self.rebalance_timeout_s),
                "SEEDLOOP_RETENTION_S": str(self.retention_s),
                "SEEDLOOP_WEB_HOST": self.web_host,
                "SEEDLOOP_LOG_FORMAT": "json",
            }
        )
        env.update(extra)
        return env

    def redacted(self) -> dict[str, Any]:
        """Settings safe to log or write into a report (seedloop/redact.py decides what is secret)."""
        from seedloop.redact import redact_servers, redact_value

        dumped = self.model_dump(mode="json")
        dumped["redis_url"] = _redact_url(self.redis_url.get_secret_value()) if self.redis_url else None
        if self.kafka_bootstrap_servers:
            dumped["kafka_bootstrap_servers"] = redact_servers(self.kafka_bootstrap_servers)
        return dict(redact_value(dumped))


def _redact_url(url: str) -> str:
    from seedloop.redact import redact_url

    return redact_url(url)
