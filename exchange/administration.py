"""Changes to who may do what — organisations, accounts, memberships and API keys — each an
audited admin change (PS3.15 A.5.3.11 Security Alert), whether made through the API or the CLI."""

from __future__ import annotations

from datetime import timedelta

from exchange.access import Requester, Role
from exchange.accounts import LocalAccounts
from exchange.api_keys import ApiKeys, IssuedKey
from exchange.audit import AuditAction, AuditEvent, AuditTrail
from exchange.organisations import OrganisationDirectory
from exchange.sessions import PortalSessions
from storage.tables import Account, ApiKey, Organisation


class Administration:
    def __init__(self, directory: OrganisationDirectory, accounts: LocalAccounts, api_keys: ApiKeys,
                 audit: AuditTrail, sessions: PortalSessions):
        self.directory = directory
        self.accounts = accounts
        self.api_keys = api_keys
        self.audit = audit
        self.sessions = sessions

    def add_organisation(self, requester: Requester, slug: str, name: str, **details) -> Organisation:
        organisation = self.directory.add(slug, name, **details)
        self._changed(requester, AuditAction.CONFIGURATION_CHANGED, slug, f"organisation {slug} '{name}' added")
        return organisation

    def update_organisation(self, requester: Requester, slug: str, details: dict) -> Organisation:
        organisation = self.directory.update(slug, details)
        changed = ", ".join(f"{name}={value}" for name, value in details.items() if value is not None)
        self._changed(requester, AuditAction.CONFIGURATION_CHANGED, slug, f"organisation {slug} changed: {changed}")
        return organisation

    def add_account(self, requester: Requester, username: str, password: str, display_name: str = "") -> Account:
        account = self.accounts.add(username, password, display_name)
        self._changed(requester, AuditAction.USER_SECURITY_CHANGED, None, f"account {username} added")
        return account

    def set_password(self, requester: Requester, username: str, password: str) -> None:
        self.accounts.set_password(username, password)
        self.sessions.close_all(username)  # signed in with the old password: sign in again
        self._changed(requester, AuditAction.USER_SECURITY_CHANGED, None, f"password of {username} changed")

    def grant(self, requester: Requester, username: str, org: str, role: Role) -> None:
        self.accounts.grant(username, org, role)
        self._changed(requester, AuditAction.ROLES_CHANGED, org, f"{username} given the {role.value} role in {org}")

    def revoke_membership(self, requester: Requester, username: str, org: str) -> None:
        self.accounts.revoke(username, org)
        self._changed(requester, AuditAction.ROLES_CHANGED, org, f"{username} removed from {org}")

    def keys_of(self, org: str) -> list[ApiKey]:
        return self.api_keys.of_org(org)

    def create_key(self, requester: Requester, org: str, role: Role, name: str,
                   lifetime: timedelta | None) -> IssuedKey:
        issued = self.api_keys.create(org, role, name=name, lifetime=lifetime, created_by=requester.principal.actor)
        expiry = f"expires {issued.key.expires_at:%Y-%m-%d}" if issued.key.expires_at else "never expires"
        self._changed(requester, AuditAction.SECURITY_CONFIGURATION_CHANGED, org,
                      f"API key {issued.key.key_id} ({role.value}, '{name}') created, {expiry}")
        return issued

    def revoke_key(self, requester: Requester, org: str, key_id: str) -> None:
        self.api_keys.revoke(org, key_id)
        self._changed(requester, AuditAction.SECURITY_CONFIGURATION_CHANGED, org, f"API key {key_id} revoked")

    def _changed(self, requester: Requester, action: AuditAction, org: str | None, detail: str) -> None:
        self.audit.record(AuditEvent.for_request(requester, action, org=org, detail=detail))
