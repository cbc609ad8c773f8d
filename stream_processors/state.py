"""Former home of the Redis state; kept so existing imports keep working.

The store is `stream_processors.store`: the interface in `store/base.py`, the Redis + Lua backend
(the only owner of key names) in `store/redis_lua.py`, the in-memory one in `store/memory.py`.
"""

from __future__ import annotations

from stream_processors.store.base import FencedError, OffsetConflict, latest_watermark, sum_hashes
from stream_processors.store.redis_lua import FigureReader, Keys, RedisPartitionStore, text

# The Redis backend under its former name.
PartitionStore = RedisPartitionStore

__all__ = [
    "FencedError",
    "FigureReader",
    "Keys",
    "OffsetConflict",
    "PartitionStore",
    "RedisPartitionStore",
    "latest_watermark",
    "sum_hashes",
    "text",
]
