"""`POST /api/orgs/{org}/transfers/{transfer}/retain` and `…/release`: the destination keeps a
transfer's copies past its retention period, or lets them expire with it again."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.context import json_response
from api.transfers import describe_view
from oix.access import requester_of


def _retention_step(name: str):
    async def step(request: Request) -> Response:
        retention = request.app.state.services.retention
        view = await run_in_threadpool(getattr(retention, name), request.path_params["org"],
                                       request.path_params["transfer"], requester_of(request))
        return json_response({**describe_view(view), "retained": view.transfer.retained})

    step.__name__ = f"{name}_transfer"
    return step


ROUTES = [
    Route("/orgs/{org}/transfers/{transfer}/retain", _retention_step("retain"), methods=["POST"]),
    Route("/orgs/{org}/transfers/{transfer}/release", _retention_step("release"), methods=["POST"]),
]
