"""The pipeline on a Redis Cluster of three masters: the worker's atomic batches, `seedloop report`,
the optimizer and the worker's HTTP figures all go through the cluster client, and the figures
equal the recount exactly. This proves the hash-tag design rather than stating it: every key of a
partition lands in the slot of its tag `{pN}`, so one batch is one Lua call on one node, and the
partitions spread over the masters."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis.cluster import RedisCluster as SyncCluster

from seedloop.embedded import ManagedProcess, broker_process
from seedloop.settings import Settings
from seedloop.topics import ensure_topics
from stream_processors.redis_connect import is_cluster, sync_client
from stream_processors.store.redis_lua import FigureReader, Keys
from tests.conftest import REPO, run_cli, worker_starter
from tests.faults.test_worker_crashes import BackgroundProducer, assert_redis_equals_recount
from tests.services import RedisCluster

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[ManagedProcess]:
    proc = broker_process(log_path=tmp_path / "broker.log")
    proc.start()
    yield proc
    proc.stop()


def test_worker_report_optimizer_and_http_on_a_three_master_cluster(
    redis_cluster: Callable[..., RedisCluster], broker: ManagedProcess, unique_prefix: str, tmp_path: Path
) -> None:
    cluster = redis_cluster(3)
    assert is_cluster(cluster.url)
    settings = Settings(
        kafka_bootstrap_servers=f"127.0.0.1:{broker.port}",
        redis_url=cluster.url,
        topic_prefix=unique_prefix,
        partitions=6,
        seeds_dir=REPO / "seeds",
        rebalance_timeout_s=3.0,
        retention_s=3600.0,
    )
    ensure_topics(settings)
    client = sync_client(settings.redis_url_value)
    assert isinstance(client, SyncCluster)
    with worker_starter(settings, tmp_path) as start_worker:
        worker = start_worker("worker-1")
        producer = BackgroundProducer(settings, sim_seconds=3 * 3600, rate=4000).start()
        producer.join()
        assert_redis_equals_recount(settings, client, producer.events)

        # Each partition's keys sit in one slot, on one master; the six partitions use all three.
        keys = Keys(settings.topic_prefix)
        owners = {p: client.keyslot(keys.meta(p)) for p in range(settings.partitions)}
        for p in range(settings.partitions):
            assert client.keyslot(keys.totals(p)) == owners[p] == client.keyslot(keys.user(p, "u1"))
        nodes = {client.get_node_from_key(keys.meta(p)).name for p in range(settings.partitions)}
        assert len(nodes) == 3, nodes

        # The worker's HTTP figures (its async cluster client) equal what the report reads.
        def api() -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/api/campaigns", timeout=10) as r:
                return json.load(r)

        reported = run_cli(settings, "report", "--json", timeout=120)
        assert reported.returncode == 0, reported.stderr[-2000:]
        report = json.loads(reported.stdout)
        by_campaign = {c["campaign_id"]: c["models"]["last"] for c in api()["campaigns"]}
        compared = 0
        for row in report["campaigns"]:
            if row["views"]:
                assert by_campaign[row["campaign_id"]]["spend"] == row["spend"], row["campaign_id"]
                assert by_campaign[row["campaign_id"]]["checkouts"] == row["checkouts"], row["campaign_id"]
                compared += 1
        assert compared >= 5
        reader = FigureReader(client, keys, settings.partitions, settings.bucket_s)
        assert sum(r["views"] for r in report["campaigns"]) == reader.totals()["t|views"]

        # One optimizer round reads the cluster's windows and publishes its decisions.
        optimize = run_cli(settings, "optimize", "--once", timeout=120)
        assert optimize.returncode == 0, optimize.stdout[-2000:] + optimize.stderr[-2000:]
        assert int(client.hget(keys.optimizer(), "round") or 0) >= 1
        assert worker.proc.poll() is None, worker.log_text()[-2000:]
    client.close()
