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

from producers.scenario import Campaign, Scenario
from producers.scheduler import AdScheduler
from producers.traffic import TrafficModel
from schemas.events import AddToCart, Channel, Checkout, Follow, UserAction, View

STREAM_SLOT_S = 60.0  # the random streams are reseeded once a simulated minute


@dataclass(frozen=True, slots=True)
class SimConfig:
    seed: int = 7
    users: int = 50_000
    start_ts: float = datetime(2026, 11, 11, tzinfo=UTC).timestamp()
    tick_s: float = 10.0
    creatives_per_channel: int = 3


@dataclass(slots=True)
class GroundTruth:
    """What really caused each conversion: known to the simulator only, used by evaluations."""

    caused_checkouts: dict[str, int] = field(default_factory=dict)
    caused_gmv_minor: dict[str, int] = field(default_factory=dict)
    spend_minor: dict[str, int] = field(default_factory=dict)
    views: dict[str, int] = field(default_factory=dict)


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
        self.truth = GroundTruth()
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
                    if not self.scheduler.can_serve(campaign.campaign_id, cost_minor, at):
                        break
                    self.scheduler.record_spend(campaign.campaign_id, cost_minor, at)
                    self._serve_view(campaign, channel, bid, cost_minor, at, rng)

    def _event_head(self, prefix: str, user_id: str, at: float) -> _EventHead:
        """The fields every event starts with; its id is taken now, before any the caller takes next."""
        return {"event_id": self._next_id(prefix), "user_id": user_id, "event_time": self._ts(at)}

    def _serve_view(
        self, campaign: Campaign, channel: Channel, bid: float, cost_minor: int, at: float, rng: random.Random
    ) -> None:
        cid = campaign.campaign_id
        user, segment = self._pick_user(campaign, rng)
        user_id = f"u{user:07d}"
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
            cost_minor=cost_minor,
            currency=campaign.currency,
            engaged=engaged,
        )
        self._schedule(at, view, cid)
        self.truth.spend_minor[cid] = self.truth.spend_minor.get(cid, 0) + cost_minor
        self.truth.views[cid] = self.truth.views.get(cid, 0) + 1
        # Drawn whether or not the user already follows the creator: follows are shared across
        # campaigns (a creator can work for several), the stream's draws must not be.
        follow_draw, follow_delay = rng.random(), rng.expovariate(1 / self.traffic.delay_mean_s("follow"))
        if creator and (user, creator) not in self._follows and follow_draw < rates.follow:
            self._follows.add((user, creator))
            t = at + follow_delay
            self._schedule(
                t, Follow(**self._event_head("f", user_id, t), creator_id=creator, note_id=creative), cid
            )
        if rng.random() < rates.add_to_cart:
            self._serve_purchase(campaign, user, at, rates.checkout, rng)

    def _serve_purchase(
        self, campaign: Campaign, user: int, view_at: float, checkout_rate: float, rng: random.Random
    ) -> None:
        """A view led to an add-to-cart of one of the campaign's SPUs, and perhaps to its checkout."""
        cid = campaign.campaign_id
        user_id = f"u{user:07d}"
        spu = self._spus[rng.choice(campaign.spus)]
        product = _Product(spu_id=spu.spu_id, value_minor=spu.price_minor, currency=spu.currency)
        t_cart = view_at + rng.expovariate(1 / self.traffic.delay_mean_s("add_to_cart"))
        self._schedule(t_cart, AddToCart(**self._event_head("a", user_id, t_cart), **product), cid)
        if rng.random() >= checkout_rate:
            return
        t_buy = t_cart + rng.expovariate(1 / self.traffic.delay_mean_s("checkout"))
        self._buyers.add((user, cid))
        order = self._event_head("o", user_id, t_buy)
        self._schedule(t_buy, Checkout(**order, **product, order_id=self._next_id("order")), cid)
        rate = self.scenario.fx.minor_rate(spu.currency) or 1.0
        self.truth.caused_checkouts[cid] = self.truth.caused_checkouts.get(cid, 0) + 1
        self.truth.caused_gmv_minor[cid] = self.truth.caused_gmv_minor.get(cid, 0) + round(
            spu.price_minor * rate
        )

    def advance(self, until: float) -> list[UserAction]:
        """Run the simulated clock to `until`; return the events that happened, in event-time order."""
        while self.now + self.cfg.tick_s <= until:
            self._serve_tick(self.now, self.cfg.tick_s)
            self.now += self.cfg.tick_s
        return list(self._drain(min(until, self.now)))

    def _drain(self, until: float) -> Iterator[UserAction]:
        while self._pending and self._pending[0][0] <= until:
            yield heapq.heappop(self._pending)[2]
