"""What every portal page shares: the layout's context (who is signed in, the organisation acted
for and the others one may switch to, the navigation the role allows, the session's CSRF token),
and the page a failure of the exchange layer becomes."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from dicomweb.errors import STATUS_OF_EXCHANGE_ERROR
from exchange.access import Permission, Principal, Role
from exchange.errors import ExchangeError
from oix.access import requester_of, session_of
from portal.context import TEMPLATES
from portal.studies import person_name

TEMPLATES.env.filters["person_name"] = person_name


@dataclass(frozen=True)
class OrganisationChoice:
    code: str
    name: str


async def directory_of(request: Request) -> list[OrganisationChoice]:
    return [OrganisationChoice(org.slug, org.name)
            for org in await run_in_threadpool(request.app.state.services.directory.all)]


async def organisations_of(request: Request, principal: Principal) -> list[OrganisationChoice]:
    """The organisations a person may act for: their memberships (every one when authentication
    is off), named as the directory names them."""
    return [choice for choice in await directory_of(request)
            if principal.every_organisation or choice.code in principal.memberships]


async def render(request: Request, template: str, context: dict, status: int = 200,
                 section: str = "") -> Response:
    """A page in the portal layout; `section` marks the navigation entry it belongs to."""
    principal = requester_of(request).principal
    org = request.path_params.get("org", "")
    session = session_of(request)
    directory = await directory_of(request)
    layout = {
        "org": org, "section": section,
        "organisations": [choice for choice in directory
                          if principal.every_organisation or choice.code in principal.memberships],
        "org_names": {choice.code: choice.name for choice in directory},
        "user": principal.name or principal.actor,
        "signed_in": session is not None,
        "csrf_token": session.csrf_token if session else "",
        "may_send": bool(org) and principal.may(org, Permission.SEND),
        "may_import": bool(org) and principal.may(org, Permission.STORE),
        "is_admin": bool(org) and principal.role_in(org) is Role.ADMIN,
    }
    # Portal pages name patients: a shared or back-button cache keeps none of them (RFC 9111 5.2.2.5).
    return TEMPLATES.TemplateResponse(request, template, {**layout, **context}, status_code=status,
                                      headers={"Cache-Control": "no-store"})


def status_of(failure: ExchangeError) -> int:
    return next((code for kind, code in STATUS_OF_EXCHANGE_ERROR.items() if isinstance(failure, kind)), 400)


async def failure_page(request: Request, message: str, status: int) -> Response:
    return await render(request, "failure.html", {"message": message, "status": status}, status=status)
