"""What the portal's pages are given: accounts and sessions, the identity provider if one is
configured, the audit trail, and the templates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.templating import Jinja2Templates

from exchange.accounts import LocalAccounts
from exchange.audit import AuditTrail
from exchange.sessions import PortalSessions
from oix.oidc import OidcVerifier

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


@dataclass(frozen=True)
class PortalContext:
    accounts: LocalAccounts
    sessions: PortalSessions
    oidc: OidcVerifier | None
    audit: AuditTrail
    secure_cookies: bool  # served over TLS: cookies are Secure (RFC 6265 4.1.2.5)


def portal_of(request: Request) -> PortalContext:
    return request.app.state.portal
