"""`oix audit verify` and `oix audit purge` (issue Trust, Audit), run in-process on a real SQLite
data directory and a real PostgreSQL database: a sound trail verifies with its head hash,
a tampered one fails naming the event, and expired events are purged."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, update

from exchange.audit import AuditTrail
from oix.cli import main
from storage.audit_log import ENTRY, OBJECT
from tests.exchange.audit_support import BACKENDS, index_database, open_database, store_event


@pytest.fixture(params=BACKENDS)
def index(request, tmp_path, monkeypatch):
    """(the storage flags of `oix`, the index URL) for an empty index."""
    monkeypatch.delenv("OIX_DATABASE_URL", raising=False)
    monkeypatch.delenv("OIX_AUDIT_RETENTION_DAYS", raising=False)
    data_dir = tmp_path / "data"
    with index_database(request.param, data_dir) as url:
        flags = ["--data-dir", str(data_dir)]
        if request.param == "postgresql":
            flags += ["--database", url]
        yield flags, url


def write_events(url: str, events) -> str:
    """Write `events` to the trail; return the head hash."""
    with open_database(url) as database:
        trail = AuditTrail(database)
        for event in events:
            trail.record(event)
        trail.flush()
        return trail.log.head().hash


def tamper(url: str, *statements) -> None:
    with open_database(url) as database, database.write() as connection:
        for statement in statements:
            connection.execute(statement)


def test_verify_prints_the_event_count_and_head_hash(index, capsys):
    flags, url = index
    head = write_events(url, [store_event(n) for n in range(3)])
    assert main(["audit", "verify", *flags]) == 0
    assert capsys.readouterr().out == f"ok: 3 events, head {head}\n"


def test_verify_of_a_tampered_trail_exits_1_naming_the_event(index, capsys):
    """PS3.15 A.5 events are evidence: an UPDATE of a stored event is found and named."""
    flags, url = index
    write_events(url, [store_event(n) for n in range(4)])
    tamper(url, update(ENTRY).where(ENTRY.c.sequence == 2).values(actor="mallory"))
    assert main(["audit", "verify", *flags]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["event 2: edited: its content does not match its hash: "
                                         "edited after it was written"]
    assert "fails verification: 1 problem(s) in 4 events" in captured.err


def test_verify_names_where_events_were_deleted(index, capsys):
    flags, url = index
    write_events(url, [store_event(n) for n in range(5)])
    tamper(url, delete(OBJECT).where(OBJECT.c.sequence.in_([2, 5])), delete(ENTRY).where(ENTRY.c.sequence.in_([2, 5])))
    assert main(["audit", "verify", *flags]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "event 3: deleted: event 2 deleted before it",
        "event 5: missing at end: event 5 deleted at the end (the chain head records 5)"]


def test_purge_deletes_only_events_past_the_configured_retention(index, capsys, monkeypatch):
    flags, url = index
    now = datetime.now(timezone.utc)
    write_events(url, [store_event(0, at=now - timedelta(days=400)), store_event(1, at=now - timedelta(days=200)),
                       store_event(2, at=now - timedelta(days=10))])
    monkeypatch.setenv("OIX_AUDIT_RETENTION_DAYS", "365")
    assert main(["audit", "purge", "--dry-run", *flags]) == 0
    assert capsys.readouterr().out.startswith("would purge 1 events older than 365 days")
    assert main(["audit", "verify", *flags]) == 0
    assert capsys.readouterr().out.startswith("ok: 3 events")
    assert main(["audit", "purge", *flags]) == 0
    assert capsys.readouterr().out.startswith("purged 1 events older than 365 days")
    assert main(["audit", "verify", *flags]) == 0
    assert capsys.readouterr().out.startswith("ok: 2 events")
    monkeypatch.delenv("OIX_AUDIT_RETENTION_DAYS")  # the default: seven years
    assert main(["audit", "purge", *flags]) == 0
    assert capsys.readouterr().out.startswith("purged 0 events")


def test_purge_stops_at_a_tampered_event_and_exits_1(index, capsys):
    flags, url = index
    write_events(url, [store_event(n, at=datetime.now(timezone.utc) - timedelta(days=4000)) for n in range(3)])
    tamper(url, update(ENTRY).where(ENTRY.c.sequence == 2).values(outcome=12))
    assert main(["audit", "purge", *flags]) == 1
    assert "event 2: edited" in capsys.readouterr().err
    assert main(["audit", "verify", *flags]) == 1
    assert capsys.readouterr().out.startswith("event 2: edited")


def test_verify_refuses_a_data_directory_without_an_index(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OIX_DATABASE_URL", raising=False)
    assert main(["audit", "verify", "--data-dir", str(tmp_path / "nowhere")]) == 1
    assert "no index at" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()
