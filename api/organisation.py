"""`/api/orgs/{org}`: an organisation's directory entry; its admins change its details (name,
kind, contact, retention of received copies, identity domain of its patient IDs)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.context import json_body, json_response
from oix.access import requester_of
from storage.tables import Organisation


def describe(organisation: Organisation) -> dict:
    return {"code": organisation.slug, "name": organisation.name, "kind": organisation.kind,
            "contact": organisation.contact, "retention_days": organisation.retention_days,
            "identity_domain": organisation.identity_domain}


async def organisation_details(request: Request) -> Response:
    found = await run_in_threadpool(request.app.state.services.directory.require, request.path_params["org"])
    return json_response(describe(found))


async def change_organisation(request: Request) -> Response:
    """Body: any of name, kind, contact, retention_days, identity_domain."""
    body = await json_body(request)
    changed = await run_in_threadpool(request.app.state.services.admin.update_organisation, requester_of(request),
                                      request.path_params["org"], body)
    return json_response(describe(changed))


ROUTES = [
    Route("/orgs/{org}", organisation_details, methods=["GET"]),
    Route("/orgs/{org}", change_organisation, methods=["PATCH"]),
]
