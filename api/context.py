"""What the JSON API routes are given, and the little they share: reading a JSON body and
answering with one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from dicomweb.errors import BadRequest, UnsupportedMediaType
from exchange.administration import Administration
from exchange.audit import AuditTrail

MAX_JSON_BYTES = 1 << 20


@dataclass(frozen=True)
class ApiContext:
    admin: Administration
    audit: AuditTrail


def api_of(request: Request) -> ApiContext:
    return request.app.state.api


async def json_body(request: Request) -> dict[str, Any]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise BadRequest(f"the JSON body is larger than {MAX_JSON_BYTES} bytes")
    if body and not request.headers.get("content-type", "").split(";")[0].strip().endswith("json"):
        # A cross-site form cannot send application/json without a CORS preflight.
        raise UnsupportedMediaType("send the body as application/json")
    try:
        value = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object")
    return value


def query_time(text: str | None, name: str) -> datetime | None:
    """A time in a query parameter: ISO 8601, UTC unless it says otherwise; None if absent."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 date or time, e.g. 2026-11-01 or 2026-11-01T08:00:00Z, "
                         f"not '{text}'") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def query_count(text: str | None, name: str, default: int, maximum: int | None) -> int:
    """A count in a query parameter (limit, offset): `default` if absent, at most `maximum`."""
    if text is None:
        return default
    if not text.isdigit() or (maximum is not None and not 0 < int(text) <= maximum):
        raise BadRequest(f"{name} must be a whole number" + (f" from 1 to {maximum}" if maximum else ""))
    return int(text)


def json_response(value: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status_code=status, media_type="application/json")
