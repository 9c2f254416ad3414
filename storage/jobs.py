"""The job queue on the index database: work recorded in the same database as the change that
caused it (no extra broker), claimed by one worker at a time under a lease, then marked done,
queued again for later, or given up. On PostgreSQL several server processes share it
(SELECT … FOR UPDATE SKIP LOCKED); on SQLite claims are serialised by the write lock."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum

from sqlalchemy import Connection, and_, delete, insert, or_, select, update

from storage import tables
from storage.database import Database
from storage.tables import as_utc

JOB = tables.Job.__table__

MAX_ERROR_CHARS = 2000  # last_error is for people: the start of a long traceback is enough
PURGE_BATCH = 5000
LEASE_LOST_ON_LAST_ATTEMPT = ("its worker stopped holding the lease on the last attempt (the server stopped "
                              "or the worker crashed)")


class JobState(str, Enum):
    """The states a job row can be in; exchange/jobs.py has the table of moves between them."""

    QUEUED = "queued"  # waiting until run_after
    RUNNING = "running"  # claimed by a worker until leased_until
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # given up: a permanent failure, or no attempts left


FINISHED = (JobState.SUCCEEDED, JobState.FAILED)


@dataclass(frozen=True)
class Job:
    """A job as read from the queue. `attempts` counts attempts started: while a job runs, it is
    the number of this attempt, which the worker names when it records the outcome."""

    id: int
    kind: str
    org: str
    payload: dict
    state: JobState
    attempts: int
    max_attempts: int
    run_after: datetime
    leased_until: datetime | None
    last_error: str
    created_at: datetime
    finished_at: datetime | None

    @property
    def last_attempt(self) -> bool:
        return self.attempts >= self.max_attempts


class JobQueue:
    """Every method takes `now` (UTC; default: the system clock) so that the runner's clock, and
    a test's, decides what is due and when a lease runs out."""

    def __init__(self, database: Database):
        self.database = database

    # -- adding work ----------------------------------------------------------------------------

    def enqueue(self, kind: str, org: str, payload: Mapping, *, run_after: datetime | None = None,
                max_attempts: int, connection: Connection | None = None, now: datetime | None = None) -> int:
        """Queue a job and return its id. With `connection` (an open `Database.write()` block) the
        job commits, or rolls back, with the change that caused it."""
        if max_attempts < 1:
            raise ValueError("a job needs at least one attempt")
        now = _now(now)
        values = {"kind": kind, "org": org, "payload": _encode(payload), "state": JobState.QUEUED.value,
                  "attempts": 0, "max_attempts": max_attempts,
                  "run_after": _utc(run_after) if run_after is not None else now, "leased_until": None,
                  "last_error": "", "created_at": now, "finished_at": None}
        if connection is not None:
            return _insert(connection, values)
        with self.database.write() as opened:
            return _insert(opened, values)

    # -- taking work ----------------------------------------------------------------------------

    def claim(self, kinds: Collection[str], limit: int, lease: timedelta, *, now: datetime | None = None) -> list[Job]:
        """Up to `limit` due jobs of `kinds`, oldest due first, each marked running until
        now + `lease` with its attempt counted. A running job whose lease has run out (its worker
        crashed or stopped) is due again; on its last attempt it is given up instead."""
        now = _now(now)
        kinds = list(kinds)
        if not kinds or limit < 1:
            return []
        due = _due(kinds, now)
        # A cheap read first: idle workers poll, and should not take SQLite's write lock to find nothing.
        with self.database.read() as connection:
            if connection.execute(select(JOB.c.id).where(due).limit(1)).first() is None:
                return []
        with self.database.write() as connection:
            # The skip-locked subqueries: another process's claim holds its rows until it commits,
            # and this one takes the next rows instead of waiting (PostgreSQL; SQLite ignores it and
            # runs one writer at a time).
            exhausted = (select(JOB.c.id).where(due, JOB.c.attempts >= JOB.c.max_attempts)
                         .with_for_update(skip_locked=True))
            connection.execute(update(JOB).where(JOB.c.id.in_(exhausted)).values(
                state=JobState.FAILED.value, leased_until=None, finished_at=now,
                last_error=LEASE_LOST_ON_LAST_ATTEMPT))
            chosen = (select(JOB.c.id).where(due, JOB.c.attempts < JOB.c.max_attempts)
                      .order_by(JOB.c.run_after, JOB.c.id).limit(limit).with_for_update(skip_locked=True))
            rows = connection.execute(
                update(JOB).where(JOB.c.id.in_(chosen))
                .values(state=JobState.RUNNING.value, attempts=JOB.c.attempts + 1, leased_until=now + lease)
                .returning(*JOB.c)).mappings().all()
        return sorted((_job(row) for row in rows), key=lambda job: (job.run_after, job.id))

    def renew(self, held: Mapping[int, int], lease: timedelta, *, now: datetime | None = None) -> int:
        """Extend the leases of the jobs `held` (id -> attempt) that are still this worker's, to
        now + `lease`. Returns how many were."""
        if not held:
            return 0
        with self.database.write() as connection:
            return connection.execute(update(JOB).where(
                JOB.c.state == JobState.RUNNING.value,
                or_(*(and_(JOB.c.id == job_id, JOB.c.attempts == attempt) for job_id, attempt in held.items())))
                .values(leased_until=_now(now) + lease)).rowcount

    # -- recording the outcome of an attempt ------------------------------------------------------
    # Each applies only to a running job and, given `attempt`, only if no other worker has
    # claimed it since (its lease ran out): False means the outcome was not recorded.

    def succeed(self, job_id: int, *, attempt: int | None = None, now: datetime | None = None) -> bool:
        now = _now(now)
        return self._finish_attempt(job_id, attempt, state=JobState.SUCCEEDED.value, leased_until=None,
                                    finished_at=now)

    def retry(self, job_id: int, error: str, delay: timedelta, *, attempt: int | None = None,
              now: datetime | None = None) -> bool:
        """Queue the job again, due after `delay`."""
        now = _now(now)
        return self._finish_attempt(job_id, attempt, state=JobState.QUEUED.value, run_after=now + delay,
                                    leased_until=None, last_error=error[:MAX_ERROR_CHARS])

    def give_up(self, job_id: int, error: str, *, attempt: int | None = None, now: datetime | None = None) -> bool:
        now = _now(now)
        return self._finish_attempt(job_id, attempt, state=JobState.FAILED.value, leased_until=None,
                                    last_error=error[:MAX_ERROR_CHARS], finished_at=now)

    def _finish_attempt(self, job_id: int, attempt: int | None, **values) -> bool:
        conditions = [JOB.c.id == job_id, JOB.c.state == JobState.RUNNING.value]
        if attempt is not None:
            conditions.append(JOB.c.attempts == attempt)
        with self.database.write() as connection:
            return connection.execute(update(JOB).where(*conditions).values(**values)).rowcount == 1

    # -- reading --------------------------------------------------------------------------------

    def get(self, job_id: int) -> Job | None:
        with self.database.read() as connection:
            row = connection.execute(select(JOB).where(JOB.c.id == job_id)).mappings().first()
        return _job(row) if row else None

    def of_org(self, org: str, *, kinds: Iterable[str] | None = None, states: Iterable[JobState] | None = None,
               limit: int = 100, before: int | None = None) -> list[Job]:
        """`org`'s jobs, newest first; `before` (a job id) continues after the last of a page."""
        conditions = [JOB.c.org == org]
        if kinds is not None:
            conditions.append(JOB.c.kind.in_(list(kinds)))
        if states is not None:
            conditions.append(JOB.c.state.in_([JobState(state).value for state in states]))
        if before is not None:
            conditions.append(JOB.c.id < before)
        with self.database.read() as connection:
            rows = connection.execute(select(JOB).where(*conditions).order_by(JOB.c.id.desc())
                                      .limit(limit)).mappings().all()
        return [_job(row) for row in rows]

    # -- forgetting -----------------------------------------------------------------------------

    def purge(self, kinds: Collection[str], finished_before: datetime) -> int:
        """Delete the finished (succeeded or failed) jobs of `kinds` that finished before
        `finished_before`, in batches. Returns how many went."""
        finished_before = _utc(finished_before)
        kinds = list(kinds)
        total = 0
        while kinds:
            batch = (select(JOB.c.id).where(JOB.c.kind.in_(kinds),
                                            JOB.c.state.in_([state.value for state in FINISHED]),
                                            JOB.c.finished_at < finished_before)
                     .limit(PURGE_BATCH).with_for_update(skip_locked=True))
            with self.database.write() as connection:
                deleted = connection.execute(delete(JOB).where(JOB.c.id.in_(batch))).rowcount
            total += deleted
            if deleted < PURGE_BATCH:
                break
        return total


# -- helpers ----------------------------------------------------------------------------------

def _due(kinds: list[str], now: datetime):
    """Jobs of `kinds` that a worker may take now: queued and due, or running on a lapsed lease."""
    return and_(JOB.c.kind.in_(kinds), or_(
        and_(JOB.c.state == JobState.QUEUED.value, JOB.c.run_after <= now),
        and_(JOB.c.state == JobState.RUNNING.value, JOB.c.leased_until <= now)))


def _insert(connection: Connection, values: dict) -> int:
    return connection.execute(insert(JOB).values(**values)).inserted_primary_key[0]


def _encode(payload: Mapping) -> bytes:
    if not isinstance(payload, Mapping):
        raise TypeError(f"a job's payload is a JSON object, not {type(payload).__name__}")
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _now(now: datetime | None) -> datetime:
    return datetime.now(timezone.utc) if now is None else _utc(now)


def _utc(moment: datetime) -> datetime:
    """SQLite stores times without their zone and compares them as text: every time the queue
    writes or compares is in UTC."""
    if moment.tzinfo is None:
        raise ValueError("a job's times must carry their time zone")
    return moment.astimezone(timezone.utc)


def _read_time(moment: datetime | None) -> datetime | None:
    """A time read back: SQLite gives it without its zone, PostgreSQL in the session's zone."""
    return as_utc(moment).astimezone(timezone.utc) if moment is not None else None


def _job(row) -> Job:
    return Job(id=row["id"], kind=row["kind"], org=row["org"], payload=json.loads(row["payload"]),
               state=JobState(row["state"]), attempts=row["attempts"], max_attempts=row["max_attempts"],
               run_after=_read_time(row["run_after"]), leased_until=_read_time(row["leased_until"]),
               last_error=row["last_error"], created_at=_read_time(row["created_at"]),
               finished_at=_read_time(row["finished_at"]))
