"""`/api/me`: who the caller is signed in as, and their role in each organisation."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.context import json_response
from oix.access import requester_of, session_of


async def me(request: Request) -> Response:
    """Also the session's CSRF token, for pages and scripts acting through a session cookie."""
    principal = requester_of(request).principal
    session = session_of(request)
    return json_response({
        "csrf_token": session.csrf_token if session else None,
        "actor": principal.actor, "kind": principal.kind.value, "name": principal.name,
        "memberships": {org: role.value for org, role in sorted(principal.memberships.items())},
        "every_organisation": principal.every_organisation.value if principal.every_organisation else None,
    })


ROUTES = [Route("/me", me, methods=["GET"])]
