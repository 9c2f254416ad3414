"""The index database's schema upkeep on start, on SQLite and PostgreSQL, and the plan of the
hottest read (study metadata, PS3.18 10.4.1.1.4) on the embedded default."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest
from sqlalchemy import inspect, text

from storage.database import Database, database_url
from storage.instances import _DICOM_JSON_IN
from storage.tables import RETIRED_INDEXES
from tests.servers import new_postgresql_database


@pytest.fixture(params=("sqlite", "postgresql"))
def database(request: pytest.FixtureRequest, tmp_path) -> Iterator[Database]:
    if request.param == "sqlite":
        db = Database(database_url(None, tmp_path))
        yield db
        db.dispose()
        return
    with new_postgresql_database() as url:
        db = Database(database_url(url, tmp_path))
        yield db
        db.dispose()


def _instance_indexes(db: Database) -> set[str]:
    return {index["name"] for index in inspect(db.engine).get_indexes("instance")}


def test_a_new_index_is_built_and_a_retired_one_dropped_when_an_older_index_starts(database):
    """An index created by an earlier version (the retired study/series index, without the new
    ordered one) is brought up to date by the next start, with its rows kept."""
    database.create_schema()
    with database.write() as connection:
        connection.execute(text("DROP INDEX ix_instance_org_study_series_number"))
        connection.execute(text("CREATE INDEX ix_instance_org_study_series ON instance (org, study_uid, series_uid)"))
    assert "ix_instance_org_study_series" in _instance_indexes(database)

    database.create_schema()
    database.create_schema()  # and again: starting twice changes nothing

    indexes = _instance_indexes(database)
    assert "ix_instance_org_study_series_number" in indexes
    assert not indexes & set(RETIRED_INDEXES)


def test_study_metadata_is_read_in_index_order_without_sorting_rows(tmp_path):
    """The metadata of a study (or a series) comes from the index in its served order
    (series, instance number): SQLite plans no temporary B-tree to sort rows that carry each
    instance's DICOM JSON."""
    db = Database(database_url(None, tmp_path))
    db.create_schema()
    db.dispose()
    connection = sqlite3.connect(tmp_path / "index.sqlite3")
    for keys, statement in _DICOM_JSON_IN.items():
        compiled = statement.compile(dialect=db.engine.dialect)
        values = {"org": "org", "study_uid": "1.2", "series_uid": "1.2.3", "sop_instance_uid": "1.2.3.4"}
        plan = connection.execute(f"EXPLAIN QUERY PLAN {compiled}",
                                  [values[name] for name in compiled.positiontup]).fetchall()
        steps = " | ".join(row[-1] for row in plan)
        assert "TEMP B-TREE" not in steps, (keys, steps)
        if "sop_instance_uid" not in keys:
            assert "ix_instance_org_study_series_number" in steps, (keys, steps)
    connection.close()


def test_the_data_version_changes_with_every_commit_of_another_connection(tmp_path):
    """What the metadata cache (dicomweb/wado.py) is checked against: any commit, by any
    connection or process, changes it; reading does not."""
    db = Database(database_url(None, tmp_path))
    db.create_schema()
    other = Database(database_url(None, tmp_path))  # as another worker process would
    try:
        first = db.data_version()
        assert db.data_version() == first
        with db.read() as connection:
            connection.execute(text("SELECT count(*) FROM instance")).scalar_one()
        assert db.data_version() == first
        with db.write() as connection:  # this process's own writers use other connections
            connection.execute(text("CREATE TABLE mark (x)"))
        second = db.data_version()
        assert second != first
        with other.write() as connection:
            connection.execute(text("INSERT INTO mark VALUES (1)"))
        assert db.data_version() != second
    finally:
        other.dispose()
        db.dispose()


def test_postgresql_has_no_data_version(tmp_path):
    """PostgreSQL cannot tell cheaply: metadata is read from the index every time there."""
    with new_postgresql_database() as url:
        db = Database(database_url(url, tmp_path))
        try:
            assert db.data_version() is None
        finally:
            db.dispose()
