"""The organisation directory's answer to "does this service root exist?" (every DICOMweb
request asks it): a code found once is not looked up again, since organisations are never
removed, and a code not found is asked again, so an organisation added by another process (a
second server worker, `oix org add`) is served at once. Against both index backends."""

from __future__ import annotations

import pytest

from exchange.errors import UnknownOrganisation
from exchange.organisations import OrganisationDirectory
from storage.organisations import OrganisationTable


def test_a_code_found_once_is_known_without_a_query(database):
    directory = OrganisationDirectory(OrganisationTable(database))
    OrganisationDirectory(OrganisationTable(database)).add("RJ1", "St Thomas'")
    assert not directory.known("RJ1")
    directory.require("RJ1")
    assert directory.known("RJ1")


def test_an_unknown_code_is_asked_again_and_found_once_another_process_adds_it(database):
    server = OrganisationDirectory(OrganisationTable(database))
    with pytest.raises(UnknownOrganisation):
        server.require("8HV48")
    assert not server.known("8HV48")
    OrganisationDirectory(OrganisationTable(database)).add("8HV48", "Teleradiology Ltd")  # `oix org add`
    assert server.require("8HV48").name == "Teleradiology Ltd"
    assert server.known("8HV48")
