"""HTTP on the worker's Faust web server (127.0.0.1:$SEEDLOOP_WEB_PORT by default).

/metrics                   Prometheus exposition of this worker's registry
/live                      the live page (static/live.html: plain JS + SVG, no build step, no CDN)
/api/campaigns             campaign figures over all partitions, all-time, per model; with
                           `?window=15m&model=last` also each campaign's figures over that window
                           (spend, GMV, views, reach, checkouts, ROAS, CPA): what /live polls
/api/campaigns/{id}        one campaign: rolling windows of 1/5/15/60 minutes, per channel and model,
                           its AIPL funnel per window (`?model=`, default the first model) and its
                           all-time Loyalty (buyers, repeat buyers, followers, retained followers)
/api/creators              creators (KOL/KOS): spend, views, attributed checkouts and GMV over a
                           window (`?window=60m&model=last`), all-time followers
/api/history               per-minute series per campaign over event time (`?minutes=60&model=last`,
                           1-360 minutes ending at the watermark): spend, GMV, checkouts, ROAS, CPA
                           of each event-time bucket; what /live draws on first load
/api/lift                  conversion lift per campaign from its holdout group: exposed and held-out
                           users, checkouts and GMV per user, incremental checkouts, incremental GMV
                           and iROAS with intervals (`?window=all&confidence=0.95`; a window selects
                           the users first exposed in it: cohorts, with their checkouts since)

Every API figure reads ALL partitions from the store (its read-only protocol,
`store.base.AsyncFigureSource`), whichever worker answers: any worker's API gives
the same answer, and it equals `sum by (...)` of the workers' Prometheus series.

Nothing else answers: Faust's web server also mounts its own pages (an index at `/`, `/router/`
with the partition assignment, `/table/` with table contents, and more with its debug settings);
a middleware answers 404 for every route not registered here, whatever a Faust version adds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import faust
from aiohttp import web as aiohttp_web
from aiohttp.web_urldispatcher import AbstractResource
from faust.web import Request, Response, View
from faust.web.drivers.aiohttp import Web as AiohttpWeb
from prometheus_client import generate_latest

from stream_processors.figures import (
    Efficiency,
    aipl_funnel,
    campaign_figures,
    campaign_lift,
    campaign_loyalty,
    creator_figures,
    creator_followers,
    loyalty,
    loyalty_rates,
    totals,
)
from stream_processors.metrics import WINDOWS_MINUTES, PipelineMetrics
from stream_processors.store.base import AsyncFigureSource, window_bounds, window_buckets

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WINDOWS = {f"{m}m": m for m in WINDOWS_MINUTES}
# /api/history's longest span: six hours of per-minute buckets is 360 reads of one bucket each,
# still a few milliseconds of Redis on the worker's event loop.
HISTORY_MAX_MINUTES = 360
HISTORY_FIELDS = ("spend", "gmv", "checkouts", "roas", "cpa")
# /api/lift's windows of first exposures: the figure windows, longer ones up to the history's
# span (a window reads every bucket of every partition), and all-time (the totals, one read).
LIFT_WINDOWS = {**WINDOWS, "3h": 180, "6h": HISTORY_MAX_MINUTES, "all": 0}


@dataclass(frozen=True, slots=True)
class FigureView:
    """What the figure readers (HTTP, monitoring) need to know beside the store."""

    models: tuple[str, ...]
    campaign_channels: Mapping[str, frozenset[str]]
    bucket_s: int
    partitions: int
    # Campaigns and creators exported by name (top N by all-time spend); the rest are `other`.
    top_n: int = 50


def history_series(
    buckets: Sequence[int], windows: Sequence[Mapping[str, int]], model: str
) -> dict[str, dict[str, list[float | int | None]]]:
    """campaign -> field -> one value per bucket (HISTORY_FIELDS; None where a ratio has no
    denominator), from each bucket's figures. A campaign with no figures in a bucket gets zeros
    there (and no ratio), so every series has one point per bucket and aligns with `buckets`."""
    out: dict[str, dict[str, list[float | int | None]]] = {}
    for i, fields in enumerate(windows[: len(buckets)]):
        for cid, figs in campaign_figures(fields, (model,)).items():
            row = figs.total(model).as_dict()
            series = out.setdefault(cid, {f: [None] * len(buckets) for f in HISTORY_FIELDS})
            for f in HISTORY_FIELDS:
                series[f][i] = row[f]
    for series in out.values():
        for f in ("spend", "gmv", "checkouts"):
            series[f] = [0 if v is None else v for v in series[f]]
    return dict(sorted(out.items()))


def live_page() -> str:
    return resources.files("stream_processors").joinpath("static", "live.html").read_text(encoding="utf-8")


def aiohttp_app(app: faust.App) -> aiohttp_web.Application:
    web = app.web
    if not isinstance(web, AiohttpWeb):
        # Another driver would serve Faust's own pages unguarded: refuse to start instead.
        raise RuntimeError(f"the worker's HTTP needs Faust's aiohttp web driver, not {type(web).__name__}")
    return web.web_app


async def is_ours(request: aiohttp_web.Request, ours: Collection[AbstractResource]) -> bool:
    resource = request.match_info.route.resource
    if resource is not None:
        return resource in ours
    # No route for this path and method: one of ours asked with a wrong method stays a 405.
    for candidate in ours:
        _, allowed_methods = await candidate.resolve(request)
        if allowed_methods:
            return True
    return False


def serve_only(web_app: aiohttp_web.Application, ours: Collection[AbstractResource]) -> None:
    """Answer 404 (JSON) for every route but `ours`."""

    @aiohttp_web.middleware
    async def only_ours(
        request: aiohttp_web.Request,
        handler: Callable[[aiohttp_web.Request], Awaitable[aiohttp_web.StreamResponse]],
    ) -> aiohttp_web.StreamResponse:
        if not await is_ours(request, ours):
            return aiohttp_web.json_response({"error": "not found"}, status=404)
        return await handler(request)

    web_app.middlewares.append(only_ours)


def register_routes(
    app: faust.App, reader: AsyncFigureSource, metrics: PipelineMetrics, view: FigureView
) -> None:
    web_app = aiohttp_app(app)
    before = set(web_app.router.resources())
    register_pages(app, reader, metrics, view)
    serve_only(web_app, [r for r in web_app.router.resources() if r not in before])


def pick(request: Request, name: str, allowed: Any, default: str) -> str:
    """The query parameter `name` (`default` when absent), which must be one of `allowed`."""
    value = request.query.get(name, default)  # type: ignore[attr-defined]
    if value not in allowed:
        raise View.ValidationError(f"{name} must be one of {sorted(allowed)}")
    return str(value)


@dataclass(frozen=True, slots=True)
class FigureAPI:
    """The bodies of the /api routes: every partition's figures read from the store."""

    reader: AsyncFigureSource
    view: FigureView

    async def reach_of(self, now: float, minutes: int, campaigns: dict[str, Any]) -> Any:
        start, end = window_bounds(now, minutes)
        buckets = window_buckets(start, end, self.view.bucket_s)
        return await self.reader.reach(range(self.view.partitions), buckets, campaigns)

    async def campaigns(self, request: Request) -> dict[str, Any]:
        models = self.view.models
        fields = await self.reader.totals()
        now = await self.reader.watermark()
        loyal = campaign_loyalty(fields)
        body: dict[str, Any] = {
            "watermark": now,
            "totals": totals(fields),
            "loyalty": loyalty(fields),
            "campaigns": [
                {
                    "campaign_id": cid,
                    "models": {m: f.total(m).as_dict() for m in models},
                    "loyalty": loyalty_rates(loyal.get(cid, {})),
                }
                for cid, f in campaign_figures(fields, models).items()
            ],
        }
        if "window" in request.query:  # type: ignore[attr-defined]
            window = pick(request, "window", WINDOWS, "15m")
            model = pick(request, "model", models, models[0])
            body["window"], body["model"] = window, model
            if now is not None:
                await self._add_window(body["campaigns"], now, WINDOWS[window], model)
        return body

    async def _add_window(self, rows: list[dict[str, Any]], now: float, minutes: int, model: str) -> None:
        """Each campaign row's figures over the last `minutes` of event time, under `model`."""
        start, end = window_bounds(now, minutes)
        figs = campaign_figures(await self.reader.window(start, end), self.view.models)
        reach = await self.reach_of(now, minutes, dict(self.view.campaign_channels))
        for row in rows:
            cid = row["campaign_id"]
            eff = figs[cid].total(model) if cid in figs else None
            row["window"] = {
                **(eff.as_dict() if eff else {}),
                "reach": reach.campaign.get(cid, 0),
            }

    async def campaign(self, request: Request, campaign_id: str) -> dict[str, Any]:
        catalogue = self.view.campaign_channels
        if campaign_id not in catalogue:
            raise View.NotFound(f"unknown campaign {campaign_id!r}")
        model = pick(request, "model", self.view.models, self.view.models[0])
        now = await self.reader.watermark()
        windows: dict[str, Any] = {}
        funnel: dict[str, Any] = {}
        reach: dict[str, Any] = {}
        if now is not None:
            for minutes in WINDOWS_MINUTES:
                key = f"{minutes}m"
                windows[key], reach[key], funnel[key] = await self._campaign_window(
                    campaign_id, now, minutes, model
                )
        all_time = await self.reader.totals()
        return {
            "campaign_id": campaign_id,
            "channels": sorted(catalogue[campaign_id]),
            "watermark": now,
            "model": model,
            "windows": windows,
            "reach": reach,
            "funnel": funnel,
            # The L of AIPL: all-time distinct users (a window would count a user in
            # whichever bucket their second checkout happened to land).
            "loyalty": loyalty_rates(campaign_loyalty(all_time).get(campaign_id, {})),
        }

    async def _campaign_window(
        self, campaign_id: str, now: float, minutes: int, model: str
    ) -> tuple[dict[str, Any], dict[str, Any], Any]:
        """One window of /api/campaigns/{id}: figures per channel and model, reach, AIPL funnel."""
        start, end = window_bounds(now, minutes)
        figs = campaign_figures(await self.reader.window(start, end), self.view.models).get(campaign_id)
        by_channel = (
            {ch: {m: e.as_dict() for m, e in per.items()} for ch, per in figs.by_channel.items()}
            if figs
            else {}
        )
        r = await self.reach_of(now, minutes, {campaign_id: self.view.campaign_channels[campaign_id]})
        reach = {
            "users": r.campaign.get(campaign_id, 0),
            "engaged_users": r.engaged.get(campaign_id, 0),
            "by_channel": {ch: n for (_, ch), n in sorted(r.channel.items())},
        }
        funnel = aipl_funnel(
            figs.total(model) if figs else Efficiency(),
            reach["users"],
            reach["engaged_users"],
        )
        return by_channel, reach, funnel

    async def history(self, request: Request) -> dict[str, Any]:
        raw = request.query.get("minutes", "60")  # type: ignore[attr-defined]
        if not raw.isdigit() or not 1 <= int(raw) <= HISTORY_MAX_MINUTES:
            raise View.ValidationError(f"minutes must be an integer from 1 to {HISTORY_MAX_MINUTES}")
        minutes = int(raw)
        model = pick(request, "model", self.view.models, self.view.models[0])
        bucket_s = self.view.bucket_s
        now = await self.reader.watermark()
        buckets: list[int] = []
        campaigns: dict[str, Any] = {}
        if now is not None:
            # Event time, not wall time: the buckets up to the latest applied event, so a
            # reload (or another worker) draws the same history.
            start, end = window_bounds(now, minutes)
            buckets = window_buckets(start, end, bucket_s)
            # One bucket per read, one after another: a burst of concurrent reads would open
            # as many Redis connections; a bucket read is a sub-millisecond pipeline.
            windows = [await self.reader.window(b, b + bucket_s) for b in buckets]
            campaigns = history_series(buckets, windows, model)
        return {
            "watermark": now,
            "minutes": minutes,
            "model": model,
            "bucket_s": bucket_s,
            "t": buckets,
            "campaigns": campaigns,
        }

    async def creators(self, request: Request) -> dict[str, Any]:
        window = pick(request, "window", WINDOWS, "60m")
        model = pick(request, "model", self.view.models, self.view.models[0])
        now = await self.reader.watermark()
        all_time = await self.reader.totals()
        followers = creator_followers(all_time)
        figs = {}
        if now is not None:
            start, end = window_bounds(now, WINDOWS[window])
            figs = creator_figures(await self.reader.window(start, end), model)
        rows = []
        for creator in sorted(set(figs) | set(followers)):
            eff = figs.get(creator)
            rows.append(
                {
                    "creator_id": creator,
                    "followers": followers.get(creator, 0),
                    **(eff or Efficiency()).as_dict(),
                }
            )
        rows.sort(key=lambda r: (-float(r["spend"] or 0), r["creator_id"]))
        return {"watermark": now, "window": window, "model": model, "creators": rows}

    async def lift(self, request: Request) -> dict[str, Any]:
        window = pick(request, "window", LIFT_WINDOWS, "all")
        raw = request.query.get("confidence", "0.95")  # type: ignore[attr-defined]
        try:
            confidence = float(raw)
        except ValueError:
            confidence = -1.0
        if not 0.5 <= confidence <= 0.999:
            raise View.ValidationError("confidence must be a number from 0.5 to 0.999")
        now = await self.reader.watermark()
        fields: dict[str, int] = {}
        if window == "all":
            fields = await self.reader.totals()
        elif now is not None:
            fields = await self.reader.window(*window_bounds(now, LIFT_WINDOWS[window]))
        rows = campaign_lift(fields, confidence)
        return {
            "watermark": now,
            "window": window,
            "confidence": confidence,
            "campaigns": [{"campaign_id": cid, **row} for cid, row in rows.items()],
        }


def register_pages(
    app: faust.App, reader: AsyncFigureSource, metrics: PipelineMetrics, view: FigureView
) -> None:
    api = FigureAPI(reader, view)
    page = live_page()

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            body = generate_latest(metrics.registry)
            return self.bytes(body, headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})

    @app.page("/live")
    class Live(View):
        async def get(self, request: Request) -> Response:
            return self.html(page, headers={"Cache-Control": "no-store"})

    for path, name, body in (
        ("/api/campaigns", "Campaigns", api.campaigns),
        ("/api/campaigns/{campaign_id}", "Campaign", api.campaign),
        ("/api/history", "History", api.history),
        ("/api/creators", "Creators", api.creators),
        ("/api/lift", "Lift", api.lift),
    ):
        serve_json(app, path, name, body)


def serve_json(app: faust.App, path: str, name: str, body: Callable[..., Awaitable[dict[str, Any]]]) -> None:
    """GET `path` answers `body(request, **the path's parameters)` as JSON."""

    class JsonPage(View):
        async def get(self, request: Request, **params: Any) -> Response:
            return self.json(await body(request, **params))

    app.page(path, name=name)(JsonPage)
