"""The pipeline against a real broker and a real Redis: every figure equals an independent recount."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable

import pytest
import redis
from confluent_kafka import Consumer, Producer

from producers.kafka_sink import assign_all
from seedloop import runtime
from seedloop.settings import Settings
from seedloop.topics import caught_up, ensure_topics
from stream_processors.state import FigureReader, Keys
from tests.conftest import REPO, WorkerProcess, settings_env, wait_for
from tests.recount import recount_for

pytestmark = pytest.mark.integration


def produce_simulated(settings: Settings, sim_seconds: float, start_after: float = 0.0) -> list:
    """Produce the seeded simulation's events from `start_after` to `start_after + sim_seconds`."""
    scenario = runtime.scenario_of(settings)
    sim = runtime.simulator_of(settings, scenario)
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


def read_dead_letters(settings: Settings, expected: int, timeout: float = 20) -> list:
    consumer = Consumer(
        {
            **settings.confluent_config(),
            "group.id": f"dlq-reader-{settings.topic_prefix}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    assign_all(consumer, settings.topic("dead_letters"))
    out: list = []
    try:
        wait_for(
            lambda: (
                bool(out.extend(m for m in consumer.consume(100, timeout=0.5) if not m.error()))
                or len(out) >= expected
            ),
            timeout,
            f"{expected} dead letters",
        )
    finally:
        consumer.close()
    return out


def test_worker_figures_equal_independent_recount(
    settings: Settings, start_worker: Callable[..., WorkerProcess], redis_client: redis.Redis
) -> None:
    ensure_topics(settings)
    worker = start_worker()
    events = produce_simulated(settings, sim_seconds=4 * 3600)
    assert len(events) > 5_000
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
    assert report["totals"]["views"] == counts["view"]
    assert report["totals"]["checkouts"] == counts["checkout"]
    assert report["events_processed"] == len({e.event_id for e in events})
    # The replayed duplicates are counted once and each repeat is dead-lettered as `duplicate`.
    assert report["dead_letters"] == len(events[-200::7])
    by_campaign = {c["campaign_id"]: c for c in report["campaigns"]}
    for cid in {e.campaign_id for e in events if e.action == "view"}:
        views = sum(
            1 for e in {e.event_id: e for e in events}.values() if e.action == "view" and e.campaign_id == cid
        )
        assert by_campaign[cid]["views"] == views


def test_bad_input_is_dead_lettered_with_reason_and_processing_continues(
    settings: Settings, start_worker: Callable[..., WorkerProcess], redis_client: redis.Redis
) -> None:
    ensure_topics(settings)
    start_worker()
    good = (
        '{"action":"view","event_id":"ok-1","user_id":"u1","event_time":"2026-11-11T08:00:00Z",'
        '"campaign_id":"c_pmpm_launch","channel":"kol","creative_id":"cr1","cost_minor":30}'
    )
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
    }
    # After the good event: the same event again (other bytes, same event_id), and one two hours
    # older than the watermark (the allowed lateness is one hour).
    after_good = {
        good.replace(",", ", ").encode(): "duplicate",
        good.replace("ok-1", "ok-2").replace("T08:00", "T06:00").encode(): "late",
    }
    producer = Producer({**settings.confluent_config(), "partitioner": "murmur2_random"})
    for payload in bad:
        producer.produce(settings.topic("view"), payload, b"u1")
    producer.produce(settings.topic("view"), good.encode(), b"u1")
    for payload in after_good:
        producer.produce(settings.topic("view"), payload, b"u1")
    assert producer.flush(30) == 0
    bad.update(after_good)

    letters = read_dead_letters(settings, expected=len(bad))
    seen = Counter()
    for m in letters:
        headers = {k: v.decode() for k, v in (m.headers() or [])}
        assert headers["source_topic"] == settings.topic("view")
        assert int(headers["source_offset"]) >= 0 and headers["error_message"]
        assert m.value() in bad, "the original bytes travel with the dead letter"
        assert bad[m.value()] == headers["error_class"]
        seen[headers["error_class"]] += 1
    assert sum(seen.values()) == len(bad)

    reader = FigureReader(redis_client, Keys(settings.topic_prefix), settings.partitions, settings.bucket_s)
    wait_for(lambda: reader.totals().get("t|views") == 1, 30, "the good event after the bad ones")
    assert reader.totals()["c|c_pmpm_launch|kol|views"] == 1
