"""The traffic model: bids -> exposures -> funnel probabilities. Pure, and the only reader of the
hidden truth (seeds/truth.json).

Shape of the market, per campaign and channel:
- volume: views/hour = inventory * (1 - exp(-bid / bid_scale)) * hour_shape[hour]. A higher bid
  wins more auctions, with diminishing returns.
- quality: the marginal users won by a higher bid convert less: conversion rates scale with
  (bid / bid_scale) ^ -quality_decay. So CPA rises and ROAS falls as the bid rises, and a
  campaign's target is reached at one bid: the thing a controller has to find.
- organic purchases: per campaign, the rate (purchases per audience user per day, averaged over
  the day and shaped by hour_shape) at which users of its segments buy one of its SPUs with no
  ad at all. See Truth.organic_per_user_day for how the rates were chosen.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Probability = Annotated[float, Field(ge=0, le=1)]


class ChannelTruth(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    inventory_per_hour: Annotated[float, Field(gt=0)]
    bid_scale: Annotated[float, Field(gt=0)]
    p_engaged: Probability
    p_follow: Probability
    p_add_to_cart: Probability
    p_checkout: Probability


class Truth(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    quality_decay: Annotated[float, Field(ge=0, le=2)]
    hour_shape: Annotated[list[float], Field(min_length=24, max_length=24)]
    delays_minutes: dict[str, Annotated[float, Field(gt=0)]]
    segment_multipliers: dict[str, Annotated[float, Field(gt=0)]]
    engaged_boost: Annotated[float, Field(ge=1)]
    repeat_buyer_boost: Annotated[float, Field(ge=1)]
    campaigns: dict[str, dict[str, ChannelTruth]]
    # Organic purchases per user of the campaign's audience per day (no ad involved). Chosen so that
    # organic GMV is a realistic share of what last-touch attribution credits the campaign (the
    # static run of seeds 7/11/13): about a quarter to a third for search and brand/search (people
    # who search a product mostly meant to buy it), 10-18% for live, feed and cross-border, 5-7%
    # for creator seeding (it reaches people who did not know the product); truth.json's
    # _comment_organic has the measured shares. Campaigns not listed have none.
    organic_per_user_day: dict[str, Annotated[float, Field(ge=0)]] = {}


def load_truth(seeds_dir: Path) -> Truth:
    return Truth.model_validate(json.loads((seeds_dir / "truth.json").read_text()))


@dataclass(frozen=True, slots=True)
class FunnelRates:
    engaged: float
    follow: float
    add_to_cart: float
    checkout: float


class TrafficModel:
    def __init__(self, truth: Truth) -> None:
        self.truth = truth
        # campaign -> multiplier on its true conversion rates (1.0 normally; a "shock" changes it)
        self._conversion_multiplier: dict[str, float] = {}

    def set_conversion_multiplier(self, campaign_id: str, multiplier: float) -> None:
        self._conversion_multiplier[campaign_id] = multiplier

    def channel(self, campaign_id: str, channel: str) -> ChannelTruth:
        return self.truth.campaigns[campaign_id][channel]

    def hour_factor(self, at: float) -> float:
        return self.truth.hour_shape[int(at // 3600) % 24]

    def day_shape(self, at: float) -> float:
        """The hour's share of the day's activity relative to a flat day (its mean over a day is 1)."""
        shape = self.truth.hour_shape
        return shape[int(at // 3600) % 24] * len(shape) / sum(shape)

    def organic_per_user_day(self, campaign_id: str) -> float:
        return self.truth.organic_per_user_day.get(campaign_id, 0.0)

    def views_per_hour(self, campaign_id: str, channel: str, bid: float, at: float) -> float:
        ct = self.channel(campaign_id, channel)
        return ct.inventory_per_hour * (1.0 - math.exp(-bid / ct.bid_scale)) * self.hour_factor(at)

    def quality(self, campaign_id: str, channel: str, bid: float) -> float:
        ct = self.channel(campaign_id, channel)
        return float((bid / ct.bid_scale) ** -self.truth.quality_decay)

    def funnel(
        self,
        campaign_id: str,
        channel: str,
        bid: float,
        segment: str | None,
        engaged: bool,
        repeat_buyer: bool,
    ) -> FunnelRates:
        ct = self.channel(campaign_id, channel)
        lift = self.quality(campaign_id, channel, bid) * self._conversion_multiplier.get(campaign_id, 1.0)
        if segment is not None:
            lift *= self.truth.segment_multipliers.get(segment, 1.0)
        if engaged:
            lift *= self.truth.engaged_boost
        if repeat_buyer:
            lift *= self.truth.repeat_buyer_boost
        return FunnelRates(
            engaged=ct.p_engaged,
            follow=min(1.0, ct.p_follow * (self.truth.engaged_boost if engaged else 1.0)),
            add_to_cart=min(1.0, ct.p_add_to_cart * lift),
            checkout=ct.p_checkout,
        )

    def expected_checkouts_per_view(
        self, campaign_id: str, channel: str, bid: float, segment_weights: Mapping[str, float] | None = None
    ) -> float:
        """The oracle's view: expected checkouts of one view, averaged over engagement and segments."""
        ct = self.channel(campaign_id, channel)
        weights = segment_weights or {None: 1.0}  # type: ignore[dict-item]
        total = sum(weights.values())
        out = 0.0
        for segment, w in weights.items():
            for engaged, p in ((True, ct.p_engaged), (False, 1 - ct.p_engaged)):
                f = self.funnel(campaign_id, channel, bid, segment, engaged, False)
                out += (w / total) * p * f.add_to_cart * f.checkout
        return out

    def delay_mean_s(self, step: str) -> float:
        return self.truth.delays_minutes[step] * 60.0
