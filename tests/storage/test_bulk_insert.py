"""storage/bulk_insert.py against SQLAlchemy Core on SQLite and PostgreSQL: the same rows stored
(defaults, DateTime and binary values included), conflicts left out and reported, an error
raised as Core raises it, and more rows than one statement takes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from storage.audit_log import ENTRY
from storage.bulk_insert import MAX_ROWS_PER_STATEMENT, BulkInsert
from storage.database import Database, database_url
from storage.instances import SERIES
from tests.servers import new_postgresql_database

WHEN = datetime(2026, 12, 7, 1, 2, 3, 456789, tzinfo=timezone.utc)


@pytest.fixture(params=("sqlite", "postgresql"))
def database(request: pytest.FixtureRequest, tmp_path) -> Iterator[Database]:
    if request.param == "sqlite":
        opened = Database(database_url(None, tmp_path))
        opened.create_schema()
        yield opened
        opened.dispose()
        return
    with new_postgresql_database() as url:
        opened = Database(database_url(url, tmp_path))
        opened.create_schema()
        yield opened
        opened.dispose()


def series_row(uid: str, **values) -> dict:
    return {"org": "RJ1", "study_uid": "1.2", "series_uid": uid, "attributes": b"\x00{}\xff", **values}


def test_rows_are_stored_as_core_stores_them(database):
    with database.write() as connection:
        connection.execute(insert(SERIES), [series_row("1.2.1", modality="CT", created_at=WHEN)])
        BulkInsert(SERIES).run(connection, [series_row("1.2.2", modality="CT", created_at=WHEN)])
        BulkInsert(SERIES).run(connection, [series_row("1.2.3")])  # every default taken
    with database.read() as connection:
        rows = [dict(row) for row in connection.execute(select(SERIES).order_by(SERIES.c.series_uid)).mappings()]
    core, bulk, defaults = ({k: v for k, v in row.items() if k not in ("id", "series_uid")} for row in rows)
    assert bulk == core
    assert defaults["modality"] == "" and defaults["series_number"] is None
    assert abs((defaults["created_at"].replace(tzinfo=timezone.utc) - datetime.now(timezone.utc)).total_seconds()) < 60
    if database.is_sqlite:  # the text SQLite holds, not just what reads back
        with database.engine.connect() as connection:
            held = connection.exec_driver_sql("SELECT created_at FROM series ORDER BY series_uid").scalars().all()
        assert held[0] == held[1] == "2026-12-07 01:02:03.456789"


def test_conflicting_rows_are_left_out_and_only_inserted_rows_returned(database):
    insert_series = BulkInsert(SERIES, conflict=("org", "study_uid", "series_uid"), returning="series_uid")
    count = MAX_ROWS_PER_STATEMENT + 7  # two statements
    with database.write() as connection:
        assert insert_series.run(connection, [series_row("1.2.0", modality="MR")]) == ["1.2.0"]
        added = insert_series.run(connection, [series_row(f"1.2.{n}") for n in range(count)])
    assert sorted(added) == sorted(f"1.2.{n}" for n in range(1, count))
    with database.read() as connection:
        assert connection.execute(select(SERIES.c.modality).where(SERIES.c.series_uid == "1.2.0")).scalar_one() == "MR"


def test_without_a_conflict_clause_a_duplicate_key_raises_integrity_error(database):
    row = {"sequence": 1, "occurred_at": WHEN, "action": "E", "outcome": 0, "actor": "a", "actor_kind": "user",
           "previous_hash": "", "hash": "h"}
    with pytest.raises(IntegrityError):
        with database.write() as connection:
            BulkInsert(ENTRY).run(connection, [row, row])
    with database.read() as connection:
        assert connection.execute(select(ENTRY.c.sequence)).all() == []  # rolled back
