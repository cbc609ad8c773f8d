"""Holdout (ghost) group assignment for conversion-lift measurement.

A user is held out of a campaign iff a hash of the campaign and the user falls below the holdout
share. The hash is keyed by nothing but the two ids, so every replica, every restart and every
consumer of the events (simulator, stream engine, evaluation) agrees on the group without
coordination, and a user's group in one campaign says nothing about their group in another.
"""

from __future__ import annotations

import hashlib

_SCALE = float(1 << 53)


def holdout_draw(campaign_id: str, user_id: str) -> float:
    """The (campaign, user) pair's uniform draw in [0, 1): the top 53 bits of an 8-byte blake2b
    digest (big-endian) over 2^53, exact in a float, so the draw never rounds up to 1.0."""
    digest = hashlib.blake2b(f"{campaign_id}:{user_id}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 11) / _SCALE


def in_holdout(campaign_id: str, user_id: str, share: float) -> bool:
    """True when the user is in the campaign's holdout group at this share (0 holds no one out).

    Monotone in the share: a user held out at one share is held out at every larger one, so
    raising the share only moves exposed users into the holdout, never the other way."""
    if share <= 0.0:
        return False
    return holdout_draw(campaign_id, user_id) < share
