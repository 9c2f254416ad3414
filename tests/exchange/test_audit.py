"""The audit trail (issue Trust, Audit): events as PS3.15 A.5 describes them, appended to one
hash chain on a real SQLite file and a real PostgreSQL database, tampering found and named,
old events purged without breaking the chain, and searched one organisation at a time."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, func, insert, select, update

from exchange.access import ActorKind, Principal, Requester
from exchange.audit import (
    WRITE_TAKES,
    AuditAction,
    AuditEvent,
    AuditPeriodNotSearchable,
    AuditTrail,
    AuditTrailTampered,
    Outcome,
    PatientIdentifier,
    require_searchable,
    searchable_since,
)
from storage.audit_log import ANCHOR, ENTRY, GENESIS, HEAD, OBJECT, AuditQuery, ProblemKind, entry_hash
from storage.tables import Organisation
from tests.exchange.audit_support import NOW, open_database, store_event

DAY = timedelta(days=1)
WIDE = (NOW - 400 * DAY, NOW + 400 * DAY)  # a period holding every test event


@pytest.fixture
def trail(database):
    audit = AuditTrail(database)
    yield audit
    audit.stop()


def stored(trail: AuditTrail, events: list[AuditEvent]) -> None:
    for event in events:
        trail.record(event)
    assert trail.flush() == len(events)


def tamper(database, statement) -> None:
    with database.write() as connection:
        connection.execute(statement)


# -- the vocabulary ----------------------------------------------------------------------------

PS3_15_CODES = {
    # action: (EventID, EventActionCode, EventTypeCode)
    AuditAction.AUTHENTICATE: ("110114", "E", "110122"),  # A.5.3.12 User Authentication, Login
    AuditAction.LOGOUT: ("110114", "E", "110123"),  # A.5.3.12, Logout
    AuditAction.QUERY: ("110112", "E", None),  # A.5.3.10 Query: shall be E
    AuditAction.RETRIEVE: ("110104", "R", None),  # A.5.3.7 DICOM Instances Transferred, read
    AuditAction.STORE: ("110104", "C", None),  # A.5.3.7, create
    AuditAction.SEND: ("110106", "R", None),  # A.5.3.4 Data Export: shall be R
    AuditAction.VIEW: ("110103", "R", None),  # A.5.3.6 DICOM Instances Accessed
    AuditAction.IMPORT: ("110107", "C", None),  # A.5.3.5 Data Import
    AuditAction.RECONCILE: ("110110", "U", None),  # A.5.3.15 Patient Record
    AuditAction.REJECT: ("110103", "U", None),
    AuditAction.DELETE: ("110105", "D", None),  # A.5.3.8 DICOM Study Deleted
    AuditAction.EXPIRE: ("110105", "D", None),
    AuditAction.ROLES_CHANGED: ("110113", "E", "110136"),  # A.5.3.11 Security Alert
    AuditAction.USER_SECURITY_CHANGED: ("110113", "E", "110137"),
    AuditAction.SECURITY_CONFIGURATION_CHANGED: ("110113", "E", "110129"),
    AuditAction.CONFIGURATION_CHANGED: ("110113", "E", "110131"),
    AuditAction.AUDIT_LOG_USED: ("110101", "R", None),  # A.5.3.2 Audit Log Used: shall be R
}


def test_every_action_carries_its_ps3_15_event_codes():
    """PS3.15 A.5.3 / PS3.16 CID 400, 401, 403: EventID, EventActionCode and EventTypeCode."""
    assert {action: (action.event_id.value, action.action_code.value,
                     action.event_type.value if action.event_type else None)
            for action in AuditAction} == PS3_15_CODES
    assert all(action.event_id.scheme == "DCM" for action in AuditAction)


def test_an_event_of_a_request_takes_actor_address_agent_and_request_id_from_it():
    requester = Requester(Principal("pacs-key-1", ActorKind.API_KEY), "10.0.0.7", "Orthanc/1.12", "r-42")
    event = AuditEvent.for_request(requester, AuditAction.STORE, org="RJ1", studies=("1.2.3",))
    assert (event.actor, event.actor_kind, event.client_address, event.user_agent, event.request_id, event.org) == \
        ("pacs-key-1", ActorKind.API_KEY, "10.0.0.7", "Orthanc/1.12", "r-42", "RJ1")


def test_an_event_is_cleaned_when_made():
    event = AuditEvent(action="view", actor="asha\x00", actor_kind="user", org="RJ1",
                       user_agent="evil\x1b[31m agent", detail="line one\nline two",
                       patients=("P1 ", ("P1", "NHS"), ("P1", "NHS")), studies=("1.2.3\x00", "1.2.3", " "),
                       occurred_at=datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))))
    assert event.action is AuditAction.VIEW and event.actor_kind is ActorKind.USER
    assert event.actor == "asha" and event.user_agent == "evil[31m agent" and event.detail == "line one\nline two"
    assert event.patients == (PatientIdentifier("P1"), PatientIdentifier("P1", "NHS"))
    assert event.studies == ("1.2.3",)
    assert event.occurred_at == datetime(2025, 1, 1, 10, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="time zone"):
        AuditEvent(action="view", actor="asha", actor_kind="user", org="RJ1", occurred_at=datetime(2025, 1, 1))


# -- the chain ---------------------------------------------------------------------------------

def test_events_are_chained_in_order_and_verify(database, trail):
    stored(trail, [store_event(n) for n in range(5)])
    records = sorted(trail.search("RJ1", *WIDE, limit=10), key=lambda record: record.sequence)
    assert [record.sequence for record in records] == [1, 2, 3, 4, 5]
    assert records[0].previous_hash == GENESIS
    assert all(later.previous_hash == earlier.hash for earlier, later in zip(records, records[1:]))
    assert [record.event for record in records] == [store_event(n) for n in range(5)]
    report = trail.verify()
    assert report.ok and report.checked == 5
    assert (report.head_sequence, report.head_hash) == (5, records[-1].hash)


def test_an_empty_trail_verifies(trail):
    report = trail.verify()
    assert report.ok and report.checked == 0 and report.head_hash == GENESIS


EDITS = {
    "occurred_at": NOW + timedelta(hours=1),
    "action": "view",
    "outcome": 4,
    "outcome_description": "nothing to see",
    "actor": "mallory",
    "actor_kind": "api-key",
    "org": "8HV48",
    "transfer": "t-1",
    "client_address": "192.0.2.66",
    "user_agent": "curl/8.5",
    "request_id": "forged",
    "detail": "0 instances",
    "previous_hash": "f" * 64,
}


def test_editing_any_field_of_a_stored_event_is_detected_naming_it(database, trail):
    """Each column of the event row, and each of its patient and study rows, is covered by the
    event's hash: an UPDATE of any of them is reported as an edit of that event only."""
    stored(trail, [store_event(n) for n in range(5)])
    with database.read() as connection:
        row = dict(connection.execute(select(ENTRY).where(ENTRY.c.sequence == 3)).mappings().one())
        objects = {o["position"]: dict(o) for o in connection.execute(
            select(OBJECT).where(OBJECT.c.sequence == 3)).mappings()}
    event_row = ENTRY.c.sequence == 3
    edits = [(column, update(ENTRY).where(event_row).values({column: value}),
              update(ENTRY).where(event_row).values({column: row[column]})) for column, value in EDITS.items()]
    for name, position, column, value in (("patient id", 0, "identifier", "P999"), ("issuer", 0, "issuer", "OTHER"),
                                          ("study uid", 1, "identifier", "1.2.826.0.1.3680043.10.1.999")):
        object_row = (OBJECT.c.sequence == 3) & (OBJECT.c.position == position)
        edits.append((name, update(OBJECT).where(object_row).values({column: value}),
                      update(OBJECT).where(object_row).values({column: objects[position][column]})))
    for name, edit, restore in edits:
        tamper(database, edit)
        report = trail.verify()
        assert [(problem.sequence, problem.kind) for problem in report.problems] == [(3, ProblemKind.EDITED)], name
        assert str(report.problems[0]).startswith("event 3: edited"), name
        tamper(database, restore)
        assert trail.verify().ok, name


def test_removing_or_adding_a_patient_of_an_event_is_an_edit(database, trail):
    stored(trail, [store_event(n) for n in range(3)])
    tamper(database, delete(OBJECT).where(OBJECT.c.sequence == 2, OBJECT.c.position == 0))
    assert [(p.sequence, p.kind) for p in trail.verify().problems] == [(2, ProblemKind.EDITED)]
    tamper(database, insert(OBJECT).values(sequence=2, position=0, kind="patient", identifier="P1", issuer="NHS"))
    assert trail.verify().ok
    tamper(database, insert(OBJECT).values(sequence=2, position=9, kind="patient", identifier="P7", issuer=""))
    assert [(p.sequence, p.kind) for p in trail.verify().problems] == [(2, ProblemKind.EDITED)]


def test_an_edit_sealed_with_a_recomputed_hash_breaks_the_link_from_the_next_event(database, trail):
    stored(trail, [store_event(n) for n in range(4)])
    [entry] = [entry for entry in trail.log.search(AuditQuery("RJ1", *WIDE), limit=10) if entry.sequence == 2]
    forged = replace(entry, actor="mallory")
    tamper(database, update(ENTRY).where(ENTRY.c.sequence == 2).values(actor="mallory", hash=entry_hash(forged)))
    problems = trail.verify().problems
    assert [(p.sequence, p.kind) for p in problems] == [(3, ProblemKind.CHAIN_BROKEN)]
    assert "event 2 was altered" in problems[0].message


def test_deleting_a_middle_event_is_detected_naming_where(database, trail):
    stored(trail, [store_event(n) for n in range(6)])
    for sequence in (3, 4):
        tamper(database, delete(OBJECT).where(OBJECT.c.sequence == sequence))
        tamper(database, delete(ENTRY).where(ENTRY.c.sequence == sequence))
    report = trail.verify()
    assert [(p.sequence, p.kind) for p in report.problems] == [(5, ProblemKind.DELETED)]
    assert str(report.problems[0]) == "event 5: deleted: events 3-4 deleted before it"
    assert report.checked == 4


def test_deleting_the_first_event_is_detected(database, trail):
    stored(trail, [store_event(n) for n in range(3)])
    tamper(database, delete(OBJECT).where(OBJECT.c.sequence == 1))
    tamper(database, delete(ENTRY).where(ENTRY.c.sequence == 1))
    assert [str(p) for p in trail.verify().problems] == ["event 2: deleted: event 1 deleted before it"]


def test_deleting_the_last_events_is_detected(database, trail):
    stored(trail, [store_event(n) for n in range(5)])
    for sequence in (4, 5):
        tamper(database, delete(OBJECT).where(OBJECT.c.sequence == sequence))
        tamper(database, delete(ENTRY).where(ENTRY.c.sequence == sequence))
    report = trail.verify()
    assert [(p.sequence, p.kind) for p in report.problems] == [(4, ProblemKind.MISSING_AT_END)]
    assert "events 4-5 deleted at the end" in report.problems[0].message


def test_deleting_the_chain_head_is_detected(database, trail):
    stored(trail, [store_event(n) for n in range(3)])
    tamper(database, delete(HEAD))
    report = trail.verify()
    assert [(p.sequence, p.kind) for p in report.problems] == [(1, ProblemKind.BEYOND_HEAD)]


def test_moving_the_head_back_over_a_deleted_last_event_is_detected(database, trail):
    """The head records the newest event's hash as well as its sequence: moving the head's
    sequence back over a deleted event leaves a hash that matches no event."""
    stored(trail, [store_event(n) for n in range(3)])
    tamper(database, delete(OBJECT).where(OBJECT.c.sequence == 3))
    tamper(database, delete(ENTRY).where(ENTRY.c.sequence == 3))
    tamper(database, update(HEAD).values(sequence=2))
    assert [(p.sequence, p.kind) for p in trail.verify().problems] == [(2, ProblemKind.CHAIN_BROKEN)]


# -- writing with the caller's transaction -----------------------------------------------------

def test_write_commits_with_the_callers_index_transaction(database, trail):
    with database.write() as connection:
        connection.execute(insert(Organisation.__table__).values(slug="RJ1", name="St Thomas'", created_at=NOW))
        records = trail.write(connection, [store_event(1), store_event(2)])
    assert [record.sequence for record in records] == [1, 2]
    with database.read() as connection:
        assert connection.execute(select(func.count()).select_from(Organisation.__table__)).scalar_one() == 1
    assert [record.sequence for record in trail.search("RJ1", *WIDE)] == [2, 1]
    assert trail.verify().ok


def test_write_rolls_back_with_the_callers_transaction_and_keeps_buffered_events(database, trail):
    """A failed index commit takes its own audit events with it, and gives back the buffered
    events it had taken; they are written by the next flush, with no gap in the sequence."""
    trail.record(store_event(0, actor="buffered"))
    with pytest.raises(RuntimeError):
        with database.write() as connection:
            connection.execute(insert(Organisation.__table__).values(slug="RJ1", name="x", created_at=NOW))
            assert len(trail.write(connection, [store_event(1, actor="rolled-back")])) == 2
            raise RuntimeError("the index commit failed")
    with database.read() as connection:
        assert connection.execute(select(func.count()).select_from(Organisation.__table__)).scalar_one() == 0
        assert connection.execute(select(func.count()).select_from(ENTRY)).scalar_one() == 0
    assert trail.pending == 1
    assert trail.flush() == 1
    records = trail.search("RJ1", *WIDE)
    assert [(record.sequence, record.event.actor) for record in records] == [(1, "buffered")]
    stored(trail, [store_event(2)])
    report = trail.verify()
    assert report.ok and report.head_sequence == 2


def test_a_transaction_takes_a_bounded_number_of_buffered_events_along(database, trail):
    """A STOW commit stays short however many reads are waiting to be written."""
    for n in range(WRITE_TAKES + 50):
        trail.record(store_event(n, action=AuditAction.QUERY, detail="PatientID=P1"))
    with database.write() as connection:
        assert len(trail.write(connection, [store_event(1000)])) == WRITE_TAKES + 1
    assert trail.pending == 50
    assert trail.flush() == 50 and trail.verify().checked == WRITE_TAKES + 51


def test_a_disabled_trail_records_nothing(database):
    disabled = AuditTrail(database, enabled=False)
    disabled.record(store_event(1))
    with database.write() as connection:
        assert disabled.write(connection, [store_event(2)]) == []
    assert disabled.flush() == 0 and disabled.verify().checked == 0


def test_concurrent_writers_keep_one_unbroken_chain(index_url):
    """Two Database objects on one index stand for two server processes (on PostgreSQL they
    serialise on an advisory lock, on SQLite on its write lock), each with writer threads
    both flushing buffered events and writing inside their own transactions."""
    with open_database(index_url) as first, open_database(index_url) as second:
        trails = [(AuditTrail(first), first), (AuditTrail(second), second)]
        failures = []

        def write(trail: AuditTrail, database, thread: int) -> None:
            try:
                for n in range(20):
                    event = store_event(n, actor=f"writer-{id(trail)}-{thread}")
                    if n % 2:
                        trail.record(event)
                        trail.flush()
                    else:
                        with database.write() as connection:
                            trail.write(connection, [event])
            except Exception as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        threads = [threading.Thread(target=write, args=(trail, database, thread))
                   for trail, database in trails for thread in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not failures
        report = trails[0][0].verify()
        assert report.ok, report.problems
        assert report.checked == report.head_sequence == 2 * 4 * 20
        with first.read() as connection:
            sequences = connection.execute(select(ENTRY.c.sequence).order_by(ENTRY.c.sequence)).scalars().all()
        assert sequences == list(range(1, 161))


def test_the_background_thread_writes_within_the_interval_and_stop_writes_the_rest(database):
    prompt = AuditTrail(database, flush_interval=0.05)
    prompt.start()
    try:
        prompt.record(store_event(1))
        deadline = time.monotonic() + 10
        while prompt.log.head().sequence < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert prompt.log.head().sequence == 1
    finally:
        prompt.stop()
    slow = AuditTrail(database, flush_interval=600)
    slow.start()
    slow.record(store_event(2))
    slow.stop()
    assert slow.log.head().sequence == 2 and slow.verify().ok


# -- retention ---------------------------------------------------------------------------------

def test_purge_removes_exactly_the_events_past_retention_and_verify_still_passes(database):
    clock = [NOW]
    trail = AuditTrail(database, retention=30 * DAY, clock=lambda: clock[0])
    old = [store_event(n, at=NOW - 40 * DAY + n * DAY) for n in range(6)]  # 40 to 35 days old
    recent = [store_event(n, at=NOW - 20 * DAY + n * DAY) for n in range(4)]  # 20 to 17 days old
    stored(trail, old + recent)
    assert trail.purge(dry_run=True) == 6
    assert trail.verify().checked == 10
    assert trail.purge() == 6
    remaining = trail.search("RJ1", *WIDE, limit=100)
    assert sorted(record.sequence for record in remaining) == [7, 8, 9, 10]
    report = trail.verify()
    assert report.ok and report.checked == 4 and report.first_sequence == 7
    assert trail.purge() == 0

    clock[0] = NOW + 15 * DAY  # every remaining event is now past 30 days
    assert trail.purge() == 4
    report = trail.verify()
    assert report.ok and report.checked == 0 and report.head_sequence == 10
    stored(trail, [store_event(99, at=clock[0])])
    report = trail.verify()
    assert report.ok and report.checked == 1 and report.head_sequence == 11
    with database.read() as connection:
        anchor = connection.execute(select(ANCHOR)).mappings().one()
    assert (anchor["sequence"], anchor["purged"]) == (10, 10)


def test_purge_goes_in_chain_order_and_stops_at_an_event_still_kept(database):
    """An event written late (its time older than the one before it) does not let the purge
    skip over a kept event: the chain is cut at one place only."""
    trail = AuditTrail(database, retention=30 * DAY, clock=lambda: NOW)
    stored(trail, [store_event(1, at=NOW - 40 * DAY), store_event(2, at=NOW - 10 * DAY),
                   store_event(3, at=NOW - 50 * DAY)])
    assert trail.purge() == 1
    assert trail.verify().ok and trail.verify().first_sequence == 2


def test_editing_the_first_event_kept_after_a_purge_is_detected(database):
    trail = AuditTrail(database, retention=30 * DAY, clock=lambda: NOW)
    stored(trail, [store_event(n, at=NOW - (40 - n * 5) * DAY) for n in range(6)])  # 40, 35 ... 15 days old
    assert trail.purge() == 2
    tamper(database, update(ENTRY).where(ENTRY.c.sequence == 3).values(previous_hash=GENESIS))
    assert [(p.sequence, p.kind) for p in trail.verify().problems] == [(3, ProblemKind.EDITED)]


def test_purge_stops_before_a_tampered_event_so_the_evidence_stays(database):
    trail = AuditTrail(database, retention=30 * DAY, clock=lambda: NOW)
    stored(trail, [store_event(n, at=NOW - 40 * DAY) for n in range(5)])
    tamper(database, update(ENTRY).where(ENTRY.c.sequence == 3).values(detail="nothing happened"))
    with pytest.raises(AuditTrailTampered, match="event 3: edited.*stopped there after 2 events"):
        trail.purge()
    report = trail.verify()
    assert report.first_sequence == 3
    assert [(p.sequence, p.kind) for p in report.problems] == [(3, ProblemKind.EDITED)]
    with pytest.raises(AuditTrailTampered):
        trail.purge(dry_run=True)


# -- search ------------------------------------------------------------------------------------

@pytest.fixture
def searchable(trail):
    """Events of two organisations over three days, by two actors, about three patients."""
    stored(trail, [
        store_event(1, at=NOW - 2 * DAY, actor="asha"),
        store_event(2, at=NOW - DAY, actor="ben", patients=(("P1", "NHS"),)),
        store_event(3, at=NOW, actor="asha", action=AuditAction.VIEW, patients=(("P1", "OTHER"),),
                    studies=("1.2.826.0.1.3680043.10.1.34",), outcome=Outcome.MINOR_FAILURE),
        store_event(4, at=NOW, org="8HV48", actor="asha", patients=(("P1", "NHS"),),
                    studies=("1.2.826.0.1.3680043.10.1.3",)),
        store_event(5, at=NOW + DAY, actor="asha", action=AuditAction.QUERY, patients=(), studies=(),
                    detail="PatientID=P1"),
    ])
    return trail


def test_search_sees_only_the_organisations_own_events(searchable):
    assert [r.event.request_id for r in searchable.search("RJ1", *WIDE)] == ["req-5", "req-3", "req-2", "req-1"]
    assert [r.event.request_id for r in searchable.search("8HV48", *WIDE)] == ["req-4"]
    assert searchable.search("nobody", *WIDE) == []


def test_search_period_includes_its_start_and_excludes_its_end(searchable):
    since = NOW - DAY + timedelta(seconds=2)  # store_event(2) happened at NOW - DAY + 2 s
    found = searchable.search("RJ1", since, NOW + timedelta(seconds=3))
    assert [r.event.request_id for r in found] == ["req-2"]
    found = searchable.search("RJ1", since, NOW + timedelta(seconds=3, microseconds=1))
    assert [r.event.request_id for r in found] == ["req-3", "req-2"]


def test_search_filters_by_patient_study_actor_action_and_outcome_exactly(searchable):
    def ids(**filters):
        return [r.event.request_id for r in searchable.search("RJ1", *WIDE, **filters)]

    assert ids(patient="P1") == ["req-3", "req-2", "req-1"]  # any issuer
    assert ids(patient=("P1", "NHS")) == ["req-2", "req-1"]
    assert ids(patient=PatientIdentifier("P1", "OTHER")) == ["req-3"]
    assert ids(patient="P") == []
    assert ids(study="1.2.826.0.1.3680043.10.1.3") == []  # held by 8HV48; RJ1's "...1.34" is not a match
    assert ids(study="1.2.826.0.1.3680043.10.1.34") == ["req-3"]
    assert ids(actor="asha") == ["req-5", "req-3", "req-1"]
    assert ids(action=AuditAction.VIEW) == ["req-3"]
    assert ids(action="query", actor="asha") == ["req-5"]
    assert ids(patient="P1", actor="ben") == ["req-2"]
    assert ids(succeeded=False) == ["req-3"]  # any failure outcome (PS3.15 A.5.1: 4, 8 or 12)
    assert ids(succeeded=True, actor="asha") == ["req-5", "req-1"]


def test_search_pages_newest_first_and_counts(searchable):
    first = searchable.search("RJ1", *WIDE, limit=2)
    second = searchable.search("RJ1", *WIDE, limit=2, offset=2)
    assert [r.event.request_id for r in first + second] == ["req-5", "req-3", "req-2", "req-1"]
    assert searchable.count("RJ1", *WIDE) == 4 and searchable.count("RJ1", *WIDE, actor="asha") == 3
    assert [r.event.request_id for r in searchable.iterate("RJ1", *WIDE, page=1)] == \
        ["req-5", "req-3", "req-2", "req-1"]


def test_the_audit_api_searches_the_last_twelve_months_only():
    now = datetime(2024, 2, 29, 12, tzinfo=timezone.utc)
    assert searchable_since(now) == datetime(2023, 2, 28, 12, tzinfo=timezone.utc)
    require_searchable(searchable_since(now), now, now)
    with pytest.raises(AuditPeriodNotSearchable, match="12 months"):
        require_searchable(searchable_since(now) - timedelta(seconds=1), now, now)
    with pytest.raises(AuditPeriodNotSearchable, match="ends before"):
        require_searchable(now, now - DAY, now)


def test_a_refused_authentication_without_an_organisation_is_kept(database, trail):
    """PS3.15 A.5.3.12: a failed login is audited too (outcome 4, minor failure)."""
    refused = AuditEvent(action=AuditAction.AUTHENTICATE, actor="mallory", actor_kind=ActorKind.ANONYMOUS, org=None,
                         outcome=Outcome.MINOR_FAILURE, outcome_description="bad-password", client_address="192.0.2.9")
    stored(trail, [refused])
    with database.read() as connection:
        row = connection.execute(select(ENTRY)).mappings().one()
    assert (row["org"], row["outcome"], row["action"]) == (None, 4, "authenticate")
    assert trail.verify().ok
