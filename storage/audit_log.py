"""The audit log on the index database: one hash chain of entries that is only ever appended
to, searched one organisation at a time, walked end to end to prove nothing was edited or
deleted, and cut at its old end once entries outlive their retention."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from enum import Enum
from itertools import groupby

from sqlalchemy import BigInteger, Connection, and_, bindparam, delete, event, func, insert, or_, select, update

from storage.bulk_insert import BulkInsert
from storage.database import Database
from storage.tables import AuditChainAnchor, AuditChainHead, AuditEntry, AuditParticipantObject

ENTRY = AuditEntry.__table__
OBJECT = AuditParticipantObject.__table__
HEAD = AuditChainHead.__table__
ANCHOR = AuditChainAnchor.__table__

GENESIS = "0" * 64  # the predecessor hash of the first entry ever appended
# PostgreSQL transaction-level advisory locks: every server process appends to the one chain,
# so each append reads and moves the head under CHAIN_LOCK; purges take PURGE_LOCK, which does
# not hold appends up while old entries are deleted.
CHAIN_LOCK = 0x6F69_7861_7564_6974  # "oixaudit"
PURGE_LOCK = 0x6F69_7870_7572_6765  # "oixpurge"
PATIENT, STUDY = "patient", "study"


@dataclass(frozen=True)
class ChainEntry:
    """One event as the chain stores and hashes it: plain values only. `sequence`,
    `previous_hash` and `hash` are set when the entry is appended."""

    occurred_at: datetime
    action: str
    outcome: int
    actor: str
    actor_kind: str
    org: str | None
    outcome_description: str = ""
    patients: tuple[tuple[str, str], ...] = ()  # (Patient ID, Issuer of Patient ID)
    studies: tuple[str, ...] = ()
    transfer: str | None = None
    client_address: str = ""
    user_agent: str = ""
    request_id: str = ""
    detail: str = ""
    sequence: int = 0
    previous_hash: str = ""
    hash: str = ""


def canonical_form(entry: ChainEntry) -> bytes:
    """What an entry's hash covers: every field, its sequence and its predecessor's hash, as
    sorted-key JSON with times in ISO 8601 UTC to the microsecond."""
    return json.dumps({
        "sequence": entry.sequence,
        "occurred_at": utc(entry.occurred_at).isoformat(timespec="microseconds"),
        "action": entry.action,
        "outcome": entry.outcome,
        "outcome_description": entry.outcome_description,
        "actor": entry.actor,
        "actor_kind": entry.actor_kind,
        "org": entry.org,
        "patients": [[patient_id, issuer] for patient_id, issuer in entry.patients],
        "studies": list(entry.studies),
        "transfer": entry.transfer,
        "client_address": entry.client_address,
        "user_agent": entry.user_agent,
        "request_id": entry.request_id,
        "detail": entry.detail,
        "previous_hash": entry.previous_hash,
    }, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def entry_hash(entry: ChainEntry) -> str:
    return hashlib.sha256(canonical_form(entry)).hexdigest()


def utc(moment: datetime) -> datetime:
    """SQLite gives times back without a zone (they are stored in UTC); PostgreSQL gives them in
    the session's zone. The chain hashes them in UTC either way."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


# -- verification results ---------------------------------------------------------------------

class ProblemKind(str, Enum):
    EDITED = "edited"  # the entry's content no longer hashes to its stored hash
    DELETED = "deleted"  # entries are missing before this one
    CHAIN_BROKEN = "chain broken"  # its predecessor hash is not the hash of the entry before it
    MISSING_AT_END = "missing at end"  # the chain head records newer entries than there are
    BEYOND_HEAD = "beyond head"  # entries newer than the chain head (head rolled back or deleted)


@dataclass(frozen=True)
class ChainProblem:
    sequence: int  # the entry the problem is found at
    kind: ProblemKind
    message: str

    def __str__(self) -> str:
        return f"event {self.sequence}: {self.kind.value}: {self.message}"


@dataclass(frozen=True)
class ChainReport:
    checked: int  # entries walked
    first_sequence: int  # the first entry kept (anchor + 1)
    head_sequence: int
    head_hash: str
    problems: tuple[ChainProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class ChainPoint:
    """A position in the chain: the head (newest entry) or the anchor (last entry purged)."""

    sequence: int
    hash: str


ORIGIN = ChainPoint(0, GENESIS)


# -- search -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class AuditQuery:
    """One organisation's entries in [since, until) (org None: the entries of no organisation,
    such as refused sign-ins), narrowed by the filters that are set. A patient is matched by
    Patient ID, and by Issuer of Patient ID too when `issuer` is set."""

    org: str | None
    since: datetime
    until: datetime
    patient_id: str | None = None
    issuer: str | None = None
    study_uid: str | None = None
    actor: str | None = None
    action: str | None = None
    succeeded: bool | None = None  # outcome 0 (PS3.15 A.5.1 EventOutcomeIndicator), or any failure


class AuditLog:
    def __init__(self, database: Database):
        self.database = database

    # -- append -------------------------------------------------------------------------------

    def append(self, connection: Connection, entries: Sequence[ChainEntry],
               on_rollback: Callable[[], None] | None = None) -> list[ChainEntry]:
        """Chain `entries` after the head, inside the caller's write transaction; they commit or
        roll back with it (and `on_rollback` is called if it does). Returns them with sequence
        and hashes set."""
        if not entries:
            return []
        head = _claim(connection, CHAIN_LOCK, HEAD)
        chained = []
        previous = head
        for entry in entries:
            entry = replace(entry, occurred_at=utc(entry.occurred_at), sequence=previous.sequence + 1,
                            previous_hash=previous.hash, hash="")
            entry = replace(entry, hash=entry_hash(entry))
            chained.append(entry)
            previous = ChainPoint(entry.sequence, entry.hash)
        _INSERT_ENTRIES.run(connection, [_entry_row(entry) for entry in chained])
        objects = [row for entry in chained for row in _object_rows(entry)]
        if objects:
            _INSERT_OBJECTS.run(connection, objects)
        moved = connection.execute(_MOVE_HEAD, {"to_sequence": previous.sequence, "to_hash": previous.hash,
                                                "now": datetime.now(timezone.utc)}).rowcount
        if not moved:  # the first append ever
            connection.execute(insert(HEAD).values(id=1, sequence=previous.sequence, hash=previous.hash,
                                                   updated_at=datetime.now(timezone.utc)))
        if on_rollback is not None:
            event.listen(connection, "rollback", lambda _connection: on_rollback(), once=True)
        return chained

    def head(self) -> ChainPoint:
        with self.database.read() as connection:
            return _point(connection, HEAD)

    # -- search -------------------------------------------------------------------------------

    def search(self, query: AuditQuery, limit: int, offset: int = 0,
               before: tuple[datetime, int] | None = None) -> list[ChainEntry]:
        """Newest first. `before` (time, sequence) continues after the last entry of a page."""
        conditions = _conditions(query)
        if before is not None:
            moment, sequence = utc(before[0]), before[1]
            conditions.append(or_(ENTRY.c.occurred_at < moment,
                                  and_(ENTRY.c.occurred_at == moment, ENTRY.c.sequence < sequence)))
        statement = (select(ENTRY).where(*conditions)
                     .order_by(ENTRY.c.occurred_at.desc(), ENTRY.c.sequence.desc()).limit(limit).offset(offset))
        with self.database.read() as connection:
            rows = connection.execute(statement).mappings().all()
            objects = _objects_of(connection, [row["sequence"] for row in rows])
        return [_entry(row, objects.get(row["sequence"], ())) for row in rows]

    def count(self, query: AuditQuery) -> int:
        with self.database.read() as connection:
            return connection.execute(select(func.count()).select_from(ENTRY).where(*_conditions(query))).scalar_one()

    # -- verify -------------------------------------------------------------------------------

    def verify(self, batch: int = 2000) -> ChainReport:
        """Walk the chain from the anchor to the head, re-hashing every entry and checking each
        link; entries appended while the walk runs are left for the next one. A purge that
        moves the anchor during the walk makes it start again, once."""
        report, anchor = self._walk(batch)
        if not report.ok:
            with self.database.read() as connection:
                if _point(connection, ANCHOR) != anchor:
                    report, _ = self._walk(batch)
        return report

    def _walk(self, batch: int) -> tuple[ChainReport, ChainPoint]:
        with self.database.read() as connection:
            anchor = _point(connection, ANCHOR)
            head = _point(connection, HEAD)
        problems: list[ChainProblem] = []
        expected = anchor
        checked = 0
        while True:
            with self.database.read() as connection:
                rows = connection.execute(
                    select(ENTRY).where(ENTRY.c.sequence > expected.sequence, ENTRY.c.sequence <= head.sequence)
                    .order_by(ENTRY.c.sequence).limit(batch)).mappings().all()
                if not rows:
                    break
                objects = _objects_of(connection, [row["sequence"] for row in rows])
            for row in rows:
                entry = _entry(row, objects.get(row["sequence"], ()))
                problems.extend(_check(entry, expected))
                expected = ChainPoint(entry.sequence, entry.hash)
                checked += 1
        problems.extend(self._check_end(expected, head, anchor))
        return ChainReport(checked, anchor.sequence + 1, head.sequence, head.hash, tuple(problems)), anchor

    def _check_end(self, last: ChainPoint, head: ChainPoint, anchor: ChainPoint) -> list[ChainProblem]:
        problems = []
        if head.sequence < anchor.sequence:
            problems.append(ChainProblem(head.sequence, ProblemKind.MISSING_AT_END,
                                         f"the chain head ({head.sequence}) is behind the purge anchor "
                                         f"({anchor.sequence})"))
        elif last.sequence < head.sequence:
            problems.append(ChainProblem(last.sequence + 1, ProblemKind.MISSING_AT_END,
                                         f"{_span(last.sequence + 1, head.sequence)} deleted at the end "
                                         f"(the chain head records {head.sequence})"))
        elif last.hash != head.hash:
            problems.append(ChainProblem(last.sequence, ProblemKind.CHAIN_BROKEN,
                                         "its hash is not the one the chain head records: altered and re-hashed"))
        # Read the newest sequence before the head: anything committed by then has moved the head.
        with self.database.read() as connection:
            newest = connection.execute(select(func.max(ENTRY.c.sequence))).scalar_one() or 0
            head_now = _point(connection, HEAD)
        if newest > head_now.sequence:
            problems.append(ChainProblem(head_now.sequence + 1, ProblemKind.BEYOND_HEAD,
                                         f"{_span(head_now.sequence + 1, newest)} lie beyond the chain head "
                                         f"({head_now.sequence}): the head was rolled back or deleted"))
        return problems

    # -- purge --------------------------------------------------------------------------------

    def purge(self, cutoff: datetime, dry_run: bool = False, batch: int = 5000) -> int:
        """Delete the entries before `cutoff` from the old end of the chain, in chain order
        (an entry still inside retention stops the purge even if later ones are older), and move
        the anchor to the last one deleted. Returns how many went (or would go). Each entry is
        verified before it goes: at a tampered one the purge stops and raises BrokenChain, so
        that the evidence stays."""
        cutoff = utc(cutoff)
        total = 0
        after: ChainPoint | None = None
        while True:
            if dry_run:
                with self.database.read() as connection:
                    after = after or _point(connection, ANCHOR)
                    expired, more, problem = _expired_prefix(connection, after, cutoff, batch)
            else:
                with self.database.write() as connection:
                    anchor = _claim(connection, PURGE_LOCK, ANCHOR)
                    expired, more, problem = _expired_prefix(connection, anchor, cutoff, batch)
                    if expired:
                        last = expired[-1]
                        in_range = (anchor.sequence + 1, last.sequence)
                        connection.execute(delete(OBJECT).where(OBJECT.c.sequence.between(*in_range)))
                        connection.execute(delete(ENTRY).where(ENTRY.c.sequence.between(*in_range)))
                        purged = connection.execute(select(ANCHOR.c.purged)).scalar() or 0
                        _set_point(connection, ANCHOR, last, purged=purged + len(expired), purged_before=cutoff,
                                   updated_at=datetime.now(timezone.utc))
            total += len(expired)
            if problem is not None:
                raise BrokenChain(problem, total)
            if not expired or not more:
                return total
            after = expired[-1]


class BrokenChain(Exception):
    """A purge reached a tampered entry and stopped before it, having purged `purged`."""

    def __init__(self, problem: ChainProblem, purged: int):
        super().__init__(f"{problem}; the purge stopped there after {purged} events")
        self.problem = problem
        self.purged = purged


# -- SQL helpers ------------------------------------------------------------------------------

# Built once: appends run inside every STOW commit.
_ADVISORY_LOCK = select(func.pg_advisory_xact_lock(bindparam("key", type_=BigInteger)))
_READ = {table.name: select(table.c.sequence, table.c.hash).where(table.c.id == 1) for table in (HEAD, ANCHOR)}
_TOUCH = {table.name: update(table).where(table.c.id == 1).values(sequence=table.c.sequence)
          .returning(table.c.sequence, table.c.hash) for table in (HEAD, ANCHOR)}
_INSERT_ENTRIES = BulkInsert(ENTRY)
_INSERT_OBJECTS = BulkInsert(OBJECT)
_MOVE_HEAD = update(HEAD).where(HEAD.c.id == 1).values(
    sequence=bindparam("to_sequence"), hash=bindparam("to_hash"), updated_at=bindparam("now"))


def _claim(connection: Connection, key: int, table) -> ChainPoint:
    """Lock one chain point (HEAD or ANCHOR) for the rest of the transaction, then read it.
    PostgreSQL: a transaction-level advisory lock. SQLite: a no-op UPDATE of the point, which
    opens the write transaction (one writer at a time, across processes too) before reading."""
    if connection.dialect.name == "postgresql":
        connection.execute(_ADVISORY_LOCK, {"key": key})
        row = connection.execute(_READ[table.name]).first()
    else:
        row = connection.execute(_TOUCH[table.name]).first()
    return ChainPoint(row.sequence, row.hash) if row else ORIGIN


def _point(connection: Connection, table) -> ChainPoint:
    row = connection.execute(_READ[table.name]).first()
    return ChainPoint(row.sequence, row.hash) if row else ORIGIN


def _set_point(connection: Connection, table, to: ChainPoint, **values) -> None:
    """Set the one row of HEAD or ANCHOR to `to`, creating it the first time."""
    moved = connection.execute(update(table).where(table.c.id == 1)
                               .values(sequence=to.sequence, hash=to.hash, **values)).rowcount
    if not moved:
        connection.execute(insert(table).values(id=1, sequence=to.sequence, hash=to.hash, **values))


def _expired_prefix(connection: Connection, after: ChainPoint, cutoff: datetime,
                    batch: int) -> tuple[list[ChainPoint], bool, ChainProblem | None]:
    """The entries after `after`, in chain order, up to the first one not older than `cutoff`
    or the first that fails verification; whether more may follow; and that failure."""
    rows = connection.execute(select(ENTRY).where(ENTRY.c.sequence > after.sequence)
                              .order_by(ENTRY.c.sequence).limit(batch)).mappings().all()
    objects = _objects_of(connection, [row["sequence"] for row in rows])
    expired: list[ChainPoint] = []
    expected = after
    for row in rows:
        entry = _entry(row, objects.get(row["sequence"], ()))
        if entry.occurred_at >= cutoff:
            return expired, False, None
        problems = _check(entry, expected)
        if problems:
            return expired, False, problems[0]
        expected = ChainPoint(entry.sequence, entry.hash)
        expired.append(expected)
    return expired, len(rows) == batch, None


def _conditions(query: AuditQuery) -> list:
    conditions = [ENTRY.c.org.is_(None) if query.org is None else ENTRY.c.org == query.org,
                  ENTRY.c.occurred_at >= utc(query.since),
                  ENTRY.c.occurred_at < utc(query.until)]
    if query.actor is not None:
        conditions.append(ENTRY.c.actor == query.actor)
    if query.action is not None:
        conditions.append(ENTRY.c.action == query.action)
    if query.succeeded is not None:
        conditions.append(ENTRY.c.outcome == 0 if query.succeeded else ENTRY.c.outcome != 0)
    if query.patient_id is not None:
        patient = [OBJECT.c.kind == PATIENT, OBJECT.c.identifier == query.patient_id]
        if query.issuer is not None:
            patient.append(OBJECT.c.issuer == query.issuer)
        conditions.append(ENTRY.c.sequence.in_(select(OBJECT.c.sequence).where(*patient)))
    if query.study_uid is not None:
        conditions.append(ENTRY.c.sequence.in_(
            select(OBJECT.c.sequence).where(OBJECT.c.kind == STUDY, OBJECT.c.identifier == query.study_uid)))
    return conditions


def _entry_row(entry: ChainEntry) -> dict:
    return {
        "sequence": entry.sequence, "occurred_at": entry.occurred_at, "action": entry.action,
        "outcome": entry.outcome, "outcome_description": entry.outcome_description, "actor": entry.actor,
        "actor_kind": entry.actor_kind, "org": entry.org, "transfer": entry.transfer,
        "client_address": entry.client_address, "user_agent": entry.user_agent, "request_id": entry.request_id,
        "detail": entry.detail, "previous_hash": entry.previous_hash, "hash": entry.hash,
    }


def _object_rows(entry: ChainEntry) -> Iterable[dict]:
    position = 0
    for patient_id, issuer in entry.patients:
        yield {"sequence": entry.sequence, "position": position, "kind": PATIENT, "identifier": patient_id,
               "issuer": issuer}
        position += 1
    for study_uid in entry.studies:
        yield {"sequence": entry.sequence, "position": position, "kind": STUDY, "identifier": study_uid,
               "issuer": ""}
        position += 1


def _objects_of(connection: Connection, sequences: list[int]) -> dict[int, list]:
    if not sequences:
        return {}
    rows = connection.execute(
        select(OBJECT.c.sequence, OBJECT.c.kind, OBJECT.c.identifier, OBJECT.c.issuer)
        .where(OBJECT.c.sequence.in_(sequences)).order_by(OBJECT.c.sequence, OBJECT.c.position)).all()
    return {sequence: list(group) for sequence, group in groupby(rows, key=lambda row: row.sequence)}


def _entry(row, objects) -> ChainEntry:
    return ChainEntry(
        occurred_at=utc(row["occurred_at"]), action=row["action"], outcome=row["outcome"], actor=row["actor"],
        actor_kind=row["actor_kind"], org=row["org"], outcome_description=row["outcome_description"],
        patients=tuple((o.identifier, o.issuer) for o in objects if o.kind == PATIENT),
        studies=tuple(o.identifier for o in objects if o.kind == STUDY),
        transfer=row["transfer"], client_address=row["client_address"], user_agent=row["user_agent"],
        request_id=row["request_id"], detail=row["detail"], sequence=row["sequence"],
        previous_hash=row["previous_hash"], hash=row["hash"])


def _check(entry: ChainEntry, expected: ChainPoint) -> list[ChainProblem]:
    """What is wrong with `entry`, given that the entry before it (or the anchor) is `expected`.
    Deletions show as a sequence gap: sequences come from the head under the chain lock, and a
    rolled-back append rolls the head back with it, so a gap is never a legitimate one."""
    problems = []
    edited = entry_hash(entry) != entry.hash
    if edited:
        problems.append(ChainProblem(entry.sequence, ProblemKind.EDITED,
                                     "its content does not match its hash: edited after it was written"))
    if entry.sequence != expected.sequence + 1:
        problems.append(ChainProblem(entry.sequence, ProblemKind.DELETED,
                                     f"{_span(expected.sequence + 1, entry.sequence - 1)} deleted before it"))
    elif not edited and entry.previous_hash != expected.hash:
        before = f"event {expected.sequence}" if expected.sequence else "the start of the chain"
        problems.append(ChainProblem(entry.sequence, ProblemKind.CHAIN_BROKEN,
                                     f"its predecessor hash is not the hash of {before}: {before} was altered "
                                     f"and re-hashed, or this link was"))
    return problems


def _span(first: int, last: int) -> str:
    return f"event {first}" if first == last else f"events {first}-{last}"
