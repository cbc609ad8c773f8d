"""Efficiency figures from the stored integer fields. Pure: the report, the optimizer, the API and
the metrics exporter all read campaigns through this one function, so they cannot disagree."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

MICRO = 1_000_000
MINOR = 100


@dataclass(slots=True)
class Efficiency:
    spend: float = 0.0
    views: int = 0
    follows: float = 0.0
    add_to_carts: float = 0.0
    checkouts: float = 0.0
    gmv: float = 0.0

    @property
    def cpa(self) -> float | None:
        return self.spend / self.checkouts if self.checkouts > 0 else None

    @property
    def roas(self) -> float | None:
        return self.gmv / self.spend if self.spend > 0 else None

    @property
    def cost_per_follow(self) -> float | None:
        return self.spend / self.follows if self.follows > 0 else None

    @property
    def cost_per_add_to_cart(self) -> float | None:
        return self.spend / self.add_to_carts if self.add_to_carts > 0 else None

    @property
    def ecpm(self) -> float | None:
        return 1000 * self.spend / self.views if self.views else None

    def as_dict(self) -> dict[str, float | int | None]:
        out: dict[str, float | int | None] = dict(asdict(self))
        out.update(
            cpa=self.cpa,
            roas=self.roas,
            cost_per_follow=self.cost_per_follow,
            cost_per_add_to_cart=self.cost_per_add_to_cart,
            cost_per_checkout=self.cpa,
            ecpm=self.ecpm,
        )
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in out.items()}

    def add(self, other: Efficiency) -> None:
        self.spend += other.spend
        self.views += other.views
        self.follows += other.follows
        self.add_to_carts += other.add_to_carts
        self.checkouts += other.checkouts
        self.gmv += other.gmv


@dataclass(slots=True)
class CampaignFigures:
    campaign_id: str
    # channel -> model -> figures (spend and views are the same under every model)
    by_channel: dict[str, dict[str, Efficiency]] = field(default_factory=dict)

    def total(self, model: str) -> Efficiency:
        out = Efficiency()
        for per_model in self.by_channel.values():
            if model in per_model:
                out.add(per_model[model])
        return out


def campaign_figures(fields: Mapping[str, int], models: tuple[str, ...]) -> dict[str, CampaignFigures]:
    """Turn `c|...` fields into per-campaign, per-channel, per-model figures."""
    raw: dict[tuple[str, str], dict[str, int]] = {}
    for name, amount in fields.items():
        if not name.startswith("c|"):
            continue
        parts = name.split("|")
        campaign, channel, rest = parts[1], parts[2], "|".join(parts[3:])
        raw.setdefault((campaign, channel), {})[rest] = amount
    out: dict[str, CampaignFigures] = {}
    for (campaign, channel), values in sorted(raw.items()):
        fig = out.setdefault(campaign, CampaignFigures(campaign))
        per_model = fig.by_channel.setdefault(channel, {})
        for model in models:
            per_model[model] = Efficiency(
                spend=values.get("spend", 0) / MINOR,
                views=values.get("views", 0),
                follows=values.get(f"{model}|follows", 0) / MICRO,
                add_to_carts=values.get(f"{model}|add_to_carts", 0) / MICRO,
                checkouts=values.get(f"{model}|checkouts", 0) / MICRO,
                gmv=values.get(f"{model}|gmv", 0) / MINOR,
            )
    return out


def creator_figures(fields: Mapping[str, int], model: str) -> dict[str, Efficiency]:
    raw: dict[str, dict[str, int]] = {}
    for name, amount in fields.items():
        if name.startswith("k|"):
            _, creator, rest = name.split("|", 2)
            raw.setdefault(creator, {})[rest] = amount
    return {
        creator: Efficiency(
            spend=v.get("spend", 0) / MINOR,
            views=v.get("views", 0),
            follows=v.get(f"{model}|follows", 0) / MICRO,
            add_to_carts=v.get(f"{model}|add_to_carts", 0) / MICRO,
            checkouts=v.get(f"{model}|checkouts", 0) / MICRO,
            gmv=v.get(f"{model}|gmv", 0) / MINOR,
        )
        for creator, v in sorted(raw.items())
    }


def totals(fields: Mapping[str, int]) -> dict[str, float | int]:
    """Over every processed event, attributed or not: the same six keys as `simulate --json`."""
    return {
        "views": fields.get("t|views", 0),
        "follows": fields.get("t|follows", 0),
        "add_to_carts": fields.get("t|add_to_carts", 0),
        "checkouts": fields.get("t|checkouts", 0),
        "gmv": fields.get("t|gmv", 0) / MINOR,
        "spend": fields.get("t|spend", 0) / MINOR,
    }
