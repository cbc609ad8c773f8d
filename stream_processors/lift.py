"""Conversion lift from holdout (ghost) groups: the stored field names and the one estimator.

Per (cohort bucket, campaign, group) the stream stores five integers (attribution/journey.py
maintains them; the group and cohort bucket are fixed at the user's first view of the campaign):
`users` (first exposures), `checkouts` and `gmv` (the campaign's products bought within the lift
window after the first exposure, GMV in base-currency minor units), and the sums over users of
the squares of each user's counted checkouts and GMV (`checkouts_sq`, `gmv_sq`). Sums and sums of
squares are all a difference of two means needs: the API, the metrics, the dashboard and the
evaluation read lift through `lift_estimates`, so they cannot disagree.

`gmv_sq` sums each user's `gmv_square` (whole major units, capped), not the square in minor units:
every stored figure is an int64 Redis hash field (HINCRBY), and a minor-unit square overflows it
for one valid checkout of ~3e9 minor (the schema allows 1e12) or over ~1e8 ordinary users; the
apply script then refuses the batch and the partition is stuck for good.

Field names are `x|<campaign>|<group>|<measure>` ("x" for experiment: `l|` is loyalty); only this
module builds or parses them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

from stream_processors.money import MINOR

Group = Literal["exposed", "held_out"]
GROUPS: tuple[Group, Group] = ("exposed", "held_out")
MEASURES = ("users", "checkouts", "checkouts_sq", "gmv", "gmv_sq")
PREFIX = "x|"

# The estimate needs both groups this large. The interval is a normal approximation of a mean of
# per-user values that are mostly 0 with a few large purchases: below ~30 users neither that mean
# is near normal nor the sample variance reliable (one buyer more or less moves it wholly), so an
# interval would claim a certainty the data does not have.
MIN_GROUP_USERS = 30

# A user's counted GMV enters `gmv_sq` at most at this (1e8 major units): one user's square is then
# <= 1e16, so the int64 field holds ~900 users at the cap, or ~1e8 users of 1e5 major units each
# (~1e14 in all). A user buying more is no shopper the interval is about; the sum `gmv` is not capped.
GMV_SQ_CAP_MINOR = 10**10


def gmv_square(gmv_minor: int) -> int:
    """One user's term of `gmv_sq`: the square of their counted GMV in whole major units
    (floor(g / MINOR), g capped at GMV_SQ_CAP_MINOR). The engine keeps the sum exact as a user's
    GMV moves from g to g' by adding gmv_square(g') - gmv_square(g); the recount sums it directly."""
    major = min(gmv_minor, GMV_SQ_CAP_MINOR) // MINOR
    return major * major


def gmv_squares_minor(gmv_sq: int, gmv_minor: int) -> int:
    """The sum over users of g^2 in minor^2 units, back from `gmv_sq`. A user's g = MINOR*f + r
    (0 <= r < MINOR) has g^2 = MINOR^2 f^2 + 2rg - r^2; 2rg is taken at the middle of its range,
    MINOR*g, so the sum is off by under MINOR*g per user (1% of g^2 for g = 100 major units, in
    either direction): negligible for an interval, whose half-width moves by half that share."""
    return MINOR * MINOR * gmv_sq + MINOR * gmv_minor


def lift_field(campaign_id: str, group: Group, measure: str) -> str:
    """The stored field of one measure of a campaign's group (MEASURES)."""
    return f"{PREFIX}{campaign_id}|{group}|{measure}"


def group_of(held_out: bool) -> Group:
    return "held_out" if held_out else "exposed"


@dataclass(frozen=True, slots=True)
class GroupFigures:
    """One group's sums over its users (per user: counted checkouts and counted GMV)."""

    users: int = 0
    checkouts: int = 0
    checkouts_sq: int = 0
    gmv_minor: int = 0
    gmv_sq: int = 0  # sum of gmv_square(user's GMV): major units squared, see gmv_squares_minor

    @property
    def checkouts_per_user(self) -> float | None:
        """The group's conversion rate: counted checkouts per user."""
        return self.checkouts / self.users if self.users else None

    @property
    def gmv_per_user_minor(self) -> float | None:
        return self.gmv_minor / self.users if self.users else None


@dataclass(frozen=True, slots=True)
class LiftEstimate:
    campaign_id: str
    exposed: GroupFigures
    held_out: GroupFigures
    incremental_checkouts: float  # n_E * (mean_E - mean_H) of per-user checkouts
    incremental_checkouts_ci: tuple[float, float]
    incremental_gmv_minor: float  # n_E * (mean_E - mean_H) of per-user GMV
    incremental_gmv_ci: tuple[float, float]
    spend_minor: int  # the campaign's spend over the same window (input)
    iroas: float | None  # incremental GMV / spend (None when spend is 0)
    iroas_ci: tuple[float, float] | None


def lift_groups(fields: Mapping[str, int]) -> dict[str, dict[Group, GroupFigures]]:
    """campaign -> group -> its figures, from stored fields (a window's sums or all-time totals).
    Both groups are present for every campaign that has either (zeros for the missing one)."""
    raw: dict[str, dict[str, dict[str, int]]] = {}
    for name, amount in fields.items():
        if name.startswith(PREFIX):
            _, campaign, group, measure = name.split("|")
            raw.setdefault(campaign, {}).setdefault(group, {})[measure] = int(amount)
    return {
        campaign: {g: _group_figures(groups.get(g, {})) for g in GROUPS}
        for campaign, groups in sorted(raw.items())
    }


def _group_figures(m: Mapping[str, int]) -> GroupFigures:
    return GroupFigures(
        users=m.get("users", 0),
        checkouts=m.get("checkouts", 0),
        checkouts_sq=m.get("checkouts_sq", 0),
        gmv_minor=m.get("gmv", 0),
        gmv_sq=m.get("gmv_sq", 0),
    )


def sample_variance(n: int, total: int, squares: int) -> float:
    """The sample variance (n - 1 denominator) of n values from their sum and sum of squares.
    Exact integer arithmetic up to the one division: `squares - total**2 / n` in floats loses
    every digit when GMV squares reach 1e15 and the spread is small."""
    if n < 2:
        raise ValueError("a sample variance needs at least 2 values")
    return max(0, n * squares - total * total) / (n * (n - 1))


Sample = tuple[int, int, int]  # one group's (users, sum, sum of squares) of a per-user value


def _difference(
    exposed: Sample, held_out: Sample, exposed_bought: bool, held_out_bought: bool, z: float
) -> tuple[float, tuple[float, float]]:
    """n_E * (mean_E - mean_H) and its normal-approximation interval (independent groups).
    A group without a counted checkout has sample variance 0, yet the data cannot tell its rate is
    0 (20 held-out users without a buyer are no proof that nobody would buy): it takes the other
    group's variance instead, a conservative floor, so its uncertainty stays in the interval."""
    (n_e, sum_e, _), (n_h, sum_h, _) = exposed, held_out
    var_e, var_h = sample_variance(*exposed), sample_variance(*held_out)
    var_e, var_h = (var_e if exposed_bought else var_h), (var_h if held_out_bought else var_e)
    diff = n_e * (sum_e / n_e - sum_h / n_h)
    half = z * n_e * math.sqrt(var_e / n_e + var_h / n_h)
    return diff, (diff - half, diff + half)


def z_of(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def lift_estimates(
    fields: Mapping[str, int], spend_minor: Mapping[str, int], confidence: float = 0.95
) -> dict[str, LiftEstimate]:
    """Per campaign with at least MIN_GROUP_USERS users in each group: incremental checkouts and
    GMV (what the exposed group bought beyond what it would have at the held-out group's per-user
    rate) with `confidence` intervals, and iROAS over `spend_minor` (campaign -> spend over the
    window; the interval divides the GMV interval by it, spend being known exactly). Campaigns with
    fewer users in a group are left out: no interval could be trusted."""
    z = z_of(confidence)
    out: dict[str, LiftEstimate] = {}
    for campaign, groups in lift_groups(fields).items():
        e, h = groups["exposed"], groups["held_out"]
        if e.users < MIN_GROUP_USERS or h.users < MIN_GROUP_USERS:
            continue
        bought = (e.checkouts > 0, h.checkouts > 0)
        checkouts, checkouts_ci = _difference(
            (e.users, e.checkouts, e.checkouts_sq), (h.users, h.checkouts, h.checkouts_sq), *bought, z
        )
        gmv, gmv_ci = _difference(
            (e.users, e.gmv_minor, gmv_squares_minor(e.gmv_sq, e.gmv_minor)),
            (h.users, h.gmv_minor, gmv_squares_minor(h.gmv_sq, h.gmv_minor)),
            *bought,
            z,
        )
        spend = int(spend_minor.get(campaign, 0))
        out[campaign] = LiftEstimate(
            campaign_id=campaign,
            exposed=e,
            held_out=h,
            incremental_checkouts=checkouts,
            incremental_checkouts_ci=checkouts_ci,
            incremental_gmv_minor=gmv,
            incremental_gmv_ci=gmv_ci,
            spend_minor=spend,
            iroas=gmv / spend if spend > 0 else None,
            iroas_ci=(gmv_ci[0] / spend, gmv_ci[1] / spend) if spend > 0 else None,
        )
    return out
