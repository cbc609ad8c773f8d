"""The demo's worker pool gives every worker a web port it can bind (no worker is started)."""

from __future__ import annotations

import socket
from pathlib import Path

from seedloop.demo import WorkerPool
from seedloop.embedded import free_port, port_is_free
from seedloop.settings import Settings


def _pool(tmp_path: Path, web_port: int) -> WorkerPool:
    return WorkerPool(Settings(web_port=web_port), 2, tmp_path)


def test_port_0_means_a_free_port_for_every_worker(tmp_path: Path) -> None:
    pool = _pool(tmp_path, 0)
    first = pool.ports["worker-1"] = pool.web_port("worker-1")
    second = pool.web_port("worker-2")
    assert first != 0 and second != 0 and first != second
    assert port_is_free("127.0.0.1", first)


def test_the_first_worker_gets_the_configured_port_unless_it_is_taken(tmp_path: Path) -> None:
    wanted = free_port()
    assert _pool(tmp_path, wanted).web_port("worker-1") == wanted
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", wanted))
        taken.listen()
        assert not port_is_free("127.0.0.1", wanted)
        other = _pool(tmp_path, wanted).web_port("worker-1")
    assert other not in (0, wanted)


def test_a_restarted_worker_keeps_its_port(tmp_path: Path) -> None:
    pool = _pool(tmp_path, 0)
    port = pool.ports["worker-1"] = pool.web_port("worker-1")
    assert pool.web_port("worker-1") == port
