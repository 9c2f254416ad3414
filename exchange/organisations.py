"""The directory of organisations taking part in the exchange."""

from __future__ import annotations

import re

from exchange.errors import DuplicateOrganisation, InvalidOrganisation, UnknownOrganisation
from storage.organisations import OrganisationExists, OrganisationTable
from storage.tables import Organisation

# ODS-style codes (e.g. RJ1, 8HV48) and readable slugs: letters, digits, '-' and '_'.
SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


KINDS = ("trust", "private", "teleradiology", "research")
EDITABLE = ("name", "kind", "contact", "retention_days", "identity_domain")


class OrganisationDirectory:
    def __init__(self, table: OrganisationTable):
        self.table = table
        # Codes seen to exist. Organisations are never removed (their audit trail and transfers
        # name them), so a code once found stays valid: no query per DICOMweb request.
        self._known: set[str] = set()

    def known(self, slug: str) -> bool:
        """Whether `slug` was already seen to exist here; False says nothing (ask `require`)."""
        return slug in self._known

    def add(self, slug: str, name: str, **details) -> Organisation:
        """`details`: kind, contact, retention_days, identity_domain (see Organisation)."""
        if not SLUG.match(slug):
            raise InvalidOrganisation(
                f"'{slug}' is not a valid organisation code: use 1-64 letters, digits, '-' or '_'")
        values = _checked({"name": name, **details})
        try:
            return self.table.add(Organisation(slug=slug, **values))
        except OrganisationExists:
            raise DuplicateOrganisation(slug) from None

    def update(self, slug: str, details: dict) -> Organisation:
        self.require(slug)
        values = _checked(details)
        if values:
            self.table.update(slug, values)
        return self.require(slug)

    def require(self, slug: str) -> Organisation:
        organisation = self.table.get(slug)
        if organisation is None:
            raise UnknownOrganisation(slug)
        self._known.add(slug)
        return organisation

    def all(self) -> list[Organisation]:
        return self.table.all()


def _checked(details: dict) -> dict:
    unknown = set(details) - set(EDITABLE)
    if unknown:
        raise InvalidOrganisation(f"an organisation has no {', '.join(sorted(unknown))}; "
                                  f"it has {', '.join(EDITABLE)}")
    values = {name: value for name, value in details.items() if value is not None}
    if "name" in values:
        values["name"] = str(values["name"]).strip()
        if not values["name"]:
            raise InvalidOrganisation("an organisation needs a name")
    if "kind" in values and values["kind"] not in KINDS:
        raise InvalidOrganisation(f"kind is one of {', '.join(KINDS)}, not '{values['kind']}'")
    if "retention_days" in values:
        days = values["retention_days"]
        if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 36500:
            raise InvalidOrganisation("retention_days is a whole number of days from 1 to 36500")
    for name in ("contact", "identity_domain"):
        if name in values:
            values[name] = str(values[name]).strip()[:256]
    return values
