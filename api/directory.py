"""`GET /api/orgs`: the directory, so that a sender finds a destination by code or name."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.context import json_response
from api.organisation import describe


async def directory(request: Request) -> Response:
    """`?q=` matches the code or the name, case-insensitively."""
    wanted = request.query_params.get("q", "").strip().lower()
    organisations = await run_in_threadpool(request.app.state.services.directory.all)
    return json_response({"organisations": [
        describe(org) for org in organisations
        if not wanted or wanted in org.slug.lower() or wanted in org.name.lower()]})


ROUTES = [Route("/orgs", directory, methods=["GET"])]
