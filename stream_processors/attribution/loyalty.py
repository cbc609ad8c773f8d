"""Loyalty (the L of AIPL) of one user toward each campaign: buyer, repeat buyer, follower and
retained follower, from the conversions credited to the campaign."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from stream_processors.attribution.increments import Increments
from stream_processors.attribution.user_state import ConversionRecord, Credit, UserState

# Loyalty flags of one user toward one campaign (the L of AIPL), as bits.
BUYER, REPEAT_BUYER, FOLLOWER, RETAINED_FOLLOWER = 1, 2, 4, 8
LOYALTY_FIELDS = (
    (BUYER, "buyers"),
    (REPEAT_BUYER, "repeat_buyers"),
    (FOLLOWER, "followers"),
    (RETAINED_FOLLOWER, "retained_followers"),
)


def _credited_campaigns(alloc: Mapping[str, Sequence[Credit]]) -> set[str]:
    return {row[0] for rows in alloc.values() for row in rows}


def loyalty_flags(state: UserState, retention_s: float) -> dict[str, int]:
    """Per campaign: is this user its buyer (a checkout credited to it), repeat buyer (two),
    follower (a follow credited to it) and retained follower (active again `retention_s` after
    the first such follow)?

    Every input is order-independent (credited conversions are re-attributed when late touches
    arrive; counts, earliest and latest times do not depend on arrival order), so the flags after
    the last event are too; `apply_events` emits each batch's change in the flags, and the stored
    sums are exact distinct-user counts. Credited = in the credit of any model, i.e. the campaign
    had an eligible touch."""
    if not (state.conversions or state.loyal_checkouts or state.loyal_follow_at):
        return {}
    checkouts = dict(state.loyal_checkouts)
    follow_at = dict(state.loyal_follow_at)
    for conv in state.conversions:
        count_loyalty(conv, checkouts, follow_at)
    flags = {c: BUYER | (REPEAT_BUYER if n >= 2 else 0) for c, n in checkouts.items() if n}
    last = state.last_at if state.last_at is not None else float("-inf")
    for campaign, at in follow_at.items():
        flags[campaign] = (
            flags.get(campaign, 0) | FOLLOWER | (RETAINED_FOLLOWER if last >= at + retention_s else 0)
        )
    return flags


def emit_loyalty(before: Mapping[str, int], after: Mapping[str, int], out: Increments) -> None:
    if before == after:
        return
    for campaign in before.keys() | after.keys():
        old, new = before.get(campaign, 0), after.get(campaign, 0)
        if old == new:
            continue
        for bit, name in LOYALTY_FIELDS:
            out.add(None, f"l|{campaign}|{name}", bool(new & bit) - bool(old & bit))


def count_loyalty(conv: ConversionRecord, checkouts: dict[str, int], follow_at: dict[str, float]) -> None:
    """Add one conversion to per-campaign checkout counts (capped at 2, all the flags need) and
    earliest credited follows. Used for live conversions and to fold pruned ones into the state."""
    if conv.kind == "add_to_cart" or not conv.alloc:
        return
    for campaign in _credited_campaigns(conv.alloc):
        if conv.kind == "checkout":
            checkouts[campaign] = min(2, checkouts.get(campaign, 0) + 1)
        elif conv.at < follow_at.get(campaign, float("inf")):
            follow_at[campaign] = conv.at
