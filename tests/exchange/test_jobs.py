"""The job queue (issue "The exchange"): work queued in the index database itself, on a real
SQLite file and a real PostgreSQL database; claimed under a lease, retried with backoff, given
up, taken over when a worker dies, never claimed twice by two server processes, and committed
only with the change that caused it."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select, text

from exchange.jobs import LIFECYCLE, Backoff, JobEvent, JobRunner, Outcome, PermanentFailure, RetryLater
from storage.jobs import JOB, LEASE_LOST_ON_LAST_ATTEMPT, JobQueue, JobState
from storage.tables import Organisation
from tests.exchange.audit_support import index_database, open_database

T0 = datetime(2025, 3, 14, 9, 0, tzinfo=timezone.utc)
LEASE = timedelta(seconds=30)
KIND = "test.work"


class ManualClock:
    """A clock the test moves: what is due, and when a lease runs out, without sleeping."""

    def __init__(self, now: datetime = T0):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def queue(database):
    return JobQueue(database)


@pytest.fixture
def clock():
    return ManualClock()


def runner_for(queue: JobQueue, clock: ManualClock, handler, **options) -> JobRunner:
    options.setdefault("backoff", Backoff(first=timedelta(seconds=10), factor=3, cap=timedelta(minutes=5), jitter=0))
    return JobRunner(queue, {KIND: handler}, clock=clock, lease=LEASE, **options)


def state_of(queue: JobQueue, job_id: int) -> JobState:
    return queue.get(job_id).state


# -- queue operations -------------------------------------------------------------------------

def test_enqueued_job_is_claimed_leased_and_marked_succeeded(queue):
    job_id = queue.enqueue(KIND, "RJ1", {"transfer": "t-1", "studies": ["1.2.3"]}, max_attempts=3, now=T0)

    claimed = queue.claim([KIND], 10, LEASE, now=T0)

    assert [job.id for job in claimed] == [job_id]
    job = claimed[0]
    assert (job.state, job.attempts, job.org) == (JobState.RUNNING, 1, "RJ1")
    assert job.payload == {"transfer": "t-1", "studies": ["1.2.3"]}
    assert job.leased_until == T0 + LEASE
    assert queue.claim([KIND], 10, LEASE, now=T0) == []  # running under its lease: nobody else's
    assert queue.succeed(job_id, attempt=1, now=T0 + timedelta(seconds=2))
    done = queue.get(job_id)
    assert (done.state, done.finished_at, done.leased_until) == (JobState.SUCCEEDED, T0 + timedelta(seconds=2), None)
    assert queue.claim([KIND], 10, LEASE, now=T0 + timedelta(days=1)) == []


def test_claim_takes_due_jobs_of_its_kinds_oldest_due_first(queue):
    later = queue.enqueue(KIND, "RJ1", {}, run_after=T0 + timedelta(minutes=5), max_attempts=3, now=T0)
    second = queue.enqueue(KIND, "RJ1", {}, run_after=T0 - timedelta(seconds=1), max_attempts=3, now=T0)
    first = queue.enqueue(KIND, "RJ1", {}, run_after=T0 - timedelta(seconds=9), max_attempts=3, now=T0)
    other_kind = queue.enqueue("test.other", "RJ1", {}, max_attempts=3, now=T0)

    assert [job.id for job in queue.claim([KIND], 10, LEASE, now=T0)] == [first, second]
    queue.succeed(first, now=T0)
    queue.succeed(second, now=T0)
    assert [job.id for job in queue.claim([KIND], 10, LEASE, now=T0 + timedelta(minutes=5))] == [later]
    assert state_of(queue, other_kind) is JobState.QUEUED


def test_claim_takes_at_most_limit_jobs(queue):
    ids = [queue.enqueue(KIND, "RJ1", {"n": n}, max_attempts=1, now=T0 + timedelta(seconds=n)) for n in range(5)]

    assert [job.id for job in queue.claim([KIND], 2, LEASE, now=T0 + timedelta(minutes=1))] == ids[:2]
    assert [job.id for job in queue.claim([KIND], 2, LEASE, now=T0 + timedelta(minutes=1))] == ids[2:4]


def test_enqueue_in_a_rolled_back_transaction_leaves_no_job(database, queue):
    with pytest.raises(RuntimeError, match="the change failed"):
        with database.write() as connection:
            connection.execute(insert(Organisation.__table__).values(slug="RJ1", name="Guy's and St Thomas'",
                                                                     created_at=T0))
            queue.enqueue(KIND, "RJ1", {"caused by": "RJ1 added"}, max_attempts=3, connection=connection, now=T0)
            raise RuntimeError("the change failed")

    with database.read() as connection:
        assert connection.execute(select(JOB.c.id)).all() == []
    assert queue.claim([KIND], 10, LEASE, now=T0 + timedelta(days=1)) == []


def test_enqueue_in_a_committed_transaction_commits_with_the_change(database, queue):
    with database.write() as connection:
        connection.execute(insert(Organisation.__table__).values(slug="RJ1", name="Guy's and St Thomas'",
                                                                 created_at=T0))
        job_id = queue.enqueue(KIND, "RJ1", {"caused by": "RJ1 added"}, max_attempts=3, connection=connection,
                               now=T0)

    assert [job.id for job in queue.claim([KIND], 10, LEASE, now=T0)] == [job_id]


def test_jobs_of_an_organisation_are_listed_newest_first_a_page_at_a_time(queue):
    ids = [queue.enqueue(KIND, "RJ1", {"n": n}, max_attempts=3, now=T0) for n in range(5)]
    queue.enqueue(KIND, "RYJ", {}, max_attempts=3, now=T0)
    queue.enqueue("test.other", "RJ1", {}, max_attempts=3, now=T0)

    first_page = queue.of_org("RJ1", kinds=[KIND], limit=3)
    second_page = queue.of_org("RJ1", kinds=[KIND], limit=3, before=first_page[-1].id)

    assert [job.id for job in first_page + second_page] == ids[::-1]
    assert {job.org for job in queue.of_org("RJ1")} == {"RJ1"}
    assert len(queue.of_org("RJ1")) == 6
    assert queue.of_org("RJ1", states=[JobState.SUCCEEDED]) == []


def test_purge_deletes_old_finished_jobs_and_ids_are_never_reused(queue):
    old = queue.enqueue(KIND, "RJ1", {}, max_attempts=1, now=T0)
    queue.claim([KIND], 1, LEASE, now=T0)
    queue.succeed(old, attempt=1, now=T0)
    waiting = queue.enqueue(KIND, "RJ1", {}, run_after=T0 + timedelta(days=60), max_attempts=1, now=T0)

    assert queue.purge([KIND], T0 + timedelta(days=30)) == 1

    assert queue.get(old) is None
    assert state_of(queue, waiting) is JobState.QUEUED
    # A delivery id is what receivers de-duplicate by: a purged job's id is never handed out again.
    queue.claim([KIND], 1, LEASE, now=T0 + timedelta(days=60))
    queue.succeed(waiting, now=T0 + timedelta(days=60))
    queue.purge([KIND], T0 + timedelta(days=90))
    assert queue.enqueue(KIND, "RJ1", {}, max_attempts=1, now=T0) > waiting


# -- retries, backoff, giving up --------------------------------------------------------------

def test_failed_attempt_is_retried_after_the_backoff_then_succeeds(queue, clock):
    failures = ["the PACS is busy", "the PACS is still busy"]

    def handler(job):
        if failures:
            raise RetryLater(failures.pop(0))

    runner = runner_for(queue, clock, handler)
    job_id = queue.enqueue(KIND, "RJ1", {}, max_attempts=5, now=clock())

    assert runner.run_next().id == job_id
    job = queue.get(job_id)
    assert (job.state, job.attempts, job.last_error) == (JobState.QUEUED, 1, "the PACS is busy")
    assert job.run_after == clock() + timedelta(seconds=10)  # first wait
    clock.advance(9)
    assert runner.run_next() is None  # not due yet
    clock.advance(1)
    assert runner.run_next().id == job_id
    job = queue.get(job_id)
    assert (job.state, job.attempts) == (JobState.QUEUED, 2)
    assert job.run_after == clock() + timedelta(seconds=30)  # 10 s x 3: exponential
    clock.advance(30)
    runner.run_next()
    job = queue.get(job_id)
    assert (job.state, job.attempts, job.finished_at) == (JobState.SUCCEEDED, 3, clock())


def test_any_exception_from_a_handler_means_retry(queue, clock):
    def handler(job):
        raise ConnectionResetError("peer reset the connection")

    runner = runner_for(queue, clock, handler)
    job_id = queue.enqueue(KIND, "RJ1", {}, max_attempts=5, now=clock())

    runner.run_next()

    job = queue.get(job_id)
    assert (job.state, job.attempts) == (JobState.QUEUED, 1)
    assert job.last_error == "ConnectionResetError: peer reset the connection"


def test_retry_later_with_a_time_is_honoured_up_to_the_cap(queue, clock):
    waits = [timedelta(seconds=90), timedelta(days=3)]

    def handler(job):
        raise RetryLater("429 Too Many Requests", after=waits.pop(0))

    runner = runner_for(queue, clock, handler)
    job_id = queue.enqueue(KIND, "RJ1", {}, max_attempts=5, now=clock())

    runner.run_next()
    assert queue.get(job_id).run_after == clock() + timedelta(seconds=90)
    clock.advance(90)
    runner.run_next()
    assert queue.get(job_id).run_after == clock() + timedelta(minutes=5)  # the backoff's cap


def test_job_is_given_up_after_its_last_attempt(queue, clock):
    def handler(job):
        raise RetryLater("the PACS refuses the association")

    runner = runner_for(queue, clock, handler)
    job_id = queue.enqueue(KIND, "RJ1", {}, max_attempts=3, now=clock())

    for _ in range(3):
        assert runner.run_next().id == job_id
        clock.advance(3600)

    job = queue.get(job_id)
    assert (job.state, job.attempts) == (JobState.FAILED, 3)
    assert job.last_error == "gave up after 3 attempts: the PACS refuses the association"
    assert job.finished_at is not None
    assert runner.run_next() is None


def test_permanent_failure_gives_up_at_once(queue, clock):
    def handler(job):
        raise PermanentFailure("the destination no longer exists")

    runner = runner_for(queue, clock, handler)
    job_id = queue.enqueue(KIND, "RJ1", {}, max_attempts=10, now=clock())

    runner.run_next()

    job = queue.get(job_id)
    assert (job.state, job.attempts, job.last_error) == (JobState.FAILED, 1, "the destination no longer exists")
    clock.advance(86400)
    assert runner.run_next() is None


def test_backoff_grows_exponentially_to_its_cap_with_bounded_jitter():
    exact = Backoff(jitter=0)
    assert [exact.delay(attempt).total_seconds() for attempt in range(1, 8)] == [5, 25, 125, 625, 3125, 3600, 3600]
    assert exact.delay(10_000) == timedelta(hours=1)

    jittered = Backoff(jitter=0.2)
    delays = {jittered.delay(2).total_seconds() for _ in range(200)}
    assert all(20 <= delay <= 30 for delay in delays)
    assert len(delays) > 100  # spread: jobs failed together do not come back together


# -- leases: a worker that dies ---------------------------------------------------------------

def test_job_of_a_crashed_worker_is_claimable_again_when_its_lease_expires(queue):
    job_id = queue.enqueue(KIND, "RJ1", {}, max_attempts=3, now=T0)
    crashed = queue.claim([KIND], 1, LEASE, now=T0)[0]  # ... and its worker never reports back

    assert queue.claim([KIND], 1, LEASE, now=T0 + LEASE - timedelta(seconds=1)) == []
    taken_over = queue.claim([KIND], 1, LEASE, now=T0 + LEASE)

    assert [job.id for job in taken_over] == [job_id]
    assert (taken_over[0].attempts, taken_over[0].leased_until) == (2, T0 + 2 * LEASE)
    # The first worker coming back late cannot record over the second's attempt.
    assert not queue.succeed(job_id, attempt=crashed.attempts, now=T0 + LEASE)
    assert state_of(queue, job_id) is JobState.RUNNING
    assert queue.succeed(job_id, attempt=2, now=T0 + LEASE)
    assert state_of(queue, job_id) is JobState.SUCCEEDED


def test_job_whose_worker_died_on_its_last_attempt_is_given_up(queue):
    job_id = queue.enqueue(KIND, "RJ1", {}, max_attempts=1, now=T0)
    queue.claim([KIND], 1, LEASE, now=T0)

    assert queue.claim([KIND], 1, LEASE, now=T0 + LEASE) == []

    job = queue.get(job_id)
    assert (job.state, job.attempts, job.last_error) == (JobState.FAILED, 1, LEASE_LOST_ON_LAST_ATTEMPT)


def test_renewed_lease_keeps_a_long_job_from_being_taken_over(queue):
    job_id = queue.enqueue(KIND, "RJ1", {}, max_attempts=3, now=T0)
    job = queue.claim([KIND], 1, LEASE, now=T0)[0]

    assert queue.renew({job_id: job.attempts}, LEASE, now=T0 + timedelta(seconds=20)) == 1
    assert queue.renew({job_id: job.attempts + 1}, LEASE, now=T0 + timedelta(seconds=20)) == 0  # not ours

    assert queue.claim([KIND], 1, LEASE, now=T0 + timedelta(seconds=40)) == []
    assert queue.get(job_id).leased_until == T0 + timedelta(seconds=50)


# -- the lifecycle table ----------------------------------------------------------------------

def test_lifecycle_table_moves_a_running_job_where_it_says(queue):
    recorded = {(state, event): transition for (state, event), transition in LIFECYCLE.items() if transition.record}
    assert {event for _, event in recorded} == {JobEvent.HANDLED, JobEvent.RETRY_REQUESTED, JobEvent.OUT_OF_ATTEMPTS,
                                                JobEvent.PERMANENT_FAILURE}
    for (state, event), transition in recorded.items():
        queue.enqueue(KIND, "RJ1", {}, max_attempts=3, now=T0)
        job = queue.claim([KIND], 1, LEASE, now=T0)[0]
        assert job.state is state

        assert transition.record(queue, job, Outcome(event, "why", timedelta(seconds=5)), T0)

        assert state_of(queue, job.id) is transition.to, event
    # A finished job never moves again.
    assert all(state not in (JobState.SUCCEEDED, JobState.FAILED) for state, _ in LIFECYCLE)


# -- the runner's threads ---------------------------------------------------------------------

def test_runner_threads_run_every_job_and_stop_waits_for_the_running_one(queue):
    ran: list[int] = []
    started = threading.Event()

    def handler(job):
        if job.payload["slow"]:
            started.set()
            time.sleep(0.3)
        ran.append(job.id)

    runner = JobRunner(queue, {KIND: handler}, workers=2, poll_interval=0.02, stop_timeout=5)
    ids = [queue.enqueue(KIND, "RJ1", {"slow": False}, max_attempts=3) for _ in range(4)]
    runner.start()
    try:
        deadline = time.monotonic() + 5
        while sorted(ran) != ids and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sorted(ran) == ids
        slow = queue.enqueue(KIND, "RJ1", {"slow": True}, max_attempts=3)
        assert started.wait(5)
    finally:
        assert runner.stop()  # waited for the slow job rather than abandoning it

    assert state_of(queue, slow) is JobState.SUCCEEDED
    assert all(state_of(queue, job_id) is JobState.SUCCEEDED for job_id in ids)


def test_stop_is_bounded_and_leaves_an_unfinished_job_to_its_lease(queue):
    release = threading.Event()
    started = threading.Event()

    def handler(job):
        started.set()
        release.wait(5)

    runner = JobRunner(queue, {KIND: handler}, workers=1, poll_interval=0.02, stop_timeout=0.2)
    job_id = queue.enqueue(KIND, "RJ1", {}, max_attempts=3)
    runner.start()
    try:
        assert started.wait(5)
        began = time.monotonic()
        assert not runner.stop()
        assert time.monotonic() - began < 2
        assert state_of(queue, job_id) is JobState.RUNNING  # still leased: retried if the process ends now
    finally:
        release.set()


# -- several server processes on one PostgreSQL -----------------------------------------------

@pytest.fixture
def postgresql_url(tmp_path):
    with index_database("postgresql", tmp_path / "data") as found:
        yield found


def test_two_queues_on_one_postgresql_never_claim_the_same_job(postgresql_url):
    with open_database(postgresql_url) as first, open_database(postgresql_url) as second:
        queues = [JobQueue(first), JobQueue(second)]
        ids = {queues[0].enqueue(KIND, "RJ1", {"n": n}, max_attempts=3) for n in range(120)}
        claims: list[list[int]] = [[] for _ in range(4)]
        errors: list[BaseException] = []
        barrier = threading.Barrier(4)

        def claim_until_empty(number: int) -> None:
            queue = queues[number % 2]
            try:
                barrier.wait(5)
                for _ in range(200):  # bounded: 120 jobs, at least one per round while any are left
                    batch = queue.claim([KIND], 3, LEASE)
                    if not batch:
                        return
                    claims[number].extend(job.id for job in batch)
                    for job in batch:
                        assert queue.succeed(job.id, attempt=job.attempts)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=claim_until_empty, args=(number,)) for number in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

        assert not errors
        claimed = [job_id for batch in claims for job_id in batch]
        assert len(claimed) == len(set(claimed)), "a job was claimed twice"
        assert set(claimed) == ids
        assert all(state_of(queues[0], job_id) is JobState.SUCCEEDED for job_id in ids)


def test_claim_skips_a_job_locked_by_another_process_instead_of_waiting(postgresql_url):
    with open_database(postgresql_url) as first, open_database(postgresql_url) as second:
        queue = JobQueue(first)
        locked, *free = [queue.enqueue(KIND, "RJ1", {}, max_attempts=3, now=T0 + timedelta(seconds=n))
                         for n in range(3)]
        claimed: list[list[int]] = []
        with second.engine.connect() as other_process:
            other_process.execute(text("SET lock_timeout = '5s'"))
            other_process.execute(select(JOB.c.id).where(JOB.c.id == locked).with_for_update())  # mid-claim
            claimer = threading.Thread(target=lambda: claimed.append(
                [job.id for job in queue.claim([KIND], 10, LEASE, now=T0 + timedelta(minutes=1))]))
            claimer.start()
            claimer.join(5)
            assert not claimer.is_alive(), "the claim waited for the other process's lock"
            other_process.rollback()

        assert claimed == [free]
        assert [job.id for job in queue.claim([KIND], 10, LEASE, now=T0 + timedelta(minutes=1))] == [locked]

