from __future__ import annotations

import hashlib

from producers.holdout import holdout_draw, in_holdout

USERS = [f"u{i:07d}" for i in range(20_000)]


def test_the_draw_is_the_contracts_blake2b_of_campaign_and_user() -> None:
    digest = hashlib.blake2b(b"c_pd_feed:u0000042", digest_size=8).digest()
    assert holdout_draw("c_pd_feed", "u0000042") == (int.from_bytes(digest, "big") >> 11) / 2**53
    # stable across processes and releases: a pinned value (a change would regroup every user)
    assert holdout_draw("c_pd_feed", "u0000042") == 0.057867512814485655
    assert in_holdout("c_pd_feed", "u0000042", 0.06)
    assert not in_holdout("c_pd_feed", "u0000042", 0.05)


def test_share_of_users_held_out_matches_the_share() -> None:
    for share in (0.05, 0.1, 0.3):
        held = sum(in_holdout("c_anta_search", u, share) for u in USERS)
        # binomial: 4 standard deviations of 20k draws
        sd = (len(USERS) * share * (1 - share)) ** 0.5
        assert abs(held - len(USERS) * share) < 4 * sd


def test_zero_share_holds_no_one_out_and_the_groups_grow_with_the_share() -> None:
    assert not any(in_holdout("c1", u, 0.0) for u in USERS)
    small = {u for u in USERS if in_holdout("c1", u, 0.1)}
    large = {u for u in USERS if in_holdout("c1", u, 0.2)}
    assert small and small < large


def test_groups_of_two_campaigns_are_independent() -> None:
    a = {u for u in USERS if in_holdout("c_a", u, 0.5)}
    b = {u for u in USERS if in_holdout("c_b", u, 0.5)}
    both = len(a & b) / len(USERS)
    assert a != b
    assert abs(both - 0.25) < 0.02
