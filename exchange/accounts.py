"""Local accounts for the embedded default (no identity provider): argon2id password hashes,
and a role per organisation. A signed-in account acts as a `Principal` like an OIDC user."""

from __future__ import annotations

import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from exchange.access import ActorKind, Principal, Role
from exchange.errors import AuthenticationFailed, InvalidCredentialRequest, UnknownCredential
from exchange.organisations import OrganisationDirectory
from storage.credentials import AccountTable, RowExists
from storage.tables import Account

MIN_PASSWORD_LENGTH = 12  # NCSC password guidance: length over complexity rules


class LocalAccounts:
    def __init__(self, table: AccountTable, directory: OrganisationDirectory):
        self.table = table
        self.directory = directory
        # argon2id with the library's defaults (RFC 9106 second recommended option): 64 MiB a
        # hash, so at most two at once, whatever the number of sign-in attempts.
        self.hasher = PasswordHasher()
        self._hashing = threading.BoundedSemaphore(2)

    def add(self, username: str, password: str, display_name: str = "") -> Account:
        if not username or len(username) > 128 or any(c.isspace() for c in username):
            raise InvalidCredentialRequest("a username is 1-128 characters without spaces")
        _check_password(password)
        account = Account(username=username, password_hash=self.hasher.hash(password),
                          display_name=display_name or username)
        try:
            self.table.add(account)
        except RowExists:
            raise InvalidCredentialRequest(f"an account named '{username}' already exists") from None
        return account

    def set_password(self, username: str, password: str) -> None:
        self._require(username)
        _check_password(password)
        self.table.set_password_hash(username, self.hasher.hash(password))

    def grant(self, username: str, org: str, role: Role) -> None:
        self._require(username)
        self.directory.require(org)
        self.table.grant(username, org, role.value)

    def revoke(self, username: str, org: str) -> None:
        if not self.table.revoke(username, org):
            raise UnknownCredential(f"'{username}' is not a member of {org}")

    def organisations_of(self, username: str) -> list[str]:
        return sorted(self.table.memberships(username))

    def members(self, org: str) -> list[tuple[str, Role]]:
        return [(username, Role(role)) for username, role in self.table.members(org)]

    def sign_in(self, username: str, password: str) -> Principal:
        """The account's principal if the password is right; the same failure either way, so
        a caller cannot tell unknown accounts from wrong passwords."""
        with self._hashing:
            return self._sign_in(username, password)

    def _sign_in(self, username: str, password: str) -> Principal:
        account = self.table.get(username)
        failure = AuthenticationFailed("bad-credentials", "the username or password is not right")
        if account is None or account.disabled_at is not None:
            # Hash anyway so that a missing account takes as long as a wrong password.
            self.hasher.hash(password)
            raise failure
        try:
            self.hasher.verify(account.password_hash, password)
        except (VerificationError, InvalidHashError):
            raise failure from None
        if self.hasher.check_needs_rehash(account.password_hash):
            self.table.set_password_hash(username, self.hasher.hash(password))
        return self.principal(account)

    def principal(self, account: Account) -> Principal:
        memberships = {org: Role(role) for org, role in self.table.memberships(account.username).items()}
        return Principal(account.username, ActorKind.USER, memberships, name=account.display_name)

    def _require(self, username: str) -> Account:
        account = self.table.get(username)
        if account is None:
            raise UnknownCredential(f"no account named '{username}'; `oix user add` creates one")
        return account


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidCredentialRequest(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
