"""The Redis backend of the partition state store: the only module that knows Redis key names and
the Lua scripts' argument encoding.

Layout (every key of partition p shares the hash tag `{pN}`, so one script stays atomic on
Redis Cluster; `ns` is the topic prefix, so two pipelines can share one Redis):

    ns:{p3}:meta          hash   epoch, off:<topic>, wm:<topic>, top:<topic> (the latest accepted
                                 event times the watermark is computed from, processor.py)
    ns:{p3}:tot           hash   all-time figures (fields below)
    ns:{p3}:b:<bucket>    hash   the same fields for one event-time bucket (expires)
    ns:{p3}:u:<user_id>   string the user's journey state (expires)
    ns:{p3}:paths         hash   journey path counts for the data-driven model
    ns:{p3}:ids:<topic>   zset   applied event ids scored by event time, back to the topic's
                                 watermark minus the allowed lateness (dedup, processor.py)
    ns:{p3}:r:<bucket>:<campaign>:<channel>, ns:{p3}:e:<bucket>:<campaign>
                          HyperLogLog  reach, users with an engaged view (expire)
    ns:{p3}:aud:<name>    zset   remarketing audiences (audiences.py); aud:last_checkout a hash
    ns:bids, ns:markov:weights, ns:markov:value_weights, ns:optimizer[:...]   the optimizer's and the worker's global keys

Fields are integers: `c|<campaign>|<channel>|views|spend`, `c|<campaign>|<channel>|<model>|<kind>`
(micro-conversions) and `...|gmv` (minor units), `k|<creator>|...` the same per creator, `t|...`
totals over every processed event, `u|<kind>` unattributed conversions.

The scripts get each partition's key prefix (`Keys.prefix`) as an argument and add the suffixes
above (`Keys.SUFFIXES`; a unit test checks the scripts use exactly those): building ~1,000 key
names per batch in the script spares the client encoding each as an argument.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

from stream_processors.processor import BatchPlan
from stream_processors.progress import KnownIds, PartitionMeta
from stream_processors.redis_connect import AsyncClient, SyncClient
from stream_processors.store.base import (
    AUDIENCES,
    FencedError,
    OffsetConflict,
    Reach,
    ReachQuery,
    audience_cutoffs,
    latest_watermark,
    most_recent,
    reach_queries,
    sum_hashes,
    window_buckets,
)

APPLY_SCRIPT = resources.files("stream_processors").joinpath("apply_batch.lua").read_text()
READ_SCRIPT = resources.files("stream_processors").joinpath("read_batch.lua").read_text()


@dataclass(frozen=True, slots=True)
class Keys:
    namespace: str

    # Suffixes after a partition's prefix; apply_batch.lua and read_batch.lua build the same.
    SUFFIXES = ("meta", "tot", "paths", "b:", "u:", "ids:", "aud:", "r:", "e:")

    def tag(self, partition: int) -> str:
        return f"{self.namespace}:{{p{partition}}}"

    def prefix(self, partition: int) -> str:
        """What every key of the partition starts with (the scripts build key names from it)."""
        return f"{self.tag(partition)}:"

    @staticmethod
    def reach_suffix(bucket: int, campaign: str, channel: str) -> str:
        """Reach HyperLogLog of a campaign/channel/bucket, after the partition's prefix."""
        return f"r:{bucket}:{campaign}:{channel}"

    @staticmethod
    def engaged_reach_suffix(bucket: int, campaign: str) -> str:
        """Users with an engaged view of a campaign in a bucket, after the partition's prefix."""
        return f"e:{bucket}:{campaign}"

    def reach(self, partition: int, bucket: int, campaign: str, channel: str) -> str:
        return self.prefix(partition) + self.reach_suffix(bucket, campaign, channel)

    def engaged_reach(self, partition: int, bucket: int, campaign: str) -> str:
        return self.prefix(partition) + self.engaged_reach_suffix(bucket, campaign)

    def meta(self, partition: int) -> str:
        return f"{self.tag(partition)}:meta"

    def totals(self, partition: int) -> str:
        return f"{self.tag(partition)}:tot"

    def paths(self, partition: int) -> str:
        return f"{self.tag(partition)}:paths"

    def user(self, partition: int, user_id: str) -> str:
        return f"{self.tag(partition)}:u:{user_id}"

    def event_ids(self, partition: int, topic: str) -> str:
        """The partition's applied event ids of `topic`."""
        return f"{self.tag(partition)}:ids:{topic}"

    def bucket(self, partition: int, bucket: int) -> str:
        return f"{self.tag(partition)}:b:{bucket}"

    def audience(self, partition: int, audience: str) -> str:
        """An audience's sorted set (or `last_checkout`, a hash)."""
        return f"{self.tag(partition)}:aud:{audience}"

    def markov_weights(self) -> str:
        return f"{self.namespace}:markov:weights"

    def markov_value_weights(self) -> str:
        """The Markov model's value weights (absent: the count weights also split value)."""
        return f"{self.namespace}:markov:value_weights"

    def bids(self) -> str:
        return f"{self.namespace}:bids"

    def optimizer(self, suffix: str | None = None) -> str:
        """The optimizer's round counter hash, or its `suffix` key (state, paused, overrides, ...)."""
        return f"{self.namespace}:optimizer" + (f":{suffix}" if suffix else "")


class _FigureKeys:
    """Which hashes each query sums; shared by the sync and async readers."""

    def __init__(self, keys: Keys, partitions: int, bucket_s: int) -> None:
        self.keys = keys
        self.all_partitions = list(range(partitions))
        self.bucket_s = bucket_s

    def parts(self, partitions: Iterable[int] | None) -> list[int]:
        return self.all_partitions if partitions is None else sorted(partitions)

    def totals(self, partitions: Iterable[int] | None) -> list[str]:
        return [self.keys.totals(p) for p in self.parts(partitions)]

    def window(self, start: float, end: float, partitions: Iterable[int] | None) -> list[str]:
        buckets = window_buckets(start, end, self.bucket_s)
        return [self.keys.bucket(p, b) for p in self.parts(partitions) for b in buckets]

    def metas(self, partitions: Iterable[int] | None) -> list[str]:
        return [self.keys.meta(p) for p in self.parts(partitions)]

    def paths(self) -> list[str]:
        return [self.keys.paths(p) for p in self.all_partitions]


class RedisPartitionStore:
    """The worker's store (PartitionStateStore). Opens no connection until first used.

    One round trip to read a batch's inputs (read_batch.lua) and one atomic call to apply it
    (apply_batch.lua): the figures, user states, journey paths, reach and audiences all move with
    the offsets, so a crash at any point neither loses nor repeats any of them."""

    def __init__(
        self,
        client: AsyncClient,
        keys: Keys,
        user_ttl_s: int,
        bucket_ttl_s: int,
        reach_ttl_s: int = 3 * 3600,
        audience_expiry_s: Mapping[str, float] | None = None,
        partitions: int = 1,
        bucket_s: int = 60,
    ) -> None:
        self.redis = client
        self.keys = keys
        self._user_ttl = user_ttl_s
        self._bucket_ttl = bucket_ttl_s
        self._reach_ttl = reach_ttl_s
        self._audience_expiry = audience_expiry_s
        self._script = client.register_script(APPLY_SCRIPT)
        self._read = client.register_script(READ_SCRIPT)
        self._k = _FigureKeys(keys, partitions, bucket_s)

    async def claim(self, partition: int) -> str:
        """Become the partition's writer: bump its epoch, which fences every older writer."""
        return str(await self.redis.hincrby(self.keys.meta(partition), "epoch", 1))

    async def read(
        self, partition: int, user_ids: Sequence[str], event_ids: Sequence[str] = ()
    ) -> tuple[PartitionMeta, dict[str, bytes | None], KnownIds]:
        """The partition's meta, the users' stored states, and which of `event_ids` it remembers
        applying: id -> [(topic, event time)]."""
        reply = await self._read(
            keys=[self.keys.meta(partition)],
            args=[self.keys.prefix(partition), " ".join(user_ids), " ".join(event_ids)],
        )
        flat = reply[0]
        meta = PartitionMeta.from_hash(dict(zip(flat[::2], flat[1::2], strict=True)))
        found = reply[1]
        known: dict[str, list[tuple[str, float]]] = {}
        for i in range(0, len(found), 3):
            known.setdefault(text(found[i]), []).append((text(found[i + 1]), float(found[i + 2])))
        return meta, dict(zip(user_ids, reply[2:], strict=True)), known

    async def apply(self, plan: BatchPlan, epoch: str) -> None:
        p = plan.partition
        keys = [self.keys.meta(p), self.keys.totals(p), self.keys.paths(p)]
        fields = self.apply_fields(plan, epoch)
        result = await self._script(keys=keys, args=named_args(fields))
        status = text(result[0])
        if status == "FENCED":
            raise FencedError.superseded(p, epoch, text(result[1]))
        if status == "CONFLICT":
            raise OffsetConflict.moved(p, text(result[1]), text(result[2]))

    def apply_fields(self, plan: BatchPlan, epoch: str) -> dict[str, str | bytes | int]:
        """apply_batch.lua's arguments by name (its header documents each); `named_args` encodes
        them."""
        states = plan.user_states
        sig = plan.signals
        return {
            "epoch": epoch,
            "prefix": self.keys.prefix(plan.partition),
            "offsets": _offsets(plan),
            "user_ttl": self._user_ttl,
            "state_index": "".join([f"{user} {len(state)} " for user, state in states.items()]),
            "states": b"".join(states.values()),
            "bucket_ttl": self._bucket_ttl,
            "increments": _increments(plan),
            "paths": "".join(f"{name} {amount}\n" for name, amount in plan.journey_paths.items() if amount),
            "reach_ttl": self._reach_ttl,
            "reach": _reach(plan),
            "checkouts": _times(sig.checkouts),
            "carts": _times(sig.carts),
            "engagements": _times(sig.engagements),
            "audience_cutoffs": self._audience_cutoffs(plan),
            "event_ids": _event_ids(plan),
        }

    def _audience_cutoffs(self, plan: BatchPlan) -> str:
        cut = audience_cutoffs(plan, self._audience_expiry)
        return "" if cut is None else " ".join(repr(cut[a]) for a in ("cart_abandoners", "engaged", "buyers"))

    # --- figures (AsyncFigureSource) --------------------------------------------------------------
    async def _hgetall(self, keys: list[str]) -> list[Mapping[bytes, bytes]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
            return list(await pipe.execute())

    async def totals(self, partitions: Iterable[int] | None = None) -> dict[str, int]:
        return sum_hashes(await self._hgetall(self._k.totals(partitions)))

    async def window(
        self, start: float, end: float, partitions: Iterable[int] | None = None
    ) -> dict[str, int]:
        return sum_hashes(await self._hgetall(self._k.window(start, end, partitions)))

    async def metas(self, partitions: Iterable[int] | None = None) -> dict[int, PartitionMeta]:
        raw = await self._hgetall(self._k.metas(partitions))
        return {p: PartitionMeta.from_hash(h) for p, h in zip(self._k.parts(partitions), raw, strict=True)}

    async def watermark(self, partitions: Iterable[int] | None = None) -> float | None:
        return latest_watermark(await self.metas(partitions))

    async def journey_paths(self) -> dict[str, int]:
        return sum_hashes(await self._hgetall(self._k.paths()))

    async def reach(
        self,
        partitions: Iterable[int],
        buckets: list[int],
        campaign_channels: Mapping[str, Iterable[str]],
        label: Mapping[str, str] | None = None,
    ) -> Reach:
        """PFCOUNT of the union of each partition's HyperLogLogs over `buckets` (one call, one hash
        slot: fine on Redis Cluster), summed over partitions (base.reach_queries)."""
        queries = reach_queries(partitions, buckets, campaign_channels, label)
        if not queries:
            return Reach()
        async with self.redis.pipeline(transaction=False) as pipe:
            for query in queries:
                pipe.pfcount(*self._reach_keys(query))
            counts = await pipe.execute()
        return Reach.counted(queries, counts)

    def _reach_keys(self, query: ReachQuery) -> list[str]:
        p = query.partition
        keys = [self.keys.reach(p, b, campaign, channel) for b, campaign, channel in query.reach_sets]
        return keys + [self.keys.engaged_reach(p, b, campaign) for b, campaign in query.engaged_sets]

    async def save_channel_weights(
        self, weights: Mapping[str, float], value_weights: Mapping[str, float] | None = None
    ) -> None:
        await self.redis.set(self.keys.markov_weights(), json.dumps(dict(weights)))
        if value_weights:
            await self.redis.set(self.keys.markov_value_weights(), json.dumps(dict(value_weights)))

    async def close(self) -> None:
        await self.redis.aclose()


class FigureReader:
    """Blocking figures (FigureSource) for the report, the optimizer and the CLI."""

    def __init__(self, client: SyncClient, keys: Keys, partitions: int, bucket_s: int) -> None:
        self.redis = client
        self.keys = keys
        self._k = _FigureKeys(keys, partitions, bucket_s)
        self.bucket_s = bucket_s
        self.partitions = partitions

    def _hgetall(self, keys: list[str]) -> list[Mapping[bytes, bytes]]:
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        return list(pipe.execute())

    def totals(self, partitions: Iterable[int] | None = None) -> dict[str, int]:
        return sum_hashes(self._hgetall(self._k.totals(partitions)))

    def window(self, start: float, end: float, partitions: Iterable[int] | None = None) -> dict[str, int]:
        return sum_hashes(self._hgetall(self._k.window(start, end, partitions)))

    def metas(self, partitions: Iterable[int] | None = None) -> dict[int, PartitionMeta]:
        raw = self._hgetall(self._k.metas(partitions))
        return {p: PartitionMeta.from_hash(h) for p, h in zip(self._k.parts(partitions), raw, strict=True)}

    def watermark(self) -> float | None:
        return latest_watermark(self.metas())

    def journey_paths(self) -> dict[str, int]:
        return sum_hashes(self._hgetall(self._k.paths()))

    def audience(
        self, audience: str, limit: int = 1000, partitions: Iterable[int] | None = None
    ) -> list[tuple[str, float]]:
        """Members, most recent first, across partitions (the scheduler's view)."""
        if audience not in AUDIENCES:
            raise KeyError(audience)
        pipe = self.redis.pipeline(transaction=False)
        for p in self._k.parts(partitions):
            pipe.zrevrange(self.keys.audience(p, audience), 0, limit - 1, withscores=True)
        return most_recent(((text(m), float(s)) for rows in pipe.execute() for m, s in rows), limit)

    def audience_sizes(self) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        n = self.partitions
        for audience in AUDIENCES:
            for p in range(n):
                pipe.zcard(self.keys.audience(p, audience))
        counts = pipe.execute()
        return {a: sum(counts[i * n : (i + 1) * n]) for i, a in enumerate(AUDIENCES)}

    def bids(self) -> dict[str, float]:
        """The optimizer's current bids, `campaign|channel` -> bid."""
        return {text(k): float(v) for k, v in self.redis.hgetall(self.keys.bids()).items()}


def named_args(fields: Mapping[str, str | bytes | int]) -> list[str | bytes | int]:
    """A script's ARGV for named arguments: ARGV[1] the names, space-separated, then the values in
    that order. The script reads them into a table by name and refuses a call whose names are not
    exactly the ones it reads, so neither side depends on an order (one argument more than
    positional ones: the client pays per argument encoded)."""
    return [" ".join(fields), *fields.values()]


def _offsets(plan: BatchPlan) -> str:
    return "".join(
        f"{topic} {tp.expected_offset} {tp.new_offset} {_mark(tp.watermark)} "
        f"{','.join(map(repr, tp.latest)) or '-'}\n"
        for topic, tp in sorted(plan.progress.items())
    )


def _increments(plan: BatchPlan) -> str:
    return "".join(
        [
            f"{'-' if bucket is None else bucket} {name} {amount}\n"
            for (bucket, name), amount in plan.increments.by_key.items()
            if amount
        ]
    )


def _reach(plan: BatchPlan) -> str:
    sig = plan.signals
    reach = [f"{Keys.reach_suffix(b, c, ch)} {' '.join(users)}\n" for (b, c, ch), users in sig.reach.items()]
    reach += [
        f"{Keys.engaged_reach_suffix(b, c)} {' '.join(users)}\n"
        for (b, c), users in sig.engaged_reach.items()
    ]
    return "".join(reach)


def _event_ids(plan: BatchPlan) -> str:
    """Per topic, the event time below which its ids are forgotten, and its new ids."""
    lines = []
    for topic in sorted(plan.new_ids.keys() | plan.forget_ids_before.keys()):
        forget = plan.forget_ids_before.get(topic)
        ids = "".join([f" {i} {at!r}" for i, at in plan.new_ids.get(topic, ())])
        lines.append(f"{topic} {'-' if forget is None else repr(forget)}{ids}\n")
    return "".join(lines)


def _mark(at: float) -> str:
    return "-" if at == float("-inf") else repr(at)


def _times(times: Mapping[str, float]) -> str:
    return "".join([f"{user} {at!r}\n" for user, at in times.items()])


def text(value: bytes | str | int) -> str:
    """Redis replies are bytes (or str with decode_responses): one way to read them."""
    return value.decode() if isinstance(value, bytes) else str(value)
