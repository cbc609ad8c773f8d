"""Attribution scored against causal truth: the simulator knows which ad view caused each checkout
(it schedules the checkout when it serves the view) and which checkouts no ad caused (organic
purchases), and records it publicly (GroundTruth.orders), so every attribution model's GMV per
campaign can be set against the GMV the campaign's ads truly caused.

The evaluation's static run attributes its events with all six models, as the live worker would
(per-campaign lookbacks, product scope, Markov weights re-learned each round from the finished
journeys), and takes the true cause of every checkout that happened in the run from the record.
Both sides count the checkouts that happened, at their base-currency value, by the day they
happened; an organic checkout is true GMV of no campaign, so a model that credits it to an ad
(last-touch does, whenever the buyer saw one in the lookback) over-credits by its value. Bias is
(attributed - true) / true over the run; error is the root mean square of the daily differences
over the mean true day (a normalised RMSE)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from producers.ground_truth import OrderCause
from producers.scenario import Scenario
from schemas.events import Checkout, UserAction
from stream_processors.attribution.journey import EngineConfig, Increments, UserState, apply_events
from stream_processors.attribution.markov import weights_from_path_counts
from stream_processors.attribution.models import MODEL_NAMES, Lookback
from stream_processors.figures import MINOR
from stream_processors.optimizer.evaluation.config import DAY_S
from stream_processors.processor import Catalogue, _in_base_currency

# the run whose events are attributed with every model: its bids never move, so what it measures
# is the attribution of the campaign mix, not of one controller's choices
SCORED_ON = "static"


def campaign_lookbacks(scenario: Scenario) -> dict[str, Lookback]:
    """The advertisers' own lookbacks, where a campaign sets them (as seedloop.runtime does)."""
    return {
        c.campaign_id: Lookback(view_s=c.lookback_view_s, engaged_s=c.lookback_engaged_s)
        for c in scenario.campaigns
        if c.lookback_view_s is not None and c.lookback_engaged_s is not None
    }


class CausalLedger:
    """Every model's attributed GMV and the true caused GMV, per campaign and day."""

    def __init__(self, scenario: Scenario, products: Mapping[str, frozenset[str]]) -> None:
        self.catalogue = Catalogue(scenario.campaign_channels(), scenario.fx.base, scenario.rates_to_base())
        self.engine = EngineConfig(
            lookback=Lookback(view_s=DAY_S, engaged_s=7 * DAY_S),
            half_life_s=6 * 3600.0,
            lateness_s=3600.0,
            bucket_s=int(DAY_S),
            campaign_lookbacks=campaign_lookbacks(scenario),
            campaign_products=products,
            models=MODEL_NAMES,
        )
        self.channels = {c.campaign_id: [str(ch) for ch in c.channels] for c in scenario.campaigns}
        self.users: dict[str, UserState] = defaultdict(UserState)
        self.increments = Increments()
        self.paths: Counter[str] = Counter()
        self.weights: tuple[dict[str, float], dict[str, float]] | None = None
        # (day start, campaign, channel) -> the GMV its views truly caused, in minor units
        self.true_minor: dict[tuple[int, str, str], int] = defaultdict(int)

    def apply(self, events: Sequence[UserAction], now: float, orders: Mapping[str, OrderCause]) -> None:
        """One round's events: attributed per user, and each caused checkout's value to its true
        cause (`orders`: the simulator's GroundTruth.orders; organic checkouts have no cause)."""
        by_user: dict[str, list[UserAction]] = defaultdict(list)
        for raw in events:
            e = _in_base_currency(raw, self.catalogue)
            by_user[e.user_id].append(e)
            if not isinstance(e, Checkout):
                continue
            cause = orders.get(e.event_id)
            if cause is not None and cause.campaign_id is not None and cause.channel is not None:
                day = int(e.event_ts // DAY_S) * int(DAY_S)
                self.true_minor[(day, cause.campaign_id, cause.channel)] += e.value_minor
        counts, values = self.weights if self.weights is not None else (None, None)
        for user_id, user_events in by_user.items():
            result = apply_events(
                self.users[user_id],
                user_events,
                self.engine,
                self.increments,
                horizon=now - 2 * 3600.0,
                channel_weights=counts,
                value_weights=values or None,
            )
            for journey in result.journeys:
                if journey.channels:
                    path = ">".join(journey.channels)
                    self.paths[f"{path}|{int(journey.converted)}"] += 1
                    if journey.converted and journey.value_minor:
                        self.paths[f"{path}|v"] += journey.value_minor
        # as the worker re-learns them from the journeys every worker recorded (worker.refresh_markov)
        self.weights = weights_from_path_counts(self.paths) or self.weights

    def daily(
        self,
    ) -> tuple[list[int], dict[tuple[str, str], list[float]], dict[tuple[str, str], dict[str, list[float]]]]:
        """The days, and per campaign and channel the true GMV per day and each model's likewise."""
        attributed: dict[tuple[int, str, str, str], int] = defaultdict(int)
        for (bucket, name), amount in self.increments.by_key.items():
            parts = name.split("|")
            if bucket is not None and parts[0] == "c" and len(parts) == 5 and parts[4] == "gmv":
                attributed[(bucket, parts[1], parts[2], parts[3])] += amount
        days = sorted({k[0] for k in self.true_minor} | {k[0] for k in attributed})
        pairs = [(cid, ch) for cid, chans in self.channels.items() for ch in chans]
        true = {p: [self.true_minor.get((d, *p), 0) / MINOR for d in days] for p in pairs}
        by_model: dict[tuple[str, str], dict[str, list[float]]] = {
            p: {m: [attributed.get((d, *p, m), 0) / MINOR for d in days] for m in MODEL_NAMES} for p in pairs
        }
        return days, true, by_model

    def report(self) -> dict[str, Any]:
        days, true, by_model = self.daily()
        campaigns = {
            cid: {
                "by_channel": {
                    ch: {
                        "true_gmv_by_day": [round(v, 2) for v in true[(cid, ch)]],
                        "attributed_gmv_by_day": {
                            m: [round(v, 2) for v in per] for m, per in by_model[(cid, ch)].items()
                        },
                    }
                    for ch in chans
                }
            }
            for cid, chans in self.channels.items()
        }
        return scored({"scored_on": SCORED_ON, "days": len(days), "campaigns": campaigns})


def _summed(series: Sequence[Sequence[float]]) -> list[float]:
    return [round(math.fsum(day), 2) for day in zip(*series, strict=True)]


def _with_scores(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "true_gmv": round(math.fsum(row["true_gmv_by_day"]), 2),
        "models": score_models(row["true_gmv_by_day"], row["attributed_gmv_by_day"]),
    }


def scored(report: Mapping[str, Any]) -> dict[str, Any]:
    """The report with every campaign's and channel's true GMV and each model's score
    (score_models) added; a campaign's days are the sums of its channels'."""
    campaigns = {}
    for cid, row in report["campaigns"].items():
        chans = row["by_channel"]
        models = next(iter(chans.values()))["attributed_gmv_by_day"]
        total = {
            "true_gmv_by_day": _summed([c["true_gmv_by_day"] for c in chans.values()]),
            "attributed_gmv_by_day": {
                m: _summed([c["attributed_gmv_by_day"][m] for c in chans.values()]) for m in models
            },
        }
        by_channel = {ch: _with_scores(c) for ch, c in chans.items()}
        campaigns[cid] = {**_with_scores(total), "by_channel": by_channel}
    return {**report, "campaigns": campaigns}


def pooled(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Several seeds' reports as one: every seed's days one after another, scored again."""
    if not per_seed:
        return None

    def days_of(cid: str, ch: str) -> dict[str, Any]:
        rows = [r["campaigns"][cid]["by_channel"][ch] for r in per_seed]
        return {
            "true_gmv_by_day": [v for row in rows for v in row["true_gmv_by_day"]],
            "attributed_gmv_by_day": {
                m: [v for row in rows for v in row["attributed_gmv_by_day"][m]]
                for m in rows[0]["attributed_gmv_by_day"]
            },
        }

    first = per_seed[0]
    campaigns = {
        cid: {"by_channel": {ch: days_of(cid, ch) for ch in row["by_channel"]}}
        for cid, row in first["campaigns"].items()
    }
    days = sum(r["days"] for r in per_seed)
    return scored(
        {"scored_on": first["scored_on"], "seeds": len(per_seed), "days": days, "campaigns": campaigns}
    )


def score_models(
    true_by_day: Sequence[float], attributed_by_day: Mapping[str, Sequence[float]]
) -> dict[str, Any]:
    """Per model: the attributed GMV, its bias ((attributed - true) / true over all days) and error
    (root mean square of the daily differences over the mean true day); None where nothing was truly
    caused."""
    total = math.fsum(true_by_day)
    n = len(true_by_day)
    out: dict[str, Any] = {}
    for model, days in attributed_by_day.items():
        attributed = math.fsum(days)
        row: dict[str, Any] = {"attributed_gmv": round(attributed, 2), "bias": None, "error": None}
        if total > 0:
            sq = math.fsum((a - t) ** 2 for a, t in zip(days, true_by_day, strict=True))
            row["bias"] = round((attributed - total) / total, 4)
            row["error"] = round(math.sqrt(sq / n) / (total / n), 4)
        out[model] = row
    return out
