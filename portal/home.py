"""`/`: the portal's home. A person who acts for one organisation goes straight to its inbox;
one with several chooses the organisation to act for (`/?org=…` is the switcher's choice)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from oix.access import requester_of
from portal.layout import organisations_of, render


async def home(request: Request) -> Response:
    organisations = await organisations_of(request, requester_of(request).principal)
    chosen = request.query_params.get("org", "")
    codes = [choice.code for choice in organisations]
    if chosen in codes or (not chosen and len(codes) == 1):
        return RedirectResponse(f"/orgs/{chosen or codes[0]}/inbox", status_code=303)
    return await render(request, "home.html", {"choices": organisations})


ROUTES = [Route("/", home, methods=["GET"])]
