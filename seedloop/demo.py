"""`seedloop demo`: the whole loop in one process tree.

Embedded broker and Redis (unless configured), N Faust worker processes, the optimizer on a
timer, and the simulator with its ad scheduler in this process, while a live table shows the
campaigns. Everything is stopped on exit, Ctrl-C and errors (a `finally` and the stack's atexit).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from producers.runner import RunLimits, run_simulation
from producers.scenario import Scenario
from seedloop import runtime
from seedloop.embedded import EmbeddedStack, free_port, port_is_free, stop_processes
from seedloop.preflight import preflight
from seedloop.report import build_report, report_markdown
from seedloop.settings import Settings
from seedloop.topics import caught_up, ensure_topics
from stream_processors.attribution.models import MODEL_NAMES
from stream_processors.figures import campaign_figures
from stream_processors.optimizer.http import ControlServer
from stream_processors.optimizer.service import OptimizerService
from stream_processors.redis_connect import sync_client
from stream_processors.store.redis_lua import FigureReader, Keys

log = logging.getLogger("seedloop.demo")


class WorkerPool:
    """Worker subprocesses, restarted if one dies (as a supervisor would in production)."""

    def __init__(self, settings: Settings, count: int, log_dir: Path) -> None:
        self.settings = settings
        self.count = count
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        self.restarts = 0

    def _env(self, worker_id: str, port: int) -> dict[str, str]:
        return self.settings.child_env(SEEDLOOP_WORKER_ID=worker_id, SEEDLOOP_WEB_PORT=str(port))

    def web_port(self, worker_id: str) -> int:
        """The first worker serves on SEEDLOOP_WEB_PORT, the others on free ports; a restarted
        worker keeps its port. 0, or a port that is taken (another demo, a test), means a free
        one: Faust's web server needs a real port, and the demo prints where each worker is."""
        if worker_id in self.ports:
            return self.ports[worker_id]
        host = self.settings.web_host
        wanted = self.settings.web_port if not self.ports else 0
        return wanted if wanted and port_is_free(host, wanted) else free_port(host)

    def start(self, worker_id: str) -> None:
        port = self.ports[worker_id] = self.web_port(worker_id)
        logfile = open(self.log_dir / f"{worker_id}.log", "ab")  # noqa: SIM115 - owned by the child
        self.procs[worker_id] = subprocess.Popen(
            [sys.executable, "-m", "seedloop", "worker"],
            env=self._env(worker_id, port),
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def start_all(self) -> None:
        for i in range(1, self.count + 1):
            self.start(f"worker-{i}")

    def supervise(self) -> None:
        for worker_id, proc in list(self.procs.items()):
            code = proc.poll()
            if code is not None:
                log.warning("worker exited; restarting", extra={"worker": worker_id, "code": code})
                self.restarts += 1
                self.start(worker_id)

    def stop(self) -> None:
        stop_processes(self.procs.values())


# The live view must fit an 80x24 terminal: one short row per campaign (ids in full, never
# truncated), money abbreviated (12.3k), the bids as one narrow column per channel, and a legend
# for the abbreviations. Rich's `Live` redraws it in place only while it fits the screen.
CHANNEL_ABBREV = {"kol": "K", "brand": "B", "feed": "F", "search": "S"}


def sim_time_iso(sim_now: float) -> str:
    """Simulated time as ISO-8601 UTC to the minute (`2026-11-11T14:05Z`): readable, unambiguous."""
    return time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(sim_now))


def _short(value: float) -> str:
    """A money or count figure in at most 6 characters: 950, 9,500, 95.0k, 1.25M."""
    if value < 10_000:
        return f"{value:,.0f}"
    if value < 1_000_000:
        return f"{value / 1000:.1f}k"
    return f"{value / 1_000_000:.2f}M"


def live_view(
    scenario: Scenario,
    figs: dict[str, Any],
    bids: dict[str, float],
    produced: int,
    sim_now: float,
    elapsed: float,
) -> Table:
    """The demo's live table from figures already read (pure: tested for its width)."""
    ccy = scenario.fx.base
    channels = [ch for ch in CHANNEL_ABBREV if any(ch in c.channels for c in scenario.campaigns)]
    table = Table(
        title=f"seedloop demo {elapsed:.0f}s · sim {sim_time_iso(sim_now)} · {produced:,} events",
        caption=f"last-touch, money in {ccy}; chk checkouts; now: the target's figure so far (green: "
        "on target); bids: CPM per channel "
        + ", ".join(f"{CHANNEL_ABBREV[ch]} {ch}" for ch in channels)
        + " (- not bought)",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        # One space between columns and none at the edges: the row fits 80 columns.
        padding=(0, 1, 0, 0),
        pad_edge=False,
        show_edge=False,
    )
    name_width = max(len(c.campaign_id) for c in scenario.campaigns)
    table.add_column("campaign", no_wrap=True, min_width=name_width)
    table.add_column("target", no_wrap=True)
    # Widths of the largest figures (99.9k, 2.50): the table does not jump as figures grow.
    for col, width in (("spend", 6), ("chk", 4), ("GMV", 6), ("now", 5)):
        table.add_column(col, justify="right", no_wrap=True, min_width=width)
    for ch in channels:
        table.add_column(CHANNEL_ABBREV[ch], justify="right", no_wrap=True)
    for c in scenario.campaigns:
        eff = figs[c.campaign_id].total("last") if c.campaign_id in figs else None
        now = (eff.cpa if c.target_kind == "cpa" else eff.roas) if eff else None
        if now is None:
            now_cell = "-"
        else:
            met = now <= c.target if c.target_kind == "cpa" else now >= c.target
            text = f"{now:.0f}" if c.target_kind == "cpa" else f"{now:.2f}"
            now_cell = f"[green]{text}[/]" if met else f"[red]{text}[/]"
        table.add_row(
            c.campaign_id,
            f"{c.target_kind.upper()} {c.target:g}",
            _short(eff.spend) if eff else "0",
            f"{eff.checkouts:,.0f}" if eff else "0",
            _short(eff.gmv) if eff else "0",
            now_cell,
            *(
                f"{bids.get(f'{c.campaign_id}|{ch}', c.channels[ch]):.0f}" if ch in c.channels else "-"
                for ch in channels
            ),
        )
    return table


def live_table(
    scenario: Scenario,
    reader: FigureReader,
    produced: int,
    sim_now: float,
    elapsed: float,
) -> Table:
    figs = campaign_figures(reader.totals(), MODEL_NAMES[:1])
    return live_view(scenario, figs, reader.bids(), produced, sim_now, elapsed)


@contextlib.contextmanager
def logs_above_live(active: bool) -> Iterator[None]:
    """While a rich `Live` display runs, send the log handlers' output through `sys.stderr`, which
    `Live` has replaced by a proxy that prints above the display. The handlers hold the real
    stderr from `configure_logging`; a line written there directly (the optimizer logs every
    round) moves the cursor, and `Live` then redraws below it, leaving stale copies of the table."""
    if not active:
        yield
        return
    swapped: list[tuple[logging.StreamHandler[Any], Any]] = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.__stderr__, sys.__stdout__):
            swapped.append((handler, handler.setStream(sys.stderr)))
    try:
        yield
    finally:
        for handler, stream in swapped:
            handler.setStream(stream)


def print_report(console: Console, markdown: str) -> None:
    """The Markdown report, unwrapped: rich would hard-wrap it at the console's width (80 in a
    pipe), splitting table rows; a pipe or a file must get valid Markdown, one row per line."""
    console.print(markdown, soft_wrap=True, markup=False, highlight=False, emoji=False)


def _optimizer_thread(
    settings: Settings, scenario: Scenario, stop: threading.Event
) -> tuple[OptimizerService, ControlServer, threading.Thread]:
    """The optimizer's control rounds on a thread, and its HTTP endpoint."""
    optimizer = runtime.optimizer_of(settings, scenario)
    token = settings.control_token.get_secret_value() if settings.control_token else None
    try:
        control = ControlServer(optimizer, settings.web_host, settings.optimizer_port, token).start()
    except OSError:  # the default port is taken (another demo): any free port will do
        control = ControlServer(optimizer, settings.web_host, 0, token).start()
    log.info("optimizer endpoint", extra={"url": f"http://{settings.web_host}:{control.port}/api/bids"})
    thread = threading.Thread(
        target=optimizer.run_forever,
        name="optimizer",
        args=(settings.optimizer_interval_s, stop.is_set),
        daemon=True,
    )
    thread.start()
    return optimizer, control, thread


def _simulate(
    settings: Settings,
    scenario: Scenario,
    args: argparse.Namespace,
    pool: WorkerPool,
    reader: FigureReader,
    stop: threading.Event,
) -> tuple[int, Any, Any, bool]:
    """Run the simulation for the demo's duration (a live table on a terminal, progress logs
    otherwise), supervising the workers; (events produced, the simulator, the sink, interrupted)."""
    sim = runtime.simulator_of(settings, scenario)
    sink = runtime.event_sink(settings, scenario)
    reader_kafka = runtime.bid_reader(settings, f"demo-{os.getpid()}")
    console = Console(stderr=False)
    started = time.monotonic()
    state: dict[str, Any] = {"produced": 0}
    live: Live | None = None

    def on_progress(produced: int, sim_now: float) -> None:
        state["produced"] = produced
        pool.supervise()
        if live is not None:
            live.update(live_table(scenario, reader, produced, sim_now, time.monotonic() - started))
        else:
            log.info("progress", extra={"produced": produced, "sim_time": sim_time_iso(sim_now)})

    limits = RunLimits(duration_s=args.duration, rate=settings.rate, speed=settings.sim_speed)
    use_live = not args.no_live and console.is_terminal
    interrupted = False
    with (
        Live(console=console, refresh_per_second=2) if use_live else contextlib.nullcontext() as live_ctx,
        logs_above_live(use_live),
    ):
        live = live_ctx if use_live else None
        try:
            produced = run_simulation(
                sim, sink, reader_kafka, limits, should_stop=stop.is_set, on_progress=on_progress
            )
        except KeyboardInterrupt:
            interrupted = True
            produced = state["produced"]
            sink.flush(30)
    reader_kafka.close()
    sink.close()
    elapsed = time.monotonic() - started
    log.info(
        "simulation done; waiting for the workers to catch up",
        extra={"produced": produced, "events_per_s": round(produced / elapsed, 1)},
    )
    return produced, sim, sink, interrupted


def _wait_caught_up(
    settings: Settings, reader: FigureReader, pool: WorkerPool, timeout_s: float = 90
) -> None:
    deadline = time.monotonic() + timeout_s
    while not caught_up(settings, reader):
        if time.monotonic() > deadline:
            log.error("workers did not catch up within 90 s; the report shows what was applied")
            return
        pool.supervise()
        time.sleep(0.5)


def _write_report(report_dir: Path, report: dict[str, Any]) -> None:
    (report_dir / "report.json").write_text(json.dumps(report, indent=2))
    (report_dir / "report.md").write_text(report_markdown(report))
    console = Console(stderr=False)
    print_report(console, report_markdown(report))
    console.print(f"report written to {report_dir / 'report.json'} and {report_dir / 'report.md'}")


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    report_dir: Path = args.report_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    log_dir = report_dir / "logs"
    log_dir.mkdir(exist_ok=True)
    stack: EmbeddedStack | None = None
    pool: WorkerPool | None = None
    stop = threading.Event()
    try:
        if settings.kafka_bootstrap_servers is None or settings.redis_url is None:
            stack = EmbeddedStack(log_dir=log_dir).start()
            settings = settings.with_services(
                settings.kafka_bootstrap_servers or stack.bootstrap,
                settings.redis_url_value if settings.redis_url else stack.redis_url,
            )
        shown = settings.redacted()
        log.info("services", extra={"kafka": shown["kafka_bootstrap_servers"], "redis": shown["redis_url"]})
        # External services may be down or misconfigured: one clear line, not a worker restart loop.
        preflight(settings)
        scenario = runtime.scenario_of(settings)
        ensure_topics(settings)
        pool = WorkerPool(settings, args.workers, log_dir)
        pool.start_all()
        optimizer, control, opt_thread = _optimizer_thread(settings, scenario, stop)
        client = sync_client(settings.redis_url_value, settings.redis_mode)
        reader = FigureReader(client, Keys(settings.topic_prefix), settings.partitions, settings.bucket_s)
        started = time.monotonic()
        _, sim, sink, interrupted = _simulate(settings, scenario, args, pool, reader, stop)
        elapsed = time.monotonic() - started
        _wait_caught_up(settings, reader, pool)
        stop.set()
        opt_thread.join(timeout=30)
        optimizer.run_round()  # a last round on the final figures
        control.stop()
        extra = {
            "events_produced": sink.totals.events,
            "events_per_s_produced": round(sink.totals.events / elapsed, 1) if elapsed else None,
            "worker_restarts": pool.restarts,
            "simulated_until": sim.now,
            "settings": settings.redacted(),
        }
        _write_report(report_dir, build_report(settings, scenario, extra=extra))
        client.close()
        return 130 if interrupted else 0
    except KeyboardInterrupt:
        log.warning("interrupted")
        return 130
    finally:
        stop.set()
        if pool is not None:
            pool.stop()
        if stack is not None:
            stack.stop()
