"""API keys (issue Trust, Identity): shown once, stored as a hash, scoped to one organisation and
role, expiring, revocable, with a last-used time. Against real SQLite index files."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from exchange.access import ActorKind, Permission, Role
from exchange.api_keys import ApiKeys, parse_lifetime
from exchange.errors import AuthenticationFailed, InvalidCredentialRequest, UnknownCredential, UnknownOrganisation
from exchange.organisations import OrganisationDirectory
from storage.credentials import ApiKeyTable
from storage.database import Database
from storage.organisations import OrganisationTable
from storage.tables import ApiKey


@pytest.fixture
def keys(tmp_path: Path):
    database = Database(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    database.create_schema()
    directory = OrganisationDirectory(OrganisationTable(database))
    directory.add("RJ1", "St Thomas'")
    directory.add("RGT", "Addenbrooke's")
    yield ApiKeys(ApiKeyTable(database), directory), database
    database.dispose()


def test_a_created_key_authenticates_as_its_organisation_and_role_only(keys):
    api_keys, _ = keys
    issued = api_keys.create("RJ1", Role.SENDER, name="PACS upload")
    principal = api_keys.authenticate(issued.secret)
    assert principal.kind is ActorKind.API_KEY
    assert principal.memberships == {"RJ1": Role.SENDER}
    assert principal.may("RJ1", Permission.STORE)
    assert not principal.may("RJ1", Permission.DELETE)
    assert not principal.may("RGT", Permission.SEARCH)


def test_the_secret_is_not_stored_only_its_hash(keys):
    api_keys, database = keys
    issued = api_keys.create("RJ1", Role.VIEWER)
    secret = issued.secret.split("_", 2)[2]
    with database.read() as connection:
        rows = connection.execute(select(ApiKey.__table__)).mappings().all()
    assert len(rows) == 1
    assert all(secret not in str(value) for value in rows[0].values())


def test_a_wrong_secret_an_unknown_key_and_garbage_are_refused(keys):
    api_keys, _ = keys
    issued = api_keys.create("RJ1", Role.VIEWER)
    prefix, key_id, _secret = issued.secret.split("_", 2)
    for presented in (f"{prefix}_{key_id}_wrong", f"{prefix}_0000000000000000_x", "oixk_", "Bearer"):
        with pytest.raises(AuthenticationFailed):
            api_keys.authenticate(presented)


def test_a_revoked_key_is_refused_at_once(keys):
    api_keys, _ = keys
    issued = api_keys.create("RJ1", Role.SENDER)
    api_keys.revoke("RJ1", issued.key.key_id)
    with pytest.raises(AuthenticationFailed) as refused:
        api_keys.authenticate(issued.secret)
    assert refused.value.reason == "revoked"


def test_a_key_cannot_be_revoked_through_another_organisation(keys):
    api_keys, _ = keys
    issued = api_keys.create("RJ1", Role.SENDER)
    with pytest.raises(UnknownCredential):
        api_keys.revoke("RGT", issued.key.key_id)
    assert api_keys.authenticate(issued.secret).memberships == {"RJ1": Role.SENDER}


def test_an_expired_key_is_refused(keys):
    api_keys, _ = keys
    issued = api_keys.create("RJ1", Role.SENDER, lifetime=timedelta(seconds=-1))
    with pytest.raises(AuthenticationFailed) as refused:
        api_keys.authenticate(issued.secret)
    assert refused.value.reason == "expired"


def test_use_records_the_last_used_time(keys):
    api_keys, _ = keys
    issued = api_keys.create("RJ1", Role.SENDER)
    assert api_keys.of_org("RJ1")[0].last_used_at is None
    api_keys.authenticate(issued.secret)
    assert api_keys.of_org("RJ1")[0].last_used_at is not None


def test_keys_are_only_made_for_organisations_that_exist(keys):
    api_keys, _ = keys
    with pytest.raises(UnknownOrganisation):
        api_keys.create("NOPE", Role.SENDER)


@pytest.mark.parametrize("text, hours", [("90d", 90 * 24), ("12h", 12), ("4w", 4 * 7 * 24), ("1y", 365 * 24)])
def test_lifetimes_read_as_written(text, hours):
    assert parse_lifetime(text) == timedelta(hours=hours)


@pytest.mark.parametrize("text", ["", "0d", "90", "d90", "-1d", "3m"])
def test_unreadable_lifetimes_are_refused(text):
    with pytest.raises(InvalidCredentialRequest):
        parse_lifetime(text)


def test_never_means_no_expiry():
    assert parse_lifetime("never") is None
