"""Signing in to the portal: a local account's password form, or the OIDC authorization-code
flow with PKCE (RFC 7636) when a provider is configured; and signing out. A session lives in a
Secure (under TLS), HttpOnly, SameSite=Lax cookie; forms carry CSRF tokens."""

from __future__ import annotations

import hmac
import secrets

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from exchange.access import ANONYMOUS
from exchange.audit import AuditAction, AuditEvent, Outcome
from exchange.errors import AuthenticationFailed
from oix.access import requester_from, requester_of
from oix.authentication import SESSION_COOKIE
from oix.oidc import OidcError
from portal.context import TEMPLATES, portal_of

LOGIN_CSRF_COOKIE = "oix_login_csrf"  # double-submit token for the sign-in form (no session yet)
SIGN_IN_STATE_COOKIE = "oix_sign_in"  # binds an OIDC sign-in to the browser that began it


def _same(presented: str, expected: str) -> bool:
    """Constant-time comparison of text a client sent (any characters) with a token of ours."""
    return hmac.compare_digest(presented.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))


def _next_url(value: str | None) -> str:
    """Only a path on this server: never an open redirect (OWASP unvalidated redirects)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value \
            and all(ord(character) > 0x20 for character in value):
        return value
    return "/"


def _form_page(request: Request, status: int = 200, error: str = "") -> Response:
    portal = portal_of(request)
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
    next_url = _next_url(request.query_params.get("next"))
    response = TEMPLATES.TemplateResponse(request, "signin.html", {
        "csrf_token": token, "next_url": next_url, "error": error,
        "oidc": portal.oidc is not None and portal.oidc.offers_sign_in,
    }, status_code=status)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=portal.secure_cookies,
                        path="/login")
    return response


async def sign_in_page(request: Request) -> Response:
    return _form_page(request)


async def sign_in_with_password(request: Request) -> Response:
    portal = portal_of(request)
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return _form_page(request, 400, "The form could not be read. Please sign in again.")
    form = await request.form(max_fields=8, max_part_size=4096)  # an unauthenticated body stays small
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not _same(str(form.get("csrf_token", "")), expected):
        return _form_page(request, 400, "The form expired. Please sign in again.")
    username = str(form.get("username", ""))[:128]
    requester = requester_from(request, ANONYMOUS)
    try:
        principal = await run_in_threadpool(portal.accounts.sign_in, username, str(form.get("password", "")))
    except AuthenticationFailed as exc:
        orgs = await run_in_threadpool(portal.accounts.organisations_of, username)
        for org in orgs or [None]:  # the admins of the account's organisations see attempts on it
            portal.audit.record(_refused(requester, exc.reason, f"password sign-in as '{username}'", org))
        return _form_page(request, 401, "The username or password is not right.")
    return await _open_session(request, principal, "password", _next_url(str(form.get("next", ""))))


async def sign_in_with_provider(request: Request) -> Response:
    """Begin the authorization-code flow: state, nonce and PKCE verifier kept server-side."""
    portal = portal_of(request)
    if portal.oidc is None or not portal.oidc.offers_sign_in:
        return RedirectResponse("/login", status_code=303)
    try:
        started = await portal.oidc.start_sign_in(_callback_url(request))
    except OidcError as exc:
        portal.audit.record(_refused(requester_from(request, ANONYMOUS), exc.reason))
        return _form_page(request, 503, f"The identity provider cannot be reached: {exc}")
    await run_in_threadpool(portal.sessions.begin_sign_in, started.state, started.code_verifier, started.nonce,
                            _next_url(request.query_params.get("next")))
    response = RedirectResponse(started.url, status_code=302)
    response.set_cookie(SIGN_IN_STATE_COOKIE, started.state, httponly=True, samesite="lax", secure=portal.secure_cookies,
                        path="/login", max_age=600)
    return response


async def provider_callback(request: Request) -> Response:
    portal = portal_of(request)
    requester = requester_from(request, ANONYMOUS)
    state = request.query_params.get("state", "")
    if portal.oidc is None or not state or not _same(state, request.cookies.get(SIGN_IN_STATE_COOKIE, "")):
        portal.audit.record(_refused(requester, "bad-state"))
        return _form_page(request, 400, "That sign-in did not start here, or has expired. Please try again.")
    pending = await run_in_threadpool(portal.sessions.finish_sign_in, state)
    if pending is None:
        portal.audit.record(_refused(requester, "bad-state"))
        return _form_page(request, 400, "That sign-in has expired. Please try again.")
    if "error" in request.query_params or "code" not in request.query_params:
        reason = request.query_params.get("error", "no-code")
        portal.audit.record(_refused(requester, reason))
        return _form_page(request, 401, f"The identity provider did not sign you in ({reason}).")
    try:
        principal = await portal.oidc.exchange_code(request.query_params["code"], _callback_url(request),
                                                    pending.code_verifier, pending.nonce)
    except OidcError as exc:
        portal.audit.record(_refused(requester, exc.reason))
        return _form_page(request, 401, f"The identity provider's answer was not accepted: {exc}")
    response = await _open_session(request, principal, "oidc", pending.next_url)
    response.delete_cookie(SIGN_IN_STATE_COOKIE, path="/login")
    return response


async def sign_out(request: Request) -> Response:
    """POST with the session's CSRF token (checked by the access guard)."""
    portal = portal_of(request)
    token = request.cookies.get(SESSION_COOKIE, "")
    await run_in_threadpool(portal.sessions.close, token)
    requester = requester_of(request)
    for org in sorted(requester.principal.memberships) or [None]:
        portal.audit.record(AuditEvent.for_request(requester, AuditAction.LOGOUT, org=org, detail="portal sign-out"))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


async def _open_session(request: Request, principal, method: str, next_url: str) -> Response:
    portal = portal_of(request)
    session = await run_in_threadpool(portal.sessions.open, principal)
    requester = requester_from(request, principal)
    for org in sorted(principal.memberships) or [None]:  # each organisation's admins see it
        portal.audit.record(AuditEvent.for_request(requester, AuditAction.AUTHENTICATE, org=org,
                                                   detail=f"portal sign-in ({method})"))
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(SESSION_COOKIE, session.token, httponly=True, samesite="lax", secure=portal.secure_cookies,
                        path="/", max_age=int(portal.sessions.lifetime.total_seconds()))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


def _refused(requester, reason: str, detail: str = "portal sign-in", org: str | None = None) -> AuditEvent:
    return AuditEvent.for_request(requester, AuditAction.AUTHENTICATE, org=org, outcome=Outcome.MINOR_FAILURE,
                                  outcome_description=reason, detail=detail)


def _callback_url(request: Request) -> str:
    return str(request.url_for("provider_callback"))


ROUTES = [
    Route("/login", sign_in_page, methods=["GET"]),
    Route("/login", sign_in_with_password, methods=["POST"]),
    Route("/login/oidc", sign_in_with_provider, methods=["GET"]),
    Route("/login/callback", provider_callback, methods=["GET"], name="provider_callback"),
    Route("/logout", sign_out, methods=["POST"]),
]
