"""Retention: what a transfer brought into its destination's holdings is removed once the
destination's retention period has passed since the transfer was delivered, unless the
destination retains the transfer. Only the destination's rows go; a blob goes when no row of
any organisation uses it any more. The transfer becomes expired by the TRANSITIONS table."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from exchange.access import SYSTEM_REQUESTER, Requester
from exchange.audit import AuditEvent
from exchange.errors import TransferStepRefused
from exchange.transfers import AUDITED_AS, TRANSITIONS, Side, Step, Transfers, TransferState, TransferView
from storage.instances import AddOutcome, InstanceRecord
from storage.retention import ExpiryRule, RetentionTable
from storage.tables import Organisation, Transfer, TransferEvent, utcnow

log = logging.getLogger("oix.retention")
DEFAULT_INTERVAL = timedelta(hours=1)

# The states whose copies expire: those the TRANSITIONS table lets the system expire.
EXPIRING_STATES = tuple(state for (state, step), (_next, side) in TRANSITIONS.items()
                        if step is Step.EXPIRE and side is Side.SYSTEM)


@dataclass(frozen=True)
class ExpiredTransfer:
    """One transfer whose received copies expired: what left its destination's holdings."""

    transfer: Transfer
    retention_days: int
    studies: tuple[str, ...]  # removed from the destination's holdings
    kept: tuple[str, ...]  # the destination holds these for another reason: they stay
    instances: int
    bytes: int
    blobs: frozenset[str]  # blob files no one references any more


@dataclass(frozen=True)
class RetentionReport:
    now: datetime
    dry_run: bool
    expired: tuple[ExpiredTransfer, ...]

    @property
    def transfers(self) -> int:
        return len(self.expired)

    @property
    def studies(self) -> int:
        return sum(len(item.studies) for item in self.expired)

    @property
    def instances(self) -> int:
        return sum(item.instances for item in self.expired)

    @property
    def bytes(self) -> int:
        return sum(item.bytes for item in self.expired)

    @property
    def blobs(self) -> int:
        return sum(len(item.blobs) for item in self.expired)


class _DryRun(Exception):
    """Raised at the end of a dry run's transaction to roll everything back."""


class Retention:
    def __init__(self, table: RetentionTable, transfers: Transfers, interval: timedelta = DEFAULT_INTERVAL):
        self.table = table
        self.transfers = transfers
        self.interval = interval  # how often a server runs it (zero: never; `oix retention run` instead)
        self.database = transfers.table.database
        self.blobs = transfers.archive.blobs

    # -- retaining --------------------------------------------------------------------------------

    def retain(self, org: str, transfer_id: str, requester: Requester) -> TransferView:
        """The destination keeps the transfer's copies past its retention period."""
        return self._set_retained(org, transfer_id, True, requester)

    def release(self, org: str, transfer_id: str, requester: Requester) -> TransferView:
        """The copies expire with the retention period again (at the next run if it has passed)."""
        return self._set_retained(org, transfer_id, False, requester)

    def _set_retained(self, org: str, transfer_id: str, retained: bool, requester: Requester) -> TransferView:
        verb = "retain" if retained else "release"
        transfer = self.transfers.view(org, transfer_id).transfer
        if org != transfer.destination:
            raise TransferStepRefused(f"only the destination of transfer {transfer_id} can {verb} it: the copies "
                                      "that retention removes are the destination's")
        with self.database.write() as connection:
            if self.table.set_retained(connection, transfer_id, retained, TransferState.EXPIRED.value):
                self.transfers.table.log(connection, TransferEvent(
                    transfer_id=transfer_id, state=transfer.state, actor=requester.principal.actor, org=org,
                    at=utcnow(), detail=("retained: kept past the retention period" if retained else
                                         "released: expires with the retention period")))
        view = self.transfers.view(org, transfer_id)
        if view.transfer.state == TransferState.EXPIRED.value:
            raise TransferStepRefused(f"transfer {transfer_id} is expired: its copies are gone")
        return view

    def note_own_store(self, connection: Connection, org: str, records: list[InstanceRecord],
                       outcomes: list[AddOutcome], _requester: Requester) -> None:
        """An Archive store listener: objects an organisation stores through its own service
        root make their studies its own, which retention never removes."""
        studies = sorted({record.study_uid for record, outcome in zip(records, outcomes)
                          if outcome is not AddOutcome.CONFLICT})
        if studies:
            self.table.note_own(connection, org, studies, utcnow())

    # -- expiring ---------------------------------------------------------------------------------

    def run(self, now: datetime | None = None, dry_run: bool = False,
            requester: Requester = SYSTEM_REQUESTER) -> RetentionReport:
        """Expire every received transfer past its destination's retention period at `now`. A dry
        run does the same in one transaction and rolls it back: the report is what would go."""
        now = now or utcnow()
        due: list[tuple[Organisation, ExpiryRule, Transfer]] = []
        with self.database.read() as connection:
            for organisation in self.transfers.directory.all():
                rule = ExpiryRule(tuple(state.value for state in EXPIRING_STATES), TransferState.DELIVERED.value,
                                  now - timedelta(days=organisation.retention_days))
                due += [(organisation, rule, transfer)
                        for transfer in self.table.expired(connection, organisation.slug, rule)]
        expired: list[ExpiredTransfer] = []
        if dry_run:
            try:
                with self.database.write() as connection:
                    for organisation, rule, transfer in due:
                        found = self._expire(connection, organisation, rule, transfer, requester, audited=False)
                        expired += [found] if found else []
                    raise _DryRun
            except _DryRun:
                pass
            return RetentionReport(now, True, tuple(expired))
        for organisation, rule, transfer in due:
            with self.blobs.removing():  # no store places a blob while unreferenced ones are found and deleted
                with self.database.write() as connection:
                    found = self._expire(connection, organisation, rule, transfer, requester, audited=True)
                if found:
                    self.blobs.delete(found.blobs)
                    expired.append(found)
        report = RetentionReport(now, False, tuple(expired))
        if expired:
            log.info("retention: %d transfer(s) expired, %d instance(s) and %d blob(s) removed",
                     report.transfers, report.instances, report.blobs)
        return report

    def _expire(self, connection: Connection, organisation: Organisation, rule: ExpiryRule, transfer: Transfer,
                requester: Requester, audited: bool) -> ExpiredTransfer | None:
        """In the caller's transaction: move the transfer to expired (first, so that on SQLite the
        transaction holds the write lock before it reads), then remove the destination's rows of
        its studies that nothing else keeps. None if the transfer moved or was retained meanwhile."""
        next_state, _side = TRANSITIONS[(TransferState(transfer.state), Step.EXPIRE)]
        days = organisation.retention_days
        event = TransferEvent(transfer_id=transfer.id, state=next_state.value, actor=requester.principal.actor,
                              org="", at=utcnow(),
                              detail=f"{transfer.destination}'s copies removed after its retention period ({days} days)")
        if not self.transfers.table.move(connection, transfer.id, transfer.state, next_state.value, event,
                                         unless_retained=True):
            return None
        study_uids = sorted(self.transfers.table.study_uids(connection, transfer.id))
        kept = self.table.held_otherwise(connection, transfer.destination, transfer.id, study_uids, rule,
                                         TransferState.EXPIRED.value)
        removing = tuple(uid for uid in study_uids if uid not in kept)
        removed = self.table.remove(connection, transfer.destination, removing, transfer.id)
        unreferenced = frozenset(self.table.unreferenced(connection, removed.blob_keys))
        if audited:
            detail = (f"received copies expired after {days} days: {removed.instances} instance(s) of "
                      f"{len(removing)} study(ies) removed")
            if kept:
                detail += f"; {len(kept)} study(ies) kept, held for another reason"
            self.transfers.audit.write(connection, [AuditEvent.for_request(
                requester, AUDITED_AS[Step.EXPIRE], org=transfer.destination, patients=(transfer.patient_id,),
                studies=removing, transfer=transfer.id, detail=detail)])
        return ExpiredTransfer(transfer, days, removing, tuple(sorted(kept)), removed.instances, removed.bytes,
                               unreferenced)
