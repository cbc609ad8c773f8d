"""Redis state: the only module that knows key names and talks to Redis for the pipeline.

Layout (every key of partition p shares the hash tag `{pN}`, so one script stays atomic on
Redis Cluster; `ns` is the topic prefix, so two pipelines can share one Redis):

    ns:{p3}:meta          hash   epoch, off:<topic>, wm:<topic>
    ns:{p3}:tot           hash   all-time figures (fields below)
    ns:{p3}:b:<bucket>    hash   the same fields for one event-time bucket (expires)
    ns:{p3}:u:<user_id>   string the user's journey state (expires)
    ns:{p3}:paths         hash   journey path counts for the data-driven model

Fields are integers: `c|<campaign>|<channel>|views|spend`, `c|<campaign>|<channel>|<model>|<kind>`
(micro-conversions) and `...|gmv` (minor units), `k|<creator>|...` the same per creator, `t|...`
totals over every processed event, `u|<kind>` unattributed conversions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

import redis
import redis.asyncio as aioredis

from stream_processors.attribution.journey import Increments
from stream_processors.processor import BatchPlan, PartitionMeta

APPLY_SCRIPT = resources.files("stream_processors").joinpath("apply_batch.lua").read_text()


class FencedError(RuntimeError):
    """A newer owner claimed the partition: this worker must stop writing (it is a zombie)."""

    def __init__(self, message: str, current_epoch: str) -> None:
        super().__init__(message)
        self.current_epoch = current_epoch


class OffsetConflict(RuntimeError):
    """Redis moved since we read it; the caller re-reads and re-plans."""


@dataclass(frozen=True, slots=True)
class Keys:
    namespace: str

    def tag(self, partition: int) -> str:
        return f"{self.namespace}:{{p{partition}}}"

    def meta(self, partition: int) -> str:
        return f"{self.tag(partition)}:meta"

    def totals(self, partition: int) -> str:
        return f"{self.tag(partition)}:tot"

    def paths(self, partition: int) -> str:
        return f"{self.tag(partition)}:paths"

    def user(self, partition: int, user_id: str) -> str:
        return f"{self.tag(partition)}:u:{user_id}"

    def bucket(self, partition: int, bucket: int) -> str:
        return f"{self.tag(partition)}:b:{bucket}"

    def markov_weights(self) -> str:
        return f"{self.namespace}:markov:weights"

    def bids(self) -> str:
        return f"{self.namespace}:bids"

    def optimizer(self) -> str:
        return f"{self.namespace}:optimizer"


class PartitionStore:
    """Async adapter used by the worker. Opens no connection until first used."""

    def __init__(self, client: aioredis.Redis, keys: Keys, user_ttl_s: int, bucket_ttl_s: int) -> None:
        self._redis = client
        self._keys = keys
        self._user_ttl = user_ttl_s
        self._bucket_ttl = bucket_ttl_s
        self._script = client.register_script(APPLY_SCRIPT)

    async def claim(self, partition: int) -> str:
        """Become the partition's writer: bump its epoch, which fences every older writer."""
        return str(await self._redis.hincrby(self._keys.meta(partition), "epoch", 1))

    async def read(
        self, partition: int, user_ids: Sequence[str]
    ) -> tuple[PartitionMeta, dict[str, bytes | None]]:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._keys.meta(partition))
            if user_ids:
                pipe.mget([self._keys.user(partition, u) for u in user_ids])
            results = await pipe.execute()
        meta = PartitionMeta.from_hash(results[0])
        states = dict(zip(user_ids, results[1], strict=True)) if user_ids else {}
        return meta, states

    async def apply(self, plan: BatchPlan, epoch: str) -> None:
        p = plan.partition
        keys: list[str] = [self._keys.meta(p), self._keys.totals(p), self._keys.paths(p)]
        args: list[str | bytes | int] = [epoch, len(plan.progress)]
        for topic, tp in sorted(plan.progress.items()):
            args += [topic, tp.expected_offset, tp.new_offset, repr(tp.watermark)]
        args += [len(plan.user_states), self._user_ttl]
        for user_id, state in plan.user_states.items():
            keys.append(self._keys.user(p, user_id))
            args.append(state)
        buckets, totals = split_increments(plan.increments)
        args += [len(buckets), self._bucket_ttl]
        for bucket, fields in sorted(buckets.items()):
            keys.append(self._keys.bucket(p, bucket))
            args.append(len(fields))
            for name, amount in fields.items():
                args += [name, amount]
        args.append(len(totals))
        for name, amount in totals.items():
            args += [name, amount]
        args.append(len(plan.journey_paths))
        for name, amount in plan.journey_paths.items():
            args += [name, amount]
        result = await self._script(keys=keys, args=args)
        status = text(result[0])
        if status == "FENCED":
            current = text(result[1])
            raise FencedError(f"partition {p}: epoch {epoch} was superseded by {current!r}", current)
        if status == "CONFLICT":
            raise OffsetConflict(f"partition {p}: {text(result[1])} offset is now {text(result[2])}")


def split_increments(incs: Increments) -> tuple[dict[int, dict[str, int]], dict[str, int]]:
    buckets: dict[int, dict[str, int]] = {}
    totals: dict[str, int] = {}
    for (bucket, name), amount in incs.by_key.items():
        if bucket is None:
            totals[name] = amount
        else:
            buckets.setdefault(bucket, {})[name] = amount
    return buckets, totals


def text(value: bytes | str | int) -> str:
    """Redis replies are bytes (or str with decode_responses): one way to read them."""
    return value.decode() if isinstance(value, bytes) else str(value)


def sum_hashes(hashes: Iterable[Mapping[bytes, bytes]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for h in hashes:
        for k, v in h.items():
            key = k.decode()
            out[key] = out.get(key, 0) + int(v)
    return out


def latest_watermark(metas: Mapping[int, PartitionMeta]) -> float | None:
    """The latest event time applied anywhere: 'now' on the event-time clock."""
    marks = [w for meta in metas.values() for w in meta.watermarks.values()]
    return max(marks) if marks else None


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
        """Buckets whose start lies in [start, end)."""
        first = -(-int(start) // self.bucket_s) * self.bucket_s
        return [
            self.keys.bucket(p, b)
            for p in self.parts(partitions)
            for b in range(first, int(end), self.bucket_s)
        ]

    def metas(self, partitions: Iterable[int] | None) -> list[str]:
        return [self.keys.meta(p) for p in self.parts(partitions)]

    def paths(self) -> list[str]:
        return [self.keys.paths(p) for p in self.all_partitions]


class FigureReader:
    """Synchronous queries for the report, the optimizer and the CLI."""

    def __init__(self, client: redis.Redis, keys: Keys, partitions: int, bucket_s: int) -> None:
        self._redis = client
        self._k = _FigureKeys(keys, partitions, bucket_s)
        self.bucket_s = bucket_s
        self.partitions = partitions

    def _hgetall(self, keys: list[str]) -> list[Mapping[bytes, bytes]]:
        pipe = self._redis.pipeline(transaction=False)
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


class AsyncFigureReader:
    """The same queries for the worker's event loop."""

    def __init__(self, client: aioredis.Redis, keys: Keys, partitions: int, bucket_s: int) -> None:
        self._redis = client
        self._k = _FigureKeys(keys, partitions, bucket_s)

    async def _hgetall(self, keys: list[str]) -> list[Mapping[bytes, bytes]]:
        async with self._redis.pipeline(transaction=False) as pipe:
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
