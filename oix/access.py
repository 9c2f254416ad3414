"""Access control, enforced in one place for every route: the policy table below names what
each route and method needs, `guard_routes` wraps every route of the app with the check, and
an app whose routes are not all in the table does not start (so a new route cannot ship open)."""

from __future__ import annotations

import hmac
import html
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode

import orjson
from starlette.requests import HTTPConnection
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exchange.access import ANONYMOUS, Permission, Requester
from exchange.audit import AuditAction, AuditEvent, AuditTrail, Outcome
from exchange.errors import AuthenticationFailed
from exchange.sessions import OpenSession
from oix.authentication import Authenticator
from oix.observability import REQUEST_ID

REQUESTER = "oix.requester"  # the ASGI scope key holding the request's Requester
SESSION = "oix.session"  # and the portal session that authenticated it, if one did
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_FORM_BYTES = 1 << 20


@dataclass(frozen=True)
class Policy:
    signed_in: bool  # credentials needed
    permission: Permission | None = None  # and this permission in the organisation of the URL
    page: bool = False  # a portal page: a browser without credentials is sent to sign in

    def __str__(self) -> str:
        if not self.signed_in:
            return "public"
        return self.permission.value if self.permission else "signed in"


PUBLIC = Policy(signed_in=False)
SIGNED_IN = Policy(signed_in=True)


def needs(permission: Permission) -> Policy:
    return Policy(signed_in=True, permission=permission)


def page_needs(permission: Permission | None) -> Policy:
    """A portal page (HTML): like `needs`, but a browser that is not signed in is redirected to
    the sign-in page and back, and a refusal is a page a person can read."""
    return Policy(signed_in=True, permission=permission, page=True)


SEARCH, RETRIEVE, STORE = needs(Permission.SEARCH), needs(Permission.RETRIEVE), needs(Permission.STORE)
SEND = needs(Permission.SEND)
DELETE, MANAGE, READ_AUDIT = needs(Permission.DELETE), needs(Permission.MANAGE), needs(Permission.READ_AUDIT)
_STUDY = "/dicomweb/{org}/studies/{study}"
_SERIES = _STUDY + "/series/{series}"
_INSTANCE = _SERIES + "/instances/{instance}"

# path template → method → policy. HEAD follows GET.
ROUTE_POLICIES: dict[str, dict[str, Policy]] = {
    "/healthz": {"GET": PUBLIC},
    "/metrics": {"GET": PUBLIC},  # aggregate counters only, no patient data
    "/conformance": {"GET": PUBLIC},
    "/conformance.json": {"GET": PUBLIC},
    "/login": {"GET": PUBLIC, "POST": PUBLIC},
    "/login/oidc": {"GET": PUBLIC},
    "/login/callback": {"GET": PUBLIC},
    "/logout": {"POST": SIGNED_IN},
    "/static/{path:path}": {"GET": PUBLIC},  # the portal's own CSS and JavaScript, no patient data
    "/viewer/{org}/studies/{study}": {"GET": page_needs(Permission.RETRIEVE)},  # the built-in viewer: a retrieve
    # issue 6: an organisation's audit trail and admin pages (portal/audit_page.py, portal/admin.py)
    "/orgs/{org}/audit": {"GET": page_needs(Permission.READ_AUDIT)},
    "/orgs/{org}/admin": {"GET": page_needs(Permission.MANAGE)},
    "/orgs/{org}/admin/members": {"POST": page_needs(Permission.MANAGE)},
    "/orgs/{org}/admin/retention": {"POST": page_needs(Permission.MANAGE)},
    "/orgs/{org}/admin/keys": {"GET": page_needs(Permission.MANAGE), "POST": page_needs(Permission.MANAGE)},
    "/orgs/{org}/admin/keys/{key_id}/revoke": {"POST": page_needs(Permission.MANAGE)},
    "/orgs/{org}/admin/forwarding": {"GET": page_needs(Permission.MANAGE), "POST": page_needs(Permission.MANAGE)},
    "/orgs/{org}/admin/forwarding/{rule}/delete": {"POST": page_needs(Permission.MANAGE)},
    "/orgs/{org}/admin/webhooks": {"GET": page_needs(Permission.MANAGE), "POST": page_needs(Permission.MANAGE)},
    "/orgs/{org}/admin/webhooks/{webhook}/delete": {"POST": page_needs(Permission.MANAGE)},
    "/orgs/{org}/admin/usage": {"GET": page_needs(Permission.MANAGE)},
    "/orgs/{org}/admin/patient-access": {"GET": page_needs(Permission.MANAGE), "POST": page_needs(Permission.MANAGE)},
    "/orgs/{org}/admin/patient-access/{link}/revoke": {"POST": page_needs(Permission.MANAGE)},
    # A patient access link (portal/patient_access.py): the token in the URL is the credential,
    # a bad one is 404 and an expired or revoked one 410; the DICOMweb subset is read-only.
    "/access/{token}": {"GET": PUBLIC},
    "/access/{token}/download": {"GET": PUBLIC},
    "/access/{token}/dicomweb/studies/{study}/metadata": {"GET": PUBLIC},
    "/access/{token}/dicomweb/studies/{study}/series/{series}/metadata": {"GET": PUBLIC},
    "/access/{token}/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}": {"GET": PUBLIC},
    "/access/{token}/dicomweb/studies/{study}/thumbnail": {"GET": PUBLIC},
    "/access/{token}/dicomweb/studies/{study}/series/{series}/thumbnail": {"GET": PUBLIC},
    "/access/{token}/dicomweb/studies/{study}/series/{series}/instances/{instance}/thumbnail": {"GET": PUBLIC},
    "/access/{token}/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered": {"GET": PUBLIC},
    "/access/{token}/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered":
        {"GET": PUBLIC},
    # issue 6: the clinician's journey (portal/home.py, inbox.py, transfer_page.py, send.py, sent.py)
    "/": {"GET": page_needs(None)},  # the home: to the inbox, or choose the organisation to act for
    "/orgs/{org}/inbox": {"GET": page_needs(Permission.SEARCH)},
    "/orgs/{org}/inbox/rows": {"GET": page_needs(Permission.SEARCH)},
    "/orgs/{org}/sent": {"GET": page_needs(Permission.SEARCH)},
    "/orgs/{org}/transfers/{transfer}": {"GET": page_needs(Permission.SEARCH)},
    "/orgs/{org}/transfers/{transfer}/viewed": {"POST": page_needs(Permission.RETRIEVE)},  # opens the images
    "/orgs/{org}/transfers/{transfer}/reports/{instance}": {"GET": page_needs(Permission.RETRIEVE)},
    "/orgs/{org}/transfers/{transfer}/import": {"POST": page_needs(Permission.STORE)},
    "/orgs/{org}/transfers/{transfer}/reject": {"POST": page_needs(Permission.SEND)},
    "/orgs/{org}/transfers/{transfer}/retain": {"POST": page_needs(Permission.SEND)},
    "/orgs/{org}/transfers/{transfer}/release": {"POST": page_needs(Permission.SEND)},
    "/orgs/{org}/transfers/{transfer}/forward": {"POST": page_needs(Permission.SEND)},
    "/orgs/{org}/send": {"GET": page_needs(Permission.SEND), "POST": page_needs(Permission.SEND)},
    "/orgs/{org}/send/report": {"POST": page_needs(Permission.SEND)},  # a PDF made into a report object
    "/api/me": {"GET": SIGNED_IN},
    "/api/orgs/{org}/keys": {"GET": MANAGE, "POST": MANAGE},
    "/api/orgs/{org}/keys/{key_id}": {"DELETE": MANAGE},
    "/api/orgs/{org}/audit": {"GET": READ_AUDIT},
    "/api/orgs": {"GET": SIGNED_IN},
    "/api/orgs/{org}": {"GET": SIGNED_IN, "PATCH": MANAGE},
    "/api/orgs/{org}/webhooks": {"GET": MANAGE, "POST": MANAGE},
    "/api/orgs/{org}/webhooks/{webhook}": {"DELETE": MANAGE},
    "/api/orgs/{org}/forwarding": {"GET": MANAGE, "POST": MANAGE},
    "/api/orgs/{org}/forwarding/{rule}": {"DELETE": MANAGE},
    "/api/orgs/{org}/transfers": {"POST": SEND},
    "/api/orgs/{org}/inbox": {"GET": SEARCH},
    "/api/orgs/{org}/outbox": {"GET": SEARCH},
    "/api/orgs/{org}/transfers/{transfer}": {"GET": SEARCH},
    "/api/orgs/{org}/transfers/{transfer}/reports": {"GET": RETRIEVE},
    "/api/orgs/{org}/transfers/{transfer}/complete": {"POST": SEND},
    "/api/orgs/{org}/transfers/{transfer}/viewed": {"POST": RETRIEVE},
    "/api/orgs/{org}/transfers/{transfer}/reject": {"POST": SEND},
    # Keeping received copies past the retention period is a records decision, as sending is
    "/api/orgs/{org}/transfers/{transfer}/retain": {"POST": SEND},
    "/api/orgs/{org}/transfers/{transfer}/release": {"POST": SEND},
    "/api/orgs/{org}/usage": {"GET": SEARCH},  # counts per month, no patient data
    "/api/orgs/{org}/transfers/{transfer}/import": {"POST": STORE},
    # The outbox service roots: STOW-RS that sends to another organisation
    "/dicomweb/{org}/outbox/{dest}/studies": {"POST": SEND},
    "/dicomweb/{org}/outbox/{dest}/studies/{study}": {"POST": SEND},
    "/dicomweb/{org}/outbox/{dest}/urgent/studies": {"POST": SEND},
    "/dicomweb/{org}/outbox/{dest}/urgent/studies/{study}": {"POST": SEND},
    "/dicomweb/{org}/outbox/{dest}/emergency/studies": {"POST": SEND},
    "/dicomweb/{org}/outbox/{dest}/emergency/studies/{study}": {"POST": SEND},
    # PS3.18 10.5 STOW-RS
    "/dicomweb/{org}/studies": {"GET": SEARCH, "POST": STORE},
    # PS3.18 10.6 QIDO-RS
    "/dicomweb/{org}/series": {"GET": SEARCH},
    "/dicomweb/{org}/instances": {"GET": SEARCH},
    _STUDY + "/series": {"GET": SEARCH},
    _STUDY + "/instances": {"GET": SEARCH},
    _SERIES + "/instances": {"GET": SEARCH},
    # PS3.18 10.4 WADO-RS, and DELETE (the Delete transaction of PS3.18 is not defined; peers
    # delete by study/series/instance URL)
    _STUDY: {"GET": RETRIEVE, "POST": STORE, "DELETE": DELETE},
    _SERIES: {"GET": RETRIEVE, "DELETE": DELETE},
    _INSTANCE: {"GET": RETRIEVE, "DELETE": DELETE},
    _STUDY + "/metadata": {"GET": RETRIEVE},
    _SERIES + "/metadata": {"GET": RETRIEVE},
    _INSTANCE + "/metadata": {"GET": RETRIEVE},
    _INSTANCE + "/frames/{frames}": {"GET": RETRIEVE},
    _INSTANCE + "/bulkdata/{path:path}": {"GET": RETRIEVE},
    # PS3.18 10.4.1.1.7-8 rendered and thumbnail resources: images of what is held, retrieved
    _STUDY + "/rendered": {"GET": RETRIEVE},
    _SERIES + "/rendered": {"GET": RETRIEVE},
    _INSTANCE + "/rendered": {"GET": RETRIEVE},
    _INSTANCE + "/frames/{frames}/rendered": {"GET": RETRIEVE},
    _STUDY + "/thumbnail": {"GET": RETRIEVE},
    _SERIES + "/thumbnail": {"GET": RETRIEVE},
    _INSTANCE + "/thumbnail": {"GET": RETRIEVE},
    _INSTANCE + "/frames/{frames}/thumbnail": {"GET": RETRIEVE},
}


class UnguardedRoute(RuntimeError):
    pass


def route_methods(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str, Route]]:
    """Every (path template, method, route) an app answers, through its mounts."""
    for route in routes:
        if isinstance(route, Mount):
            yield from route_methods(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
                yield prefix + route.path, method, route
        else:
            raise UnguardedRoute(f"{type(route).__name__} {getattr(route, 'path', '')} cannot be guarded")


# The event a refused request would have made, by the permission it lacked.
_ACTION_DENIED = {
    Permission.SEARCH: AuditAction.QUERY,
    Permission.RETRIEVE: AuditAction.RETRIEVE,
    Permission.STORE: AuditAction.STORE,
    Permission.SEND: AuditAction.SEND,
    Permission.DELETE: AuditAction.DELETE,
    Permission.MANAGE: AuditAction.SECURITY_CONFIGURATION_CHANGED,
    Permission.READ_AUDIT: AuditAction.AUDIT_LOG_USED,
}


class AccessAudit:
    """The audit events of access control (PS3.15 A.5.3.12 User Authentication): every refused
    credential; an accepted one the first time this process sees it (a bearer token comes with
    every request, and every request's own event names its actor), for the organisation in the
    URL so that its admins see who signed in to it; every refused permission,
    as the event of the action refused, with a failure outcome."""

    def __init__(self, trail: AuditTrail, remembered: int = 10_000):
        self.trail = trail
        self.remembered = remembered
        self._seen: OrderedDict[str, None] = OrderedDict()

    def authenticated(self, requester: Requester, org: str | None, credential: str) -> None:
        seen = f"{credential} {org}"  # once per credential and organisation acted for
        if seen in self._seen:
            self._seen.move_to_end(seen)
            return
        self._seen[seen] = None
        if len(self._seen) > self.remembered:
            self._seen.popitem(last=False)
        principal = requester.principal
        self.trail.record(AuditEvent.for_request(requester, AuditAction.AUTHENTICATE, org=org,
                                                 detail=f"{principal.kind.value} credential accepted"))

    def refused(self, requester: Requester, org: str | None, failure: AuthenticationFailed) -> None:
        self.trail.record(AuditEvent.for_request(requester, AuditAction.AUTHENTICATE, org=org,
                                                 outcome=Outcome.MINOR_FAILURE, outcome_description=failure.reason,
                                                 detail=str(failure)))

    def denied(self, requester: Requester, org: str, permission: Permission, message: str) -> None:
        self.trail.record(AuditEvent.for_request(requester, _ACTION_DENIED[permission], org=org,
                                                 outcome=Outcome.MINOR_FAILURE, outcome_description="denied",
                                                 detail=message))


@dataclass
class AccessGate:
    """What every guarded route consults: who the request is from, and the audit of access."""

    authenticator: Authenticator
    audit: AccessAudit


def guard_routes(routes: list[BaseRoute], gate: AccessGate,
                 policies: dict[str, dict[str, Policy]] = ROUTE_POLICIES) -> None:
    """Wrap every route in `routes` with its policy; raise UnguardedRoute if one has none."""
    seen: dict[int, tuple[Route, str, dict[str, Policy]]] = {}
    missing = []
    for path, method, route in route_methods(routes):
        policy = policies.get(path, {}).get(method)
        if policy is None:
            missing.append(f"{method} {path}")
            continue
        seen.setdefault(id(route), (route, path, {}))[2][method] = policy
    if missing:
        raise UnguardedRoute("routes without an access policy in oix/access.py ROUTE_POLICIES: "
                             + ", ".join(missing))
    for route, path, route_policies in seen.values():
        if not isinstance(route.app, Guard):
            route.app = Guard(route.app, path, route_policies, gate)


class Guard:
    def __init__(self, app: ASGIApp, path: str, policies: dict[str, Policy], gate: AccessGate):
        self.app = app
        self.path = path
        self.policies = policies
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        policy = self.policies["GET" if method == "HEAD" else method]
        connection = HTTPConnection(scope)
        org = scope.get("path_params", {}).get("org")  # the organisation the request acts for
        try:
            authenticated = await self.gate.authenticator.authenticate(connection)
        except AuthenticationFailed as exc:
            if not policy.signed_in:  # a public page answers whatever credentials came with it
                scope[REQUESTER], scope[SESSION] = requester_from(connection, ANONYMOUS), None
                await self.app(scope, receive, send)
                return
            self.gate.audit.refused(requester_from(connection, ANONYMOUS), org, exc)
            if policy.page:
                await _sign_in_first(connection)(scope, receive, send)
                return
            # An identity provider that cannot be reached is not the client's fault: retry later.
            status = 503 if exc.reason == "provider-unreachable" else 401
            await _refuse(status, str(exc), exc.reason)(scope, receive, send)
            return
        principal = authenticated.principal
        requester = requester_from(connection, principal)
        scope[REQUESTER] = requester
        scope[SESSION] = authenticated.session
        if authenticated.credential is not None:
            self.gate.audit.authenticated(requester, org, authenticated.credential)
        if not policy.signed_in:
            await self.app(scope, receive, send)
            return
        if principal is ANONYMOUS and policy.page:
            await _sign_in_first(connection)(scope, receive, send)
            return
        if principal is ANONYMOUS:
            await _refuse(401, "authentication required: send 'Authorization: Bearer <token or API key>'",
                          None)(scope, receive, send)
            return
        if policy.permission is not None:
            if not principal.may(org, policy.permission):
                role = principal.role_in(org)
                message = (f"{principal.actor} is not a member of {org}" if role is None else
                           f"the {role.value} role in {org} does not allow '{policy.permission.value}'")
                self.gate.audit.denied(requester, org, policy.permission, message)
                refusal = _refused_page(message) if policy.page else _refuse(403, message, None)
                await refusal(scope, receive, send)
                return
        if authenticated.session is not None and method not in SAFE_METHODS:
            receive, valid = await _csrf_checked(connection, receive, authenticated.session.csrf_token)
            if not valid:
                await _refuse(403, "missing or wrong CSRF token: reload the page and try again",
                              None)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def requester_from(connection: HTTPConnection, principal) -> Requester:
    return Requester(principal, connection.client.host if connection.client else "",
                     connection.headers.get("user-agent", "")[:256], connection.scope.get(REQUEST_ID, ""))


def requester_of(connection: HTTPConnection) -> Requester:
    """The Requester the guard made for this request."""
    return connection.scope[REQUESTER]


def session_of(connection: HTTPConnection) -> OpenSession | None:
    """The portal session that authenticated this request, if a session cookie did."""
    return connection.scope.get(SESSION)


async def _csrf_checked(connection: HTTPConnection, receive: Receive, expected: str) -> tuple[Receive, bool]:
    """A cookie-authenticated unsafe request carries the session's CSRF token in a header
    (scripts) or, for a URL-encoded form, in its `csrf_token` field; the form body is read
    here and replayed to the route."""
    presented = connection.headers.get(CSRF_HEADER)
    if presented is not None:
        return receive, hmac.compare_digest(presented.encode("utf-8", "replace"), expected.encode())
    if not connection.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return receive, False
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > MAX_FORM_BYTES:
            return receive, False
        if not message.get("more_body"):
            break
    field = parse_qs(body.decode("latin-1")).get(CSRF_FIELD, [""])[0]
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}
        return await receive()

    return replay, hmac.compare_digest(field.encode("utf-8", "replace"), expected.encode())


def _sign_in_first(connection: HTTPConnection) -> Response:
    """A page asked for without (valid) credentials: sign in, then come back to it."""
    path = connection.url.path + (f"?{connection.url.query}" if connection.url.query else "")
    return RedirectResponse(f"/login?{urlencode({'next': path})}", status_code=303)


def _refused_page(message: str) -> Response:
    body = ('<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Not allowed · OIX</title></head>'
            f'<body><main><h1>Not allowed</h1><p>{html.escape(message)}.</p><p><a href="/">Back to the portal</a>'
            '</p></main></body></html>')
    return HTMLResponse(body, status_code=403)


def _header_text(message: str) -> str:
    """RFC 6750 3: an error_description is printable ASCII without '"' or '\\'."""
    return "".join(character if " " <= character <= "~" and character not in '"\\' else "?"
                   for character in message.replace('"', "'"))


def _refuse(status: int, message: str, reason: str | None) -> Response:
    headers = {}
    if status == 401:
        # RFC 6750 3: the challenge, and why the token was refused.
        challenge = 'Bearer realm="oix"'
        if reason:
            challenge += f', error="invalid_token", error_description="{_header_text(message)}"'
        headers["WWW-Authenticate"] = challenge
    return Response(orjson.dumps({"status": status, "error": message}), status_code=status,
                    media_type="application/json", headers=headers)

