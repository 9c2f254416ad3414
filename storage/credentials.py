"""Rows behind authentication: local accounts and their memberships, API keys, portal
sessions and OIDC sign-ins under way. Secrets are never stored, only their hashes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from storage.database import Database
from storage.tables import Account, ApiKey, Membership, PendingSignIn, PortalSession

ACCOUNT = Account.__table__
MEMBERSHIP = Membership.__table__
API_KEY = ApiKey.__table__
PORTAL_SESSION = PortalSession.__table__
PENDING_SIGN_IN = PendingSignIn.__table__


class RowExists(Exception):
    pass


class AccountTable:
    def __init__(self, database: Database):
        self.database = database

    def add(self, account: Account) -> None:
        try:
            with self.database.write() as connection:
                connection.execute(ACCOUNT.insert().values(**account.model_dump()))
        except IntegrityError as exc:
            raise RowExists(account.username) from exc

    def get(self, username: str) -> Account | None:
        with self.database.read() as connection:
            row = connection.execute(select(ACCOUNT).where(ACCOUNT.c.username == username)).mappings().first()
        return Account(**row) if row else None

    def set_password_hash(self, username: str, password_hash: str) -> None:
        with self.database.write() as connection:
            connection.execute(update(ACCOUNT).where(ACCOUNT.c.username == username)
                               .values(password_hash=password_hash))

    def grant(self, username: str, org: str, role: str) -> None:
        """Give `username` `role` in `org`, replacing any role it had there."""
        with self.database.write() as connection:
            connection.execute(delete(MEMBERSHIP).where(MEMBERSHIP.c.username == username,
                                                        MEMBERSHIP.c.org == org))
            connection.execute(MEMBERSHIP.insert().values(username=username, org=org, role=role))

    def revoke(self, username: str, org: str) -> bool:
        with self.database.write() as connection:
            result = connection.execute(delete(MEMBERSHIP).where(MEMBERSHIP.c.username == username,
                                                                 MEMBERSHIP.c.org == org))
        return result.rowcount > 0

    def memberships(self, username: str) -> dict[str, str]:
        with self.database.read() as connection:
            rows = connection.execute(select(MEMBERSHIP.c.org, MEMBERSHIP.c.role)
                                      .where(MEMBERSHIP.c.username == username)).all()
        return {org: role for org, role in rows}

    def members(self, org: str) -> list[tuple[str, str]]:
        with self.database.read() as connection:
            rows = connection.execute(select(MEMBERSHIP.c.username, MEMBERSHIP.c.role)
                                      .where(MEMBERSHIP.c.org == org).order_by(MEMBERSHIP.c.username)).all()
        return [(username, role) for username, role in rows]

    def count(self) -> int:
        with self.database.read() as connection:
            return len(connection.execute(select(ACCOUNT.c.username).limit(1)).all())


class ApiKeyTable:
    def __init__(self, database: Database):
        self.database = database

    def add(self, key: ApiKey) -> None:
        with self.database.write() as connection:
            connection.execute(API_KEY.insert().values(**key.model_dump()))

    def get(self, key_id: str) -> ApiKey | None:
        with self.database.read() as connection:
            row = connection.execute(select(API_KEY).where(API_KEY.c.key_id == key_id)).mappings().first()
        return ApiKey(**row) if row else None

    def of_org(self, org: str) -> list[ApiKey]:
        with self.database.read() as connection:
            rows = connection.execute(select(API_KEY).where(API_KEY.c.org == org)
                                      .order_by(API_KEY.c.created_at)).mappings().all()
        return [ApiKey(**row) for row in rows]

    def revoke(self, org: str, key_id: str, at: datetime) -> bool:
        with self.database.write() as connection:
            result = connection.execute(update(API_KEY).where(API_KEY.c.org == org, API_KEY.c.key_id == key_id,
                                                              API_KEY.c.revoked_at.is_(None))
                                        .values(revoked_at=at))
        return result.rowcount > 0

    def mark_used(self, key_id: str, at: datetime) -> None:
        with self.database.write() as connection:
            connection.execute(update(API_KEY).where(API_KEY.c.key_id == key_id).values(last_used_at=at))


class SessionTable:
    def __init__(self, database: Database):
        self.database = database

    def add(self, session: PortalSession) -> None:
        with self.database.write() as connection:
            connection.execute(PORTAL_SESSION.insert().values(**session.model_dump()))

    def get(self, token_sha256: str) -> PortalSession | None:
        with self.database.read() as connection:
            row = connection.execute(select(PORTAL_SESSION)
                                     .where(PORTAL_SESSION.c.token_sha256 == token_sha256)).mappings().first()
        return PortalSession(**row) if row else None

    def remove(self, token_sha256: str) -> bool:
        with self.database.write() as connection:
            result = connection.execute(delete(PORTAL_SESSION).where(PORTAL_SESSION.c.token_sha256 == token_sha256))
        return result.rowcount > 0

    def remove_of(self, actor: str) -> int:
        with self.database.write() as connection:
            return connection.execute(delete(PORTAL_SESSION).where(PORTAL_SESSION.c.actor == actor)).rowcount

    def remove_expired(self, now: datetime) -> int:
        with self.database.write() as connection:
            sessions = connection.execute(delete(PORTAL_SESSION).where(PORTAL_SESSION.c.expires_at < now)).rowcount
            pending = connection.execute(delete(PENDING_SIGN_IN).where(PENDING_SIGN_IN.c.expires_at < now)).rowcount
        return sessions + pending

    def add_pending(self, pending: PendingSignIn) -> None:
        with self.database.write() as connection:
            connection.execute(PENDING_SIGN_IN.insert().values(**pending.model_dump()))

    def take_pending(self, state_sha256: str) -> PendingSignIn | None:
        """The sign-in under way for this state, removed so it cannot be replayed."""
        with self.database.write() as connection:
            row = connection.execute(select(PENDING_SIGN_IN)
                                     .where(PENDING_SIGN_IN.c.state_sha256 == state_sha256)).mappings().first()
            if row:
                connection.execute(delete(PENDING_SIGN_IN).where(PENDING_SIGN_IN.c.state_sha256 == state_sha256))
        return PendingSignIn(**row) if row else None
