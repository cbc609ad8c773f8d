"""HTTP on the worker's Faust web server (127.0.0.1:$SEEDLOOP_WEB_PORT by default).

/metrics                   Prometheus exposition of this worker's registry
/api/campaigns             campaign figures over all partitions, all-time, per model
/api/campaigns/{id}        one campaign: rolling windows of 1/5/15/60 minutes, per channel and model
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import faust
from faust.web import Request, Response, View
from prometheus_client import generate_latest

from stream_processors.figures import campaign_figures, totals
from stream_processors.metrics import WINDOWS_MINUTES

if TYPE_CHECKING:
    from stream_processors.worker import AttributionRuntime

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def register_routes(app: faust.App, runtime: AttributionRuntime) -> None:
    models = runtime.cfg.rules.engine.models
    reader = runtime.reader

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            body = generate_latest(runtime.metrics.registry)
            return self.bytes(body, headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})

    @app.page("/api/campaigns")
    class Campaigns(View):
        async def get(self, request: Request) -> Response:
            fields = await reader.totals()
            body: dict[str, Any] = {
                "watermark": await reader.watermark(),
                "totals": totals(fields),
                "campaigns": [
                    {"campaign_id": cid, "models": {m: f.total(m).as_dict() for m in models}}
                    for cid, f in campaign_figures(fields, models).items()
                ],
            }
            return self.json(body)

    @app.page("/api/campaigns/{campaign_id}")
    class Campaign(View):
        async def get(self, request: Request, campaign_id: str) -> Response:
            now = await reader.watermark()
            windows: dict[str, Any] = {}
            if now is not None:
                for minutes in WINDOWS_MINUTES:
                    fields = await reader.window(now - minutes * 60 + 1, now + 1)
                    figs = campaign_figures(fields, models).get(campaign_id)
                    windows[f"{minutes}m"] = (
                        {ch: {m: e.as_dict() for m, e in per.items()} for ch, per in figs.by_channel.items()}
                        if figs
                        else {}
                    )
            return self.json({"campaign_id": campaign_id, "watermark": now, "windows": windows})
