"""Who may do what: the roles an organisation gives its members, the permissions each role
carries, and the principal a request acts as. The table is the whole policy; routes name the
permission they need and `oix/access.py` enforces it for every route in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Role(str, Enum):
    VIEWER = "viewer"  # search, retrieve, view
    SENDER = "sender"  # also store and send
    ADMIN = "admin"  # also members, keys, rules, audit, delete


class Permission(str, Enum):
    SEARCH = "search"
    RETRIEVE = "retrieve"
    STORE = "store"
    SEND = "send"
    DELETE = "delete"
    MANAGE = "manage"  # members, API keys, forwarding rules
    READ_AUDIT = "read-audit"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.SEARCH, Permission.RETRIEVE}),
    Role.SENDER: frozenset({Permission.SEARCH, Permission.RETRIEVE, Permission.STORE, Permission.SEND}),
    Role.ADMIN: frozenset(Permission),
}


class ActorKind(str, Enum):
    USER = "user"  # a person: OIDC token or portal session
    API_KEY = "api-key"  # a machine: a PACS, an upload script
    ANONYMOUS = "anonymous"  # no credentials (only served when authentication is off)
    SYSTEM = "system"  # the server itself: background jobs, the CLI


@dataclass(frozen=True)
class Principal:
    """The identity a request acts as, and its role in each organisation it belongs to.
    `every_organisation` is set only when authentication is off (loopback or demo): the
    embedded single-user mode acts as admin of every organisation."""

    actor: str
    kind: ActorKind
    memberships: dict[str, Role] = field(default_factory=dict)
    every_organisation: Role | None = None
    name: str = ""

    def role_in(self, org: str) -> Role | None:
        return self.every_organisation or self.memberships.get(org)

    def may(self, org: str, permission: Permission) -> bool:
        role = self.role_in(org)
        return role is not None and permission in ROLE_PERMISSIONS[role]


ANONYMOUS = Principal("anonymous", ActorKind.ANONYMOUS)
SYSTEM = Principal("oix", ActorKind.SYSTEM, every_organisation=Role.ADMIN)


@dataclass(frozen=True)
class Requester:
    """Who is asking, from where: what every audit event of a request records."""

    principal: Principal
    client_address: str = ""
    user_agent: str = ""
    request_id: str = ""


SYSTEM_REQUESTER = Requester(SYSTEM)
