"""The pipeline against a real broker and a real Redis: every figure equals an independent recount."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import redis
from confluent_kafka import Consumer, KafkaError, Message, Producer, murmur2

from producers.kafka_sink import assign_all
from producers.scenario import Scenario
from producers.scheduler import AdScheduler
from producers.simulator import Simulator
from seedloop import runtime
from seedloop.settings import Settings
from seedloop.topics import caught_up, ensure_topics
from stream_processors.lift import lift_groups
from stream_processors.processor import WATERMARK_QUORUM
from stream_processors.store.redis_lua import FigureReader, Keys
from tests.conftest import REPO, WorkerProcess, settings_env, wait_for
from tests.recount import recount_for

pytestmark = pytest.mark.integration


def simulator_with_holdout(
    settings: Settings, scenario: Scenario, share: float, seed: int | None = None
) -> Simulator:
    """The settings' simulator with `share` of each campaign's users held out (ghost views)."""
    sim = runtime.simulator_of(settings, scenario)
    cfg = dataclasses.replace(sim.cfg, holdout_share=share, seed=sim.cfg.seed if seed is None else seed)
    return Simulator(scenario, sim.traffic, AdScheduler(scenario), cfg)


def produce_simulated(
    settings: Settings,
    sim_seconds: float,
    start_after: float = 0.0,
    holdout_share: float = 0.0,
    seed: int | None = None,
) -> list:
    """Produce the seeded simulation's events from `start_after` to `start_after + sim_seconds`
    (with `holdout_share` of each campaign's users held out: ghost views)."""
    scenario = runtime.scenario_of(settings)
    sim = simulator_with_holdout(settings, scenario, holdout_share, seed)
    if start_after:
        sim.advance(sim.now + start_after)
    events = sim.advance(sim.now + sim_seconds)
    sink = runtime.event_sink(settings, scenario)
    from schemas.codec import encode

    for e in events:
        sink.produce(e, encode(e))
    assert sink.close(60) == 0
    assert sink.totals.events == len(events) and sink.totals.failed == 0
    return events


def read_topic(settings: Settings, action: str, expected: int, timeout: float) -> list[Message]:
    """The topic's messages from the start, read without committing, until `expected` arrived."""
    consumer = Consumer(
        {
            **settings.confluent_config(),
            "group.id": f"reader-{action}-{settings.topic_prefix}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    assign_all(consumer, settings.topic(action))
    out: list[Message] = []

    def more() -> bool:
        for m in consumer.consume(500, timeout=0.5):
            if m.error() is None:
                out.append(m)
            elif m.error().code() != KafkaError._PARTITION_EOF:
                raise RuntimeError(str(m.error()))
        return len(out) >= expected

    try:
        wait_for(more, timeout, f"{expected} messages of {settings.topic(action)}")
    finally:
        consumer.close()
    return out


def read_dead_letters(settings: Settings, expected: int, timeout: float = 20) -> list[Message]:
    return read_topic(settings, "dead_letters", expected, timeout)


def test_worker_figures_equal_independent_recount(
    settings: Settings, start_worker: Callable[..., WorkerProcess], redis_client: redis.Redis
) -> None:
    ensure_topics(settings)
    worker = start_worker()
    # A fifth of each campaign's users held out: ghost views, counted only in the lift figures.
    events = produce_simulated(settings, sim_seconds=4 * 3600, holdout_share=0.2)
    assert len(events) > 5_000
    assert any(e.action == "view" and e.held_out for e in events)
    # Replays of recent events (same event_id, within the allowed lateness) must count once.
    scenario = runtime.scenario_of(settings)
    sink = runtime.event_sink(settings, scenario)
    from schemas.codec import encode

    for e in events[-200::7]:
        sink.produce(e, encode(e))
    assert sink.close(30) == 0

    reader = FigureReader(redis_client, Keys(settings.topic_prefix), settings.partitions, settings.bucket_s)
    wait_for(lambda: caught_up(settings, reader), 90, "the worker to apply every message")
    assert worker.proc.poll() is None, worker.log_text()[-3000:]

    expected = recount_for(settings, events)
    stored = {k: v for k, v in reader.totals().items() if v and not k.startswith("k|")}
    assert stored == expected
    # The recount is not trivially empty: attribution really happened.
    assert expected["t|checkouts"] > 0
    assert any(k.endswith("|last|checkouts") for k in expected)
    assert_lift_served(worker, expected)

    # `seedloop report --json` reads the same state and agrees.
    out = subprocess.run(
        [sys.executable, "-m", "seedloop", "report", "--json"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=True,
    )
    report = json.loads(out.stdout)
    counts = Counter(e.action for e in {e.event_id: e for e in events}.values())
    ghosts = sum(1 for e in {e.event_id: e for e in events}.values() if e.action == "view" and e.held_out)
    assert report["totals"]["views"] == counts["view"] - ghosts
    assert report["totals"]["checkouts"] == counts["checkout"]
    # Ghost views are applied but are not views: the report's events_processed sums the four
    # shown-event totals, and the ghost views are counted apart (t|ghost_views).
    assert report["events_processed"] == len({e.event_id for e in events})
    assert reader.totals()["t|ghost_views"] == ghosts > 0
    # The replayed duplicates are counted once and each repeat is dead-lettered as `duplicate`.
    assert report["dead_letters"] == len(events[-200::7])
    by_campaign = {c["campaign_id"]: c for c in report["campaigns"]}
    for cid in {e.campaign_id for e in events if e.action == "view"}:
        views = sum(
            1
            for e in {e.event_id: e for e in events}.values()
            if e.action == "view" and e.campaign_id == cid and not e.held_out
        )
        assert by_campaign[cid]["views"] == views


def assert_lift_served(worker: WorkerProcess, expected: dict[str, int]) -> None:
    """The worker's /api/lift serves the recount's lift groups, with an estimate wherever both
    groups have 2 users (its interval around it)."""
    body = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/api/lift", timeout=10).read())
    served = {row["campaign_id"]: row for row in body["campaigns"]}
    groups = lift_groups(expected)
    assert set(served) == set(groups) and body["window"] == "all"
    for campaign, by_group in groups.items():
        for group, figures in by_group.items():
            row = served[campaign][group]
            assert (row["users"], row["checkouts"]) == (figures.users, figures.checkouts), (campaign, group)
            assert row["gmv"] == figures.gmv_minor / 100
    estimated = [
        row for row in served.values() if row["held_out"]["users"] >= 2 and row["exposed"]["users"] >= 2
    ]
    assert estimated, served
    for row in estimated:
        low, high = row["incremental_gmv_ci"]
        assert low <= row["incremental_gmv"] <= high


def test_bad_input_is_dead_lettered_with_reason_and_processing_continues(
    settings: Settings, start_worker: Callable[..., WorkerProcess], redis_client: redis.Redis
) -> None:
    ensure_topics(settings)
    start_worker()
    good = (
        '{"action":"view","event_id":"ok-1","user_id":"u1","event_time":"2026-11-11T08:00:00Z",'
        '"campaign_id":"c_pmpm_launch","channel":"kol","creative_id":"cr1","cost_minor":30}'
    )
    home = murmur2(b"u1", settings.partitions)
    bad = {
        b"not json at all": "not_json",
        b"[1,2,3]": "not_an_object",
        b'{"action":"view","event_id":"x"}': "invalid_fields",
        good.replace("c_pmpm_launch", "c_nope").encode(): "unknown_campaign",
        good.replace('"kol"', '"brand"').encode(): "unknown_channel",
        good.replace('"cost_minor":30', '"cost_minor":-5').encode(): "invalid_fields",
        good.replace('"schema_version":1,', "")
        .replace('{"action"', '{"schema_version":9,"action"')
        .encode(): "unknown_schema_version",
        good.replace("2026-11-11", "2099-01-01").encode(): "future",
        b"x" * 20_000: "oversized",
        good.replace('"cost_minor":30', '"cost_minor":NaN').encode(): "not_json",
        good.replace('"cost_minor":30', '"cost_minor":"thirty"').encode(): "invalid_fields",
        good.replace('"cost_minor":30', '"cost_minor":30,"surprise":1').encode(): "invalid_fields",
        good.replace('"view"', '"purchase"').encode(): "unknown_action",
        good.replace('"cost_minor":30', '"cost_minor":30,"held_out":true').encode(): "ghost_view_cost",
    }
    # After the good events (the watermark needs WATERMARK_QUORUM of them): the same event again
    # (other bytes, same event_id), the same event_id under another user of the same partition,
    # and one two hours older than the watermark (the allowed lateness is one hour).
    goods = [good.replace("ok-1", f"ok-{i}").encode() for i in range(1, WATERMARK_QUORUM + 1)]
    neighbour = next(
        u for u in (f"n{i}" for i in range(100)) if murmur2(u.encode(), settings.partitions) == home
    )
    after_good = {
        good.replace(",", ", ").encode(): "duplicate",
        good.replace('"u1"', f'"{neighbour}"').encode(): "duplicate",
        good.replace("ok-1", "late-1").replace("T08:00", "T06:00").encode(): "late",
    }
    keys = {good.replace('"u1"', f'"{neighbour}"').encode(): neighbour.encode()}
    producer = Producer({**settings.confluent_config(), "partitioner": "murmur2_random"})
    for payload in bad:
        producer.produce(settings.topic("view"), payload, b"u1")
    # A key other than the payload's user, and the right key in another partition.
    misplaced = {
        good.replace("ok-1", "km-1").encode(): "key_mismatch",
        good.replace("ok-1", "wp-1").encode(): "wrong_partition",
    }
    producer.produce(settings.topic("view"), good.replace("ok-1", "km-1").encode(), neighbour.encode() + b"x")
    producer.produce(
        settings.topic("view"),
        good.replace("ok-1", "wp-1").encode(),
        b"u1",
        partition=(home + 1) % settings.partitions,
    )
    for payload in goods:
        producer.produce(settings.topic("view"), payload, b"u1")
    assert producer.flush(30) == 0
    # Once the good events are applied (so that the watermark stands), the repeats and the late one.
    reader = FigureReader(redis_client, Keys(settings.topic_prefix), settings.partitions, settings.bucket_s)
    wait_for(lambda: reader.totals().get("t|views") == len(goods), 30, "the good events")
    for payload in after_good:
        producer.produce(settings.topic("view"), payload, keys.get(payload, b"u1"))
    assert producer.flush(30) == 0
    bad.update(after_good)
    bad.update(misplaced)

    letters = read_dead_letters(settings, expected=len(bad))
    seen: Counter[str] = Counter()
    for m in letters:
        headers = {k: v.decode() for k, v in (m.headers() or [])}
        assert headers["source_topic"] == settings.topic("view")
        assert int(headers["source_offset"]) >= 0 and headers["error_message"]
        assert m.value() in bad, "the original bytes travel with the dead letter"
        assert bad[m.value()] == headers["error_class"]
        seen[headers["error_class"]] += 1
    assert sum(seen.values()) == len(bad)

    assert reader.totals()["t|views"] == len(goods)
    assert reader.totals()["c|c_pmpm_launch|kol|views"] == len(goods)


def test_a_few_forged_day_ahead_views_do_not_make_later_ordinary_events_late(
    settings: Settings, start_worker: Callable[..., WorkerProcess], redis_client: redis.Redis
) -> None:
    """One client with a wrong clock must not silence a partition: fewer than WATERMARK_QUORUM
    views dated a day ahead (each within the allowed future skew of the one before) leave the
    watermark where honest traffic put it, and show on the outlier metric."""
    ensure_topics(settings)
    worker = start_worker()

    def view(event_id: str, at: datetime) -> bytes:
        return json.dumps(
            {
                "action": "view",
                "event_id": event_id,
                "user_id": "u1",
                "event_time": at.isoformat(),
                "campaign_id": "c_pmpm_launch",
                "channel": "kol",
                "creative_id": "cr1",
                "cost_minor": 30,
            }
        ).encode()

    t0 = datetime(2026, 11, 11, 8, tzinfo=UTC)
    honest = [view(f"h{i}", t0 + timedelta(seconds=i)) for i in range(WATERMARK_QUORUM)]
    forged = [view(f"f{i}", t0 + (i + 1) * timedelta(hours=23)) for i in range(WATERMARK_QUORUM - 1)]
    ordinary = [view(f"o{i}", t0 + timedelta(minutes=5, seconds=i)) for i in range(20)]
    producer = Producer({**settings.confluent_config(), "partitioner": "murmur2_random"})
    for payload in honest + forged + ordinary:
        producer.produce(settings.topic("view"), payload, b"u1")
    assert producer.flush(30) == 0

    reader = FigureReader(redis_client, Keys(settings.topic_prefix), settings.partitions, settings.bucket_s)
    total = len(honest) + len(forged) + len(ordinary)
    wait_for(
        lambda: reader.totals().get("t|views") == total,
        30,
        "every view, the ordinary ones after the forged too",
    )
    assert worker.proc.poll() is None, worker.log_text()[-3000:]
    meta = reader.metas()[murmur2(b"u1", settings.partitions)]
    assert meta.watermarks[settings.topic("view")] < (t0 + timedelta(minutes=10)).timestamp()

    def outliers() -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        line = 'seedloop_event_time_outliers_total{action="view",outcome="counted"}'
        return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(line))

    wait_for(lambda: outliers() == len(forged), 15, "the outliers on /metrics")
