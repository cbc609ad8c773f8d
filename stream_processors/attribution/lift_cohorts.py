"""Conversion-lift cohorts of one user: per campaign, the first exposure, its group, and the
checkouts it counts (stream_processors/lift.py names the figures and estimates lift from them).

A user's *episode* of a campaign starts at their first view of it (a real view, or a ghost view
when they are in its holdout group); the group and the cohort bucket are those of that view. The
episode counts the user's checkouts of the campaign's products dated in
[first_at, first_at + lift_window_s]. The first view after that window closes starts a new episode
(the user enters a later cohort again); that is also what pruning a closed episode leads to, so
pruning never changes a figure.

Stored per user (UserState.lift): campaign -> episodes, oldest first, each a list
`[first_at, held_out (0/1), checkouts, gmv_minor]` with trailing zeros left out, so an exposed user
who never bought costs `"c1":[[1764590000.5]]` (issue 18: bytes per user matter). Lists, not
objects: a view, the common event, reads only `first_at` of the latest episode.

Figures (integer increments at the episode's cohort bucket, windowed and all-time): `users`, and
per user's counted checkouts n and GMV g the sums n, n^2, g and gmv_square(g) (g's square in
capped whole major units, lift.py: a minor-unit square overflows the int64 store), kept exactly as
a user's figures change ((n+1)^2 - n^2 = 2n+1), so the estimator gets each group's sample variance.

Ties: a real and a ghost view at the same instant, both first, would make the group depend on
arrival order; the ghost view wins (as in tests/recount.py), whichever arrives first.

Order-independence (figures equal an event-time recount): a checkout arriving out of order is
counted by the episode whose window holds it; a view dated before the latest episode's start (and
after the previous one's window) moves that episode's start, group and bucket: its figures are
taken back at the old cohort and re-added, recounted over the user's live checkouts, at the new.
Checkouts older than the horizon can no longer be in a moved window (the view is not older than
the horizon). Exact when lift_window_s exceeds the allowed lateness plus the future bound
(processor.py; 7 days against 1 h + 1 day by default): then no stored event lies more than a window
after an admitted view, and an out-of-order view never splits or merges episodes.
"""

from __future__ import annotations

from collections.abc import Sequence

from stream_processors.attribution.increments import Increments
from stream_processors.attribution.user_state import ConversionRecord, EngineConfig, bucket_of
from stream_processors.lift import gmv_square, group_of, lift_field

# campaign -> episodes, oldest first: [first_at, held_out, checkouts, gmv_minor], trailing zeros left out
Episodes = dict[str, list[list[float]]]
_FIRST, _HELD, _CHECKOUTS, _GMV = 0, 1, 2, 3


def _full(row: list[float]) -> list[float]:
    """The row with its trailing zeros back (in place): held_out, checkouts, GMV readable."""
    if len(row) < 4:
        row.extend([0] * (4 - len(row)))
    return row


def trimmed(row: list[float]) -> list[float]:
    """The row without trailing zeros (first_at always stays): what is stored."""
    end = len(row)
    while end > 1 and not row[end - 1]:
        end -= 1
    return row if end == len(row) else row[:end]


def _counts(product: str | None, campaign: str, cfg: EngineConfig) -> bool:
    """A checkout of `product` counts for `campaign`: one of its products, or any product when
    the campaign promotes none in the map (the map empty or missing it)."""
    promoted = cfg.campaign_products.get(campaign)
    return promoted is None or product in promoted


def _emit_user(out: Increments, campaign: str, row: list[float], sign: int, cfg: EngineConfig) -> None:
    """Add (+1) or take back (-1) one user's whole contribution to its cohort's figures."""
    bucket = bucket_of(row[_FIRST], cfg.bucket_s)
    out.add_lift_user(bucket, campaign, bool(row[_HELD]), sign)
    n, g = int(row[_CHECKOUTS]), int(row[_GMV])
    if not (n or g):
        return  # most users: exposed, never bought
    group = group_of(bool(row[_HELD]))
    out.add_windowed(bucket, lift_field(campaign, group, "checkouts"), sign * n)
    out.add_windowed(bucket, lift_field(campaign, group, "checkouts_sq"), sign * n * n)
    out.add_windowed(bucket, lift_field(campaign, group, "gmv"), sign * g)
    out.add_windowed(bucket, lift_field(campaign, group, "gmv_sq"), sign * gmv_square(g))


def _count(out: Increments, campaign: str, row: list[float], value_minor: int, cfg: EngineConfig) -> None:
    """One more counted checkout of `value_minor` for the episode `row`: its sums and squares move
    by the exact difference ((n+1)^2 - n^2 = 2n+1, gmv_square(g + v) - gmv_square(g)), each an
    int64 (<= 1e12 and <= 1e16 by the schema's bound and the square's cap)."""
    row = _full(row)
    n, g = int(row[_CHECKOUTS]), int(row[_GMV])
    bucket = bucket_of(row[_FIRST], cfg.bucket_s)
    group = group_of(bool(row[_HELD]))
    out.add_windowed(bucket, lift_field(campaign, group, "checkouts"), 1)
    out.add_windowed(bucket, lift_field(campaign, group, "checkouts_sq"), 2 * n + 1)
    out.add_windowed(bucket, lift_field(campaign, group, "gmv"), value_minor)
    out.add_windowed(
        bucket, lift_field(campaign, group, "gmv_sq"), gmv_square(g + value_minor) - gmv_square(g)
    )
    row[_CHECKOUTS], row[_GMV] = n + 1, g + value_minor


def _in_window(at: float, first_at: float, cfg: EngineConfig) -> bool:
    return first_at <= at <= first_at + cfg.lift_window_s


def _live_counted(
    campaign: str, first_at: float, conversions: Sequence[ConversionRecord], cfg: EngineConfig
) -> tuple[int, int]:
    """Checkouts and GMV of the live (not yet pruned) checkouts an episode starting at `first_at` counts."""
    n = g = 0
    for conv in conversions:
        if (
            conv.kind == "checkout"
            and _in_window(conv.at, first_at, cfg)
            and _counts(conv.spu_id, campaign, cfg)
        ):
            n += 1
            g += conv.value_minor
    return n, g


def lift_view(
    lift: Episodes,
    campaign: str,
    held_out: bool,
    at: float,
    conversions: Sequence[ConversionRecord],
    cfg: EngineConfig,
    out: Increments,
) -> None:
    """A view (real or ghost) of `campaign` at `at`: a first exposure starts or moves an episode."""
    episodes = lift.get(campaign)
    if episodes is not None:
        latest = episodes[-1]
        first = latest[_FIRST]
        if first <= at <= first + cfg.lift_window_s:
            _tie(campaign, episodes, -1, held_out, at, conversions, cfg, out)
            return  # the common case: a later view of the current episode
        if at < first:
            before = episodes[-2] if len(episodes) > 1 else None
            if before is not None and at <= before[_FIRST] + cfg.lift_window_s:
                _tie(campaign, episodes, -2, held_out, at, conversions, cfg, out)
                return  # a later view of the previous episode (its start is earlier still, see docstring)
            _move(campaign, _full(latest), held_out, at, conversions, cfg, out)
            episodes[-1] = trimmed(latest)
            return
    if conversions:
        n, g = _live_counted(campaign, at, conversions, cfg)
        row = [at, 1 if held_out else 0, n, g]
        _emit_user(out, campaign, row, +1, cfg)
        row = trimmed(row)
    else:  # the common case, a user without live conversions: one more user, nothing counted
        out.add_lift_user(bucket_of(at, cfg.bucket_s), campaign, held_out, 1)
        row = [at, 1] if held_out else [at]
    if episodes is None:
        lift[campaign] = [row]
    else:
        episodes.append(row)


def _tie(
    campaign: str,
    episodes: list[list[float]],
    i: int,
    held_out: bool,
    at: float,
    conversions: Sequence[ConversionRecord],
    cfg: EngineConfig,
    out: Increments,
) -> None:
    """A view of episode `i`'s window: only a ghost view at the episode's very start changes it
    (to held out), so that of a real and a ghost first view at one instant the ghost one sets the
    group whichever arrived first. The window and cohort stay; the user changes group."""
    row = episodes[i]
    if not held_out or at != row[_FIRST] or (len(row) > 1 and row[_HELD]):
        return
    _move(campaign, _full(row), held_out, at, conversions, cfg, out)
    episodes[i] = trimmed(row)


def _move(
    campaign: str,
    row: list[float],
    held_out: bool,
    at: float,
    conversions: Sequence[ConversionRecord],
    cfg: EngineConfig,
    out: Increments,
) -> None:
    """An earlier first view of the episode `row` (full): it starts at `at` with that view's group.
    Its counted figures change by what the live checkouts count under the new window but not the
    old (and the reverse); checkouts already pruned lie before both windows."""
    _emit_user(out, campaign, row, -1, cfg)
    old_n, old_g = _live_counted(campaign, row[_FIRST], conversions, cfg)
    new_n, new_g = _live_counted(campaign, at, conversions, cfg)
    row[_FIRST], row[_HELD] = at, 1 if held_out else 0
    row[_CHECKOUTS] = int(row[_CHECKOUTS]) - old_n + new_n
    row[_GMV] = int(row[_GMV]) - old_g + new_g
    _emit_user(out, campaign, row, +1, cfg)


def lift_checkout(
    lift: Episodes, at: float, spu_id: str, value_minor: int, cfg: EngineConfig, out: Increments
) -> None:
    """A checkout: counted by each campaign's episode whose window holds it, for the campaign's
    products (episodes of one campaign never overlap, so at most one per campaign)."""
    for campaign, episodes in lift.items():
        for i in range(len(episodes) - 1, -1, -1):
            row = episodes[i]
            if _in_window(at, row[_FIRST], cfg):
                if _counts(spu_id, campaign, cfg):
                    _count(out, campaign, _full(row), value_minor, cfg)
                    episodes[i] = trimmed(row)
                break


def prune_lift(lift: Episodes, horizon: float, cfg: EngineConfig) -> None:
    """Drop episodes whose window closed before the horizon: no checkout or view they could count
    can be admitted any more (it would be late), and a later view starts a new episode anyway."""
    cutoff = horizon - cfg.lift_window_s
    for episodes in lift.values():
        if episodes[0][_FIRST] < cutoff:
            break
    else:
        return  # the common case (every user's state passes here): nothing closed yet
    window = cfg.lift_window_s
    for campaign in [c for c, eps in lift.items() if eps[0][_FIRST] + window < horizon]:
        kept = [row for row in lift[campaign] if row[_FIRST] + window >= horizon]
        if kept:
            lift[campaign] = kept
        else:
            del lift[campaign]
