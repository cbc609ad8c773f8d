"""The metric increments one batch of events adds: integers keyed by (time bucket, field)."""

from __future__ import annotations

from stream_processors.lift import group_of, lift_field


class Increments:
    """Integer increments keyed by (bucket start or None for all-time totals, field).

    Views, by far the most common event, are first tallied per (bucket, campaign, channel,
    creator) and expanded into their field names once, when `by_key` is read: the same
    figures at a fraction of the per-event dictionary work. So are first exposures of lift cohorts
    (nearly every view of a new user is one), per (bucket, campaign, held out)."""

    __slots__ = ("_by_key", "_lift_users", "_views")

    def __init__(self) -> None:
        self._by_key: dict[tuple[int | None, str], int] = {}
        # (bucket, campaign, channel, creator or None) -> [views, cost in minor units]
        self._views: dict[tuple[int, str, str, str | None], list[int]] = {}
        # (cohort bucket, campaign, held out) -> users added (negative: taken back)
        self._lift_users: dict[tuple[int, str, bool], int] = {}

    @property
    def by_key(self) -> dict[tuple[int | None, str], int]:
        if self._views:
            self._expand_views()
        if self._lift_users:
            self._expand_lift_users()
        return self._by_key

    def add(self, bucket: int | None, name: str, amount: int) -> None:
        if amount:
            key = (bucket, name)
            self._by_key[key] = self._by_key.get(key, 0) + amount

    def add_windowed(self, bucket: int, name: str, amount: int) -> None:
        if amount:
            by_key = self._by_key
            key: tuple[int | None, str] = (bucket, name)
            by_key[key] = by_key.get(key, 0) + amount
            key = (None, name)
            by_key[key] = by_key.get(key, 0) + amount

    def add_view(self, bucket: int, campaign: str, channel: str, creator: str | None, cost: int) -> None:
        key = (bucket, campaign, channel, creator)
        tally = self._views.get(key)
        if tally is None:
            self._views[key] = [1, cost]
        else:
            tally[0] += 1
            tally[1] += cost

    def add_lift_user(self, bucket: int, campaign: str, held_out: bool, sign: int) -> None:
        """A user enters (+1) or leaves (-1) a campaign's lift cohort of `bucket` (lift.py names)."""
        key = (bucket, campaign, held_out)
        self._lift_users[key] = self._lift_users.get(key, 0) + sign

    def _expand_lift_users(self) -> None:
        users, self._lift_users = self._lift_users, {}
        for (bucket, campaign, held_out), n in users.items():
            self.add_windowed(bucket, lift_field(campaign, group_of(held_out), "users"), n)

    def _expand_views(self) -> None:
        views, self._views = self._views, {}
        add = self.add_windowed
        for (bucket, campaign, channel, creator), (n, cost) in views.items():
            base = f"c|{campaign}|{channel}"
            add(bucket, "t|views", n)
            add(bucket, base + "|views", n)
            add(bucket, "t|spend", cost)
            add(bucket, base + "|spend", cost)
            if creator:
                add(bucket, f"k|{creator}|views", n)
                add(bucket, f"k|{creator}|spend", cost)

    def merge(self, other: Increments) -> None:
        by_key = self.by_key
        for key, amount in other.by_key.items():
            by_key[key] = by_key.get(key, 0) + amount
