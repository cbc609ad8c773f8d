"""The optimizer's view of the scenario's campaigns (targets, budgets, bid limits, starting bids),
shared by the service and the evaluation, and the catalogue price of a campaign's own products."""

from __future__ import annotations

from producers.scenario import Campaign, Scenario
from stream_processors.optimizer.controller import CampaignSpec


def catalogue_price(scenario: Scenario, c: Campaign) -> float:
    """The average price of a campaign's own products, base currency, major units."""
    spus = scenario.spu_by_id
    return (
        sum(spus[p].price_minor * (scenario.fx.minor_rate(spus[p].currency) or 1.0) for p in c.spus)
        / len(c.spus)
        / 100.0
    )


def campaign_specs(scenario: Scenario) -> list[CampaignSpec]:
    """One spec per campaign of the scenario."""
    return [
        CampaignSpec(
            c.campaign_id,
            c.target_kind,
            c.target,
            c.daily_budget,
            c.bid_floor,
            c.bid_cap,
            tuple(c.channels),
            {str(k): v for k, v in c.channels.items()},
        )
        for c in scenario.campaigns
    ]
