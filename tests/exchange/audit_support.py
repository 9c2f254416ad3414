"""What the audit trail tests share: an empty index database of the test's own on either
backend (a SQLite file, or a fresh PostgreSQL database), and events as the server makes them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from exchange.access import ActorKind
from exchange.audit import AuditAction, AuditEvent, Outcome, PatientIdentifier
from storage.database import Database, database_url
from tests.servers import new_postgresql_database

BACKENDS = ("sqlite", "postgresql")
NOW = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=timezone.utc)


@contextmanager
def index_database(backend: str, data_dir: Path) -> Iterator[str]:
    """The URL of an empty index: `data_dir`'s SQLite file, or a PostgreSQL database dropped
    afterwards."""
    if backend == "postgresql":
        with new_postgresql_database() as url:
            yield database_url(url, data_dir)
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        yield database_url(None, data_dir)


@contextmanager
def open_database(url: str) -> Iterator[Database]:
    database = Database(url)
    database.create_schema()
    try:
        yield database
    finally:
        database.dispose()


def store_event(number: int = 0, *, org: str = "RJ1", actor: str = "asha", at: datetime = NOW,
                **facts) -> AuditEvent:
    """A STOW-RS store by a person, its study and patient numbered by `number`; `facts` override."""
    values = dict(action=AuditAction.STORE, actor=actor, actor_kind=ActorKind.USER, org=org,
                  outcome=Outcome.SUCCESS, patients=(PatientIdentifier(f"P{number}", "NHS"),),
                  studies=(f"1.2.826.0.1.3680043.10.1.{number}",), client_address="10.1.2.3",
                  user_agent="dicomweb-client/0.59", request_id=f"req-{number}", detail=f"{number + 1} instances",
                  occurred_at=at + timedelta(seconds=number))
    values.update(facts)
    return AuditEvent(**values)
