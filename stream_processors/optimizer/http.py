"""The optimizer's HTTP endpoint (127.0.0.1:$SEEDLOOP_OPTIMIZER_PORT by default).

Read-only, no token:
    GET  /metrics                                   Prometheus exposition
    GET  /api/bids                                  current bids, paused campaigns, overrides
    GET  /api/decisions?limit=N                     the latest decisions, newest first
    GET  /api/audiences                             remarketing audience sizes
    GET  /api/audiences/{name}?limit=N              members (cart_abandoners | engaged | buyers), newest first
Control, `Authorization: Bearer $SEEDLOOP_CONTROL_TOKEN` required (disabled when no token is set):
    POST   /api/campaigns/{id}/pause | /resume
    PUT    /api/campaigns/{id}/bids/{channel}       body {"bid": 123.0}: pin a bid (manual override)
    DELETE /api/campaigns/{id}/bids/{channel}       clear the override
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stream_processors.audiences import audience_sizes, read_audience
from stream_processors.optimizer.service import OptimizerService

log = logging.getLogger("seedloop.optimizer.http")
MAX_BODY = 4096


class ControlServer:
    def __init__(self, service: OptimizerService, host: str, port: int, token: str | None) -> None:
        self.service = service
        self.token = token
        handler = _make_handler(self)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="optimizer-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> ControlServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _make_handler(server: ControlServer) -> type[BaseHTTPRequestHandler]:
    service = server.service

    class Handler(BaseHTTPRequestHandler):
        server_version = "seedloop-optimizer"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http %s", format % args)

        def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            if not server.token:
                self._send(403, {"error": "control endpoints are disabled: set SEEDLOOP_CONTROL_TOKEN"})
                return False
            given = self.headers.get("Authorization", "")
            expected = f"Bearer {server.token}"
            # Constant-time comparison: the token must not leak through response timing.
            if not hmac.compare_digest(given.encode(), expected.encode()):
                self._send(401, {"error": "missing or wrong bearer token"})
                return False
            return True

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/metrics":
                self._send(200, generate_latest(service.metrics.registry), CONTENT_TYPE_LATEST)
            elif url.path == "/api/bids":
                self._send(
                    200,
                    {
                        "bids": [
                            {"campaign_id": c, "channel": ch, "bid": b}
                            for (c, ch), b in sorted(service.current_bids().items())
                        ],
                        "paused": sorted(service.paused()),
                        "overrides": [
                            {"campaign_id": c, "channel": ch, "bid": b}
                            for (c, ch), b in sorted(service.overrides().items())
                        ],
                    },
                )
            elif url.path == "/api/decisions":
                limit = int(parse_qs(url.query).get("limit", ["100"])[0])
                self._send(200, {"decisions": service.recent_decisions(max(1, min(limit, 1000)))})
            elif url.path == "/api/audiences":
                self._send(200, audience_sizes(service.redis, service.keys, service.reader.partitions))
            elif url.path.startswith("/api/audiences/"):
                name = url.path.rsplit("/", 1)[1]
                limit = int(parse_qs(url.query).get("limit", ["1000"])[0])
                try:
                    members = read_audience(service.redis, service.keys, service.reader.partitions, name,
                                            max(1, min(limit, 100_000)))
                except KeyError:
                    self._send(404, {"error": f"unknown audience {name!r}"})
                    return
                self._send(200, {"audience": name, "members": [{"user_id": u, "at": t} for u, t in members]})
            else:
                self._send(404, {"error": "not found"})

        def _route(self, method: str) -> None:
            parts = [p for p in urlsplit(self.path).path.split("/") if p]
            if len(parts) < 4 or parts[:2] != ["api", "campaigns"]:
                self._send(404, {"error": "not found"})
                return
            if not self._authorised():
                return
            campaign = parts[2]
            try:
                if method == "POST" and len(parts) == 4 and parts[3] in ("pause", "resume"):
                    (service.pause if parts[3] == "pause" else service.resume)(campaign)
                    log.info("campaign %sd by operator", parts[3], extra={"campaign": campaign})
                    self._send(200, {"campaign_id": campaign, "paused": campaign in service.paused()})
                elif len(parts) == 5 and parts[3] == "bids" and method in ("PUT", "DELETE"):
                    channel = parts[4]
                    if method == "PUT":
                        length = int(self.headers.get("Content-Length", "0"))
                        if length > MAX_BODY:
                            self._send(413, {"error": "body too large"})
                            return
                        body = json.loads(self.rfile.read(length) or b"{}")
                        service.override(campaign, channel, float(body["bid"]))
                        log.info(
                            "bid overridden by operator",
                            extra={"campaign": campaign, "channel": channel, "bid": body["bid"]},
                        )
                    else:
                        service.clear_override(campaign, channel)
                    self._send(
                        200,
                        {
                            "overrides": [
                                {"campaign_id": c, "channel": ch, "bid": b}
                                for (c, ch), b in sorted(service.overrides().items())
                            ]
                        },
                    )
                else:
                    self._send(404, {"error": "not found"})
            except KeyError as exc:
                self._send(404, {"error": f"unknown campaign or channel: {exc}"})
            except (ValueError, TypeError) as exc:
                self._send(400, {"error": str(exc)})

        def do_POST(self) -> None:
            self._route("POST")

        def do_PUT(self) -> None:
            self._route("PUT")

        def do_DELETE(self) -> None:
            self._route("DELETE")

    return Handler
