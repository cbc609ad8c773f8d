"""Efficiency figures from the stored integer fields. Pure: the report, the optimizer, the API and
the metrics exporter all read campaigns through this one function, so they cannot disagree."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from stream_processors.lift import GroupFigures, lift_estimates, lift_groups
from stream_processors.money import MINOR as MINOR  # re-exported: callers read it here

MICRO = 1_000_000


def _ratio(numerator: float, denominator: float) -> float | None:
    """None where there is nothing to divide by (no views, no checkouts): not 0, not infinity."""
    return numerator / denominator if denominator > 0 else None


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
        return _ratio(self.spend, self.checkouts)

    @property
    def roas(self) -> float | None:
        return _ratio(self.gmv, self.spend)

    @property
    def cost_per_follow(self) -> float | None:
        return _ratio(self.spend, self.follows)

    @property
    def cost_per_add_to_cart(self) -> float | None:
        return _ratio(self.spend, self.add_to_carts)

    @property
    def ecpm(self) -> float | None:
        return _ratio(1000 * self.spend, self.views)

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


def events_processed(fields: Mapping[str, int]) -> int:
    """Every event the pipeline applied: the four actions' counts, and the ghost views (holdout),
    which are processed but counted apart from the paid views."""
    return sum(
        fields.get(f"t|{name}", 0)
        for name in ("views", "follows", "add_to_carts", "checkouts", "ghost_views")
    )


# --------------------------------------------------------------------------- bounded labels
OTHER = "other"


def campaign_spend_minor(fields: Mapping[str, int]) -> dict[str, int]:
    """Spend per campaign (over all channels) in minor units, from `c|<campaign>|<channel>|spend`."""
    out: dict[str, int] = {}
    for name, amount in fields.items():
        if name.startswith("c|") and name.endswith("|spend"):
            parts = name.split("|")
            if len(parts) == 4:
                out[parts[1]] = out.get(parts[1], 0) + int(amount)
    return out


def campaign_spend(fields: Mapping[str, int]) -> dict[str, float]:
    """Spend per campaign (over all channels) from `c|<campaign>|<channel>|spend` fields."""
    return {campaign: minor / MINOR for campaign, minor in campaign_spend_minor(fields).items()}


def creator_spend(fields: Mapping[str, int]) -> dict[str, float]:
    """Spend per creator from `k|<creator>|spend` fields."""
    out: dict[str, float] = {}
    for name, amount in fields.items():
        if name.startswith("k|") and name.endswith("|spend"):
            parts = name.split("|")
            if len(parts) == 3:
                out[parts[1]] = amount / MINOR
    return out


def top_n(spend: Mapping[str, float], n: int) -> frozenset[str]:
    """The n largest by spend; ties broken by id, so every reader of the same figures agrees."""
    ranked = sorted(spend.items(), key=lambda kv: (-kv[1], kv[0]))
    return frozenset(name for name, _ in ranked[: max(0, n)])


def label_of(name: str, keep: frozenset[str] | set[str]) -> str:
    """The label a campaign or creator is exported under: itself when kept, else `other`."""
    return name if name in keep else OTHER


def fold_campaigns(
    figs: Mapping[str, CampaignFigures], keep: frozenset[str] | set[str]
) -> dict[str, CampaignFigures]:
    """Campaigns outside `keep` merged into one `other` campaign (per channel and model)."""
    out: dict[str, CampaignFigures] = {}
    for campaign, fig in figs.items():
        label = label_of(campaign, keep)
        if label == campaign and label not in out:
            out[label] = CampaignFigures(label, {ch: dict(pm) for ch, pm in fig.by_channel.items()})
            continue
        target = out.setdefault(label, CampaignFigures(label))
        for channel, per_model in fig.by_channel.items():
            into = target.by_channel.setdefault(channel, {})
            for model, eff in per_model.items():
                acc = into.setdefault(model, Efficiency())
                acc.add(eff)
    return out


def fold_creators(figs: Mapping[str, Efficiency], keep: frozenset[str] | set[str]) -> dict[str, Efficiency]:
    out: dict[str, Efficiency] = {}
    for creator, eff in figs.items():
        out.setdefault(label_of(creator, keep), Efficiency()).add(eff)
    return out


# --------------------------------------------------------------------------- AIPL and loyalty
def creator_followers(fields: Mapping[str, int]) -> dict[str, int]:
    """All-time followers per creator (`k|<creator>|followers`, a user's first follow only)."""
    out: dict[str, int] = {}
    for name, amount in fields.items():
        if name.startswith("k|") and name.endswith("|followers"):
            parts = name.split("|")
            if len(parts) == 3:
                out[parts[1]] = amount
    return dict(sorted(out.items()))


def loyalty(fields: Mapping[str, int]) -> dict[str, float | int | None]:
    """Platform-wide loyalty from all-time totals: buyers, repeat buyers and the repeat rate."""
    buyers = fields.get("t|buyers", 0)
    repeat = fields.get("t|repeat_buyers", 0)
    return {
        "buyers": buyers,
        "repeat_buyers": repeat,
        "repeat_rate": round(repeat / buyers, 6) if buyers else None,
    }


LOYALTY_SEGMENTS = ("buyers", "repeat_buyers", "followers", "retained_followers")


def campaign_loyalty(fields: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """All-time loyalty per campaign (`l|<campaign>|<segment>`): distinct users who bought through
    it, bought twice, followed through it, and followed and came back (journey.loyalty_flags)."""
    out: dict[str, dict[str, int]] = {}
    for name, amount in fields.items():
        if name.startswith("l|"):
            _, campaign, segment = name.split("|", 2)
            out.setdefault(campaign, dict.fromkeys(LOYALTY_SEGMENTS, 0))[segment] = amount
    return dict(sorted(out.items()))


def loyalty_rates(figures: Mapping[str, int]) -> dict[str, float | int | None]:
    """One campaign's loyalty segments with the two rates a campaign manager reads."""
    return {
        **{k: figures.get(k, 0) for k in LOYALTY_SEGMENTS},
        "repeat_rate": _rate(figures.get("repeat_buyers", 0), figures.get("buyers", 0)),
        "follower_retention": _rate(figures.get("retained_followers", 0), figures.get("followers", 0)),
    }


def _rate(num: float, den: float) -> float | None:
    return round(num / den, 6) if den else None


def aipl_funnel(eff: Efficiency, reach: int | None = None, engaged_users: int | None = None) -> dict:
    """One campaign's AIPL funnel over a window: Awareness, Interest, Purchase (Loyalty is all-time,
    see `loyalty` and `creator_followers`). Rates are per view; costs per step divide spend."""
    return {
        "awareness": {
            "views": eff.views,
            "reach": reach,
            "frequency": _rate(eff.views, reach or 0),
            "spend": round(eff.spend, 6),
            "ecpm": eff.ecpm,
        },
        "interest": {
            "engaged_users": engaged_users,
            "follows": round(eff.follows, 6),
            "follow_rate": _rate(eff.follows, eff.views),
            "engaged_rate": _rate(engaged_users or 0, reach or 0),
            "cost_per_follow": _rate(eff.spend, eff.follows),
        },
        "purchase": {
            "add_to_carts": round(eff.add_to_carts, 6),
            "checkouts": round(eff.checkouts, 6),
            "gmv": round(eff.gmv, 6),
            "cart_rate": _rate(eff.add_to_carts, eff.views),
            "checkout_rate": _rate(eff.checkouts, eff.views),
            "cart_to_checkout": _rate(eff.checkouts, eff.add_to_carts),
            "cpa": _rate(eff.spend, eff.checkouts),
            "roas": _rate(eff.gmv, eff.spend),
        },
    }


# --------------------------------------------------------------------------- conversion lift
def _group_row(g: GroupFigures) -> dict[str, float | int | None]:
    return {
        "users": g.users,
        "checkouts": g.checkouts,
        "gmv": g.gmv_minor / MINOR,
        "checkouts_per_user": _rate(g.checkouts, g.users),
        "gmv_per_user": _rate(g.gmv_minor / MINOR, g.users),
    }


def _interval(bounds: tuple[float, float] | None, scale: float = 1.0) -> list[float] | None:
    return None if bounds is None else [round(bounds[0] / scale, 6), round(bounds[1] / scale, 6)]


def campaign_lift(fields: Mapping[str, int], confidence: float = 0.95) -> dict[str, dict[str, Any]]:
    """Per campaign with lift figures (stream_processors/lift.py), in currency units: each group's
    users, counted checkouts and GMV and their per-user rates, and, once both groups have 2 users,
    incremental checkouts, incremental GMV and iROAS (over the campaign's spend in the same
    `fields`) with their `confidence` intervals (None before)."""
    spend = campaign_spend_minor(fields)
    estimates = lift_estimates(fields, spend, confidence)
    out: dict[str, dict[str, Any]] = {}
    for campaign, groups in lift_groups(fields).items():
        est = estimates.get(campaign)
        out[campaign] = {
            "exposed": _group_row(groups["exposed"]),
            "held_out": _group_row(groups["held_out"]),
            "spend": spend.get(campaign, 0) / MINOR,
            "incremental_checkouts": None if est is None else round(est.incremental_checkouts, 6),
            "incremental_checkouts_ci": None if est is None else _interval(est.incremental_checkouts_ci),
            "incremental_gmv": None if est is None else round(est.incremental_gmv_minor / MINOR, 6),
            "incremental_gmv_ci": None if est is None else _interval(est.incremental_gmv_ci, MINOR),
            "iroas": None if est is None or est.iroas is None else round(est.iroas, 6),
            "iroas_ci": None if est is None else _interval(est.iroas_ci),
        }
    return out
