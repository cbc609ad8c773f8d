"""Monitoring end to end: two workers, a real Prometheus scraping both, Redis as the truth.

One test (services start once; about 35 s):
- two `seedloop worker` processes split the 4 partitions; a real Prometheus (Debian's
  /usr/bin/prometheus) scrapes both every second;
- after simulated traffic is applied and the figures stop moving (the event-time watermark stops
  with the input), `sum by (campaign)` of spend, views, last-touch checkouts and reach over both
  workers' series equals the figure read from Redis over all partitions for the same window,
  with campaigns outside the top N exported as `other`;
- `promtool check metrics` accepts a live scrape of a worker;
- the JSON API answers with the same figures, the AIPL funnel and creators;
- the live page, rendered by headless Chromium, shows the campaign rows its JavaScript filled in.
Missing Prometheus tools or Chromium fail the test (with the command that installs them).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import yaml

from seedloop import runtime
from seedloop.embedded import free_port, stop_processes
from seedloop.settings import Settings
from seedloop.topics import caught_up, ensure_topics
from stream_processors.figures import (
    OTHER,
    campaign_figures,
    campaign_loyalty,
    campaign_spend,
    label_of,
    top_n,
)
from stream_processors.lift import lift_groups
from stream_processors.monitoring import window_bounds, window_buckets
from stream_processors.store.redis_lua import FigureReader, Keys
from tests.browser import run_chromium
from tests.conftest import WorkerProcess, wait_for
from tests.deploy._support import binary
from tests.integration.test_pipeline import produce_simulated

# The optimizer, HTTP and monitoring are the subject here, not the broker: one tier is enough.
pytestmark = [pytest.mark.integration, pytest.mark.one_tier]

HOST = "127.0.0.1"
TOP_N = 6  # of the 10 seeded campaigns: 4 are exported as `other`


def http_get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return bytes(resp.read())


def get_json(url: str) -> dict:
    return json.loads(http_get(url))


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[list[str]], str]]:
    """Factory: a real Prometheus scraping the given targets every second; returns its base URL."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(targets: list[str]) -> str:
        exe = binary("prometheus", "/usr/bin/prometheus")
        port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "seedloop-worker", "static_configs": [{"targets": targets}]}],
        }
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        log = open(tmp_path / "prometheus.log", "ab")  # noqa: SIM115 - closed with the process
        procs.append(
            subprocess.Popen(
                [
                    exe,
                    f"--config.file={path}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address={HOST}:{port}",
                    "--storage.tsdb.retention.time=1h",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        url = f"http://{HOST}:{port}"

        def ready() -> bool:
            try:
                return http_get(f"{url}/-/ready", 1).startswith(b"Prometheus")
            except OSError:
                return False

        wait_for(ready, 30, "Prometheus to be ready")
        return url

    yield start
    stop_processes(procs, 10)


def promql(base: str, expr: str) -> dict[str, float]:
    """Instant query; `{campaign: value}` (or `{"": value}` without a campaign label)."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    body = get_json(url)
    assert body["status"] == "success", body
    return {r["metric"].get("campaign", ""): float(r["value"][1]) for r in body["data"]["result"]}


def metric_samples(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{")]


def redis_expected(
    settings: Settings, client: redis.Redis, reader: FigureReader, window_min: int
) -> dict[str, dict[str, float]]:
    """The truth, read straight from Redis over ALL partitions, folded into top-N + `other`."""
    scenario = runtime.scenario_of(settings)
    channels = runtime.processing_rules(settings, scenario).catalogue.campaign_channels
    now = reader.watermark()
    assert now is not None
    keep = top_n(campaign_spend(reader.totals()), TOP_N)
    start, end = window_bounds(now, window_min)
    figs = campaign_figures(reader.window(start, end), ("last",))
    out: dict[str, dict[str, float]] = {
        "spend": {},
        "views": {},
        "checkouts": {},
        "reach": {},
        "buyers": {},
        "retained_followers": {},
    }
    for cid, fig in figs.items():
        eff = fig.total("last")
        label = label_of(cid, keep)
        for key, value in (("spend", eff.spend), ("views", eff.views), ("checkouts", eff.checkouts)):
            out[key][label] = out[key].get(label, 0.0) + value
    for cid, segments in campaign_loyalty(reader.totals()).items():
        label = label_of(cid, keep)
        for key in ("buyers", "retained_followers"):
            out[key][label] = out[key].get(label, 0.0) + segments[key]
    keys = Keys(settings.topic_prefix)
    buckets = window_buckets(start, end, settings.bucket_s)
    groups: dict[str, list[str]] = {}
    for cid in channels:
        groups.setdefault(label_of(cid, keep), []).append(cid)
    for label, members in groups.items():
        total = 0
        for p in range(settings.partitions):
            ks = [keys.reach(p, b, c, ch) for c in members for ch in channels[c] for b in buckets]
            total += int(client.pfcount(*ks))
        if total:
            out["reach"][label] = float(total)
    return out


def test_two_workers_prometheus_sums_equal_redis_api_and_live_page(
    settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    redis_client: redis.Redis,
    prometheus: Callable[[list[str]], str],
    tmp_path: Path,
) -> None:
    ensure_topics(settings)
    env = {"SEEDLOOP_METRICS_REFRESH_S": "0.5", "SEEDLOOP_METRICS_TOP_N": str(TOP_N)}
    workers = [start_worker("worker-a", **env), start_worker("worker-b", **env)]
    prom = prometheus([f"{HOST}:{w.port}" for w in workers])

    def owned() -> list[float]:
        out = []
        for w in workers:
            try:
                text = http_get(f"http://{HOST}:{w.port}/metrics", 2).decode()
            except OSError:
                return []
            line = next((x for x in text.splitlines() if x.startswith("seedloop_owned_partitions ")), None)
            out.append(float(line.split()[1]) if line else 0.0)
        return out

    wait_for(lambda: owned() == [2.0, 2.0], 60, "both workers to own two partitions each")

    # With a holdout (ghost views): the lift gauges below need both groups.
    events = produce_simulated(settings, sim_seconds=3 * 3600, holdout_share=0.2)
    assert len(events) > 3_000
    reader = FigureReader(redis_client, Keys(settings.topic_prefix), settings.partitions, settings.bucket_s)
    wait_for(lambda: caught_up(settings, reader), 90, "the workers to apply every message")
    for w in workers:
        assert w.proc.poll() is None, w.log_text()[-3000:]

    expected = redis_expected(settings, redis_client, reader, 60)
    assert OTHER in expected["spend"] and len(expected["spend"]) == TOP_N + 1, expected["spend"]
    assert sum(expected["checkouts"].values()) > 0 and expected["reach"]
    assert sum(expected["buyers"].values()) > 0 and sum(expected["retained_followers"].values()) > 0
    queries = {
        "spend": 'sum by (campaign) (seedloop_campaign_spend{window="60m"})',
        "views": 'sum by (campaign) (seedloop_campaign_views{window="60m"})',
        "checkouts": 'sum by (campaign) (seedloop_campaign_conversions{window="60m",model="last",kind="checkout"})',
        "reach": 'sum by (campaign) (seedloop_campaign_reach{window="60m"})',
        "buyers": 'sum by (campaign) (seedloop_campaign_loyalty_users{segment="buyers"})',
        "retained_followers": 'sum by (campaign) (seedloop_campaign_loyalty_users{segment="retained_followers"})',
    }
    seen: dict[str, dict[str, float]] = {}

    def prometheus_agrees() -> bool:
        for name, expr in queries.items():
            seen[name] = promql(prom, expr)
            got, want = seen[name], expected[name]
            if set(got) != set(want) or any(abs(got[k] - want[k]) > 1e-6 for k in want):
                return False
        return True

    try:
        wait_for(prometheus_agrees, 30, "Prometheus sums to equal the Redis figures", interval=0.5)
    except AssertionError:
        pytest.fail(f"Prometheus {seen}\n!= Redis {expected}", pytrace=False)
    # Lift is the exception to summing: each worker exports the top campaigns' lift computed from
    # ALL partitions, so both export the same values, equal to Redis's (read with max by).
    all_time = reader.totals()
    keep = top_n(campaign_spend(all_time), TOP_N)
    lift_want = {
        f"{c}/{g}": float(f.users)
        for c, groups in lift_groups(all_time).items()
        if c in keep
        for g, f in groups.items()
        if f.users
    }
    lift_seen: dict[str, float] = {}

    def lift_agrees() -> bool:
        lift_seen.clear()
        for expr in ("max", "min"):
            rows = get_json(
                f"{prom}/api/v1/query?"
                + urllib.parse.urlencode(
                    {"query": f"{expr} by (campaign, group) (seedloop_campaign_lift_users)"}
                )
            )["data"]["result"]
            got = {f"{r['metric']['campaign']}/{r['metric']['group']}": float(r["value"][1]) for r in rows}
            lift_seen.update({f"{expr} {k}": v for k, v in got.items()})
            if got != lift_want:
                return False
        return True

    assert len(lift_want) >= TOP_N, lift_want
    try:
        wait_for(lift_agrees, 30, "every worker's lift gauges to equal Redis's lift figures", interval=0.5)
    except AssertionError:
        pytest.fail(f"Prometheus lift {lift_seen}\n!= Redis {lift_want}", pytrace=False)
    estimates = get_json(
        f"{prom}/api/v1/query?"
        + urllib.parse.urlencode({"query": "count by (campaign, bound) (seedloop_campaign_incremental_gmv)"})
    )["data"]["result"]
    assert estimates and all(r["value"][1] == "2" for r in estimates), estimates  # both workers

    # Both workers really contribute: each exports campaign series for its own partitions.
    instances = get_json(
        f"{prom}/api/v1/query?"
        + urllib.parse.urlencode({"query": 'count by (instance) (seedloop_campaign_spend{window="60m"})'})
    )["data"]["result"]
    assert len(instances) == 2, instances

    # A live scrape is valid exposition format.
    scrape = http_get(f"http://{HOST}:{workers[0].port}/metrics")
    check = subprocess.run(
        [binary("promtool", "/usr/bin/promtool"), "check", "metrics"],
        input=scrape,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, (check.stdout + check.stderr).decode()[-3000:]
    text = scrape.decode()
    assert metric_samples(text, "seedloop_creator_spend") and metric_samples(text, "seedloop_buyers") == []
    assert "seedloop_buyers " in text and "seedloop_creator_followers{" in text

    # The JSON API (any worker) reads all partitions: the same figures, unfolded.
    base = f"http://{HOST}:{workers[1].port}"
    api = get_json(f"{base}/api/campaigns?window=60m&model=last")
    by_id = {c["campaign_id"]: c["window"] for c in api["campaigns"] if "window" in c}
    assert by_id
    total_spend = sum(w.get("spend", 0.0) for w in by_id.values())
    assert abs(total_spend - sum(expected["spend"].values())) < 1e-6
    top = max(by_id, key=lambda c: by_id[c].get("spend", 0.0))
    assert abs(by_id[top]["spend"] - expected["spend"][top]) < 1e-6
    assert by_id[top]["reach"] == expected["reach"][top]
    one = get_json(f"{base}/api/campaigns/{top}?model=last")
    funnel = one["funnel"]["60m"]
    assert set(funnel) == {"awareness", "interest", "purchase"}
    assert funnel["awareness"]["reach"] == expected["reach"][top]
    assert abs(funnel["awareness"]["spend"] - expected["spend"][top]) < 1e-6
    assert funnel["awareness"]["views"] == expected["views"][top]
    assert (
        one["loyalty"]["buyers"] > 0 and one["loyalty"]["followers"] >= one["loyalty"]["retained_followers"]
    )
    creators = get_json(f"{base}/api/creators?window=60m&model=last")["creators"]
    assert creators and creators[0]["spend"] > 0 and "followers" in creators[0]

    # The live page, rendered by a real browser: its JavaScript fetched the API and filled the rows.
    with tempfile.TemporaryDirectory(prefix="chromium-", dir=tmp_path) as profile:
        dom = run_chromium(f"{base}/live?window=60m&model=last", Path(profile), "--dump-dom").stdout
    assert 'data-state="ok"' in dom, dom[-3000:]
    assert f'data-campaign="{top}"' in dom, dom[-3000:]
    top_spend = f"{by_id[top]['spend']:,.2f}"
    assert f'<td data-field="spend">{top_spend}</td>' in dom, dom[-3000:]
    assert 'class="bar"' in dom and 'class="series"' in dom
