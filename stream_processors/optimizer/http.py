"""The optimizer's HTTP endpoint (127.0.0.1:$SEEDLOOP_OPTIMIZER_PORT by default), on aiohttp.

Read-only, no token:
    GET  /metrics                                   Prometheus exposition
    GET  /api/bids                                  current bids, paused campaigns, overrides
    GET  /api/decisions?limit=N                     the latest decisions, newest first (N: 1-1000, default 100)
    GET  /api/audiences                             remarketing audience sizes
    GET  /api/audiences/{name}?limit=N              members (cart_abandoners | engaged | buyers), newest
                                                    first (N: 1-100000, default 1000)
Control, `Authorization: Bearer $SEEDLOOP_CONTROL_TOKEN` required (503 when no token is set):
    POST   /api/campaigns/{id}/pause | /resume
    PUT    /api/campaigns/{id}/bids/{channel}       `Content-Type: application/json`, body {"bid": 123.0}:
                                                    pin a bid (manual override) within the campaign's
                                                    floor and cap
    DELETE /api/campaigns/{id}/bids/{channel}       clear the override

Every error is JSON, `{"error": "<reason>"}`: 400 malformed HTTP or an invalid query or body, 401 a
missing or wrong token, 404 an unknown route, campaign, channel or audience, 405 a wrong method,
408 a body that does not arrive in time, 413 a body over MAX_BODY bytes, 415 a body that is not
JSON, 503 control disabled or Redis unavailable, 500 anything else (logged).

The service's calls are synchronous (redis-py), so handlers run them in worker threads; the
server has its own event loop in a daemon thread, so `seedloop optimize` and the demo keep their
synchronous `ControlServer(...).start()` / `.stop()`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import threading
from concurrent.futures import Future
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stream_processors.audiences import audience_sizes, read_audience
from stream_processors.optimizer.http_requests import (
    MAX_BODY,
    ApiError,
    AudienceQuery,
    BidBody,
    DecisionsQuery,
    JsonErrorProtocol,
    describe,
    json_errors,
    parse_body,
    parse_query,
)
from stream_processors.optimizer.service import OptimizerService

# The request models, `describe` and MAX_BODY are parts of the API's contract: importable from here.
__all__ = [
    "BODY_TIMEOUT_S",
    "IDLE_TIMEOUT_S",
    "MAX_BODY",
    "AudienceQuery",
    "BidBody",
    "ControlServer",
    "DecisionsQuery",
    "build_app",
    "describe",
]

log = logging.getLogger("seedloop.optimizer.http")

# A declared body must arrive within this long: a client that announces more bytes than it sends
# gets a 408 instead of holding a handler forever.
BODY_TIMEOUT_S = 5.0
# A connection that stays idle this long, or never completes its request headers, is closed.
IDLE_TIMEOUT_S = 5.0
# Open connections get this long to finish when the server stops; start/stop wait at most CALL_TIMEOUT_S.
STOP_TIMEOUT_S = 10.0
CALL_TIMEOUT_S = 30.0


# --- handlers ----------------------------------------------------------------------------------
def overrides_body(service: OptimizerService) -> dict[str, Any]:
    return {
        "overrides": [
            {"campaign_id": c, "channel": ch, "bid": b} for (c, ch), b in sorted(service.overrides().items())
        ]
    }


def bids_body(service: OptimizerService) -> dict[str, Any]:
    return {
        "bids": [
            {"campaign_id": c, "channel": ch, "bid": b}
            for (c, ch), b in sorted(service.current_bids().items())
        ],
        "paused": sorted(service.paused()),
        **overrides_body(service),
    }


class Api:
    """The routes; `token` None disables the control endpoints."""

    def __init__(self, service: OptimizerService, token: str | None, body_timeout_s: float) -> None:
        self.service = service
        # Compare digests, not the strings: equal lengths, so the comparison time says nothing
        # about the token (hmac.compare_digest alone still returns early on a length mismatch).
        self._token_digest = hashlib.sha256(f"Bearer {token}".encode()).digest() if token else None
        self.body_timeout_s = body_timeout_s

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/metrics", self.metrics),
            web.get("/api/bids", self.bids),
            web.get("/api/decisions", self.decisions),
            web.get("/api/audiences", self.audiences),
            web.get("/api/audiences/{name}", self.audience),
            web.post("/api/campaigns/{campaign_id}/pause", self.pause),
            web.post("/api/campaigns/{campaign_id}/resume", self.resume),
            web.put("/api/campaigns/{campaign_id}/bids/{channel}", self.put_bid),
            web.delete("/api/campaigns/{campaign_id}/bids/{channel}", self.delete_bid),
        ]

    # --- read-only ---
    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.service.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def bids(self, request: web.Request) -> web.Response:
        return web.json_response(await asyncio.to_thread(bids_body, self.service))

    async def decisions(self, request: web.Request) -> web.Response:
        q = parse_query(request, DecisionsQuery)
        return web.json_response(
            {"decisions": await asyncio.to_thread(self.service.recent_decisions, q.limit)}
        )

    async def audiences(self, request: web.Request) -> web.Response:
        s = self.service
        return web.json_response(
            await asyncio.to_thread(audience_sizes, s.redis, s.keys, s.reader.partitions)
        )

    async def audience(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        q = parse_query(request, AudienceQuery)
        s = self.service
        try:
            members = await asyncio.to_thread(
                read_audience, s.redis, s.keys, s.reader.partitions, name, q.limit
            )
        except KeyError as exc:
            raise ApiError(404, f"unknown audience {name!r}") from exc
        return web.json_response({"audience": name, "members": [{"user_id": u, "at": t} for u, t in members]})

    # --- control ---
    def authorise(self, request: web.Request) -> None:
        if self._token_digest is None:
            raise ApiError(
                503, "control disabled: set SEEDLOOP_CONTROL_TOKEN to enable the control endpoints"
            )
        given = request.headers.get("Authorization")
        if given is None:
            raise ApiError(401, "missing bearer token", {"WWW-Authenticate": 'Bearer realm="seedloop"'})
        digest = hashlib.sha256(given.encode("utf-8", "surrogateescape")).digest()
        if not hmac.compare_digest(digest, self._token_digest):
            raise ApiError(
                401,
                "wrong bearer token",
                {"WWW-Authenticate": 'Bearer realm="seedloop", error="invalid_token"'},
            )

    def target(self, request: web.Request, with_channel: bool) -> tuple[str, str]:
        """The campaign (and channel) of the path, 404 unless the scenario has it."""
        campaign_id = request.match_info["campaign_id"]
        channel = request.match_info.get("channel", "") if with_channel else ""
        try:
            campaign = self.service.scenario.campaign(campaign_id)
        except KeyError as exc:
            raise ApiError(404, f"unknown campaign {campaign_id!r}") from exc
        if with_channel and channel not in campaign.channels:
            raise ApiError(404, f"campaign {campaign_id!r} has no channel {channel!r}")
        return campaign_id, channel

    async def pause(self, request: web.Request) -> web.Response:
        return await self._set_paused(request, True)

    async def resume(self, request: web.Request) -> web.Response:
        return await self._set_paused(request, False)

    async def _set_paused(self, request: web.Request, paused: bool) -> web.Response:
        self.authorise(request)
        campaign_id, _ = self.target(request, with_channel=False)
        await asyncio.to_thread(self.service.pause if paused else self.service.resume, campaign_id)
        log.info(
            "campaign %s by operator", "paused" if paused else "resumed", extra={"campaign": campaign_id}
        )
        now_paused = campaign_id in await asyncio.to_thread(self.service.paused)
        return web.json_response({"campaign_id": campaign_id, "paused": now_paused})

    async def put_bid(self, request: web.Request) -> web.Response:
        self.authorise(request)
        campaign_id, channel = self.target(request, with_channel=True)
        bid = (await parse_body(request, BidBody, self.body_timeout_s)).bid
        campaign = self.service.scenario.campaign(campaign_id)
        # The controller would clamp an override to [floor, cap] anyway; refusing says so now.
        if not campaign.bid_floor <= bid <= campaign.bid_cap:
            raise ApiError(
                400,
                f"invalid body: bid: must be within the campaign's floor {campaign.bid_floor:g} "
                f"and cap {campaign.bid_cap:g}",
            )
        await asyncio.to_thread(self.service.override, campaign_id, channel, bid)
        log.info(
            "bid overridden by operator", extra={"campaign": campaign_id, "channel": channel, "bid": bid}
        )
        return web.json_response(await asyncio.to_thread(overrides_body, self.service))

    async def delete_bid(self, request: web.Request) -> web.Response:
        self.authorise(request)
        campaign_id, channel = self.target(request, with_channel=True)
        await asyncio.to_thread(self.service.clear_override, campaign_id, channel)
        log.info("bid override cleared by operator", extra={"campaign": campaign_id, "channel": channel})
        return web.json_response(await asyncio.to_thread(overrides_body, self.service))


def build_app(
    service: OptimizerService, token: str | None, body_timeout_s: float = BODY_TIMEOUT_S
) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[json_errors])
    app.add_routes(Api(service, token, body_timeout_s).routes())
    return app


# --- server ------------------------------------------------------------------------------------
class ControlServer:
    """The HTTP server on its own event loop in a daemon thread. start() returns once the port is
    bound (OSError if it cannot be); stop() closes the listener and open connections."""

    def __init__(
        self,
        service: OptimizerService,
        host: str,
        port: int,
        token: str | None,
        *,
        body_timeout_s: float = BODY_TIMEOUT_S,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._app = build_app(service, token, body_timeout_s)
        self._idle_timeout_s = idle_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("the server is not started")
        return int(self._listener.sockets[0].getsockname()[1])

    def start(self) -> ControlServer:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="optimizer-http", daemon=True)
        self._thread.start()
        try:
            self._call(self._open())
        except BaseException:
            self._halt_loop()
            raise
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        try:
            self._call(self._close())
        finally:
            self._halt_loop()

    def _call(self, coro: Any) -> Any:
        assert self._loop is not None
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(CALL_TIMEOUT_S)

    def _halt_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(STOP_TIMEOUT_S)
        if not thread.is_alive():
            loop.close()
        self._loop = None

    async def _open(self) -> None:
        runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=STOP_TIMEOUT_S)
        await runner.setup()
        self._runner = runner
        manager, loop = runner.server, asyncio.get_running_loop()
        assert manager is not None

        def protocol() -> JsonErrorProtocol:
            # access_log=None: no line per request (aiohttp's typing does not say None is allowed).
            return JsonErrorProtocol(
                manager,
                loop=loop,
                access_log=None,  # type: ignore[arg-type]
                keepalive_timeout=self._idle_timeout_s,
            )

        # Our own listener rather than web.TCPSite, for the protocol class that answers unparseable
        # requests in JSON; AppRunner.cleanup() still closes its connections (they register with
        # the runner's server).
        try:
            self._listener = await loop.create_server(
                protocol, self.host, self._requested_port, reuse_address=True
            )
        except BaseException:
            await runner.cleanup()
            self._runner = None
            raise

    async def _close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._listener is not None:
            await self._listener.wait_closed()
        # What is left (a connection still draining a refused body) is ended here, not left pending
        # on a loop that is about to stop.
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in leftover:
            task.cancel()
        for result in await asyncio.gather(*leftover, return_exceptions=True):
            if isinstance(result, Exception):
                log.warning("HTTP connection ended with an error at shutdown", exc_info=result)
