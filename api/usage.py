"""`GET /api/orgs/{org}/usage?from=2026-01&to=2026-12`: an organisation's transfers sent and
received per calendar month (UTC), with the studies, instances and bytes they carried. By
default the twelve months ending with the current one. Counts only: nothing is priced."""

from __future__ import annotations

from datetime import datetime, timezone

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.context import json_response
from dicomweb.errors import BadRequest
from exchange.usage import Month, MonthlyUsage
from storage.usage import Volume


async def usage(request: Request) -> Response:
    params = request.query_params
    last = _month(params.get("to")) or Month.of(datetime.now(timezone.utc))
    first = _month(params.get("from")) or last.minus(11)
    months = await run_in_threadpool(request.app.state.services.usage.months, request.path_params["org"],
                                     first, last)
    return json_response({"org": request.path_params["org"], "from": str(first), "to": str(last),
                          "months": [describe(month) for month in months]})


def describe(usage: MonthlyUsage) -> dict:
    return {"month": str(usage.month), "sent": _volume(usage.sent), "received": _volume(usage.received)}


def _volume(volume: Volume) -> dict:
    return {"transfers": volume.transfers, "studies": volume.studies, "instances": volume.instances,
            "bytes": volume.bytes}


def _month(text: str | None) -> Month | None:
    if not text:
        return None
    try:
        return Month.parse(text)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


ROUTES = [Route("/orgs/{org}/usage", usage, methods=["GET"])]
