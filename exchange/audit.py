"""The audit trail (IHE ATNA, DICOM PS3.15 A.5): every action on patient data and every security
event as an append-only, hash-chained event; written in batches, searched per organisation,
verified end to end, and purged once older than the retention period."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum, IntEnum
from typing import NamedTuple

from sqlalchemy import Connection

from exchange.access import ActorKind, Requester
from exchange.errors import ExchangeError
from storage.audit_log import AuditLog, AuditQuery, BrokenChain, ChainEntry, ChainReport
from storage.database import Database

log = logging.getLogger("oix.audit")

DEFAULT_RETENTION = timedelta(days=7 * 365 + 2)  # seven years, leap days included
SEARCHABLE_MONTHS = 12  # the audit API searches the last 12 months; older events are kept, not served
FLUSH_BATCH = 1000  # events per transaction when the buffer is flushed
WRITE_TAKES = 200  # buffered events a caller's transaction takes along, at most: keeps a STOW commit short


# -- the vocabulary (PS3.15 A.5, PS3.16) ------------------------------------------------------

@dataclass(frozen=True)
class Code:
    """A coded value (PS3.15 A.5.1 CodedValueType): code, meaning, coding scheme."""

    value: str
    meaning: str
    scheme: str = "DCM"


class DCM:
    """The DICOM Controlled Terminology codes the trail uses (PS3.16 Annex D)."""

    # CID 400 Audit Event ID (PS3.15 A.5.3)
    AUDIT_LOG_USED = Code("110101", "Audit Log Used")
    INSTANCES_ACCESSED = Code("110103", "DICOM Instances Accessed")
    INSTANCES_TRANSFERRED = Code("110104", "DICOM Instances Transferred")
    STUDY_DELETED = Code("110105", "DICOM Study Deleted")
    EXPORT = Code("110106", "Export")
    IMPORT = Code("110107", "Import")
    PATIENT_RECORD = Code("110110", "Patient Record")
    QUERY = Code("110112", "Query")
    SECURITY_ALERT = Code("110113", "Security Alert")
    USER_AUTHENTICATION = Code("110114", "User Authentication")
    # CID 401 Audit Event Type Code (PS3.15 A.5.3.12: User Authentication)
    LOGIN = Code("110122", "Login")
    LOGOUT = Code("110123", "Logout")
    # CID 403 Security Alert Type Code (PS3.15 A.5.3.11: Security Alert)
    SECURITY_CONFIGURATION = Code("110129", "Security Configuration")
    SOFTWARE_CONFIGURATION = Code("110131", "Software Configuration")
    SECURITY_ROLES_CHANGED = Code("110136", "Security Roles Changed")
    USER_SECURITY_ATTRIBUTES_CHANGED = Code("110137", "User Security Attributes Changed")
    # CID 402 Audit Active Participant Role ID Code
    SOURCE_ROLE_ID = Code("110153", "Source Role ID")
    DESTINATION_ROLE_ID = Code("110152", "Destination Role ID")
    APPLICATION = Code("110150", "Application")
    # CID 404 Audit Participant Object ID Type Code
    STUDY_INSTANCE_UID = Code("110180", "Study Instance UID")
    SOP_CLASS_UID = Code("110181", "SOP Class UID")


class EventActionCode(str, Enum):
    """PS3.15 A.5.1 EventActionCode."""

    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class Outcome(IntEnum):
    """PS3.15 A.5.1 EventOutcomeIndicator. A refused authentication is a minor failure (4), as
    IHE ATNA records it."""

    SUCCESS = 0
    MINOR_FAILURE = 4
    SERIOUS_FAILURE = 8
    MAJOR_FAILURE = 12


class AuditAction(str, Enum):
    """What happened, as a table: each action's EventID (CID 400), EventActionCode and, where
    its message calls for one, EventTypeCode (CID 401 / CID 403). The value is what is stored."""

    # member = (stored slug, EventID, EventActionCode[, EventTypeCode])
    AUTHENTICATE = ("authenticate", DCM.USER_AUTHENTICATION, EventActionCode.EXECUTE, DCM.LOGIN)
    LOGOUT = ("logout", DCM.USER_AUTHENTICATION, EventActionCode.EXECUTE, DCM.LOGOUT)
    QUERY = ("query", DCM.QUERY, EventActionCode.EXECUTE)
    RETRIEVE = ("retrieve", DCM.INSTANCES_TRANSFERRED, EventActionCode.READ)
    STORE = ("store", DCM.INSTANCES_TRANSFERRED, EventActionCode.CREATE)
    SEND = ("send", DCM.EXPORT, EventActionCode.READ)  # PS3.15 A.5.3.4: leaves this organisation's domain
    VIEW = ("view", DCM.INSTANCES_ACCESSED, EventActionCode.READ)
    IMPORT = ("import", DCM.IMPORT, EventActionCode.CREATE)
    RECONCILE = ("reconcile", DCM.PATIENT_RECORD, EventActionCode.UPDATE)
    REJECT = ("reject", DCM.INSTANCES_ACCESSED, EventActionCode.UPDATE)
    DELETE = ("delete", DCM.STUDY_DELETED, EventActionCode.DELETE)
    EXPIRE = ("expire", DCM.STUDY_DELETED, EventActionCode.DELETE)
    ROLES_CHANGED = ("roles-changed", DCM.SECURITY_ALERT, EventActionCode.EXECUTE, DCM.SECURITY_ROLES_CHANGED)
    USER_SECURITY_CHANGED = ("user-security-changed", DCM.SECURITY_ALERT, EventActionCode.EXECUTE,
                             DCM.USER_SECURITY_ATTRIBUTES_CHANGED)
    SECURITY_CONFIGURATION_CHANGED = ("security-configuration-changed", DCM.SECURITY_ALERT,
                                      EventActionCode.EXECUTE, DCM.SECURITY_CONFIGURATION)
    CONFIGURATION_CHANGED = ("configuration-changed", DCM.SECURITY_ALERT, EventActionCode.EXECUTE,
                             DCM.SOFTWARE_CONFIGURATION)
    AUDIT_LOG_USED = ("audit-log-used", DCM.AUDIT_LOG_USED, EventActionCode.READ)

    event_id: Code
    action_code: EventActionCode
    event_type: Code | None

    def __new__(cls, slug: str, event_id: Code, action_code: EventActionCode, event_type: Code | None = None):
        member = str.__new__(cls, slug)
        member._value_ = slug
        member.event_id = event_id
        member.action_code = action_code
        member.event_type = event_type
        return member


# -- events -----------------------------------------------------------------------------------

class PatientIdentifier(NamedTuple):
    """Patient ID (0010,0020) and Issuer of Patient ID (0010,0021)."""

    id: str
    issuer: str = ""


@dataclass(frozen=True, kw_only=True)
class AuditEvent:
    """One event as the code that saw it creates it. Values are cleaned on creation (control
    characters dropped, lengths bounded, identifiers de-duplicated, time in UTC), so an event
    reads back from the trail exactly as it was made. For a QUERY, `detail` is the query."""

    action: AuditAction
    actor: str
    actor_kind: ActorKind
    org: str | None  # the acting organisation; None when there is none, e.g. a refused sign-in
    outcome: Outcome = Outcome.SUCCESS
    outcome_description: str = ""
    patients: tuple[PatientIdentifier, ...] = ()
    studies: tuple[str, ...] = ()
    transfer: str | None = None
    client_address: str = ""
    user_agent: str = ""
    request_id: str = ""
    detail: str = ""
    occurred_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def __post_init__(self) -> None:
        if self.occurred_at.tzinfo is None:
            raise ValueError("an audit event's time must carry its time zone")
        clean = {
            "action": AuditAction(self.action),
            "actor_kind": ActorKind(self.actor_kind),
            "outcome": Outcome(self.outcome),
            "occurred_at": self.occurred_at.astimezone(timezone.utc),
            "actor": _text(self.actor, 256),
            "org": _optional_text(self.org, 64),
            "transfer": _optional_text(self.transfer, 64),
            "outcome_description": _text(self.outcome_description, 1024),
            "client_address": _text(self.client_address, 64),
            "user_agent": _text(self.user_agent, 512),
            "request_id": _text(self.request_id, 64),
            "detail": _text(self.detail, 4096),
            "patients": tuple(dict.fromkeys(
                patient for patient in (_patient(p) for p in self.patients) if patient.id)),
            "studies": tuple(dict.fromkeys(uid for uid in (_identifier(s) for s in self.studies) if uid)),
        }
        for name, value in clean.items():
            object.__setattr__(self, name, value)

    @classmethod
    def for_request(cls, requester: Requester, action: AuditAction, *, org: str | None, **facts) -> AuditEvent:
        """The event of a request: actor, client address, user agent and request id from it."""
        principal = requester.principal
        return cls(action=action, actor=principal.actor, actor_kind=principal.kind, org=org,
                   client_address=requester.client_address, user_agent=requester.user_agent,
                   request_id=requester.request_id, **facts)


@dataclass(frozen=True)
class AuditRecord:
    """An event as the trail holds it: its place in the chain and the hashes that seal it."""

    sequence: int
    hash: str
    previous_hash: str
    event: AuditEvent


class AuditPeriodNotSearchable(ExchangeError):
    pass


class AuditTrailTampered(ExchangeError):
    """An operation met an event that fails verification (`oix audit verify` lists them all)."""


def searchable_since(now: datetime) -> datetime:
    """The oldest time the audit API searches from: 12 months before `now`."""
    try:
        return now.replace(year=now.year - SEARCHABLE_MONTHS // 12)
    except ValueError:  # 29 February
        return now.replace(year=now.year - SEARCHABLE_MONTHS // 12, day=28)


def require_searchable(since: datetime, until: datetime, now: datetime) -> None:
    """Refuse a period the audit API does not search: one starting more than 12 months ago,
    or ending before it starts."""
    if until <= since:
        raise AuditPeriodNotSearchable("the period ends before it starts")
    if since < searchable_since(now):
        raise AuditPeriodNotSearchable(
            f"the audit API searches the last {SEARCHABLE_MONTHS} months: start on or after "
            f"{searchable_since(now):%Y-%m-%dT%H:%M:%SZ}")


# -- the trail --------------------------------------------------------------------------------

class AuditTrail:
    """Events are `record`ed into a buffer that a background thread (`start`/`stop`) flushes
    every `flush_interval` seconds, or `write`n inside a caller's own write transaction so they
    commit with it (STOW: the store events and the index rows, one commit). The same thread
    purges events older than `retention` every `purge_interval`. `enabled=False` (a declared
    demo only) records nothing; reading and verifying still work. `shared`: other server
    processes (`oix serve --workers`) buffer events of their own (see `settle`)."""

    def __init__(self, database: Database, retention: timedelta = DEFAULT_RETENTION, flush_interval: float = 0.2,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 purge_interval: timedelta = timedelta(days=1), enabled: bool = True, shared: bool = False):
        self.log = AuditLog(database)
        self.database = database
        self.retention = retention
        self.flush_interval = flush_interval
        self.clock = clock
        self.purge_interval = purge_interval
        self.enabled = enabled
        self.shared = shared
        self._buffer: list[AuditEvent] = []
        self._buffer_lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time keeps buffered events in order
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- writing ------------------------------------------------------------------------------

    def record(self, event: AuditEvent) -> None:
        """Buffer `event`; it is written within `flush_interval` (or by the next `write`)."""
        if self.enabled:
            with self._buffer_lock:
                self._buffer.append(event)

    def write(self, connection: Connection, events: Iterable[AuditEvent] = ()) -> list[AuditRecord]:
        """Append the buffered events (WRITE_TAKES at most) and `events` inside the caller's open
        write transaction (a `Database.write()` block). Call it as the transaction's last
        statement: on PostgreSQL it holds the chain lock until the commit. If the transaction
        rolls back, the buffered events go back to the buffer; `events` go with the transaction."""
        if not self.enabled:
            return []
        pending = self._take(WRITE_TAKES)
        batch = [*pending, *events]
        if not batch:
            return []
        try:
            stored = self.log.append(connection, [_entry(event) for event in batch],
                                     on_rollback=(lambda: self._restore(pending)) if pending else None)
        except BaseException:
            self._restore(pending)
            raise
        return [AuditRecord(entry.sequence, entry.hash, entry.previous_hash, event)
                for entry, event in zip(stored, batch)]

    def flush(self) -> int:
        """Write what is buffered now, in transactions of its own. Returns how many went."""
        written = 0
        with self._flush_lock:
            while pending := self._take(FLUSH_BATCH):
                try:
                    with self.database.write() as connection:
                        self.log.append(connection, [_entry(event) for event in pending])
                except BaseException:
                    self._restore(pending)
                    raise
                written += len(pending)
        return written

    def settle(self) -> None:
        """Before a search: write this process's buffered events, and where other server
        processes buffer theirs, wait two of their flush intervals, so the search includes what
        any of them recorded before it began."""
        self.flush()
        if self.shared:
            time.sleep(2 * self.flush_interval)

    @property
    def pending(self) -> int:
        with self._buffer_lock:
            return len(self._buffer)

    def _take(self, limit: int | None = None) -> list[AuditEvent]:
        with self._buffer_lock:
            taken = self._buffer[:limit]
            del self._buffer[:len(taken)]
            return taken

    def _restore(self, events: list[AuditEvent]) -> None:
        """Put events that were not written back at the front of the buffer, in order."""
        with self._buffer_lock:
            self._buffer[:0] = events

    # -- the background thread ----------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="oix-audit", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and write what is still buffered."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()

    def _run(self) -> None:
        next_purge = time.monotonic()
        while not self._stopping.wait(self.flush_interval):
            try:
                self.flush()
            except Exception:
                log.exception("audit: writing %d buffered events failed; retrying", self.pending)
            if time.monotonic() >= next_purge:
                next_purge = time.monotonic() + self.purge_interval.total_seconds()
                try:
                    purged = self.purge()
                    if purged:
                        log.info("audit: purged %d events older than %d days", purged, self.retention.days)
                except Exception:
                    log.exception("audit: purging expired events failed")

    # -- reading ------------------------------------------------------------------------------

    def search(self, org: str | None, since: datetime, until: datetime, patient: str | tuple[str, str] | None = None,
               study: str | None = None, actor: str | None = None, action: AuditAction | str | None = None,
               succeeded: bool | None = None, limit: int = 100, offset: int = 0) -> list[AuditRecord]:
        """`org`'s events in [since, until), newest first (org None: events of no organisation,
        such as refused sign-ins, for the server's own administrators). `patient` is a Patient
        ID (any issuer) or a (Patient ID, Issuer of Patient ID) pair. The 12-month rule of the
        audit API is `require_searchable`'s, not this method's. `succeeded` narrows to events
        that succeeded (True) or failed in any way (False)."""
        query = _query(org, since, until, patient, study, actor, action, succeeded)
        return [_record(entry) for entry in self.log.search(query, limit, offset)]

    def count(self, org: str | None, since: datetime, until: datetime, patient: str | tuple[str, str] | None = None,
              study: str | None = None, actor: str | None = None, action: AuditAction | str | None = None,
              succeeded: bool | None = None) -> int:
        return self.log.count(_query(org, since, until, patient, study, actor, action, succeeded))

    def iterate(self, org: str | None, since: datetime, until: datetime, patient: str | tuple[str, str] | None = None,
                study: str | None = None, actor: str | None = None, action: AuditAction | str | None = None,
                succeeded: bool | None = None, page: int = 1000) -> Iterator[AuditRecord]:
        """Every matching event, newest first, read a page at a time (for exports)."""
        query = _query(org, since, until, patient, study, actor, action, succeeded)
        before = None
        while True:
            entries = self.log.search(query, page, before=before)
            yield from (_record(entry) for entry in entries)
            if len(entries) < page:
                return
            before = (entries[-1].occurred_at, entries[-1].sequence)

    def verify(self) -> ChainReport:
        """Re-hash every stored event and check every link, the chain head and the purge anchor."""
        return self.log.verify()

    def purge(self, now: datetime | None = None, dry_run: bool = False) -> int:
        """Delete the events older than the retention period (oldest first, in chain order).
        Raises AuditTrailTampered, having purged what came before, at an event that fails
        verification: tampered evidence is never purged."""
        try:
            return self.log.purge((now or self.clock()) - self.retention, dry_run=dry_run)
        except BrokenChain as exc:
            raise AuditTrailTampered(str(exc)) from exc


# -- conversions ------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def _text(value: object, limit: int) -> str:
    """Text safe to store, hash and render as XML 1.0: no control characters, bounded."""
    return _CONTROL.sub("", str(value))[:limit]


def _optional_text(value: object | None, limit: int) -> str | None:
    return (_text(value, limit) or None) if value is not None else None


def _identifier(value: object) -> str:
    # DICOM pads values to even length with a space (or NUL for UIs).
    return _text(str(value).strip(" \x00"), 128)


def _patient(value: str | tuple[str, str]) -> PatientIdentifier:
    if isinstance(value, str):
        return PatientIdentifier(_identifier(value))
    patient_id, issuer = value
    return PatientIdentifier(_identifier(patient_id), _identifier(issuer or ""))


def _query(org: str | None, since: datetime, until: datetime, patient, study, actor, action,
           succeeded: bool | None = None) -> AuditQuery:
    patient_id = issuer = None
    if isinstance(patient, str):
        patient_id = _identifier(patient)  # any issuer
    elif patient is not None:
        patient_id, issuer = _patient(patient)
    return AuditQuery(org=org, since=since, until=until, patient_id=patient_id, issuer=issuer,
                      study_uid=_identifier(study) if study is not None else None, actor=actor,
                      action=AuditAction(action).value if action is not None else None, succeeded=succeeded)


def _entry(event: AuditEvent) -> ChainEntry:
    return ChainEntry(
        occurred_at=event.occurred_at, action=event.action.value, outcome=int(event.outcome), actor=event.actor,
        actor_kind=event.actor_kind.value, org=event.org, outcome_description=event.outcome_description,
        patients=tuple((patient.id, patient.issuer) for patient in event.patients), studies=event.studies,
        transfer=event.transfer, client_address=event.client_address, user_agent=event.user_agent,
        request_id=event.request_id, detail=event.detail)


def _record(entry: ChainEntry) -> AuditRecord:
    event = AuditEvent(
        action=AuditAction(entry.action), actor=entry.actor, actor_kind=ActorKind(entry.actor_kind), org=entry.org,
        outcome=Outcome(entry.outcome), outcome_description=entry.outcome_description,
        patients=tuple(PatientIdentifier(*patient) for patient in entry.patients), studies=entry.studies,
        transfer=entry.transfer, client_address=entry.client_address, user_agent=entry.user_agent,
        request_id=entry.request_id, detail=entry.detail, occurred_at=entry.occurred_at)
    return AuditRecord(entry.sequence, entry.hash, entry.previous_hash, event)
