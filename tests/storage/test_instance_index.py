"""Adding instances to the index (PS3.4 B.2.3 outcomes of a store), on SQLite and PostgreSQL:
stored, already stored (the same bytes again), or a conflict (other bytes under a held SOP
Instance UID), and a refused object leaves no study or series of its own behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from exchange.organisations import OrganisationDirectory
from storage.database import Database, database_url
from storage.instances import SERIES, STUDY, AddOutcome, InstanceIndex
from storage.organisations import OrganisationTable
from storage.records import InstanceRecord
from tests.servers import new_postgresql_database

STORED, AGAIN, CONFLICT = AddOutcome.STORED, AddOutcome.ALREADY_STORED, AddOutcome.CONFLICT


@pytest.fixture(params=("sqlite", "postgresql"))
def index(request: pytest.FixtureRequest, tmp_path) -> Iterator[InstanceIndex]:
    def opened(url: str | None) -> Database:
        database = Database(database_url(url, tmp_path))
        database.create_schema()
        OrganisationDirectory(OrganisationTable(database)).add("RJ1", "St Thomas'")
        return database

    if request.param == "sqlite":
        database = opened(None)
        yield InstanceIndex(database)
        database.dispose()
        return
    with new_postgresql_database() as url:
        database = opened(url)
        yield InstanceIndex(database)
        database.dispose()


def record(sop: str, blob: str, study: str = "1.2.3", series: str = "1.2.3.1") -> InstanceRecord:
    return InstanceRecord(
        study_uid=study, series_uid=series, sop_instance_uid=sop, sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax="1.2.840.10008.1.2.1", blob_key=blob, size=10, instance_number=1, number_of_frames=1,
        study_columns={"patient_id": "P1"}, study_attributes=b"{}", series_columns={"modality": "CT"},
        series_attributes=b"{}", instance_attributes=b"{}", dicom_json=b"{}", layout=b"{}")


def studies_and_series(index: InstanceIndex) -> tuple[list[str], int]:
    with index.database.read() as connection:
        studies = sorted(connection.execute(select(STUDY.c.study_uid)).scalars())
        series = connection.execute(select(func.count()).select_from(SERIES)).scalar_one()
    return studies, series


def test_new_objects_are_stored_and_the_same_bytes_again_are_already_stored(index):
    assert index.add("RJ1", [record("1.1", "a"), record("1.2", "b")]) == [STORED, STORED]
    assert index.add("RJ1", [record("1.1", "a"), record("1.3", "c")]) == [AGAIN, STORED]
    assert studies_and_series(index) == (["1.2.3"], 1)


def test_other_bytes_under_a_held_uid_conflict_and_leave_no_study_behind(index):
    index.add("RJ1", [record("1.1", "a")])
    assert index.add("RJ1", [record("1.1", "other", study="9.9.9", series="9.9.9.1")]) == [CONFLICT]
    assert studies_and_series(index) == (["1.2.3"], 1)
    assert index.held("RJ1", "1.2.3")[0].blob_key == "a"


def test_within_one_request_the_first_object_of_a_uid_is_kept(index):
    outcomes = index.add("RJ1", [record("1.1", "a"), record("1.1", "a"), record("1.1", "b")])
    assert outcomes == [STORED, AGAIN, CONFLICT]
    # Held already: a copy equal to the held object is stored again, a differing one conflicts,
    # whichever comes first in the request.
    assert index.add("RJ1", [record("1.1", "b"), record("1.1", "a")]) == [CONFLICT, AGAIN]


def test_another_key_for_a_held_uid_is_the_same_object_when_same_bytes_says_so(index):
    """A blob stored before BLAKE3 named blobs has its SHA-256 name (storage/content_key.py):
    the same object stored again comes under another key, and `same_bytes` tells them apart
    from a conflict. It is asked only when the keys differ."""
    asked = []

    def same_bytes(held: str, key: str) -> bool:
        asked.append((held, key))
        return (held, key) == ("sha256-name", "blake3-name")

    index.add("RJ1", [record("1.1", "sha256-name"), record("1.2", "b")])
    assert index.add("RJ1", [record("1.1", "blake3-name"), record("1.2", "b")], same_bytes=same_bytes) == [AGAIN, AGAIN]
    assert index.add("RJ1", [record("1.1", "other-bytes")], same_bytes=same_bytes) == [CONFLICT]
    assert asked == [("sha256-name", "blake3-name"), ("sha256-name", "other-bytes")]
