"""Portal sessions: a signed-in browser holds a random token in a cookie; the index keeps its
SHA-256, who it acts as, a CSRF token for its forms, and when it ends. OIDC sign-ins under way
keep their PKCE verifier and nonce here between the redirect and the callback."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

import orjson

from exchange.access import ActorKind, Principal, Role
from storage.credentials import AccountTable, SessionTable
from storage.tables import PendingSignIn, PortalSession, as_utc, utcnow

SESSION_LIFETIME = timedelta(hours=12)  # one clinical shift
SIGN_IN_LIFETIME = timedelta(minutes=10)


@dataclass(frozen=True)
class OpenSession:
    token: str  # goes in the cookie, never stored
    csrf_token: str
    principal: Principal


class PortalSessions:
    def __init__(self, table: SessionTable, accounts: AccountTable, lifetime: timedelta = SESSION_LIFETIME):
        self.table = table
        self.accounts = accounts  # a local account's roles are read afresh on every request
        self.lifetime = lifetime

    def open(self, principal: Principal) -> OpenSession:
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = utcnow()
        self.table.add(PortalSession(
            token_sha256=_sha256(token), actor=principal.actor, kind=principal.kind.value,
            display_name=principal.name,
            memberships=orjson.dumps({org: role.value for org, role in principal.memberships.items()}),
            csrf_token=csrf, created_at=now, expires_at=now + self.lifetime))
        return OpenSession(token, csrf, principal)

    def find(self, token: str) -> OpenSession | None:
        row = self.table.get(_sha256(token))
        if row is None or as_utc(row.expires_at) <= utcnow():
            return None
        memberships = orjson.loads(row.memberships)
        account = self.accounts.get(row.actor)
        if account is not None:  # a local account: its roles now, not at sign-in
            if account.disabled_at is not None:
                return None
            memberships = self.accounts.memberships(row.actor)
        principal = Principal(row.actor, ActorKind(row.kind), {org: Role(role) for org, role in memberships.items()},
                              name=row.display_name)
        return OpenSession(token, row.csrf_token, principal)

    def close(self, token: str) -> bool:
        return self.table.remove(_sha256(token))

    def close_all(self, actor: str) -> int:
        """End every session of `actor` (its password changed)."""
        return self.table.remove_of(actor)

    def remove_expired(self) -> int:
        return self.table.remove_expired(utcnow())

    def begin_sign_in(self, state: str, code_verifier: str, nonce: str, next_url: str) -> None:
        self.table.add_pending(PendingSignIn(state_sha256=_sha256(state), code_verifier=code_verifier,
                                             nonce=nonce, next_url=next_url,
                                             expires_at=utcnow() + SIGN_IN_LIFETIME))

    def finish_sign_in(self, state: str) -> PendingSignIn | None:
        pending = self.table.take_pending(_sha256(state))
        if pending is None or as_utc(pending.expires_at) <= utcnow():
            return None
        return pending


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
