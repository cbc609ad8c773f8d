"""The campaign report (`seedloop report`, and the end of `seedloop demo`): JSON and Markdown."""

from __future__ import annotations

from typing import Any

from producers.scenario import Scenario
from seedloop.preflight import EXIT_KAFKA, Problem, ServiceError
from seedloop.redact import redact_servers
from seedloop.settings import Settings
from seedloop.topics import end_offsets
from stream_processors.attribution.models import MODEL_NAMES
from stream_processors.figures import (
    campaign_figures,
    campaign_lift,
    campaign_loyalty,
    events_processed,
    loyalty_rates,
    totals,
)
from stream_processors.redis_connect import sync_client
from stream_processors.store.redis_lua import FigureReader, Keys

REPORT_MODEL = "last"


def build_report(
    settings: Settings, scenario: Scenario, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    client = sync_client(settings.redis_url_value, settings.redis_mode)
    try:
        reader = FigureReader(client, Keys(settings.topic_prefix), settings.partitions, settings.bucket_s)
        fields = reader.totals()
        figs = campaign_figures(fields, MODEL_NAMES)
        bids = reader.bids()
        watermark = reader.watermark()
    finally:
        client.close()
    loyal = campaign_loyalty(fields)
    lift = campaign_lift(fields)
    campaigns = []
    for c in scenario.campaigns:
        f = figs.get(c.campaign_id)
        eff = f.total(REPORT_MODEL) if f else None
        row: dict[str, Any] = {
            "campaign_id": c.campaign_id,
            "name": c.name,
            "target_kind": c.target_kind,
            "target": c.target,
        }
        base = eff.as_dict() if eff else {}
        for key in ("spend", "views", "follows", "add_to_carts", "checkouts", "gmv", "cpa", "roas"):
            row[key] = base.get(key, 0 if key not in ("cpa", "roas") else None)
        row["bids"] = {ch: bids.get(f"{c.campaign_id}|{ch}", start) for ch, start in c.channels.items()}
        row["models"] = (
            {
                m: {
                    k: v
                    for k, v in f.total(m).as_dict().items()
                    if k in ("follows", "add_to_carts", "checkouts", "gmv", "cpa", "roas")
                }
                for m in MODEL_NAMES
            }
            if f
            else {}
        )
        row["loyalty"] = loyalty_rates(loyal.get(c.campaign_id, {}))
        # All-time cohorts, the same figures as /api/lift?window=all (None without a holdout).
        row["lift"] = lift.get(c.campaign_id)
        campaigns.append(row)
    t = totals(fields)
    timeout = settings.connect_timeout_s
    try:
        offsets = end_offsets(
            settings, [settings.topic("dead_letters"), settings.topic("bid_adjustments")], timeout=timeout
        )
    except TimeoutError as exc:
        # Preflight reached the broker, so either it stopped answering or the topics are missing
        # (a prefix nothing has run on yet): the operator's line, not a traceback.
        where = redact_servers(settings.bootstrap)
        line = (
            f"Kafka at {where} did not answer for topics {settings.topic('dead_letters')} and "
            f"{settings.topic('bid_adjustments')} within {timeout:g}s (check KAFKA_BOOTSTRAP_SERVERS and "
            "SEEDLOOP_TOPIC_PREFIX: a worker or the optimizer creates the topics)"
        )
        raise ServiceError([Problem(line, EXIT_KAFKA, "kafka", type(exc).__name__, str(exc))]) from exc
    report: dict[str, Any] = {
        "model": REPORT_MODEL,
        "currency": scenario.fx.base,
        "watermark": watermark,
        "events_processed": events_processed(fields),
        "dead_letters": sum(v for (topic, _), v in offsets.items() if topic.endswith(".dead_letters")),
        "bid_adjustments": sum(v for (topic, _), v in offsets.items() if topic.endswith(".bid_adjustments")),
        "totals": t,
        "retention_s": settings.retention_s,
        "campaigns": campaigns,
    }
    if extra:
        report.update(extra)
    return report


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def _interval_text(bounds: list[float] | None, digits: int = 2) -> str:
    return "-" if bounds is None else f"[{_fmt(bounds[0], digits)}, {_fmt(bounds[1], digits)}]"


def _lift_lines(campaigns: list[dict[str, Any]]) -> list[str]:
    """Conversion lift per campaign with a holdout: what its ads caused, not what they were credited."""
    rows = [c for c in campaigns if c.get("lift")]
    if not rows:
        return []
    lines = [
        "",
        "Conversion lift (holdout groups, all-time cohorts; 95% intervals; incremental = caused by the ads):",
        "",
        "| campaign | exposed users | held-out users | GMV per exposed user | GMV per held-out user "
        "| incremental GMV | 95% interval | iROAS | 95% interval |",
        "|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for c in rows:
        lift = c["lift"]
        exposed, held = lift["exposed"], lift["held_out"]
        cells = [
            c["campaign_id"],
            _fmt(exposed["users"]),
            _fmt(held["users"]),
            _fmt(exposed["gmv_per_user"]),
            _fmt(held["gmv_per_user"]),
            _fmt(lift["incremental_gmv"]),
            _interval_text(lift["incremental_gmv_ci"]),
            _fmt(lift["iroas"]),
            _interval_text(lift["iroas_ci"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def report_markdown(report: dict[str, Any]) -> str:
    ccy = report.get("currency", "")
    lines = [
        "# seedloop campaign report",
        "",
        f"Attribution model: **{report['model']}-touch**; money in {ccy}.",
        "",
        f"- events processed: {report['events_processed']:,}",
    ]
    if "events_produced" in report:
        lines.append(f"- events produced (acknowledged by the broker): {report['events_produced']:,}")
    lines += [
        f"- dead letters: {report['dead_letters']:,}",
        f"- bid adjustments published: {report['bid_adjustments']:,}",
        "",
        "| campaign | target | spend | views | follows | carts | checkouts | GMV | CPA | ROAS | bids (CPM) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in report["campaigns"]:
        target = f"{c['target_kind'].upper()} {c['target']:g}"
        bids = ", ".join(f"{ch} {b:.0f}" for ch, b in c["bids"].items())
        cells = [
            c["campaign_id"],
            target,
            _fmt(c["spend"]),
            _fmt(c["views"]),
            _fmt(c["follows"], 1),
            _fmt(c["add_to_carts"], 1),
            _fmt(c["checkouts"], 1),
            _fmt(c["gmv"]),
            _fmt(c["cpa"]),
            _fmt(c["roas"]),
            bids,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Loyalty per campaign (all-time distinct users; retained = active again "
        f"{report.get('retention_s', 86_400) / 3600:g} h after following):",
        "",
        "| campaign | buyers | repeat buyers | followers | retained followers |",
        "|---|---:|---:|---:|---:|",
    ]
    for c in report["campaigns"]:
        lo = c.get("loyalty", {})
        cells = [
            c["campaign_id"],
            *(_fmt(lo.get(k, 0)) for k in ("buyers", "repeat_buyers", "followers", "retained_followers")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _lift_lines(report["campaigns"])
    t = report["totals"]
    lines += [
        "",
        "Totals over every processed event (attributed or not): "
        + ", ".join(f"{k} {_fmt(v)}" for k, v in t.items()),
        "",
    ]
    return "\n".join(lines)
