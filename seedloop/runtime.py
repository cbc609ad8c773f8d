"""Wiring: settings + scenario -> the configured parts. The one place that knows both sides."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from producers.kafka_sink import BidAdjustmentReader, EventSink
from producers.scenario import Scenario, load_scenario
from producers.scheduler import AdScheduler
from producers.simulator import SimConfig, Simulator
from producers.traffic import TrafficModel, load_truth
from seedloop.settings import Settings
from stream_processors.attribution.journey import EngineConfig
from stream_processors.attribution.models import Lookback
from stream_processors.metrics import OptimizerMetrics
from stream_processors.optimizer.controller import ControlPolicy
from stream_processors.optimizer.lift_steer import LiftSteerPolicy
from stream_processors.optimizer.service import OptimizerConfig, OptimizerService
from stream_processors.processor import Catalogue, ProcessingRules
from stream_processors.redis_connect import sync_client
from stream_processors.store.redis_lua import FigureReader, Keys
from stream_processors.worker import WorkerConfig


def scenario_of(settings: Settings) -> Scenario:
    return load_scenario(settings.seeds_dir)


def campaign_lookbacks(scenario: Scenario) -> dict[str, Lookback]:
    return {
        c.campaign_id: Lookback(view_s=c.lookback_view_s, engaged_s=c.lookback_engaged_s)
        for c in scenario.campaigns
        if c.lookback_view_s is not None and c.lookback_engaged_s is not None
    }


def processing_rules(settings: Settings, scenario: Scenario) -> ProcessingRules:
    engine = EngineConfig(
        lookback=Lookback(view_s=settings.lookback_view_s, engaged_s=settings.lookback_engaged_s),
        half_life_s=settings.half_life_s,
        lateness_s=settings.allowed_lateness_s,
        bucket_s=settings.bucket_s,
        campaign_lookbacks=campaign_lookbacks(scenario),
        retention_s=settings.retention_s,
        # Without a holdout there is nothing to compare against: no lift state is kept at all.
        lift_window_s=settings.lift_window_s if settings.holdout_share > 0 else 0.0,
        campaign_products=scenario.campaign_products() if settings.attribution_scope == "product" else {},
    )
    catalogue = Catalogue(scenario.campaign_channels(), scenario.fx.base, scenario.rates_to_base())
    return ProcessingRules(engine=engine, max_future_s=settings.max_future_s, catalogue=catalogue)


def worker_config(settings: Settings, scenario: Scenario) -> WorkerConfig:
    return WorkerConfig(
        app_id=settings.consumer_group
        if settings.topic_prefix == "seedloop"
        else f"{settings.consumer_group}-{settings.topic_prefix}",
        worker_id=settings.worker_id,
        faust_broker_options=settings.faust_broker_options(),
        redis_url=settings.redis_url_value,
        topic_prefix=settings.topic_prefix,
        partitions=settings.partitions,
        rules=processing_rules(settings, scenario),
        batch_max=settings.batch_max,
        batch_within_s=settings.batch_within_s,
        user_ttl_s=settings.state_ttl_s,
        bucket_ttl_s=settings.state_ttl_s,
        rebalance_timeout_s=settings.rebalance_timeout_s,
        web_host=settings.web_host,
        web_port=settings.web_port,
        markov_refresh_s=settings.markov_refresh_s,
        metrics_refresh_s=settings.metrics_refresh_s,
        metrics_top_n=settings.metrics_top_n,
        reach_ttl_s=settings.reach_ttl_s,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        redis_mode=settings.redis_mode,
    )


def simulator_of(settings: Settings, scenario: Scenario) -> Simulator:
    traffic = TrafficModel(load_truth(settings.seeds_dir))
    cfg = SimConfig(
        seed=settings.seed,
        users=settings.users,
        start_ts=datetime.fromisoformat(settings.sim_start).timestamp(),
        holdout_share=settings.holdout_share,
    )
    return Simulator(scenario, traffic, AdScheduler(scenario), cfg)


def kafka_config(settings: Settings) -> dict[str, Any]:
    """librdkafka properties of the clients we build (the settings' own, logger included)."""
    return settings.confluent_config()


def event_sink(settings: Settings, scenario: Scenario) -> EventSink:
    return EventSink(kafka_config(settings), settings.topic_prefix, scenario.rates_to_base())


def bid_reader(settings: Settings, instance: str) -> BidAdjustmentReader:
    return BidAdjustmentReader(
        kafka_config(settings),
        settings.topic("bid_adjustments"),
        group_id=f"seedloop-scheduler-{settings.topic_prefix}-{instance}",
    )


def optimizer_of(
    settings: Settings, scenario: Scenario, metrics: OptimizerMetrics | None = None
) -> OptimizerService:
    client = sync_client(settings.redis_url_value, settings.redis_mode)
    keys = Keys(settings.topic_prefix)
    reader = FigureReader(client, keys, settings.partitions, settings.bucket_s)
    policy = ControlPolicy(max_step=settings.max_step, min_conversions=settings.min_conversions)
    cfg = OptimizerConfig(
        topic=settings.topic("bid_adjustments"),
        window_s=settings.optimizer_window_s,
        policy=policy,
        mode=settings.optimizer_mode,
        final_after_s=settings.allowed_lateness_s + 5 * settings.bucket_s,
        steer=settings.optimizer_steer,
        lift=LiftSteerPolicy(window_s=settings.lift_window_s),
    )
    return OptimizerService(scenario, reader, client, keys, kafka_config(settings), cfg, metrics)
