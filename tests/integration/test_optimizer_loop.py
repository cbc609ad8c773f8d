"""The optimizer against real Redis and Kafka: control endpoint, dry run, and the loop closing."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer

from producers.kafka_sink import BidAdjustmentReader, assign_all
from producers.scheduler import AdScheduler
from producers.traffic import TrafficModel, load_truth
from schemas.events import UserAction
from seedloop import runtime
from seedloop.settings import Settings
from seedloop.topics import caught_up, end_offsets, ensure_topics
from stream_processors.optimizer.http import ControlServer
from stream_processors.store.redis_lua import FigureReader, Keys
from tests.conftest import WorkerProcess, wait_for
from tests.integration.test_pipeline import produce_simulated

# The optimizer, HTTP and monitoring are the subject here, not the broker: one tier is enough.
pytestmark = [pytest.mark.integration, pytest.mark.one_tier]
TOKEN = "test-token-" + "x" * 16


def call(
    port: int, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None
) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
    )
    if body is not None:
        req.add_header("Content-Type", "application/json")  # urllib would say form-urlencoded: a 415
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@dataclass
class Applied:
    settings: Settings
    events: list[UserAction]


@pytest.fixture
def applied_figures(settings: Settings, start_worker: Callable[..., WorkerProcess]) -> Applied:
    """Four simulated hours applied by a real worker, so the optimizer has figures to judge."""
    ensure_topics(settings)
    start_worker()
    events = produce_simulated(settings, sim_seconds=4 * 3600)
    client = redis.Redis.from_url(settings.redis_url_value)
    reader = FigureReader(client, Keys(settings.topic_prefix), settings.partitions, settings.bucket_s)
    wait_for(lambda: caught_up(settings, reader), 90, "the worker to apply the events")
    return Applied(settings, events)


def bid_adjustments(settings: Settings) -> list[dict[str, Any]]:
    consumer = Consumer({**settings.confluent_config(), "group.id": "reader", "enable.partition.eof": True})
    assign_all(consumer, settings.topic("bid_adjustments"))
    total = sum(end_offsets(settings, [settings.topic("bid_adjustments")]).values())
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + 20
    while len(out) < total and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            out.append(json.loads(msg.value()))
    consumer.close()
    return out


def test_control_endpoint_requires_a_token_and_steers_the_next_round(applied_figures: Applied) -> None:
    settings = applied_figures.settings
    service = runtime.optimizer_of(settings, runtime.scenario_of(settings))
    server = ControlServer(service, "127.0.0.1", 0, TOKEN).start()
    try:
        status, bids = call(server.port, "GET", "/api/bids")
        assert status == 200 and len(bids["bids"]) == sum(len(c.channels) for c in service.scenario.campaigns)
        assert call(server.port, "POST", "/api/campaigns/c_pd_feed/pause")[0] == 401
        assert call(server.port, "POST", "/api/campaigns/c_pd_feed/pause", token="wrong")[0] == 401
        assert call(server.port, "POST", "/api/campaigns/c_pd_feed/pause", token=TOKEN) == (
            200,
            {"campaign_id": "c_pd_feed", "paused": True},
        )
        assert (
            call(server.port, "PUT", "/api/campaigns/c_tea_kol/bids/kol", {"bid": 111.0}, token=TOKEN)[0]
            == 200
        )
        assert call(server.port, "PUT", "/api/campaigns/c_nope/bids/kol", {"bid": 1.0}, token=TOKEN)[0] == 404
        assert (
            call(server.port, "PUT", "/api/campaigns/c_tea_kol/bids/kol", {"bid": -3}, token=TOKEN)[0] == 400
        )

        decisions = {(d.campaign_id, d.channel): d for d in service.run_round()}
        assert decisions[("c_tea_kol", "kol")].new_bid == pytest.approx(111.0)
        assert decisions[("c_tea_kol", "kol")].reason == "manual_override"
        assert decisions[("c_pd_feed", "feed")].reason == "paused"
        published = bid_adjustments(settings)
        assert {d["decision_id"] for d in published} == {d.decision_id for d in decisions.values()}
        status, recent = call(server.port, "GET", "/api/decisions?limit=5")
        assert status == 200 and len(recent["decisions"]) == 5
    finally:
        server.stop()


def test_without_a_token_control_is_disabled(settings: Settings) -> None:
    service = runtime.optimizer_of(settings, runtime.scenario_of(settings))
    server = ControlServer(service, "127.0.0.1", 0, None).start()
    try:
        status, body = call(server.port, "POST", "/api/campaigns/c_pd_feed/pause", token="anything")
        assert status == 503 and "SEEDLOOP_CONTROL_TOKEN" in body["error"]
    finally:
        server.stop()


def test_dry_run_decides_but_publishes_nothing(applied_figures: Applied) -> None:
    settings = applied_figures.settings.model_copy(update={"optimizer_mode": "dry_run"})
    service = runtime.optimizer_of(settings, runtime.scenario_of(settings))
    decisions = service.run_round()
    assert decisions and all(d.dry_run for d in decisions)
    assert sum(end_offsets(settings, [settings.topic("bid_adjustments")]).values()) == 0


def test_published_adjustments_change_the_simulated_traffic(applied_figures: Applied) -> None:
    settings = applied_figures.settings
    scenario = runtime.scenario_of(settings)
    service = runtime.optimizer_of(settings, scenario)
    decisions = []
    for _ in range(3):
        decisions += [d for d in service.run_round() if d.new_bid != d.old_bid]
    assert decisions, "the optimizer moved no bid on four hours of data"

    scheduler = AdScheduler(scenario)
    traffic = TrafficModel(load_truth(settings.seeds_dir))
    before = {k: traffic.views_per_hour(k[0], k[1], b, 12 * 3600) for k, b in scheduler.bids.items()}
    reader = BidAdjustmentReader(
        settings.confluent_config(), settings.topic("bid_adjustments"), "scheduler-test"
    )
    applied = 0
    deadline = time.monotonic() + 20
    while applied < len(decisions) and time.monotonic() < deadline:
        applied += sum(scheduler.apply(adj) for adj in reader.poll())
    reader.close()
    key = (decisions[-1].campaign_id, decisions[-1].channel)
    latest = max((d for d in decisions if (d.campaign_id, d.channel) == key), key=lambda d: d.round)
    assert scheduler.bid(*key) == pytest.approx(latest.new_bid)
    after = traffic.views_per_hour(key[0], key[1], scheduler.bid(*key), 12 * 3600)
    assert after != pytest.approx(before[key])


def test_remarketing_audiences_follow_the_stream(applied_figures: Applied) -> None:
    settings, events = applied_figures.settings, applied_figures.events
    last_checkout: dict[str, float] = {}
    last_cart: dict[str, float] = {}
    engaged: set[str] = set()
    for e in events:
        if e.action == "checkout":
            last_checkout[e.user_id] = max(e.event_ts, last_checkout.get(e.user_id, 0.0))
        elif e.action == "add_to_cart":
            last_cart[e.user_id] = max(e.event_ts, last_cart.get(e.user_id, 0.0))
        elif e.action == "follow" or (e.action == "view" and e.engaged):
            engaged.add(e.user_id)
    abandoners = {u for u, t in last_cart.items() if t > last_checkout.get(u, float("-inf"))}
    service = runtime.optimizer_of(settings, runtime.scenario_of(settings))
    server = ControlServer(service, "127.0.0.1", 0, None).start()
    try:
        status, sizes = call(server.port, "GET", "/api/audiences")
        assert status == 200
        assert sizes == {"cart_abandoners": len(abandoners), "engaged": len(engaged - set(last_checkout)),
                         "buyers": len(last_checkout)}
        status, body = call(server.port, "GET", "/api/audiences/cart_abandoners?limit=100000")
        assert {m["user_id"] for m in body["members"]} == abandoners
        assert call(server.port, "GET", "/api/audiences/nobody")[0] == 404
    finally:
        server.stop()
