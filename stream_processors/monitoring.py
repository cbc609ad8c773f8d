"""Live monitoring of a worker: Prometheus gauges of rolling windows, and the HTTP routes.

Campaign gauges cover only the partitions this worker owns, over windows that end at the global
event-time watermark (all partitions), so every worker's windows line up and `sum by (campaign)`
over workers is the true figure (see metrics.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import faust

from stream_processors.figures import campaign_figures
from stream_processors.metrics import WINDOWS_MINUTES
from stream_processors.web import register_routes

if TYPE_CHECKING:
    from stream_processors.worker import AttributionRuntime


async def refresh_campaign_gauges(runtime: AttributionRuntime) -> None:
    if not runtime.owned:
        return
    now = await runtime.reader.watermark()
    if now is None:
        return
    models = runtime.cfg.rules.engine.models
    m = runtime.metrics
    for minutes in WINDOWS_MINUTES:
        fields = await runtime.reader.window(now - minutes * 60 + 1, now + 1, runtime.owned)
        window = f"{minutes}m"
        for campaign, figs in campaign_figures(fields, models).items():
            for channel, per_model in figs.by_channel.items():
                base = per_model[models[0]]
                m.campaign_views.labels(campaign, channel, window).set(base.views)
                m.campaign_spend.labels(campaign, channel, window).set(base.spend)
                for model, eff in per_model.items():
                    m.campaign_gmv.labels(campaign, channel, window, model).set(eff.gmv)
                    for kind, value in (
                        ("follow", eff.follows),
                        ("add_to_cart", eff.add_to_carts),
                        ("checkout", eff.checkouts),
                    ):
                        m.campaign_conversions.labels(campaign, channel, window, model, kind).set(value)


def install_monitoring(app: faust.App, runtime: AttributionRuntime) -> None:
    @app.timer(runtime.cfg.metrics_refresh_s)
    async def refresh_gauges() -> None:
        await refresh_campaign_gauges(runtime)

    register_routes(app, runtime)
