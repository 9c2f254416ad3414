"""Who a request comes from: an OIX API key or an OpenID Connect access token in the
Authorization header (RFC 6750 2.1), or a portal session cookie. No credentials make the
anonymous principal, which only the embedded single-user mode (authentication off) lets act."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from exchange.access import ANONYMOUS, ActorKind, Principal, Role
from exchange.api_keys import PREFIX as API_KEY_PREFIX
from exchange.api_keys import ApiKeys
from exchange.errors import AuthenticationFailed
from exchange.sessions import OpenSession, PortalSessions
from oix.oidc import OidcVerifier, TokenRejected

SESSION_COOKIE = "oix_session"
# Authentication off (loopback or a declared demo): a request without credentials acts as admin
# of every organisation, the single-user embedded default.
OPEN_ACCESS = Principal("anonymous", ActorKind.ANONYMOUS, every_organisation=Role.ADMIN)


@dataclass(frozen=True)
class Authenticated:
    principal: Principal
    # What was presented (SHA-256 of the token or cookie), so a success is audited once per
    # credential rather than on every request; None for anonymous requests.
    credential: str | None = None
    session: OpenSession | None = None  # set when a portal cookie authenticated the request


class Authenticator:
    def __init__(self, *, required: bool, api_keys: ApiKeys, sessions: PortalSessions,
                 oidc: OidcVerifier | None):
        self.required = required
        self.api_keys = api_keys
        self.sessions = sessions
        self.oidc = oidc

    async def authenticate(self, connection: HTTPConnection) -> Authenticated:
        """Raises AuthenticationFailed when credentials are presented and are not valid."""
        authorization = connection.headers.get("authorization")
        if authorization:
            scheme, _, token = authorization.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise AuthenticationFailed("unsupported-scheme",
                                           "send credentials as 'Authorization: Bearer <token or API key>'")
            return Authenticated(await self._bearer(token), _fingerprint(token))
        cookie = connection.cookies.get(SESSION_COOKIE)
        if cookie:
            session = await run_in_threadpool(self.sessions.find, cookie)
            if session is not None:
                return Authenticated(session.principal, _fingerprint(cookie), session)
        return Authenticated(ANONYMOUS if self.required else OPEN_ACCESS)

    async def _bearer(self, token: str) -> Principal:
        if token.startswith(API_KEY_PREFIX + "_"):
            return await run_in_threadpool(self.api_keys.authenticate, token)
        if self.oidc is None:
            raise AuthenticationFailed("no-provider", "this server has no OpenID Connect provider configured; "
                                       "authenticate with an OIX API key (oixk_…)")
        try:
            return await self.oidc.verify(token)
        except TokenRejected as exc:
            raise AuthenticationFailed(exc.reason, str(exc)) from None


def _fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
