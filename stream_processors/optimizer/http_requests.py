"""Requests and errors of the optimizer's HTTP API (http.py): the query and body models, their
parsing, and every failure answered as JSON `{"error": "<reason>"}`, including the requests
aiohttp refuses before any handler runs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger("seedloop.optimizer.http")

MAX_BODY = 4096
JSON_TYPE = "application/json"

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- request models ----------------------------------------------------------------------------
class DecisionsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    limit: int = Field(default=100, ge=1, le=1000)


class AudienceQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    limit: int = Field(default=1000, ge=1, le=100_000)


class BidBody(BaseModel):
    # strict: `true` and `"1"` are not bids (lax mode would read them as 1.0).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    bid: float = Field(gt=0, allow_inf_nan=False)


# --- errors ------------------------------------------------------------------------------------
class ApiError(Exception):
    """A request the API refuses: answered as `{"error": reason}` with this status."""

    def __init__(
        self, status: int, reason: str, headers: dict[str, str] | None = None, *, close: bool = False
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}
        self.close = close  # the connection cannot carry another request (a body left half-read)


def error_response(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": reason}, status=status, headers=headers)


def describe(exc: ValidationError, what: str) -> str:
    """Pydantic's errors as one line, without echoing the input back (it may be large)."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return f"invalid {what}: " + "; ".join(parts)


# Reasons for the errors aiohttp raises itself (routing, body size).
AIOHTTP_REASONS = {
    404: "not found",
    405: "method not allowed",
    413: f"request body over {MAX_BODY} bytes",
}


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every failure as JSON; bound the body before anything reads it."""
    try:
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise ApiError(413, AIOHTTP_REASONS[413])
        return await handler(request)
    except ApiError as exc:
        resp = error_response(exc.status, exc.reason, exc.headers)
        if exc.close:
            resp.force_close()
        return resp
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # Keep `Allow` on a 405; the rest of aiohttp's headers describe its plain-text body.
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, AIOHTTP_REASONS.get(exc.status, exc.reason.lower()), headers)
    except redis.RedisError:
        log.exception("HTTP request failed: Redis unavailable", extra={"path": request.path})
        return error_response(503, "Redis unavailable")
    except Exception:
        log.exception("HTTP request failed", extra={"path": request.path})
        return error_response(500, "internal error")


class JsonErrorProtocol(web.RequestHandler):
    """aiohttp answers a request it cannot parse (a negative or non-numeric Content-Length, a garbage
    request line, oversized headers) before any middleware runs, in plain text: answer in JSON like
    every other error. The connection is closed after it: the stream cannot be resynchronised."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # A response is already under way: no second one can follow (as aiohttp itself does).
            raise ConnectionError("response already started; cannot send an error response")
        if status >= 500:
            log.error("HTTP request failed", exc_info=exc)
            reason = "internal error"
        else:
            # Only the first line: the rest quotes the offending bytes, which may hold a token.
            reason = (message or "malformed HTTP request").splitlines()[0].rstrip(": ")[:200]
            log.info(
                "malformed HTTP request rejected", extra={"status": status, "error_class": type(exc).__name__}
            )
        resp = error_response(status, reason)
        resp.force_close()
        return resp


# --- parsing -----------------------------------------------------------------------------------
def parse_query(request: web.Request, model: type[M]) -> M:
    query = request.query
    repeated = sorted({k for k in query if len(query.getall(k)) > 1})
    if repeated:
        raise ApiError(400, f"invalid query: repeated parameter {', '.join(repeated)}")
    try:
        return model.model_validate(dict(query))
    except ValidationError as exc:
        raise ApiError(400, describe(exc, "query")) from exc


async def parse_body(request: web.Request, model: type[M], timeout_s: float) -> M:
    if request.content_type != JSON_TYPE:
        raise ApiError(415, f"Content-Type must be {JSON_TYPE}")
    try:
        async with asyncio.timeout(timeout_s):
            raw = await request.read()  # past client_max_size (a chunked body): HTTPRequestEntityTooLarge
    except TimeoutError as exc:
        raise ApiError(408, f"request body not received within {timeout_s:g} s", close=True) from exc
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise ApiError(400, describe(exc, "body")) from exc
