"""A valkey for the unit tests of the Redis state-store backend (started per module, free port)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from seedloop.embedded import redis_process


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    server = redis_process()
    server.start()
    try:
        yield f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.stop()
