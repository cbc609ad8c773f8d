"""The optimizer's HTTP server against hostile and careless clients, over real sockets.

The server is the real one (`ControlServer` on a free port) over a real Redis; requests are written
byte by byte on raw sockets, so malformed HTTP reaches the server as sent. Every refused request
gets its status and a JSON `{"error": ...}` reason, and the server keeps answering afterwards.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from seedloop import runtime
from seedloop.embedded import EmbeddedStack
from seedloop.settings import Settings
from stream_processors.optimizer.http import BODY_TIMEOUT_S, IDLE_TIMEOUT_S, MAX_BODY, ControlServer
from stream_processors.optimizer.service import OptimizerService
from tests.conftest import REPO

pytestmark = pytest.mark.integration

TOKEN = "test-token-" + "z" * 16
WRONG_TOKEN = "wrong-token-" + "q" * 16
BIDS = "/api/campaigns/c_tea_kol/bids/kol"  # floor 32, cap 896 (seeds/campaigns.json)
# A hung handler would block for good; anything slower than this is a failure, not a wait.
SLACK_S = 5.0


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    elapsed_s: float

    def json(self) -> Any:
        assert self.headers.get_content_type() == "application/json", (self.status, self.headers, self.body)
        return json.loads(self.body)


def exchange(port: int, data: bytes, timeout_s: float = BODY_TIMEOUT_S + SLACK_S) -> Reply:
    """Send raw bytes, leave the connection open, read one response. Fails on a silent close
    (http.client.RemoteDisconnected) or on no answer within timeout_s (TimeoutError)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        started = time.monotonic()
        sock.sendall(data)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        body = resp.read()
        return Reply(resp.status, resp.headers, body, time.monotonic() - started)


def request(
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    token: str | None = TOKEN,
    content_type: str | None = "application/json",
    extra: tuple[str, ...] = (),
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if body is not None:
        if content_type is not None:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
    lines += extra
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def assert_responsive(port: int) -> None:
    reply = exchange(port, request("GET", "/api/bids", token=None), timeout_s=SLACK_S)
    assert reply.status == 200 and reply.json()["bids"], reply


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One broker and Redis for the module: these tests only read and write the optimizer's keys."""
    with EmbeddedStack(log_dir=tmp_path_factory.mktemp("stack")) as s:
        yield Settings(
            kafka_bootstrap_servers=s.bootstrap,
            redis_url=s.redis_url,
            topic_prefix=f"t{uuid.uuid4().hex[:10]}",
            partitions=4,
            seeds_dir=REPO / "seeds",
        )


@pytest.fixture(scope="module")
def service(services: Settings) -> OptimizerService:
    return runtime.optimizer_of(services, runtime.scenario_of(services))


@pytest.fixture(scope="module")
def server(service: OptimizerService) -> Iterator[ControlServer]:
    srv = ControlServer(service, "127.0.0.1", 0, TOKEN).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def tokenless_server(service: OptimizerService) -> Iterator[ControlServer]:
    srv = ControlServer(service, "127.0.0.1", 0, None).start()
    yield srv
    srv.stop()


PAD = b"x" * (MAX_BODY + 6000)

# (id, raw request, status, a word the JSON reason must contain)
HOSTILE: list[tuple[str, bytes, int, str]] = [
    # Malformed framing: refused by the HTTP parser, still in JSON.
    ("content-length-negative", request("PUT", BIDS, extra=("Content-Type: application/json",
                                                           "Content-Length: -1")) + PAD, 400, "content-length"),
    ("content-length-not-a-number", request("PUT", BIDS, extra=("Content-Length: abc",)) + b"{}", 400,
     "content-length"),
    ("garbage-request-line", b"HELLO\r\n\r\n", 400, ""),
    # Size limits.
    ("body-over-limit", request("PUT", BIDS, b'{"bid": 100.0, "pad": "' + PAD + b'"}'), 413, "bytes"),
    ("declared-over-limit-never-sent", request("PUT", BIDS, extra=("Content-Type: application/json",
                                                                  "Content-Length: 1000000")) + b'{"bid"', 413,
     "bytes"),
    ("chunked-over-limit", request("PUT", BIDS, extra=("Content-Type: application/json",
                                                      "Transfer-Encoding: chunked"))
     + f"{len(PAD):x}\r\n".encode() + PAD + b"\r\n0\r\n\r\n", 413, "bytes"),
    # Query parameters.
    ("limit-not-a-number", request("GET", "/api/decisions?limit=abc"), 400, "limit"),
    ("limit-zero", request("GET", "/api/decisions?limit=0"), 400, "limit"),
    ("limit-too-large", request("GET", "/api/decisions?limit=1001"), 400, "limit"),
    ("limit-repeated", request("GET", "/api/decisions?limit=1&limit=2"), 400, "limit"),
    ("unknown-query-parameter", request("GET", "/api/decisions?limt=5"), 400, "limt"),
    ("audience-limit-not-a-number", request("GET", "/api/audiences/buyers?limit=abc"), 400, "limit"),
    # Bodies.
    ("bid-true", request("PUT", BIDS, b'{"bid": true}'), 400, "bid"),
    ("bid-string", request("PUT", BIDS, b'{"bid": "100"}'), 400, "bid"),
    ("bid-negative", request("PUT", BIDS, b'{"bid": -1}'), 400, "bid"),
    ("bid-zero", request("PUT", BIDS, b'{"bid": 0}'), 400, "bid"),
    ("bid-nan", request("PUT", BIDS, b'{"bid": NaN}'), 400, "bid"),
    ("bid-infinity", request("PUT", BIDS, b'{"bid": Infinity}'), 400, "bid"),
    ("bid-overflows-to-infinity", request("PUT", BIDS, b'{"bid": 1e999}'), 400, "bid"),
    ("bid-null", request("PUT", BIDS, b'{"bid": null}'), 400, "bid"),
    ("bid-above-cap", request("PUT", BIDS, b'{"bid": 897}'), 400, "cap"),
    ("bid-below-floor", request("PUT", BIDS, b'{"bid": 31.9}'), 400, "floor"),
    ("body-empty-object", request("PUT", BIDS, b"{}"), 400, "bid"),
    ("body-extra-field", request("PUT", BIDS, b'{"bid": 100, "campaign": "c_pd_feed"}'), 400, "campaign"),
    ("body-array", request("PUT", BIDS, b"[100]"), 400, "object"),
    ("body-not-json", request("PUT", BIDS, b"bid=100"), 400, "json"),
    ("body-empty", request("PUT", BIDS, b""), 400, "json"),
    ("body-not-utf8", request("PUT", BIDS, b'{"bid": 100, "\xff": 1}'), 400, "body"),
    ("content-type-text", request("PUT", BIDS, b'{"bid": 100}', content_type="text/plain"), 415, "content-type"),
    ("content-type-form", request("PUT", BIDS, b'{"bid": 100}', content_type="application/x-www-form-urlencoded"),
     415, "content-type"),
    ("content-type-missing", request("PUT", BIDS, b'{"bid": 100}', content_type=None), 415, "content-type"),
    # Routes and methods.
    ("unknown-route", request("GET", "/nope"), 404, "not found"),
    ("unknown-route-trailing-slash", request("GET", "/api/bids/"), 404, "not found"),
    ("unknown-control-route", request("POST", "/api/campaigns/c_tea_kol/stop", b""), 404, "not found"),
    ("unknown-campaign", request("PUT", "/api/campaigns/c_nope/bids/kol", b'{"bid": 100}'), 404, "c_nope"),
    ("unknown-channel", request("PUT", "/api/campaigns/c_tea_kol/bids/tv", b'{"bid": 100}'), 404, "tv"),
    ("unknown-campaign-pause", request("POST", "/api/campaigns/c_nope/pause", b""), 404, "c_nope"),
    ("unknown-audience", request("GET", "/api/audiences/nobody"), 404, "nobody"),
    ("get-on-control", request("GET", "/api/campaigns/c_tea_kol/pause"), 405, "method"),
    ("post-on-read-only", request("POST", "/api/bids", b""), 405, "method"),
    ("patch-bid", request("PATCH", BIDS, b'{"bid": 100}'), 405, "method"),
    ("delete-metrics", request("DELETE", "/metrics"), 405, "method"),
    # Authorisation: checked before the campaign exists, so it cannot be probed without the token.
    ("token-missing", request("PUT", BIDS, b'{"bid": 100}', token=None), 401, "missing"),
    ("token-wrong", request("PUT", BIDS, b'{"bid": 100}', token=WRONG_TOKEN), 401, "wrong"),
    ("token-wrong-unknown-campaign", request("POST", "/api/campaigns/c_nope/pause", b"", token=WRONG_TOKEN), 401,
     "wrong"),
    ("token-prefix", request("PUT", BIDS, b'{"bid": 100}', token=TOKEN[:-1]), 401, "wrong"),
    ("token-basic-scheme", request("PUT", BIDS, b'{"bid": 100}', token=None,
                                   extra=(f"Authorization: Basic {TOKEN}",)), 401, "wrong"),
    ("token-not-ascii", request("PUT", BIDS, b'{"bid": 100}', token=None, extra=("Authorization: Bearer t\u00f6ken",)),
     401, "wrong"),
]


@pytest.mark.parametrize(("raw", "status", "word"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_a_hostile_request_gets_its_status_and_a_json_reason(
    server: ControlServer, raw: bytes, status: int, word: str
) -> None:
    reply = exchange(server.port, raw)
    assert reply.status == status, (reply.status, reply.body)
    reason = reply.json()["error"]
    assert isinstance(reason, str) and word.lower() in reason.lower(), reason
    # Answered at once (none of these waits for a body that is not coming), and still serving.
    assert reply.elapsed_s < SLACK_S
    assert_responsive(server.port)


def test_refused_bids_change_nothing(server: ControlServer, service: OptimizerService) -> None:
    before = service.overrides()
    for body in (b'{"bid": true}', b'{"bid": "1"}', b"{}", b'{"bid": 1e999}', b'{"bid": 5000}'):
        assert exchange(server.port, request("PUT", BIDS, body)).status == 400
    assert service.overrides() == before


def test_a_lying_content_length_is_answered_in_time_while_others_are_served(server: ControlServer) -> None:
    """Ten bytes of a declared hundred, connection left open: 408 after BODY_TIMEOUT_S, and the
    server answers other clients meanwhile."""
    lying = request("PUT", BIDS, extra=("Content-Type: application/json", "Content-Length: 100")) + b'{"bid": 10'
    replies: list[Reply | BaseException] = []

    def send() -> None:
        try:
            replies.append(exchange(server.port, lying))
        except BaseException as exc:  # reported by the assertion below
            replies.append(exc)

    t = threading.Thread(target=send)
    t.start()
    time.sleep(0.5)
    started = time.monotonic()
    assert_responsive(server.port)
    assert time.monotonic() - started < 2.0
    t.join(BODY_TIMEOUT_S + 2 * SLACK_S)
    assert replies and isinstance(replies[0], Reply), replies
    reply = replies[0]
    assert reply.status == 408 and "body" in reply.json()["error"], reply
    assert BODY_TIMEOUT_S - 1 <= reply.elapsed_s < BODY_TIMEOUT_S + SLACK_S


def test_a_connection_that_never_finishes_its_headers_is_closed(server: ControlServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=IDLE_TIMEOUT_S + 2 * SLACK_S) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /api/bids HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        assert_responsive(server.port)
        try:
            data = sock.recv(4096)
        except ConnectionResetError:
            data = b""
        elapsed = time.monotonic() - started
    assert data == b"" or data.startswith(b"HTTP/1.1 4"), data
    assert elapsed < IDLE_TIMEOUT_S + SLACK_S


def test_control_is_disabled_without_a_token(tokenless_server: ControlServer) -> None:
    for raw in (
        request("POST", "/api/campaigns/c_tea_kol/pause", b"", token="anything"),
        request("PUT", BIDS, b'{"bid": 100}', token=None),
        request("DELETE", BIDS, token=TOKEN),
    ):
        reply = exchange(tokenless_server.port, raw)
        assert reply.status == 503, reply
        reason = reply.json()["error"]
        assert "control disabled" in reason and "SEEDLOOP_CONTROL_TOKEN" in reason
    # Read-only routes need no token.
    assert_responsive(tokenless_server.port)


def test_valid_requests_keep_their_json_shapes(server: ControlServer, service: OptimizerService) -> None:
    reply = exchange(server.port, request("PUT", BIDS, b'{"bid": 111}'))
    assert reply.status == 200
    assert {"campaign_id": "c_tea_kol", "channel": "kol", "bid": 111.0} in reply.json()["overrides"]
    # An integer bid and a charset parameter are fine.
    reply = exchange(server.port, request("PUT", BIDS, b'{"bid": 112}', content_type="application/json; charset=utf-8"))
    assert reply.status == 200 and service.overrides()[("c_tea_kol", "kol")] == 112.0

    bids = exchange(server.port, request("GET", "/api/bids", token=None)).json()
    assert set(bids) == {"bids", "paused", "overrides"}
    assert {"campaign_id": "c_tea_kol", "channel": "kol", "bid": 112.0} in bids["overrides"]

    reply = exchange(server.port, request("DELETE", BIDS))
    assert reply.status == 200 and ("c_tea_kol", "kol") not in service.overrides()
    assert all(o["campaign_id"] != "c_tea_kol" for o in reply.json()["overrides"])

    paused = exchange(server.port, request("POST", "/api/campaigns/c_tea_kol/pause", b""))
    assert (paused.status, paused.json()) == (200, {"campaign_id": "c_tea_kol", "paused": True})
    resumed = exchange(server.port, request("POST", "/api/campaigns/c_tea_kol/resume"))
    assert (resumed.status, resumed.json()) == (200, {"campaign_id": "c_tea_kol", "paused": False})

    decisions = exchange(server.port, request("GET", "/api/decisions?limit=1000", token=None))
    assert decisions.status == 200 and decisions.json() == {"decisions": []}
    sizes = exchange(server.port, request("GET", "/api/audiences", token=None))
    assert sizes.json() == {"cart_abandoners": 0, "engaged": 0, "buyers": 0}
    members = exchange(server.port, request("GET", "/api/audiences/buyers?limit=100000", token=None))
    assert members.json() == {"audience": "buyers", "members": []}

    metrics = exchange(server.port, request("GET", "/metrics", token=None))
    assert metrics.status == 200 and metrics.headers.get_content_type() == "text/plain"
    assert b"seedloop_" in metrics.body


def test_the_token_is_never_logged(server: ControlServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for raw in (
        request("PUT", BIDS, b'{"bid": 100}'),
        request("PUT", BIDS, b'{"bid": 100}', token=WRONG_TOKEN),
        # A header the parser refuses: its error message quotes the header line.
        request("PUT", BIDS, b"{}", token=None, extra=(f"Authorization: Bearer {TOKEN}\x01",)),
    ):
        exchange(server.port, raw)
    text = caplog.text + "".join(repr(r.__dict__) for r in caplog.records)
    assert TOKEN not in text and WRONG_TOKEN not in text


def test_a_taken_port_raises_oserror(server: ControlServer, service: OptimizerService) -> None:
    """The demo falls back to a free port on OSError."""
    with pytest.raises(OSError):
        ControlServer(service, "127.0.0.1", server.port, TOKEN).start()


def test_stop_closes_the_listener(service: OptimizerService) -> None:
    srv = ControlServer(service, "127.0.0.1", 0, TOKEN).start()
    port = srv.port
    assert_responsive(port)
    srv.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
