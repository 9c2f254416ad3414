"""Local accounts (issue Trust, Identity): argon2 password hashes, a role per organisation, and
one answer for an unknown account or a wrong password. Against a real SQLite index file."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from exchange.access import ActorKind, Role
from exchange.accounts import LocalAccounts
from exchange.errors import AuthenticationFailed, InvalidCredentialRequest, UnknownOrganisation
from exchange.organisations import OrganisationDirectory
from storage.credentials import AccountTable
from storage.database import Database
from storage.organisations import OrganisationTable
from storage.tables import Account

PASSWORD = "correct horse battery staple"


@pytest.fixture
def accounts(tmp_path: Path):
    database = Database(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    database.create_schema()
    directory = OrganisationDirectory(OrganisationTable(database))
    directory.add("RJ1", "St Thomas'")
    yield LocalAccounts(AccountTable(database), directory), database
    database.dispose()


def test_an_account_signs_in_with_its_roles(accounts):
    local, _ = accounts
    local.add("asha", PASSWORD, "Dr Asha Patel")
    local.grant("asha", "RJ1", Role.ADMIN)
    principal = local.sign_in("asha", PASSWORD)
    assert (principal.actor, principal.kind, principal.name) == ("asha", ActorKind.USER, "Dr Asha Patel")
    assert principal.memberships == {"RJ1": Role.ADMIN}


def test_the_password_is_kept_as_an_argon2id_hash(accounts):
    local, database = accounts
    local.add("asha", PASSWORD)
    with database.read() as connection:
        stored = connection.execute(select(Account.__table__.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


def test_a_wrong_password_and_an_unknown_account_fail_alike(accounts):
    local, _ = accounts
    local.add("asha", PASSWORD)
    with pytest.raises(AuthenticationFailed) as wrong:
        local.sign_in("asha", PASSWORD + "!")
    with pytest.raises(AuthenticationFailed) as unknown:
        local.sign_in("nobody", PASSWORD)
    assert str(wrong.value) == str(unknown.value)


def test_short_passwords_and_duplicate_names_are_refused(accounts):
    local, _ = accounts
    with pytest.raises(InvalidCredentialRequest):
        local.add("asha", "short")
    local.add("asha", PASSWORD)
    with pytest.raises(InvalidCredentialRequest):
        local.add("asha", PASSWORD)


def test_a_grant_replaces_the_role_and_needs_a_real_organisation(accounts):
    local, _ = accounts
    local.add("asha", PASSWORD)
    local.grant("asha", "RJ1", Role.VIEWER)
    local.grant("asha", "RJ1", Role.SENDER)
    assert local.sign_in("asha", PASSWORD).memberships == {"RJ1": Role.SENDER}
    with pytest.raises(UnknownOrganisation):
        local.grant("asha", "NOPE", Role.VIEWER)
