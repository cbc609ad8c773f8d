"""seeds/ -> a typed, validated scenario: campaigns, creators, SPUs, segments, currency rates.

Everything here is what an advertiser or the platform knows. The simulator's hidden truth
(funnel rates) is loaded separately by producers/traffic.py and by nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.events import Channel

PositiveMoney = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Creator(_Frozen):
    creator_id: str
    name: str
    tier: Literal["celebrity", "top", "mid", "micro", "brand"]
    audience_size: Annotated[int, Field(gt=0)]
    category: str


class Spu(_Frozen):
    spu_id: str
    brand: str
    name: str
    price_minor: Annotated[int, Field(gt=0)]
    currency: str


class Segment(_Frozen):
    segment_id: str
    name: str
    share: Annotated[float, Field(gt=0, le=1)]


class Campaign(_Frozen):
    campaign_id: str
    brand: str
    name: str
    currency: str
    daily_budget: PositiveMoney
    target_kind: Literal["cpa", "roas"]
    target: PositiveMoney
    # channel -> starting bid (CPM, campaign currency)
    channels: dict[Channel, PositiveMoney]
    spus: list[str]
    creators: list[str]
    segments: list[str]
    bid_floor: PositiveMoney
    bid_cap: PositiveMoney
    # The advertiser's own attribution lookbacks, seconds (None: the platform default).
    lookback_view_s: Annotated[float, Field(gt=0)] | None = None
    lookback_engaged_s: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _check(self) -> Campaign:
        if not self.channels:
            raise ValueError(f"{self.campaign_id}: at least one channel")
        if (self.lookback_view_s is None) != (self.lookback_engaged_s is None):
            raise ValueError(f"{self.campaign_id}: give both lookbacks or neither")
        if self.lookback_view_s and self.lookback_engaged_s and self.lookback_engaged_s < self.lookback_view_s:
            raise ValueError(f"{self.campaign_id}: the engaged lookback must be at least the view lookback")
        if self.bid_floor >= self.bid_cap:
            raise ValueError(f"{self.campaign_id}: bid_floor must be below bid_cap")
        for channel, bid in self.channels.items():
            if not self.bid_floor <= bid <= self.bid_cap:
                raise ValueError(f"{self.campaign_id}/{channel}: starting bid outside [floor, cap]")
        return self

    @property
    def daily_budget_minor(self) -> int:
        return round(self.daily_budget * 100)


class FxTable(_Frozen):
    base: str
    rates_to_cny: dict[str, PositiveMoney]

    def minor_rate(self, currency: str) -> float | None:
        """Minor units of `currency` -> minor units of the base currency (both have 2 decimals here)."""
        rate = self.rates_to_cny.get(currency)
        base = self.rates_to_cny.get(self.base)
        return None if rate is None or base is None else rate / base


class Scenario(_Frozen):
    campaigns: list[Campaign]
    creators: list[Creator]
    spus: list[Spu]
    segments: list[Segment]
    fx: FxTable

    @model_validator(mode="after")
    def _check_references(self) -> Scenario:
        creators = {c.creator_id for c in self.creators}
        spus = {s.spu_id for s in self.spus}
        segments = {s.segment_id for s in self.segments}
        for c in self.campaigns:
            missing = (set(c.creators) - creators) | (set(c.spus) - spus) | (set(c.segments) - segments)
            if missing:
                raise ValueError(f"campaign {c.campaign_id} references unknown ids: {sorted(missing)}")
            if c.currency != self.fx.base:
                raise ValueError(f"campaign {c.campaign_id}: figures are kept in {self.fx.base}")
        for s in self.spus:
            if s.currency not in self.fx.rates_to_cny:
                raise ValueError(f"SPU {s.spu_id}: no exchange rate for {s.currency}")
        if len({c.campaign_id for c in self.campaigns}) != len(self.campaigns):
            raise ValueError("duplicate campaign ids")
        return self

    def campaign(self, campaign_id: str) -> Campaign:
        for c in self.campaigns:
            if c.campaign_id == campaign_id:
                return c
        raise KeyError(campaign_id)

    @property
    def spu_by_id(self) -> dict[str, Spu]:
        return {s.spu_id: s for s in self.spus}

    def campaign_channels(self) -> dict[str, frozenset[str]]:
        return {c.campaign_id: frozenset(c.channels) for c in self.campaigns}

    def campaign_products(self) -> dict[str, frozenset[str]]:
        return {c.campaign_id: frozenset(c.spus) for c in self.campaigns}

    def rates_to_base(self) -> dict[str, float]:
        return {ccy: r for ccy in self.fx.rates_to_cny if (r := self.fx.minor_rate(ccy)) is not None}


def load_scenario(seeds_dir: Path) -> Scenario:
    def read(name: str) -> object:
        path = seeds_dir / name
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"seed file {path} is missing (set SEEDLOOP_SEEDS_DIR)") from None

    return Scenario.model_validate(
        {
            "campaigns": read("campaigns.json"),
            "creators": read("creators.json"),
            "spus": read("spus.json"),
            "segments": read("segments.json"),
            "fx": read("fx.json"),
        }
    )
