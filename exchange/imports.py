"""Import with reconciliation (IHE RAD Import Reconciliation Workflow): the receiver takes a
transfer into its own identity domain. Differences between the objects' demographics and the
local ones stop the import until confirmed; the reconciled objects are new blobs carrying the
originals in Original Attributes Sequence (0400,0561), and the received objects are kept."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pydicom
from sqlalchemy import Connection, insert

from exchange.access import Requester
from exchange.archive import Archive
from exchange.audit import AuditAction, AuditEvent, AuditTrail, Outcome
from exchange.errors import ExchangeError, TransferStepRefused
from exchange.reconciliation import Difference, LocalIdentity, differences, reconcile_file
from exchange.transfers import TRANSITIONS, Step, Transfers, TransferState, TransferView
from storage.instances import ImportRaced
from storage.retention import RetentionTable
from storage.tables import TransferEvent, TransferOriginal, utcnow

# Checks a written object and makes its index record, as STOW does: (path, blob key, size) → record.
RecordMaker = Callable[[list], list]


class ReconciliationNeeded(ExchangeError):
    """The received demographics differ from the local ones: the import waits for confirmation."""

    def __init__(self, found: list[Difference]):
        described = "; ".join(f"{d.attribute.value}: received '{d.incoming}', local '{d.local}'" for d in found)
        super().__init__(f"the received objects disagree with the local patient ({described}); confirm the "
                         "differences to import them")
        self.differences = found


@dataclass(frozen=True)
class ImportReport:
    transfer: TransferView
    instances: int
    confirmed: list[Difference]


class Imports:
    def __init__(self, transfers: Transfers, archive: Archive, audit: AuditTrail):
        self.transfers = transfers
        self.archive = archive
        self.audit = audit

    def import_transfer(self, org: str, transfer_id: str, local: LocalIdentity, confirmed: bool,
                        requester: Requester, make_records: RecordMaker) -> ImportReport:
        """Reconcile every object of the transfer held by `org` (its destination). Without
        `confirmed`, differing demographics raise ReconciliationNeeded (audited); with it, they
        are the ones confirmed, and the confirmation is audited."""
        view = self.transfers.view(org, transfer_id)
        transfer = view.transfer
        if org != transfer.destination:
            raise TransferStepRefused(f"only the destination of transfer {transfer_id} can import it")
        if (TransferState(transfer.state), Step.IMPORT) not in TRANSITIONS:
            raise TransferStepRefused(f"transfer {transfer_id} is {transfer.state}: it cannot be imported"
                                      + (" again" if transfer.state == TransferState.IMPORTED.value else ""))
        study_uids = [study.study_uid for study in view.studies]
        held = [item for uid in study_uids for item in self.archive.index.held(org, uid)]
        found: dict[Difference, None] = {}
        for item in held:
            with self.archive.open_blob(item.blob_key) as handle:
                header = pydicom.dcmread(handle, stop_before_pixels=True)
            found.update(dict.fromkeys(differences(header, local)))
        if found and not confirmed:
            self.audit.record(AuditEvent.for_request(
                requester, AuditAction.RECONCILE, org=org, patients=(transfer.patient_id,), studies=tuple(study_uids),
                transfer=transfer_id, outcome=Outcome.MINOR_FAILURE, outcome_description="differences to confirm",
                detail=str(ReconciliationNeeded(list(found)))))
            raise ReconciliationNeeded(list(found))
        now = utcnow()
        writers = []
        try:
            for item in held:
                writer = self.archive.blobs.new_writer()
                writers.append(writer)
                with self.archive.open_blob(item.blob_key) as handle:
                    reconcile_file(handle, writer, local, sender=transfer.sender, when=now, confirmed=list(found))
                writer.close()
            records = make_records(writers)
        except BaseException:
            self.archive.discard(writers)
            raise
        originals = [{"transfer_id": transfer_id, "sop_instance_uid": item.sop_instance_uid,
                      "blob_key": item.blob_key} for item in held]

        def record_import(connection: Connection) -> None:
            moved = self.transfers.table.move(
                connection, transfer_id, transfer.state, TransferState.IMPORTED.value,
                TransferEvent(transfer_id=transfer_id, state=TransferState.IMPORTED.value,
                              actor=requester.principal.actor, org=org, at=now,
                              detail=f"imported as patient {local.patient_id}"))
            if not moved:  # another import, or a rejection, got there first: roll everything back
                raise TransferStepRefused(f"transfer {transfer_id} changed while it was imported; look again")
            connection.execute(insert(TransferOriginal.__table__), originals)
            # Reconciled into the receiver's own domain, the studies are its own: retention keeps
            # them, and removes only the received originals when the transfer expires.
            RetentionTable().note_own(connection, org, study_uids, now)
            events = [AuditEvent.for_request(
                requester, AuditAction.IMPORT, org=org, patients=(local.patient_id, transfer.patient_id),
                studies=tuple(study_uids), transfer=transfer_id,
                detail=f"{len(records)} instance(s) imported as {local.patient_id} ({local.issuer_of_patient_id})")]
            if found:
                events.append(AuditEvent.for_request(
                    requester, AuditAction.RECONCILE, org=org, patients=(local.patient_id, transfer.patient_id),
                    studies=tuple(study_uids), transfer=transfer_id,
                    detail="confirmed: " + "; ".join(f"{d.attribute.value} '{d.incoming}' -> '{d.local}'"
                                                     for d in found)))
            self.audit.write(connection, events)  # last: it holds the audit chain until the commit

        try:
            with self.archive.blobs.placing():
                self.archive.blobs.commit(writers)
                self.archive.index.replace_instances(org, {item.sop_instance_uid: item.blob_key for item in held},
                                                     records, record_import)
        except (ImportRaced, TransferStepRefused) as exc:
            self.archive.forget({writer.key for writer in writers})
            raise TransferStepRefused(str(exc)) from None
        return ImportReport(self.transfers.view(org, transfer_id), len(records), list(found))
