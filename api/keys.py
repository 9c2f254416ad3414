"""`/api/orgs/{org}/keys`: an organisation's admins create, list and revoke its API keys."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.context import api_of, json_body, json_response
from exchange.access import Role
from exchange.api_keys import parse_lifetime
from exchange.errors import InvalidCredentialRequest
from oix.access import requester_of
from storage.tables import ApiKey


def describe(key: ApiKey) -> dict:
    return {
        "key_id": key.key_id, "org": key.org, "role": key.role, "name": key.name,
        "created_by": key.created_by, "created_at": _time(key.created_at), "expires_at": _time(key.expires_at),
        "revoked_at": _time(key.revoked_at), "last_used_at": _time(key.last_used_at),
    }


async def list_keys(request: Request) -> Response:
    keys = await run_in_threadpool(api_of(request).admin.keys_of, request.path_params["org"])
    return json_response({"keys": [describe(key) for key in keys]})


async def create_key(request: Request) -> Response:
    """Body: {"role": "sender", "name": "PACS upload", "expires": "90d"}. The key is in the answer
    once and never again."""
    body = await json_body(request)
    try:
        role = Role(body.get("role", ""))
    except ValueError:
        raise InvalidCredentialRequest(f"role must be one of {', '.join(r.value for r in Role)}") from None
    lifetime = parse_lifetime(str(body.get("expires", "90d")))
    api = api_of(request)
    requester = requester_of(request)
    issued = await run_in_threadpool(api.admin.create_key, requester, request.path_params["org"], role,
                                     str(body.get("name", ""))[:200], lifetime)
    return json_response({**describe(issued.key), "api_key": issued.secret}, status=201)


async def revoke_key(request: Request) -> Response:
    api = api_of(request)
    await run_in_threadpool(api.admin.revoke_key, requester_of(request), request.path_params["org"],
                            request.path_params["key_id"])
    return Response(status_code=204)


def _time(moment) -> str | None:
    return moment.isoformat() if moment else None


ROUTES = [
    Route("/orgs/{org}/keys", list_keys, methods=["GET"]),
    Route("/orgs/{org}/keys", create_key, methods=["POST"]),
    Route("/orgs/{org}/keys/{key_id}", revoke_key, methods=["DELETE"]),
]

