"""The live page (/live) in a real browser, on first load, after a few simulated hours.

One worker applies three simulated hours of seeded traffic; headless Chromium then loads `/live`
once (no history in the browser: what it draws comes from `/api/history`, the store's per-minute
event-time buckets), saves a screenshot into the test's tmp dir and dumps the DOM after the
scripts ran. The DOM must show a time axis with tick labels, at least two history points per
campaign series, counts without a `.0`, and a ROAS chart an outlier campaign cannot flatten (a log
axis on which the median campaign sits well above the floor). Missing Chromium fails the test with
the command that installs it.
"""

from __future__ import annotations

import json
import re
import statistics
import time
import urllib.request
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest
import redis

from seedloop.settings import Settings
from seedloop.topics import caught_up, ensure_topics
from stream_processors.store.redis_lua import FigureReader, Keys
from tests.browser import run_chromium
from tests.conftest import WorkerProcess, wait_for
from tests.integration.test_pipeline import produce_simulated

pytestmark = pytest.mark.integration

SIM_HOURS = 3
COUNT_WITH_ZERO_DECIMAL = re.compile(r"\d+\.0\b")
HHMM = re.compile(r"^\d\d:\d\d$")


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node] = []
        self.text = ""

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def walk(self) -> list[Node]:
        out = [self]
        for child in self.children:
            out.extend(child.walk())
        return out

    def find(self, tag: str | None = None, cls: str | None = None) -> list[Node]:
        return [
            n for n in self.walk() if (tag is None or n.tag == tag) and (cls is None or cls in n.classes())
        ]

    def by_id(self, ident: str) -> Node:
        found = [n for n in self.walk() if n.attrs.get("id") == ident]
        assert len(found) == 1, f"#{ident} not in the DOM"
        return found[0]


VOID = {"meta", "link", "br", "hr", "img", "input", "col", "area", "base", "source", "wbr"}


class Tree(HTMLParser):
    """The dumped DOM as a tree (Chromium serialises it well-formed; SVG children close)."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Node("#root", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.cur.children.append(Node(tag, {k: v or "" for k, v in attrs}, self.cur))

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.cur
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.cur = node.parent

    def handle_data(self, data: str) -> None:
        self.cur.text += data


def parse(dom: str) -> Node:
    tree = Tree()
    tree.feed(dom)
    return tree.root


def path_ys(d: str) -> list[float]:
    return [float(y) for y in re.findall(r"[ML]\s*-?[\d.]+,(-?[\d.]+)", d)]


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
def test_live_page_draws_server_history_on_first_load(
    settings: Settings, start_worker: Callable[..., WorkerProcess], redis_client: redis.Redis, tmp_path: Path
) -> None:
    started = time.monotonic()
    ensure_topics(settings)
    worker = start_worker()
    produce_simulated(settings, sim_seconds=SIM_HOURS * 3600, holdout_share=0.2)
    reader = FigureReader(redis_client, Keys(settings.topic_prefix), settings.partitions, settings.bucket_s)
    wait_for(lambda: caught_up(settings, reader), 60, "the worker to apply every message")
    base = f"http://127.0.0.1:{worker.port}"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/api/history?minutes=60&model=last", timeout=5) as resp:
                return bool(json.loads(resp.read())["t"])
        except OSError:
            return False

    wait_for(answers, 30, "the worker's /api/history")
    with urllib.request.urlopen(f"{base}/api/history?minutes=60&model=last", timeout=10) as resp:
        history = json.loads(resp.read())
    assert len(history["t"]) == 60, history["t"]
    assert history["campaigns"], history

    url = f"{base}/live?window=15m&model=last"
    shot = tmp_path / "live.png"
    run_chromium(url, tmp_path / "profile-shot", f"--screenshot={shot}")
    assert shot.exists() and shot.stat().st_size > 10_000
    print(f"live page screenshot: {shot}")
    dom = run_chromium(url, tmp_path / "profile-dom", "--dump-dom").stdout
    (tmp_path / "live.html").write_text(dom)
    root = parse(dom)
    assert root.by_id("status").attrs.get("data-state") == "ok", dom[-3000:]

    for chart in ("chart-roas", "chart-cpa"):
        svg = root.by_id(chart)
        # A time axis: event-time tick labels (HH:MM) under the plot.
        ticks = [t.text for t in svg.find("text", "tick-x")]
        assert len(ticks) >= 3 and all(HHMM.match(t) for t in ticks), (chart, ticks)
        # Server-side history on first load: the browser polled once, yet every series has points.
        series = svg.find("path", "series")
        assert len(series) >= 2, (chart, len(series))
        for s in series:
            assert int(s.attrs["data-points"]) >= 2 and len(path_ys(s.attrs["d"])) >= 2, (chart, s.attrs)
    roas = root.by_id("chart-roas")
    assert len(roas.find("path", "series")) == len(history["campaigns"])

    # Counts are integers (or a fractional model's credit), never `12.0`.
    counts = [td.text for td in root.find("td", "count")]
    assert counts, dom[-3000:]
    svg_text = [t.text for t in root.find("text")]
    bad = [c for c in counts + svg_text if COUNT_WITH_ZERO_DECIMAL.search(c)]
    assert not bad, bad

    # An outlier does not flatten the others: the ROAS axis is logarithmic, and the median
    # campaign's median ROAS above zero sits well above the log floor (on a linear axis from 0 to
    # an outlier of ~150, a ROAS of 2 would sit at ~1% of the height). Zeros (a window without
    # GMV: sparse checkouts make many) have their own row below the floor, not counted here.
    assert roas.attrs["data-scale"] == "log"
    top, bottom = float(roas.attrs["data-plot-top"]), float(roas.attrs["data-plot-bottom"])
    assert float(roas.attrs["data-zero-y"]) > bottom
    positive = [[y for y in path_ys(s.attrs["d"]) if y <= bottom + 0.5] for s in roas.find("path", "series")]
    medians = sorted(statistics.median(ys) for ys in positive if ys)
    assert len(medians) >= 3, positive
    median_y = medians[len(medians) // 2]
    height_frac = (bottom - median_y) / (bottom - top)
    assert height_frac >= 0.15, (height_frac, medians, top, bottom)
    # The bars' campaign labels have the room they need (a margin sized from the longest name).
    labels = root.by_id("chart-bars").find("text", "label")
    assert labels and all(float(t.attrs["x"]) >= 6.6 * len(t.text) for t in labels), [
        (t.text, t.attrs["x"]) for t in labels
    ]
    # The conversion-lift table: a row per campaign of /api/lift, estimates with their intervals.
    with urllib.request.urlopen(f"{base}/api/lift", timeout=10) as resp:
        lift = {row["campaign_id"]: row for row in json.loads(resp.read())["campaigns"]}
    lift_rows = root.by_id("lift").find("tr", "lift")
    assert {tr.attrs["data-campaign"] for tr in lift_rows} == set(lift) != set(), dom[-3000:]
    for tr in lift_rows:
        cells = {td.attrs["data-field"]: td.text for td in tr.find("td")}
        served = lift[tr.attrs["data-campaign"]]
        assert cells["held_out_users"] == f"{served['held_out']['users']:,}"
        if served["incremental_gmv_ci"] is not None:
            assert " to " in cells["incremental_gmv_ci"] and cells["incremental_gmv"] != "-", cells
    assert worker.proc.poll() is None, worker.log_text()[-3000:]
    print(
        f"live page: {len(medians)} ROAS series, y range {roas.attrs['data-y-min']}-{roas.attrs['data-y-max']},"
        f" median campaign at {height_frac:.0%} of the height; {time.monotonic() - started:.1f}s"
    )


def test_history_series_aligns_every_campaign_with_the_buckets() -> None:
    """A campaign absent from a bucket gets zero counts there and no ratio (not a shorter list)."""
    from stream_processors.web import history_series

    micro = 1_000_000
    buckets = [0, 60, 120]
    windows = [
        {"c|c_a|kol|spend": 200, "c|c_a|kol|last|checkouts": micro, "c|c_a|kol|last|gmv": 1000},
        {},
        {"c|c_a|kol|spend": 100, "c|c_b|feed|spend": 50},
    ]
    out = history_series(buckets, windows, "last")
    assert list(out) == ["c_a", "c_b"]
    assert out["c_a"]["spend"] == [2.0, 0, 1.0] and out["c_a"]["checkouts"] == [1.0, 0, 0.0]
    assert out["c_a"]["roas"] == [5.0, None, 0.0] and out["c_a"]["cpa"] == [2.0, None, None]
    assert out["c_b"]["spend"] == [0, 0, 0.5] and out["c_b"]["roas"] == [None, None, 0.0]
