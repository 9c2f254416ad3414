"""The directory of organisations taking part in the exchange."""

from __future__ import annotations

import re

from exchange.errors import DuplicateOrganisation, InvalidOrganisation, UnknownOrganisation
from storage.organisations import OrganisationExists, OrganisationTable
from storage.tables import Organisation

# ODS-style codes (e.g. RJ1, 8HV48) and readable slugs: letters, digits, '-' and '_'.
SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class OrganisationDirectory:
    def __init__(self, table: OrganisationTable):
        self.table = table

    def add(self, slug: str, name: str) -> Organisation:
        if not SLUG.match(slug):
            raise InvalidOrganisation(
                f"'{slug}' is not a valid organisation code: use 1-64 letters, digits, '-' or '_'")
        if not name.strip():
            raise InvalidOrganisation("an organisation needs a name")
        try:
            return self.table.add(slug, name.strip())
        except OrganisationExists:
            raise DuplicateOrganisation(slug) from None

    def require(self, slug: str) -> Organisation:
        organisation = self.table.get(slug)
        if organisation is None:
            raise UnknownOrganisation(slug)
        return organisation

    def all(self) -> list[Organisation]:
        return self.table.all()
