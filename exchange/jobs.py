"""Background work on the job queue (storage/jobs.py): worker threads claim due jobs of the kinds
they have handlers for, run them, and move each along the lifecycle below — done, queued again
after an exponential backoff, or given up. Delivery is at least once: a worker that dies
mid-job leaves it to be claimed again when its lease runs out, so handlers must be idempotent."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum

from storage.jobs import Job, JobQueue, JobState

log = logging.getLogger("oix.jobs")

Handler = Callable[[Job], None]


# -- what a handler tells the runner ----------------------------------------------------------

class RetryLater(Exception):
    """The job cannot be done now; try again after the backoff, or after `after` when the other
    side said when (an HTTP Retry-After). Any other exception means the same, with the backoff."""

    def __init__(self, reason: str, after: timedelta | None = None):
        super().__init__(reason)
        self.reason = reason
        self.after = after


class PermanentFailure(Exception):
    """The job can never succeed as it stands: give it up at once, without further attempts."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# -- backoff ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Backoff:
    """The wait before attempt n + 1 after attempt n failed: `first` * `factor` ** (n - 1), at most
    `cap`, scaled by a random factor in [1 - jitter, 1 + jitter] so that jobs that failed together
    (a receiver down for an hour) do not all come back in the same second. The defaults wait
    about 5 s, 25 s, 2 min, 10 min, 52 min, then an hour between attempts."""

    first: timedelta = timedelta(seconds=5)
    factor: float = 5.0
    cap: timedelta = timedelta(hours=1)
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, attempt: int) -> timedelta:
        exponent = min(max(attempt - 1, 0), 64)  # bounded: factor ** exponent stays a float
        base = min(self.first.total_seconds() * self.factor ** exponent, self.cap.total_seconds())
        scale = 1 + self.jitter * (2 * self.rng.random() - 1)
        return timedelta(seconds=min(base * scale, self.cap.total_seconds()))


# -- the lifecycle, as a table (after pynetdicom's fsm) ----------------------------------------

class JobEvent(str, Enum):
    DUE = "due"  # run_after has come
    LEASE_EXPIRED = "lease expired"  # its worker stopped holding it, attempts left
    LEASE_EXPIRED_ON_LAST_ATTEMPT = "lease expired on the last attempt"
    HANDLED = "handled"  # the handler returned
    RETRY_REQUESTED = "retry requested"  # RetryLater or another exception, attempts left
    OUT_OF_ATTEMPTS = "out of attempts"  # the same, on the last attempt
    PERMANENT_FAILURE = "permanent failure"  # PermanentFailure


@dataclass(frozen=True)
class Outcome:
    """What an attempt came to: the event, and for a failure its error and the wait before the next."""

    event: JobEvent
    error: str = ""
    delay: timedelta = timedelta(0)


Record = Callable[[JobQueue, Job, Outcome, datetime], bool]


def _succeed(queue: JobQueue, job: Job, outcome: Outcome, now: datetime) -> bool:
    return queue.succeed(job.id, attempt=job.attempts, now=now)


def _retry(queue: JobQueue, job: Job, outcome: Outcome, now: datetime) -> bool:
    return queue.retry(job.id, outcome.error, outcome.delay, attempt=job.attempts, now=now)


def _give_up(queue: JobQueue, job: Job, outcome: Outcome, now: datetime) -> bool:
    return queue.give_up(job.id, outcome.error, attempt=job.attempts, now=now)


@dataclass(frozen=True)
class Transition:
    to: JobState
    description: str
    record: Record | None  # None: JobQueue.claim makes the move itself, in SQL


# (state, event) -> transition. A pair not in the table cannot happen.
LIFECYCLE: dict[tuple[JobState, JobEvent], Transition] = {
    (JobState.QUEUED, JobEvent.DUE): Transition(
        JobState.RUNNING, "claimed by a worker: attempt counted, leased", None),
    (JobState.RUNNING, JobEvent.LEASE_EXPIRED): Transition(
        JobState.RUNNING, "claimed again by another worker: attempt counted, leased", None),
    (JobState.RUNNING, JobEvent.LEASE_EXPIRED_ON_LAST_ATTEMPT): Transition(
        JobState.FAILED, "given up: its worker died on the last attempt", None),
    (JobState.RUNNING, JobEvent.HANDLED): Transition(
        JobState.SUCCEEDED, "done", _succeed),
    (JobState.RUNNING, JobEvent.RETRY_REQUESTED): Transition(
        JobState.QUEUED, "queued again, due after the backoff or the Retry-After", _retry),
    (JobState.RUNNING, JobEvent.OUT_OF_ATTEMPTS): Transition(
        JobState.FAILED, "given up: no attempts left", _give_up),
    (JobState.RUNNING, JobEvent.PERMANENT_FAILURE): Transition(
        JobState.FAILED, "given up at once", _give_up),
}


# -- the runner -------------------------------------------------------------------------------

def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class JobRunner:
    """`workers` threads that each claim one due job at a time, of the kinds in `handlers`, and
    run it. One more thread keeps the leases of running jobs alive (a long handler is not taken
    for a dead one) and purges jobs finished more than `retention` ago. Several runners — in one
    process with disjoint kinds, or one per server process — share a queue safely."""

    def __init__(self, queue: JobQueue, handlers: Mapping[str, Handler], *, workers: int = 2,
                 poll_interval: float = 0.5, lease: timedelta = timedelta(minutes=5),
                 clock: Callable[[], datetime] = _utcnow, backoff: Backoff | None = None,
                 stop_timeout: float = 30.0, retention: timedelta = timedelta(days=30),
                 purge_interval: timedelta = timedelta(hours=1), name: str = "oix-jobs"):
        if not handlers:
            raise ValueError("a job runner needs a handler for at least one kind of job")
        self.queue = queue
        self.handlers = dict(handlers)
        self.workers = workers
        self.poll_interval = poll_interval
        self.lease = lease
        self.clock = clock
        self.backoff = backoff or Backoff()
        self.stop_timeout = stop_timeout
        self.retention = retention
        self.purge_interval = purge_interval
        self.name = name
        self._held: dict[int, int] = {}  # job id -> attempt, of the jobs this runner is running
        self._held_lock = threading.Lock()
        self._stopping = threading.Event()  # workers: take no new job
        self._upkeep_stopping = threading.Event()  # the lease keeper: the workers are done
        self._threads: list[threading.Thread] = []
        self._upkeep: threading.Thread | None = None

    # -- one job --------------------------------------------------------------------------------

    def run_next(self) -> Job | None:
        """Claim one due job, run it and record its outcome, in this thread. Returns the job as
        claimed (None if none was due); `queue.get(job.id)` shows where it went."""
        claimed = self.queue.claim(self.handlers, 1, self.lease, now=self.clock())
        if not claimed:
            return None
        job = claimed[0]
        with self._held_lock:
            self._held[job.id] = job.attempts
        try:
            outcome = self._attempt(job)
            transition = LIFECYCLE[(JobState.RUNNING, outcome.event)]
            if not transition.record(self.queue, job, outcome, self.clock()):
                log.warning("job %d (%s): attempt %d ended after its lease ran out and another worker took the "
                            "job; its outcome (%s) is not recorded", job.id, job.kind, job.attempts,
                            outcome.event.value)
        finally:
            with self._held_lock:
                self._held.pop(job.id, None)
        return job

    def _attempt(self, job: Job) -> Outcome:
        try:
            self.handlers[job.kind](job)
        except PermanentFailure as exc:
            log.warning("job %d (%s) for %s failed permanently: %s", job.id, job.kind, job.org, exc.reason)
            return Outcome(JobEvent.PERMANENT_FAILURE, exc.reason)
        except RetryLater as exc:
            return self._failed_attempt(job, exc.reason, exc.after)
        except Exception as exc:
            log.warning("job %d (%s) for %s raised on attempt %d", job.id, job.kind, job.org, job.attempts,
                        exc_info=True)
            return self._failed_attempt(job, f"{type(exc).__name__}: {exc}", None)
        return Outcome(JobEvent.HANDLED)

    def _failed_attempt(self, job: Job, reason: str, after: timedelta | None) -> Outcome:
        if job.last_attempt:
            log.warning("job %d (%s) for %s: giving up after %d attempts: %s", job.id, job.kind, job.org,
                        job.attempts, reason)
            return Outcome(JobEvent.OUT_OF_ATTEMPTS, f"gave up after {job.attempts} attempts: {reason}")
        if after is not None:  # the other side said when; within reason
            delay = min(max(after, timedelta(0)), self.backoff.cap)
        else:
            delay = self.backoff.delay(job.attempts)
        log.info("job %d (%s) for %s: attempt %d of %d failed (%s); next in %.1f s", job.id, job.kind, job.org,
                 job.attempts, job.max_attempts, reason, delay.total_seconds())
        return Outcome(JobEvent.RETRY_REQUESTED, reason, delay)

    # -- the threads ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return
        self._stopping.clear()
        self._upkeep_stopping.clear()
        self._threads = [threading.Thread(target=self._work, name=f"{self.name}-{number}", daemon=True)
                         for number in range(self.workers)]
        self._upkeep = threading.Thread(target=self._keep_up, name=f"{self.name}-upkeep", daemon=True)
        for thread in (*self._threads, self._upkeep):
            thread.start()

    def stop(self) -> bool:
        """Take no new jobs and wait, up to `stop_timeout` seconds, for the running ones. Returns
        False if some were still running: their leases run out and another worker (this server
        after a restart, or another process) runs them again."""
        self._stopping.set()
        deadline = time.monotonic() + self.stop_timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0))
        finished = not any(thread.is_alive() for thread in self._threads)
        if not finished:
            with self._held_lock:
                running = sorted(self._held)
            log.warning("%s: stopped with jobs %s still running; they run again when their leases expire",
                        self.name, running)
        self._upkeep_stopping.set()
        if self._upkeep is not None:
            self._upkeep.join(max(deadline - time.monotonic(), 1.0))
        self._threads = []
        self._upkeep = None
        return finished

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                ran = self.run_next()
            except Exception:
                log.exception("%s: claiming or recording a job failed; trying again", self.name)
                ran = None
            if ran is None:
                self._stopping.wait(self.poll_interval)

    def _keep_up(self) -> None:
        """Renew the leases of running jobs every third of a lease, and purge old finished jobs."""
        next_purge = time.monotonic()
        while not self._upkeep_stopping.wait(self.lease.total_seconds() / 3):
            with self._held_lock:
                held = dict(self._held)
            try:
                self.queue.renew(held, self.lease, now=self.clock())
            except Exception:
                log.exception("%s: renewing the leases of jobs %s failed", self.name, sorted(held))
            if time.monotonic() >= next_purge:
                next_purge = time.monotonic() + self.purge_interval.total_seconds()
                try:
                    purged = self.queue.purge(self.handlers, self.clock() - self.retention)
                    if purged:
                        log.info("%s: purged %d jobs finished more than %s ago", self.name, purged, self.retention)
                except Exception:
                    log.exception("%s: purging finished jobs failed", self.name)
