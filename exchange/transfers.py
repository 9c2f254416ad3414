"""Transfers: studies of one patient sent from one organisation to another, with an urgency, a
note, and a state both sides see. The lifecycle is the TRANSITIONS table; every step is audited."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

import pydicom
from pydicom.uid import EncapsulatedPDFStorage
from sqlalchemy import Connection

from exchange.access import SYSTEM_REQUESTER, Requester
from exchange.archive import Archive, Incoming
from exchange.audit import AuditAction, AuditEvent, AuditTrail, Outcome
from exchange.errors import InvalidTransferRequest, NotHeld, TransferStepRefused, UnknownTransfer
from exchange.organisations import OrganisationDirectory
from exchange.reports import MAX_REPORT_BYTES, ReportText, encapsulated_document, is_report, report_text
from storage.instances import AddOutcome, InstanceRecord
from storage.tables import Transfer, TransferEvent, TransferStudy, utcnow
from storage.transfers import TransferFilter, TransferTable
from storage.usage import study_sizes

DEFAULT_IDLE = timedelta(minutes=5)
MAX_REPORT_TEXT_BYTES = 20 << 20  # larger PDFs give their title, not their text (memory stays bounded)  # an outbox stream quiet this long is delivered


class Urgency(str, Enum):
    ROUTINE = "routine"
    URGENT = "urgent"
    EMERGENCY = "emergency"  # a clinical emergency


class TransferState(str, Enum):
    RECEIVING = "receiving"  # an outbox stream is still adding objects
    DELIVERED = "delivered"
    VIEWED = "viewed"
    IMPORTED = "imported"
    REJECTED = "rejected"
    EXPIRED = "expired"


class Side(str, Enum):
    SENDER = "sender"
    DESTINATION = "destination"
    SYSTEM = "system"


class Step(str, Enum):
    COMPLETE = "complete"  # the sender says the stream is complete
    IDLE = "idle"  # the stream was quiet for the idle time
    VIEW = "view"
    IMPORT = "import"
    REJECT = "reject"
    EXPIRE = "expire"
    FORWARD = "forward"  # a forwarding rule stored every instance in the destination's PACS


# (state, step) → (next state, who may take the step)
TRANSITIONS: dict[tuple[TransferState, Step], tuple[TransferState, Side]] = {
    (TransferState.RECEIVING, Step.COMPLETE): (TransferState.DELIVERED, Side.SENDER),
    (TransferState.RECEIVING, Step.IDLE): (TransferState.DELIVERED, Side.SYSTEM),
    (TransferState.DELIVERED, Step.VIEW): (TransferState.VIEWED, Side.DESTINATION),
    (TransferState.DELIVERED, Step.IMPORT): (TransferState.IMPORTED, Side.DESTINATION),
    (TransferState.VIEWED, Step.IMPORT): (TransferState.IMPORTED, Side.DESTINATION),
    (TransferState.DELIVERED, Step.REJECT): (TransferState.REJECTED, Side.DESTINATION),
    (TransferState.VIEWED, Step.REJECT): (TransferState.REJECTED, Side.DESTINATION),
    (TransferState.DELIVERED, Step.EXPIRE): (TransferState.EXPIRED, Side.SYSTEM),
    (TransferState.VIEWED, Step.EXPIRE): (TransferState.EXPIRED, Side.SYSTEM),
    (TransferState.DELIVERED, Step.FORWARD): (TransferState.IMPORTED, Side.SYSTEM),
    (TransferState.VIEWED, Step.FORWARD): (TransferState.IMPORTED, Side.SYSTEM),
    # Received copies expire after the destination's retention period whatever became of them;
    # what an import reconciled into the receiver's own domain is its own and stays (retention
    # keeps the studies an organisation holds as its own).
    (TransferState.IMPORTED, Step.EXPIRE): (TransferState.EXPIRED, Side.SYSTEM),
    (TransferState.REJECTED, Step.EXPIRE): (TransferState.EXPIRED, Side.SYSTEM),
}
REPLY_STATES = {TransferState.DELIVERED.value, TransferState.VIEWED.value, TransferState.IMPORTED.value}
AUDITED_AS = {Step.VIEW: AuditAction.VIEW, Step.IMPORT: AuditAction.IMPORT, Step.REJECT: AuditAction.REJECT,
              Step.EXPIRE: AuditAction.EXPIRE, Step.FORWARD: AuditAction.IMPORT}


@dataclass(frozen=True)
class TransferView:
    transfer: Transfer
    studies: list[TransferStudy]
    history: list[TransferEvent]


# Told about every transfer that becomes delivered, and every emergency when it opens.
Notify = Callable[[Connection, str, Transfer], None]


class Transfers:
    def __init__(self, table: TransferTable, archive: Archive, directory: OrganisationDirectory,
                 audit: AuditTrail, idle: timedelta = DEFAULT_IDLE, notify: Notify | None = None):
        self.table = table
        self.archive = archive
        self.directory = directory
        self.audit = audit
        self.idle = idle
        self.notify = notify

    # -- sending ----------------------------------------------------------------------------------

    def receive(self, sender: str, destination: str, incoming: list[Incoming], refused: list[str],
                requester: Requester, urgency: Urgency = Urgency.ROUTINE, note: str = "",
                intended_recipient: str = "") -> list[AddOutcome]:
        """Objects stored into the outbox service root `sender` → `destination`: held for the
        destination, each patient's opening or extending a transfer in the same transaction."""
        self.require_pair(sender, destination)

        def open_or_extend(connection: Connection, records: list[InstanceRecord],
                           outcomes: list[AddOutcome]) -> list[AuditEvent]:
            now = utcnow()
            by_patient: dict[str, list[InstanceRecord]] = {}
            for record, outcome in zip(records, outcomes):
                # A re-send of what the destination still holds (asked for after a rejection, say)
                # is a transfer too; a resumed stream may count an instance twice.
                if outcome is not AddOutcome.CONFLICT:
                    by_patient.setdefault(record.study_columns.get("patient_id", ""), []).append(record)
            events = []
            for patient_id, stored in by_patient.items():
                transfer = self.table.open_receiving(connection, sender, destination, patient_id, urgency.value,
                                                     now - self.idle)
                if transfer is None:
                    transfer = self._open(connection, sender, destination, patient_id,
                                          stored[0].study_columns.get("patient_name", ""), urgency, note,
                                          TransferState.RECEIVING, "outbox", requester, now, intended_recipient)
                counts: dict[str, int] = {}
                sizes: dict[str, int] = {}
                for record in stored:
                    counts[record.study_uid] = counts.get(record.study_uid, 0) + 1
                    sizes[record.study_uid] = sizes.get(record.study_uid, 0) + record.size
                self.table.add_studies(connection, transfer.id, counts, now, sizes)
                if any(is_report(record.sop_class_uid) for record in stored):
                    self.table.mark_report(connection, transfer.id)
                events.append(AuditEvent.for_request(
                    requester, AuditAction.SEND, org=sender, patients=(patient_id,), studies=tuple(counts),
                    transfer=transfer.id, detail=f"{len(stored)} instance(s) to {destination}"))
            return events  # the store writes them with its own, last

        return self.archive.store(destination, incoming, requester, refused, also=open_or_extend, by_holder=False)

    def send_held(self, sender: str, destination: str, study_uids: list[str], requester: Requester,
                  urgency: Urgency = Urgency.ROUTINE, note: str = "", intended_recipient: str = "") -> TransferView:
        """Send studies the sender already holds: delivered at once, no bytes copied."""
        self.require_pair(sender, destination)
        if not study_uids:
            raise InvalidTransferRequest("name at least one study to send")
        patients = self.archive.index.patient_ids(sender, study_uids)
        missing = [uid for uid in study_uids if uid not in patients]
        if missing:
            raise NotHeld(f"study {missing[0]}")
        if len(set(patients.values())) > 1:
            raise InvalidTransferRequest("a transfer bundles studies of one patient; these studies belong to "
                                         f"{len(set(patients.values()))} patients: send one transfer each")
        names = self.archive.index.patient_names(sender, study_uids)
        created: list[Transfer] = []

        def record_transfer(connection: Connection, _added: int) -> None:
            now = utcnow()
            transfer = self._open(connection, sender, destination, next(iter(patients.values())),
                                  next(iter(names.values()), ""), urgency, note, TransferState.DELIVERED,
                                  "holdings", requester, now, intended_recipient)
            counts = self.archive.index.instance_counts(sender, study_uids, connection)
            self.table.add_studies(connection, transfer.id, counts, now, study_sizes(connection, sender, study_uids))
            self.audit.write(connection, [AuditEvent.for_request(
                requester, AuditAction.SEND, org=sender, patients=tuple(set(patients.values())),
                studies=tuple(study_uids), transfer=transfer.id, detail=f"to {destination}")])
            if self.notify:
                self.notify(connection, "transfer.delivered", transfer)
            created.append(transfer)

        self.archive.share(sender, destination, study_uids, requester, record_transfer)
        return self.view(sender, created[0].id)

    def return_reports(self, connection: Connection, org: str, records: list[InstanceRecord],
                       outcomes: list[AddOutcome], requester: Requester) -> list[AuditEvent]:
        """A report the receiver stores into a study that came in a transfer goes back to the
        sender as a reply on that transfer (in the store's transaction). Returns the audit
        events, which the store writes last (the audit chain's lock is taken at the end)."""
        reports = [record for record, outcome in zip(records, outcomes)
                   if outcome is AddOutcome.STORED and is_report(record.sop_class_uid)]
        events: list[AuditEvent] = []
        if not reports:
            return events
        now = utcnow()
        for transfer in self.table.received_with(connection, org, sorted({r.study_uid for r in reports})):
            if transfer.state not in REPLY_STATES:
                continue  # a rejected, expired or unfinished transfer gets no replies
            # A study the receiver held as its own before the transfer came is not the sender's
            # study, whatever UID the sender reused: its reports stay.
            own_before = self.table.own_before(connection, org, sorted({r.study_uid for r in reports}),
                                               transfer.created_at)
            replies = [r for r in reports if r.study_uid in self.table.study_uids(connection, transfer.id)
                       and r.study_uid not in own_before]
            if not replies:
                continue
            self.archive.index.copy_rows(connection, org, transfer.sender, sorted({r.study_uid for r in replies}),
                                         [r.sop_instance_uid for r in replies])
            self.table.log(connection, TransferEvent(
                transfer_id=transfer.id, state=transfer.state, actor=requester.principal.actor, org=org, at=now,
                detail=f"report returned to {transfer.sender} ({len(replies)} object(s))"))
            events.append(AuditEvent.for_request(
                requester, AuditAction.SEND, org=org, patients=(transfer.patient_id,),
                studies=tuple(sorted({r.study_uid for r in replies})), transfer=transfer.id,
                detail=f"report returned to {transfer.sender}"))
        return events

    def report_texts(self, org: str, transfer_id: str, requester: Requester) -> list[ReportText]:
        """The text of every report the organisation holds in the transfer's studies, for a RIS
        (audited as a retrieve). A PDF too large to read in memory gives its title only."""
        view = self.view(org, transfer_id)
        texts = []
        for study in view.studies:
            for held in self.archive.index.held(org, study.study_uid):
                if is_report(held.sop_class_uid):
                    with self.archive.open_blob(held.blob_key) as handle:
                        text = report_text(handle, pdf_text=None) if held.size > MAX_REPORT_TEXT_BYTES \
                            else report_text(handle)
                    if text is not None:
                        texts.append(text)
        self._read(requester, org, view.transfer, AuditAction.RETRIEVE, f"{len(texts)} report text(s)")
        return texts

    def report_document(self, org: str, transfer_id: str, sop_instance_uid: str, requester: Requester) -> bytes:
        """The PDF an Encapsulated PDF report of the transfer holds (PS3.3 A.45.1), for a person to
        open (audited as a retrieve)."""
        view = self.view(org, transfer_id)
        for study in view.studies:
            for held in self.archive.index.held(org, study.study_uid, None, sop_instance_uid):
                # read whole: a report object is at most MAX_REPORT_BYTES of PDF and a small header
                if held.sop_class_uid == EncapsulatedPDFStorage and held.size <= MAX_REPORT_BYTES + (1 << 20):
                    with self.archive.open_blob(held.blob_key) as handle:
                        document = encapsulated_document(pydicom.dcmread(handle))
                    self._read(requester, org, view.transfer, AuditAction.RETRIEVE, f"report {sop_instance_uid}")
                    return document
        raise NotHeld(f"PDF report {sop_instance_uid} of transfer {transfer_id}")

    def read(self, org: str, transfer_id: str, requester: Requester) -> TransferView:
        """One transfer with its history, as a person reads it (audited: it names the patient)."""
        view = self.view(org, transfer_id)
        self._read(requester, org, view.transfer, AuditAction.RETRIEVE, "transfer details")
        return view

    def _read(self, requester: Requester, org: str, transfer: Transfer, action: AuditAction, detail: str) -> None:
        self.audit.record(AuditEvent.for_request(requester, action, org=org, patients=(transfer.patient_id,),
                                                 transfer=transfer.id, detail=detail))

    def _open(self, connection: Connection, sender: str, destination: str, patient_id: str, patient_name: str,
              urgency: Urgency, note: str, state: TransferState, via: str, requester: Requester, now: datetime,
              intended_recipient: str = "") -> Transfer:
        transfer = Transfer(id=f"T{secrets.token_hex(8)}", sender=sender, destination=destination,
                            urgency=urgency.value, note=note[:2000], intended_recipient=intended_recipient[:200],
                            patient_id=patient_id, patient_name=patient_name, state=state.value, via=via,
                            created_by=requester.principal.actor, created_at=now, updated_at=now)
        self.table.insert(connection, transfer)
        self.table.log(connection, TransferEvent(transfer_id=transfer.id, state=state.value,
                                                 actor=requester.principal.actor, org=sender, at=now,
                                                 detail=f"{urgency.value} transfer to {destination}"))
        if self.notify and urgency is Urgency.EMERGENCY:
            self.notify(connection, "transfer.emergency", transfer)  # at once, before delivery
        return transfer

    def require_pair(self, sender: str, destination: str) -> None:
        self.directory.require(sender)
        self.directory.require(destination)
        if sender == destination:
            raise InvalidTransferRequest("a transfer goes to another organisation, not to the sender itself")

    # -- reading ----------------------------------------------------------------------------------

    def view(self, org: str, transfer_id: str) -> TransferView:
        transfer = self.table.get(transfer_id)
        if transfer is None or org not in (transfer.sender, transfer.destination):
            raise UnknownTransfer(transfer_id)  # another organisation's transfer does not exist for you
        return TransferView(transfer, self.table.studies(transfer_id), self.table.history(transfer_id))

    def histories(self, org: str, transfers: list[Transfer]) -> dict[str, list[TransferEvent]]:
        """The histories of transfers of a list `org` was given (its inbox or outbox page)."""
        if any(org not in (transfer.sender, transfer.destination) for transfer in transfers):
            raise UnknownTransfer(next(t.id for t in transfers if org not in (t.sender, t.destination)))
        return self.table.histories([transfer.id for transfer in transfers])

    def inbox(self, org: str, where: TransferFilter, limit: int, offset: int,
              requester: Requester) -> tuple[int, list[Transfer]]:
        return self._listing("destination", org, where, limit, offset, requester)

    def outbox(self, org: str, where: TransferFilter, limit: int, offset: int,
               requester: Requester) -> tuple[int, list[Transfer]]:
        return self._listing("sender", org, where, limit, offset, requester)

    def inbox_version(self, org: str) -> str:
        """A token that changes whenever the inbox could show something new: a transfer arrived,
        grew or changed state. It names no patient, so asking for it is not audited; a client that
        polls asks for the (audited) list only when it changes."""
        self.directory.require(org)
        count, latest = self.table.last_change("destination", org)
        return f"{count}-{latest.isoformat() if latest else ''}"

    def _listing(self, side: str, org: str, where: TransferFilter, limit: int, offset: int,
                 requester: Requester) -> tuple[int, list[Transfer]]:
        """A list that names patients: audited as a query (PS3.15 A.5.3.10)."""
        self.directory.require(org)
        total, transfers = self.table.listing(side, org, where, limit, offset)
        self.audit.record(AuditEvent.for_request(
            requester, AuditAction.QUERY, org=org, patients=tuple(dict.fromkeys(t.patient_id for t in transfers)),
            detail=f"{'inbox' if side == 'destination' else 'outbox'}: {len(transfers)} of {total} transfer(s)"))
        return total, transfers

    # -- the lifecycle ----------------------------------------------------------------------------

    def take_step(self, org: str, transfer_id: str, step: Step, requester: Requester, reason: str = "") -> TransferView:
        transfer = self.view(org, transfer_id).transfer
        state = TransferState(transfer.state)
        allowed = TRANSITIONS.get((state, step))
        if allowed is None:
            raise TransferStepRefused(f"transfer {transfer_id} is {state.value}: it cannot be {_past(step)}")
        next_state, side = allowed
        acting_side = Side.SENDER if org == transfer.sender else Side.DESTINATION
        if side is not acting_side:
            raise TransferStepRefused(f"only the {side.value} of transfer {transfer_id} can mark it {_past(step)}")
        if step is Step.REJECT and not reason.strip():
            raise InvalidTransferRequest("say why the transfer is rejected: the sender sees the reason")
        self._move(transfer, step, next_state, requester, org, reason.strip()[:1000])
        return self.view(org, transfer_id)

    def deliver_idle(self, now: datetime | None = None) -> int:
        """Deliver every outbox transfer whose stream has been quiet for the idle time."""
        now = now or utcnow()
        delivered = 0
        for transfer in self.table.idle_receiving(now - self.idle):
            delivered += self._move(transfer, Step.IDLE, TransferState.DELIVERED, SYSTEM_REQUESTER, "", "")
        return delivered

    def forwarded(self, transfer_id: str, detail: str) -> bool:
        """Every instance of the transfer is in the destination's PACS, by a forwarding rule that
        imports: the system takes it to imported for the destination. False if its state does
        not allow that (already imported, rejected, expired)."""
        transfer = self.table.get(transfer_id)
        if transfer is None:
            raise UnknownTransfer(transfer_id)
        allowed = TRANSITIONS.get((TransferState(transfer.state), Step.FORWARD))
        if allowed is None:
            return False
        return self._move(transfer, Step.FORWARD, allowed[0], SYSTEM_REQUESTER, transfer.destination, detail)

    def _move(self, transfer: Transfer, step: Step, next_state: TransferState, requester: Requester, org: str,
              reason: str) -> bool:
        studies = tuple(study.study_uid for study in self.table.studies(transfer.id))
        with self.table.database.write() as connection:
            event = TransferEvent(transfer_id=transfer.id, state=next_state.value, actor=requester.principal.actor,
                                  org=org, at=utcnow(), detail=reason or step.value)
            moved = self.table.move(connection, transfer.id, transfer.state, next_state.value, event,
                                    reason if step is Step.REJECT else None)
            if not moved:
                return False
            if next_state is TransferState.DELIVERED and self.notify:
                self.notify(connection, "transfer.delivered", transfer)
            action = AUDITED_AS.get(step)
            if action is not None:
                self.audit.write(connection, [AuditEvent.for_request(
                    requester, action, org=org or transfer.destination, patients=(transfer.patient_id,),
                    studies=studies, transfer=transfer.id, outcome=Outcome.SUCCESS, detail=reason or step.value)])
        return True


def _past(step: Step) -> str:
    return {Step.COMPLETE: "completed", Step.IDLE: "delivered", Step.VIEW: "viewed", Step.IMPORT: "imported",
            Step.REJECT: "rejected", Step.EXPIRE: "expired", Step.FORWARD: "forwarded"}[step]

