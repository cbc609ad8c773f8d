"""The user simulation: a seeded population that sees ads and notes, follows creators, adds SPUs
to the cart and checks out, with delays between steps. Pure and deterministic: the same seed and
the same bids give the same events, byte for byte.

Random draws come from independent streams, one per campaign, channel and simulated minute,
each seeded from the seed, the campaign, the channel and the minute (every draw belongs to a
campaign's traffic): a bid change in one campaign changes that campaign's traffic and nothing
else's, and changes its own draws only in the minutes served at a different bid. Two runs that
differ only in one campaign's bids see the same random draws everywhere else, and two controllers
see the same luck minute by minute (common random numbers), so their outcomes can be compared on
one seed. Every view makes the same number of draws whatever happened before (a draw is taken
even where its outcome cannot matter).

Holdout (ghost) groups: a user in a campaign's holdout group (producers.holdout, at
SimConfig.holdout_share) is never shown its ads. Where the scheduler would serve such a user, the
simulator emits a ghost view (held_out=True, cost_minor=0, not engaged): no spend, and nothing
follows from it. The ghost view makes every draw an exposed user's view makes and then drops the
outcomes, so the streams stay aligned across holdout shares as across bids: two runs at
different shares differ only in what the holdout changes (and in what the unspent budget buys
later in the day).

Organic purchases: users of a campaign's audience buy one of its SPUs with no ad at the
campaign's organic rate (seeds/truth.json), hour-shaped like traffic, whatever ads they saw and
whatever their holdout group; each from its own stream per campaign and minute, so they do not
move with bids or shares. They are what last-touch attribution wrongly credits to ads.

The clock is simulated: `advance(until)` produces every event with event_time <= until. The Kafka
runner maps wall time to simulated time (SEEDLOOP_SIM_SPEED); `seedloop evaluate` runs it as
fast as the CPU allows.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypedDict

from producers.ground_truth import GroundTruth as GroundTruth
from producers.ground_truth import OrderCause
from producers.holdout import in_holdout
from producers.scenario import Campaign, Scenario
from producers.scheduler import AdScheduler
from producers.traffic import TrafficModel
from schemas.events import AddToCart, Channel, Checkout, Follow, UserAction, View

STREAM_SLOT_S = 60.0  # the random streams are reseeded once a simulated minute
ORGANIC = "organic"  # the stream name of a campaign's organic purchases (no channel has it)


@dataclass(frozen=True, slots=True)
class SimConfig:
    seed: int = 7
    users: int = 50_000
    start_ts: float = datetime(2026, 11, 11, tzinfo=UTC).timestamp()
    tick_s: float = 10.0
    creatives_per_channel: int = 3
    # share of users held out of each campaign (ghost views); 0 shows every user every ad
    holdout_share: float = 0.0
    # organic purchases (seeds/truth.json's rates); False for the world before they existed
    organic: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.holdout_share < 1.0:
            raise ValueError(f"holdout_share must be in [0, 1), not {self.holdout_share}")


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 50:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    # Knuth's method: exact, and cheap for the small rates of one tick (median 0.3 views). It draws
    # from the stream's random.Random like every other draw of a view, which keeps one stream per
    # campaign, channel and minute; numpy's Generator.poisson measured 1.4 us a call against 0.6 us
    # here, and would change every seeded figure.
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


class _EventHead(TypedDict):
    event_id: str
    user_id: str
    event_time: datetime


class _Product(TypedDict):
    spu_id: str
    value_minor: int
    currency: str


@dataclass(slots=True)
class _Stream:
    """One campaign and channel's generator: `key` (from the seed and the names) | the slot it was
    last seeded for."""

    key: int
    rng: random.Random = field(default_factory=random.Random)
    slot: int = -1


class Simulator:
    def __init__(
        self, scenario: Scenario, traffic: TrafficModel, scheduler: AdScheduler, cfg: SimConfig
    ) -> None:
        self.scenario = scenario
        self.traffic = traffic
        self.scheduler = scheduler
        self.cfg = cfg
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._ticks_per_slot = max(1, round(STREAM_SLOT_S / cfg.tick_s))
        self.now = cfg.start_ts
        self.truth = GroundTruth(users=cfg.users, holdout_share=cfg.holdout_share)
        self._pending: list[tuple[float, int, UserAction, str]] = []
        self._seq = 0
        self._follows: set[tuple[int, str]] = set()
        self._buyers: set[tuple[int, str]] = set()
        self._spus = scenario.spu_by_id
        self._segment_ranges = self._assign_segments()
        self._shares: dict[str, float] | None = None

    def _assign_segments(self) -> dict[str, tuple[int, int]]:
        """Users 0..N-1 split into contiguous ranges by segment share."""
        total = sum(s.share for s in self.scenario.segments)
        ranges: dict[str, tuple[int, int]] = {}
        start = 0
        for i, s in enumerate(self.scenario.segments):
            end = (
                self.cfg.users
                if i == len(self.scenario.segments) - 1
                else start + round(self.cfg.users * s.share / total)
            )
            ranges[s.segment_id] = (start, max(start + 1, end))
            start = end
        return ranges

    def stream(self, campaign_id: str, channel: str, tick: int) -> random.Random:
        """The random stream of one campaign and channel, reseeded at the start of each slot from
        the seed, the names and the slot (reseeding every 10-second tick costs more than it buys)."""
        stream = self._streams.get((campaign_id, channel))
        if stream is None:
            digest = hashlib.sha256(f"{self.cfg.seed}:{campaign_id}:{channel}".encode()).digest()
            stream = self._streams[(campaign_id, channel)] = _Stream(int.from_bytes(digest[:8], "big") << 32)
        slot = tick // self._ticks_per_slot
        if stream.slot != slot:
            stream.rng.seed(stream.key | (slot & 0xFFFFFFFF))
            stream.slot = slot
        return stream.rng

    def _pick_user(self, campaign: Campaign, rng: random.Random) -> tuple[int, str]:
        shares = [(s, self._segment_share(s)) for s in campaign.segments]
        r = rng.random() * sum(w for _, w in shares)
        segment = shares[-1][0]
        for seg, w in shares:
            r -= w
            if r <= 0:
                segment = seg
                break
        lo, hi = self._segment_ranges[segment]
        return rng.randrange(lo, hi), segment

    def _segment_share(self, segment_id: str) -> float:
        shares = self._shares
        if shares is None:
            shares = self._shares = {s.segment_id: s.share for s in reversed(self.scenario.segments)}
        return shares[segment_id]

    def _next_id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}-{self.cfg.seed}-{self._seq:010d}"

    def _schedule(self, at: float, event: UserAction, cause: str) -> None:
        heapq.heappush(self._pending, (at, self._seq, event, cause))

    @staticmethod
    def _ts(at: float) -> datetime:
        return datetime.fromtimestamp(round(at, 3), UTC)

    @staticmethod
    def _creator_for(campaign: Campaign, channel: str, rng: random.Random) -> str | None:
        creators = campaign.creators
        if channel in ("kol", "feed"):
            people = [c for c in creators if c != "brand_official"] or creators
            return rng.choice(people)
        if channel == "brand":
            return "brand_official" if "brand_official" in creators else None
        return None

    def _serve_tick(self, start: float, dt: float) -> None:
        tick = round((start - self.cfg.start_ts) / self.cfg.tick_s)
        for campaign in self.scenario.campaigns:
            for channel in campaign.channels:
                bid = self.scheduler.bid(campaign.campaign_id, channel)
                lam = self.traffic.views_per_hour(campaign.campaign_id, channel, bid, start) * dt / 3600.0
                cost_minor = max(1, round(bid / 10))  # CPM in major units -> minor units per view
                rng = self.stream(campaign.campaign_id, channel, tick)
                for _ in range(poisson(rng, lam)):
                    at = start + rng.random() * dt
                    # a ghost view stands for an impression the scheduler would have served, so it
                    # needs the budget a real one needs (it then pays nothing)
                    if not self.scheduler.can_serve(campaign.campaign_id, cost_minor, at):
                        break
                    self._serve_view(campaign, channel, bid, cost_minor, at, rng)
            if self.cfg.organic:
                self._serve_organic(campaign, start, dt, tick)

    def _event_head(self, prefix: str, user_id: str, at: float) -> _EventHead:
        """The fields every event starts with; its id is taken now, before any the caller takes next."""
        return {"event_id": self._next_id(prefix), "user_id": user_id, "event_time": self._ts(at)}

    def _serve_view(
        self, campaign: Campaign, channel: Channel, bid: float, cost_minor: int, at: float, rng: random.Random
    ) -> None:
        """A won impression: a view, or a ghost view for a held-out user. Both take the same draws;
        a ghost's outcomes (engagement, follow, purchase) are dropped: the ad was not shown."""
        cid = campaign.campaign_id
        user, segment = self._pick_user(campaign, rng)
        user_id = f"u{user:07d}"
        shown = not in_holdout(cid, user_id, self.cfg.holdout_share)
        rates = self.traffic.funnel(
            cid, channel, bid, segment, engaged=False, repeat_buyer=(user, cid) in self._buyers
        )
        engaged = rng.random() < rates.engaged
        if engaged:
            rates = self.traffic.funnel(
                cid, channel, bid, segment, engaged=True, repeat_buyer=(user, cid) in self._buyers
            )
        creator = self._creator_for(campaign, channel, rng)
        creative = f"{cid}.{channel}.cr{rng.randrange(self.cfg.creatives_per_channel)}"
        view = View(
            **self._event_head("v", user_id, at),
            campaign_id=cid,
            channel=channel,
            creative_id=creative,
            creator_id=creator,
            segment=segment,
            cost_minor=cost_minor if shown else 0,
            currency=campaign.currency,
            engaged=engaged and shown,
            held_out=not shown,
        )
        self._schedule(at, view, cid)
        self.truth.record_view(cid, user, at, ghost=not shown)
        if shown:
            self.scheduler.record_spend(cid, cost_minor, at)
            self.truth.spend_minor[cid] = self.truth.spend_minor.get(cid, 0) + cost_minor
        # Drawn whether or not the user already follows the creator: follows are shared across
        # campaigns (a creator can work for several), the stream's draws must not be.
        follow_draw, follow_delay = rng.random(), rng.expovariate(1 / self.traffic.delay_mean_s("follow"))
        if shown and creator and (user, creator) not in self._follows and follow_draw < rates.follow:
            self._follows.add((user, creator))
            t = at + follow_delay
            self._schedule(
                t, Follow(**self._event_head("f", user_id, t), creator_id=creator, note_id=creative), cid
            )
        if rng.random() < rates.add_to_cart:
            spu_id, t_cart, t_buy = self._draw_purchase(campaign, at, rates.checkout, rng)
            if shown:
                self._purchase(campaign, user, spu_id, t_cart, t_buy, channel)

    def _serve_organic(self, campaign: Campaign, start: float, dt: float, tick: int) -> None:
        """The tick's organic purchases by the campaign's audience: no ad, so no channel and no
        cause, and drawn from the campaign's own organic stream, so neither bids nor the holdout
        move them."""
        rate = self.traffic.organic_per_user_day(campaign.campaign_id)
        if rate <= 0:
            return
        rng = self.stream(campaign.campaign_id, ORGANIC, tick)
        lam = rate * self._audience(campaign) * self.traffic.day_shape(start) * dt / 86_400.0
        for _ in range(poisson(rng, lam)):
            at = start + rng.random() * dt
            user, _segment = self._pick_user(campaign, rng)
            spu_id, t_cart, t_buy = self._draw_purchase(campaign, at, 1.0, rng)
            self._purchase(campaign, user, spu_id, t_cart, t_buy, None)

    def _audience(self, campaign: Campaign) -> int:
        """The number of users in the campaign's segments."""
        return sum(hi - lo for s, (lo, hi) in self._segment_ranges.items() if s in campaign.segments)

    def _draw_purchase(
        self, campaign: Campaign, intent_at: float, checkout_rate: float, rng: random.Random
    ) -> tuple[str, float, float | None]:
        """The draws of a purchase: the SPU, the add-to-cart time and the checkout time (None when
        the cart is abandoned). Taken whether or not the purchase happens (a ghost's are dropped)."""
        spu_id = rng.choice(campaign.spus)
        t_cart = intent_at + rng.expovariate(1 / self.traffic.delay_mean_s("add_to_cart"))
        if rng.random() >= checkout_rate:
            return spu_id, t_cart, None
        return spu_id, t_cart, t_cart + rng.expovariate(1 / self.traffic.delay_mean_s("checkout"))

    def _purchase(
        self, campaign: Campaign, user: int, spu_id: str, t_cart: float, t_buy: float | None, channel: str | None
    ) -> None:
        """Schedule an add-to-cart and, unless abandoned, its checkout, with the checkout's cause:
        the campaign's view on `channel`, or organic (channel None)."""
        cid = campaign.campaign_id
        user_id = f"u{user:07d}"
        spu = self._spus[spu_id]
        product = _Product(spu_id=spu.spu_id, value_minor=spu.price_minor, currency=spu.currency)
        self._schedule(t_cart, AddToCart(**self._event_head("a", user_id, t_cart), **product), cid)
        if t_buy is None:
            return
        if channel is not None:
            # a repeat buyer of the campaign converts more on its later ads: the ad's own effect
            # (organic purchases do not count, so the holdout comparison sees only what ads cause)
            self._buyers.add((user, cid))
        order = self._event_head("o", user_id, t_buy)
        self._schedule(t_buy, Checkout(**order, **product, order_id=self._next_id("order")), cid)
        gmv_minor = round(spu.price_minor * (self.scenario.fx.minor_rate(spu.currency) or 1.0))
        cause = OrderCause(user_id, cid if channel is not None else None, channel, t_buy, gmv_minor)
        self.truth.record_order(order["event_id"], cause, cid)

    def advance(self, until: float) -> list[UserAction]:
        """Run the simulated clock to `until`; return the events that happened, in event-time order."""
        while self.now + self.cfg.tick_s <= until:
            self._serve_tick(self.now, self.cfg.tick_s)
            self.now += self.cfg.tick_s
        return list(self._drain(min(until, self.now)))

    def _drain(self, until: float) -> Iterator[UserAction]:
        while self._pending and self._pending[0][0] <= until:
            yield heapq.heappop(self._pending)[2]
