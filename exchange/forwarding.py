"""Auto-forwarding: an organisation's rules push each transfer it receives (all of them, or those
of some urgencies, modalities or senders) to its PACS over STOW-RS (PS3.18 10.5), by a job on the
queue per rule and transfer. Each instance's fate is recorded as the PACS reports it, so a retry
after a failure, a restart or a lost lease sends only what the PACS has not yet confirmed;
resending is harmless (a PACS answers success, or Duplicate SOP Instance, for what it holds).

The STOW-RS client itself is a seam (`InstanceStore`): oix/pacs.py plugs in the HTTP one."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import BinaryIO, Protocol
from urllib.parse import urlsplit

from sqlalchemy import Connection

from exchange.access import SYSTEM_REQUESTER, Requester
from exchange.archive import Archive
from exchange.audit import AuditAction, AuditEvent, AuditTrail, Outcome
from exchange.errors import ExchangeError, UnknownForwardingRule, UnknownOrganisation
from exchange.jobs import Handler, PermanentFailure, RetryLater
from exchange.transfers import TransferState, Transfers, Urgency
from storage.forwarding import (FAILED, PENDING, SENT, ForwardingTable, Result, Tracked,
                                UnknownForwardingOrganisation)
from storage.instances import Held
from storage.jobs import Job, JobQueue, JobState
from storage.tables import ForwardedInstance, ForwardRule, Transfer, as_utc

FORWARD_JOB = "forward.transfer"  # the kind of job that forwards one transfer under one rule
DEFAULT_BATCH_INSTANCES = 8  # instances per STOW-RS request: a failed request costs at most this many resends
DEFAULT_MAX_ATTEMPTS = 48  # with the default backoff: retried for about two days (a PACS down over a weekend)
CHUNK_BYTES = 1024 * 1024
MAX_URL_LENGTH = 2048
MAX_AUTHORIZATION_LENGTH = 4096

# PS3.4 Annex B.2.3 and PS3.18 Table 10.5.3-2: Failure Reasons worth another try later (the PACS
# is short of resources, or failed in a way it does not explain); any other refusal is final.
ALREADY_STORED = frozenset({0x0111})  # Duplicate SOP Instance: the PACS holds this instance already
RETRIED_REASONS = frozenset({0x0110, 0x0213})  # Processing failure; Resources temporarily unavailable


def _retried(reason: int | None) -> bool:
    return reason is None or reason in RETRIED_REASONS or 0xA700 <= reason <= 0xA7FF  # Refused: Out of Resources


class InvalidForwardingRule(ExchangeError):
    """A rule that cannot be added as asked; the message says what to change."""


# -- the seam: STOW-RS as a client ------------------------------------------------------------

@dataclass(frozen=True)
class OutgoingInstance:
    """One instance on its way to the PACS: its Part 10 bytes are read from the blob store as
    they are sent, a chunk at a time (DESIGN invariant 4)."""

    sop_instance_uid: str
    size: int
    blob_key: str
    open_blob: Callable[[str], BinaryIO] = field(repr=False)

    def chunks(self) -> Iterator[bytes]:
        sent = 0
        with self.open_blob(self.blob_key) as handle:
            while chunk := handle.read(CHUNK_BYTES):
                sent += len(chunk)
                yield chunk
        if sent != self.size:  # the request declared `size` bytes: never send a torn object
            raise OSError(f"blob {self.blob_key} held {sent} bytes, not the {self.size} indexed")


@dataclass(frozen=True)
class InstanceRefusal:
    """A FailedSOPSequence item: the Failure Reason (None if the PACS gave none) and its words."""

    reason: int | None
    message: str = ""

    def describe(self) -> str:
        code = f"failure reason 0x{self.reason:04X}" if self.reason is not None else "failed"
        return f"{code}: {self.message}" if self.message else code


@dataclass(frozen=True)
class StoreOutcome:
    """The Store Instances Response (PS3.18 10.5.3): the instances stored, and those refused."""

    stored: frozenset[str]
    refused: Mapping[str, InstanceRefusal]


class PacsUnavailable(Exception):
    """No answer, no connection, or an answer that says later (408, 429, 5xx): try again, after
    `after` if the PACS said when."""

    def __init__(self, reason: str, after: timedelta | None = None):
        super().__init__(reason)
        self.reason = reason
        self.after = after


class PacsRefused(Exception):
    """The PACS refused the request as a whole (a wrong URL, credentials it does not accept):
    sending it again would be refused again."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class InstanceStore(Protocol):
    """PS3.18 10.5 Store Instances, from the client's side."""

    def store_instances(self, studies_url: str, instances: Sequence[OutgoingInstance],
                        headers: Mapping[str, str]) -> StoreOutcome:
        """POST `instances` in one request to `studies_url` (`{service root}/studies`). Raises
        PacsUnavailable or PacsRefused when there is no Store Instances Response to read."""
        ...


# -- what the service shows -------------------------------------------------------------------

@dataclass(frozen=True)
class RuleMatch:
    """Which transfers a rule forwards: each field empty matches any."""

    urgencies: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ()
    senders: tuple[str, ...] = ()

    def matches(self, transfer: Transfer, modalities: set[str]) -> bool:
        return ((not self.urgencies or transfer.urgency in self.urgencies)
                and (not self.senders or transfer.sender in self.senders)
                and (not self.modalities or bool(modalities & set(self.modalities))))

    def describe(self) -> str:
        parts = [f"{name} {' '.join(values)}" for name, values in (
            ("urgency", self.urgencies), ("modality", self.modalities), ("sender", self.senders)) if values]
        return ", ".join(parts) or "every transfer"


@dataclass(frozen=True)
class ForwardingRule:
    """A rule as listed: everything but the Authorization value it sends."""

    id: int
    org: str
    name: str
    target_url: str
    has_authorization: bool
    match: RuleMatch
    mark_imported: bool
    created_by: str
    created_at: datetime
    disabled_at: datetime | None


@dataclass(frozen=True)
class ForwardingJob:
    """One transfer on its way to one rule's PACS (a job on the queue), with its instances' states."""

    id: int
    rule_id: int
    transfer_id: str
    state: JobState
    attempts: int
    max_attempts: int
    next_attempt_at: datetime | None  # while queued
    last_error: str
    created_at: datetime
    finished_at: datetime | None
    instances: Mapping[str, int]  # pending / sent / failed -> how many


# -- the service ------------------------------------------------------------------------------

def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Forwarding:
    """Rules (add, list, remove: audited changes), `on_delivered` to queue a delivered transfer's
    forwarding in the delivery's transaction, and `forward`, the job handler (`handlers`)."""

    def __init__(self, table: ForwardingTable, queue: JobQueue, archive: Archive, transfers: Transfers,
                 audit: AuditTrail, store: InstanceStore, *, batch_instances: int = DEFAULT_BATCH_INSTANCES,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, clock: Callable[[], datetime] = _utcnow):
        if batch_instances < 1:
            raise ValueError("a STOW-RS request carries at least one instance")
        self.table = table
        self.queue = queue
        self.archive = archive
        self.transfers = transfers
        self.audit = audit
        self.store = store
        self.batch_instances = batch_instances
        self.max_attempts = max_attempts
        self.clock = clock
        self._stopping = threading.Event()

    @property
    def handlers(self) -> Mapping[str, Handler]:
        return {FORWARD_JOB: self.forward}

    def stop(self) -> None:
        """Running jobs end after the request in flight and are queued again, due at once: the
        next server (or another process) carries on where they stopped."""
        self._stopping.set()

    # -- rules ----------------------------------------------------------------------------------

    def add(self, requester: Requester, org: str, target_url: str, *, name: str = "", match: RuleMatch = RuleMatch(),
            mark_imported: bool = False, authorization: str = "") -> ForwardingRule:
        target_url = checked_target(target_url)
        authorization = _checked_authorization(authorization)
        match = self._checked_match(match)
        row = ForwardRule(org=org, name=(name.strip() or _receiver(target_url))[:200], target_url=target_url,
                          authorization=authorization, urgencies=" ".join(match.urgencies),
                          modalities=" ".join(match.modalities), senders=" ".join(match.senders),
                          mark_imported=mark_imported, created_by=requester.principal.actor, created_at=self.clock())
        try:
            row = self.table.add(row)
        except UnknownForwardingOrganisation:
            raise UnknownOrganisation(org) from None
        self._changed(requester, org, f"forwarding rule {row.id} added: {match.describe()} to {target_url}"
                                      f"{' with an Authorization header' if authorization else ''}"
                                      f"{', marking transfers imported' if mark_imported else ''}")
        return _rule(row)

    def of_org(self, org: str, include_removed: bool = False) -> list[ForwardingRule]:
        return [_rule(row) for row in self.table.of_org(org, include_disabled=include_removed)]

    def remove(self, requester: Requester, org: str, rule_id: int) -> None:
        """Disable the rule: nothing more is queued for it, and its queued jobs are given up when
        they come due (what they sent stays recorded)."""
        if not self.table.disable(org, rule_id, self.clock()):
            raise UnknownForwardingRule(org, rule_id)
        self._changed(requester, org, f"forwarding rule {rule_id} removed")

    def _changed(self, requester: Requester, org: str, detail: str) -> None:
        # Where the organisation's patient data is sent is security configuration (PS3.15 A.5.3.11).
        self.audit.record(AuditEvent.for_request(requester, AuditAction.SECURITY_CONFIGURATION_CHANGED, org=org,
                                                 detail=detail))

    def _checked_match(self, match: RuleMatch) -> RuleMatch:
        urgencies = _unique(value.strip().lower() for value in match.urgencies)
        known = [urgency.value for urgency in Urgency]
        for urgency in urgencies:
            if urgency not in known:
                raise InvalidForwardingRule(f"'{urgency}' is not an urgency: choose from {', '.join(known)}")
        modalities = _unique(value.strip().upper() for value in match.modalities)
        for modality in modalities:
            # PS3.5 6.2: Modality (0008,0060) is a CS, at most 16 of A-Z, 0-9, space and _
            if not modality or len(modality) > 16 or not all(c.isascii() and (c.isalnum() or c == "_")
                                                             for c in modality):
                raise InvalidForwardingRule(f"'{modality}' is not a modality such as CT, MR or CR")
        senders = _unique(value.strip() for value in match.senders)
        for sender in senders:
            try:
                self.archive.require_organisation(sender)
            except UnknownOrganisation:
                raise InvalidForwardingRule(f"no organisation '{sender}' sends on this exchange") from None
        return RuleMatch(urgencies, modalities, senders)

    # -- queueing -------------------------------------------------------------------------------

    def on_delivered(self, connection: Connection, transfer: Transfer) -> list[int]:
        """Queue one forwarding job per rule of the destination that the transfer matches, in the
        caller's transaction (the delivery commits with its forwarding, or neither does)."""
        rules = self.table.of_org(transfer.destination, connection=connection)
        if not rules:
            return []
        modalities = self.table.transfer_modalities(connection, transfer.destination, transfer.id)
        now = self.clock()
        return [self.queue.enqueue(FORWARD_JOB, transfer.destination, {"rule": rule.id, "transfer": transfer.id},
                                   max_attempts=self.max_attempts, connection=connection, now=now)
                for rule in rules if _match(rule).matches(transfer, modalities)]

    # -- status ---------------------------------------------------------------------------------

    def jobs(self, org: str, limit: int = 50, before: int | None = None) -> list[ForwardingJob]:
        """`org`'s forwarding jobs, newest first, each with its instances' states."""
        found = self.queue.of_org(org, kinds=[FORWARD_JOB], limit=limit, before=before)
        counts = self.table.counts((job.payload["rule"], job.payload["transfer"]) for job in found)
        return [_job(job, counts[(job.payload["rule"], job.payload["transfer"])]) for job in found]

    def instances(self, org: str, transfer_id: str | None = None, limit: int = 200) -> list[ForwardedInstance]:
        """`org`'s per-instance forwarding records, newest first."""
        return self.table.recent(org, transfer_id, limit)

    # -- forwarding (the job handler) -----------------------------------------------------------

    def forward(self, job: Job) -> None:
        """Send the transfer's instances that the rule's PACS has not yet confirmed. Returns when
        every one is stored (and marks the transfer imported if the rule says so); raises
        RetryLater while some are pending, PermanentFailure when the PACS refused some for good
        or the rule or transfer is gone."""
        rule = self.table.get(job.payload["rule"])
        if rule is None or rule.org != job.org or rule.disabled_at is not None:
            raise PermanentFailure(f"forwarding rule {job.payload['rule']} was removed before the transfer was sent")
        transfer = self.transfers.table.get(job.payload["transfer"])
        if transfer is None or transfer.destination != job.org:
            raise PermanentFailure(f"transfer {job.payload['transfer']} is not {job.org}'s")
        if transfer.state in (TransferState.REJECTED.value, TransferState.EXPIRED.value):
            raise PermanentFailure(f"transfer {transfer.id} was {transfer.state} before it was forwarded")

        held = {item.sop_instance_uid: item for study in self.transfers.table.studies(transfer.id)
                for item in self.archive.index.held(job.org, study.study_uid)}
        records = self.table.track(job.org, rule.id, transfer.id,
                                   (Tracked(h.study_uid, h.series_uid, h.sop_instance_uid) for h in held.values()),
                                   self.clock())
        gone = [Result(uid, FAILED, f"no longer held by {job.org}") for uid, record in records.items()
                if record.state == PENDING and uid not in held]
        self.table.record(rule.id, transfer.id, gone, self.clock(), attempted=False)
        due = [item for uid, item in held.items() if records[uid].state == PENDING]  # in series, instance order

        attempt = _Attempt()
        try:
            for start in range(0, len(due), self.batch_instances):
                if self._stopping.is_set():
                    raise RetryLater("the server stopped; carrying on at once", after=timedelta(0))
                batch = due[start:start + self.batch_instances]
                self._send(rule, transfer, batch, attempt)
        finally:
            self._audit(rule, transfer, attempt)

        counts = self.table.counts([(rule.id, transfer.id)])[(rule.id, transfer.id)]
        if counts[PENDING]:
            raise RetryLater(f"{counts[PENDING]} instance(s) not yet stored by the PACS: {attempt.last_error}")
        if not counts[SENT] and not counts[FAILED]:
            raise PermanentFailure(f"{job.org} holds nothing of transfer {transfer.id} to forward")
        if counts[FAILED]:
            raise PermanentFailure(f"the PACS refused {counts[FAILED]} of {sum(counts.values())} instance(s) "
                                   f"for good{': ' + attempt.last_error if attempt.last_error else ''}; the rest "
                                   f"are stored")
        if rule.mark_imported:  # audited by the transfer's move, as an Import (PS3.15 A.5.3.5)
            self.transfers.forwarded(transfer.id, f"every instance stored in the PACS by forwarding rule {rule.id} "
                                                  f"({rule.name})")

    def _send(self, rule: ForwardRule, transfer: Transfer, batch: list[Held], attempt: _Attempt) -> None:
        outgoing = [OutgoingInstance(item.sop_instance_uid, item.size, item.blob_key, self.archive.open_blob)
                    for item in batch]
        headers = {"Authorization": rule.authorization} if rule.authorization else {}
        uids = [item.sop_instance_uid for item in batch]
        attempt.tried += len(uids)
        try:
            outcome = self.store.store_instances(f"{rule.target_url}/studies", outgoing, headers)
        except PacsUnavailable as exc:
            attempt.last_error = exc.reason
            self.table.record(rule.id, transfer.id, [Result(uid, PENDING, exc.reason) for uid in uids], self.clock())
            raise RetryLater(exc.reason, exc.after) from None
        except PacsRefused as exc:
            attempt.last_error = exc.reason
            self.table.record(rule.id, transfer.id, [Result(uid, PENDING, exc.reason) for uid in uids], self.clock())
            raise PermanentFailure(f"the PACS refused the request: {exc.reason}") from None
        results = [_result(uid, outcome) for uid in uids]
        self.table.record(rule.id, transfer.id, results, self.clock())
        attempt.stored += sum(result.state == SENT for result in results)
        errors = [f"{result.sop_instance_uid}: {result.error}" for result in results if result.state != SENT]
        if errors:
            attempt.last_error = errors[0] + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")

    def _audit(self, rule: ForwardRule, transfer: Transfer, attempt: _Attempt) -> None:
        """One Export event (PS3.15 A.5.3.4) per attempt that sent anything, with the outcome:
        the instances left the organisation's domain for its PACS, or tried to."""
        if not attempt.tried:
            return
        studies = tuple(study.study_uid for study in self.transfers.table.studies(transfer.id))
        complete = attempt.stored == attempt.tried
        self.audit.record(AuditEvent.for_request(
            SYSTEM_REQUESTER, AuditAction.SEND, org=transfer.destination, patients=(transfer.patient_id,),
            studies=studies, transfer=transfer.id, outcome=Outcome.SUCCESS if complete else Outcome.MINOR_FAILURE,
            outcome_description="" if complete else f"{attempt.tried - attempt.stored} instance(s) not stored: "
                                                     f"{attempt.last_error}",
            detail=f"{attempt.stored} of {attempt.tried} instance(s) forwarded to {rule.target_url} by forwarding "
                   f"rule {rule.id} ({rule.name})"))


@dataclass
class _Attempt:
    """What one run of a forwarding job did, for its audit event and its error."""

    tried: int = 0
    stored: int = 0
    last_error: str = ""


def _result(uid: str, outcome: StoreOutcome) -> Result:
    refusal = outcome.refused.get(uid)
    if refusal is not None and refusal.reason in ALREADY_STORED:
        return Result(uid, SENT, f"the PACS already held it ({refusal.describe()})")
    if uid in outcome.stored:
        return Result(uid, SENT)
    if refusal is None:
        return Result(uid, PENDING, "the PACS's answer did not mention it")
    return Result(uid, PENDING if _retried(refusal.reason) else FAILED, refusal.describe())


# -- checks and conversions -------------------------------------------------------------------

def checked_target(url: str) -> str:
    """A DICOMweb service root forwarding may STOW to: absolute http(s) with a host, no
    credentials (they go in the Authorization value), no query or fragment; without a final /."""
    url = url.strip()
    if not url:
        raise InvalidForwardingRule("a forwarding rule needs the PACS's DICOMweb service root, such as "
                                    "https://pacs.example.nhs.uk/dicom-web")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidForwardingRule(f"the target URL is longer than {MAX_URL_LENGTH} characters")
    if any(character.isspace() or ord(character) < 0x20 or ord(character) == 0x7f for character in url):
        raise InvalidForwardingRule("the target URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # reading it checks it: one out of range raises
    except ValueError as exc:
        raise InvalidForwardingRule(f"the target URL cannot be parsed: {exc}") from None
    if parts.scheme.lower() not in ("https", "http"):
        raise InvalidForwardingRule("the target URL starts with https:// (or http://)")
    if "@" in parts.netloc:
        raise InvalidForwardingRule("the target URL carries credentials (user:password@host): give the PACS's "
                                    "Authorization header value as `authorization` instead")
    if not parts.hostname:
        raise InvalidForwardingRule("the target URL has no host")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise InvalidForwardingRule("the target URL is a service root: no ?query or #fragment")
    return url.rstrip("/")


def _checked_authorization(value: str) -> str:
    value = value.strip()
    if len(value) > MAX_AUTHORIZATION_LENGTH:
        raise InvalidForwardingRule(f"the Authorization value is longer than {MAX_AUTHORIZATION_LENGTH} characters")
    # RFC 9110 5.5: a field value is visible ASCII and spaces; CR or LF would inject headers.
    if any(not (0x20 <= ord(character) < 0x7f) for character in value):
        raise InvalidForwardingRule("the Authorization value may hold only printable ASCII characters")
    return value


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(value for value in values if value))


def _receiver(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _match(row: ForwardRule) -> RuleMatch:
    return RuleMatch(tuple(row.urgencies.split()), tuple(row.modalities.split()), tuple(row.senders.split()))


def _rule(row: ForwardRule) -> ForwardingRule:
    return ForwardingRule(
        id=row.id, org=row.org, name=row.name, target_url=row.target_url, has_authorization=bool(row.authorization),
        match=_match(row), mark_imported=row.mark_imported, created_by=row.created_by,
        created_at=as_utc(row.created_at), disabled_at=as_utc(row.disabled_at) if row.disabled_at else None)


def _job(job: Job, counts: Mapping[str, int]) -> ForwardingJob:
    return ForwardingJob(
        id=job.id, rule_id=job.payload["rule"], transfer_id=job.payload["transfer"], state=job.state,
        attempts=job.attempts, max_attempts=job.max_attempts,
        next_attempt_at=job.run_after if job.state is JobState.QUEUED else None, last_error=job.last_error,
        created_at=job.created_at, finished_at=job.finished_at, instances=dict(counts))
