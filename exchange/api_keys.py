"""API keys for machines (a PACS, a teleradiology upload script): created by an organisation's
admin, shown once, kept only as a SHA-256 hash, scoped to one organisation and one role,
revocable, with the time each was last used."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from exchange.access import ActorKind, Principal, Role
from exchange.errors import AuthenticationFailed, InvalidCredentialRequest, UnknownCredential
from exchange.organisations import OrganisationDirectory
from storage.credentials import ApiKeyTable
from storage.tables import ApiKey, as_utc, utcnow

PREFIX = "oixk"  # a key is `oixk_<key id>_<secret>`: the prefix lets secret scanners find leaked keys
LAST_USED_RESOLUTION_SECONDS = 60.0  # last-used time is written at most this often per key
_LIFETIME = re.compile(r"^(\d+)([hdwy])$")
_UNIT_HOURS = {"h": 1, "d": 24, "w": 24 * 7, "y": 24 * 365}


def parse_lifetime(text: str) -> timedelta | None:
    """`90d`, `12h`, `4w`, `1y`, or `never` (None)."""
    if text == "never":
        return None
    match = _LIFETIME.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise InvalidCredentialRequest(f"'{text}' is not a lifetime: write e.g. 90d, 12h, 4w, 1y or never")
    hours = int(match.group(1)) * _UNIT_HOURS[match.group(2)]
    if hours > 10 * 24 * 365:
        raise InvalidCredentialRequest(f"'{text}' is longer than ten years: write never for a key that does not expire")
    return timedelta(hours=hours)


@dataclass(frozen=True)
class IssuedKey:
    """A key just created: `secret` is shown this once and never stored."""

    key: ApiKey
    secret: str


class ApiKeys:
    def __init__(self, table: ApiKeyTable, directory: OrganisationDirectory):
        self.table = table
        self.directory = directory
        self._last_written: dict[str, float] = {}
        self._lock = threading.Lock()

    def create(self, org: str, role: Role, *, name: str = "", lifetime: timedelta | None = timedelta(days=90),
               created_by: str = "") -> IssuedKey:
        self.directory.require(org)
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        now = utcnow()
        key = ApiKey(key_id=key_id, org=org, role=role.value, name=name, secret_sha256=_sha256(secret),
                     created_by=created_by, created_at=now, expires_at=now + lifetime if lifetime else None)
        self.table.add(key)
        return IssuedKey(key, f"{PREFIX}_{key_id}_{secret}")

    def of_org(self, org: str) -> list[ApiKey]:
        self.directory.require(org)
        return self.table.of_org(org)

    def revoke(self, org: str, key_id: str) -> None:
        if not self.table.revoke(org, key_id, utcnow()):
            raise UnknownCredential(f"{org} has no active API key '{key_id}'")

    def authenticate(self, presented: str) -> Principal:
        """The principal of a presented key: its organisation, with its role there only."""
        parts = presented.split("_", 2)
        if len(parts) != 3 or parts[0] != PREFIX:
            raise AuthenticationFailed("malformed", "that is not an OIX API key")
        key = self.table.get(parts[1])
        # The same comparison runs whether or not the key exists (no timing oracle on key ids).
        stored = key.secret_sha256 if key else "0" * 64
        if not hmac.compare_digest(stored, _sha256(parts[2])) or key is None:
            raise AuthenticationFailed("unknown-key", "the API key is not known here")
        now = utcnow()
        if key.revoked_at is not None:
            raise AuthenticationFailed("revoked", f"API key {key.key_id} was revoked; ask an admin of {key.org} "
                                       "for a new one")
        if key.expires_at is not None and as_utc(key.expires_at) <= now:
            raise AuthenticationFailed("expired", f"API key {key.key_id} expired on "
                                       f"{as_utc(key.expires_at):%Y-%m-%d %H:%M} UTC")
        self._note_use(key.key_id, now)
        return Principal(f"key:{key.key_id}", ActorKind.API_KEY, {key.org: Role(key.role)},
                         name=key.name or f"API key {key.key_id}")

    def _note_use(self, key_id: str, now: datetime) -> None:
        moment = time.monotonic()
        with self._lock:
            if moment - self._last_written.get(key_id, -1e9) < LAST_USED_RESOLUTION_SECONDS:
                return
            self._last_written[key_id] = moment
        self.table.mark_used(key_id, now)


def _sha256(text: str) -> str:
    # A key secret has 256 bits of entropy: a fast hash is enough (a slow one is for passwords).
    return hashlib.sha256(text.encode()).hexdigest()
