"""An organisation's holdings: storing, searching, retrieving and deleting instances, always
for one organisation at a time, with blobs made durable before the index says they exist."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import orjson
from sqlalchemy import Connection

from exchange.access import Requester
from exchange.audit import AuditAction, AuditEvent, AuditTrail, Outcome
from exchange.errors import NotHeld
from exchange.organisations import OrganisationDirectory
from storage.blobs import BlobStore, BlobWriter
from storage.instances import AddOutcome, Held, InstanceIndex, InstanceRecord, QueryRow
from storage.query import MatchKind, Query, QueryLevel


# Told of every store, in its transaction: (connection, org, records, outcomes, requester); may
# return audit events, which the store writes with its own.
StoreListener = Callable[[Connection, str, list[InstanceRecord], list[AddOutcome], Requester],
                         "list[AuditEvent] | None"]


@dataclass
class Incoming:
    """One received object ready to keep: its spooled bytes and its index record."""

    writer: BlobWriter
    record: InstanceRecord


class Archive:
    """Every read and write of patient data here leaves an audit event (DESIGN invariant 5):
    stores in the same transaction as their index rows, reads buffered by the audit trail."""

    def __init__(self, directory: OrganisationDirectory, index: InstanceIndex, blobs: BlobStore,
                 audit: AuditTrail):
        self.directory = directory
        self.index = index
        self.blobs = blobs
        self.audit = audit
        self.listeners: list[StoreListener] = []

    def on_store(self, listener: StoreListener) -> None:
        """Call `listener` in the transaction of every store an organisation makes into its own
        holdings (the exchange routes report replies so)."""
        self.listeners.append(listener)

    def require_organisation(self, org: str) -> None:
        self.directory.require(org)

    def organisation_known(self, org: str) -> bool:
        """True when `org` is known to exist without asking the index (cheap enough for an
        event loop); False means `require_organisation` must tell."""
        return self.directory.known(org)

    # -- store --------------------------------------------------------------------------------

    def store(self, org: str, incoming: list[Incoming], requester: Requester, refused: list[str] = (),
              also: Callable[[Connection, list[InstanceRecord], list[AddOutcome]], "list[AuditEvent] | None"]
              | None = None,
              by_holder: bool = True) -> list[AddOutcome]:
        """Keep `incoming` for `org`: blobs durable first, then one index transaction with their
        audit events (DESIGN invariants 1 and 5). `refused` describes the objects of the same
        request that failed their checks; `also` writes more rows in the same transaction (a
        transfer the objects open or extend) and may return audit events to write with the store's. `by_holder` is False when another organisation
        stores into `org` (an outbox): the store listeners are not told. Returns an outcome per
        object, in order."""
        if not incoming:
            if refused:
                self.audit.record(_refused_store(requester, org, refused))
            return []
        records = [item.record for item in incoming]

        def audited(connection: Connection, outcomes: list[AddOutcome]) -> None:
            conflicts = [f"SOP Instance {record.sop_instance_uid} is held with other content"
                         for record, outcome in zip(records, outcomes) if outcome is AddOutcome.CONFLICT]
            events = _store_events(requester, org, records, outcomes)
            if refused or conflicts:
                events.append(_refused_store(requester, org, [*refused, *conflicts]))
            if also is not None:
                events.extend(also(connection, records, outcomes) or ())
            for listener in self.listeners if by_holder else ():
                events.extend(listener(connection, org, records, outcomes, requester) or ())
            self.audit.write(connection, events)  # last: it holds the audit chain until the commit

        with self.blobs.placing():
            self.blobs.commit([item.writer for item in incoming])
            outcomes = self.index.add(org, records, audited, self.blobs.same_bytes)
        # A conflict's blob, or the same bytes held under their former name: referenced by nothing.
        unused = {item.record.blob_key for item, outcome in zip(incoming, outcomes)
                  if outcome is not AddOutcome.STORED}
        if unused:
            self._delete_unreferenced(unused)
        return outcomes

    def discard(self, writers: list[BlobWriter]) -> None:
        for writer in writers:
            writer.discard()

    # -- search and retrieve -------------------------------------------------------------------

    def share(self, source: str, target: str, study_uids: list[str], requester: Requester,
              also: Callable[[Connection, int], None]) -> int:
        """Hold `source`'s studies for `target` too: no bytes copied (DESIGN: blobs are shared
        and immutable). Audited as a store for `target`."""
        patients = tuple(self.index.patient_ids(source, study_uids).values())

        def audited(connection: Connection, added: int) -> None:
            also(connection, added)
            self.audit.write(connection, [AuditEvent.for_request(
                requester, AuditAction.STORE, org=target, patients=patients, studies=tuple(study_uids),
                detail=f"{added} instance(s) received from {source}")])

        with self.blobs.placing():  # no removal may take a blob these rows are about to reference
            return self.index.copy_studies(source, target, study_uids, audited)

    def search(self, org: str, query: Query, requester: Requester, described: str = "") -> list[QueryRow]:
        """QIDO-RS matches; audited as a Query (PS3.15 A.5.3.10) naming the patient and study
        the query names, with the query itself as detail."""
        rows = self.index.search(org, query)
        self.audit.record(AuditEvent.for_request(
            requester, AuditAction.QUERY, org=org, patients=_matched(query, "PatientID"),
            studies=tuple(filter(None, [query.study_uid, *_matched(query, "StudyInstanceUID")])),
            detail=described or query.level.value))
        return rows

    def representative_json(self, org: str, level: QueryLevel, keys) -> dict:
        return self.index.first_dicom_json(org, level, keys)

    def held(self, org: str, requester: Requester, what: str, study_uid: str, series_uid: str | None = None,
             sop_instance_uid: str | None = None, with_layout: bool = False) -> list[Held]:
        """The instances in scope, for a retrieve of `what` (instances, frames, bulk data);
        audited as DICOM Instances Transferred (PS3.15 A.5.3.7)."""
        found = self.index.held(org, study_uid, series_uid, sop_instance_uid, with_layout)
        self._retrieved(requester, org, what, study_uid, series_uid, sop_instance_uid, len(found),
                        tuple(dict.fromkeys(item.patient_id for item in found)))
        if not found:
            raise NotHeld(_describe(study_uid, series_uid, sop_instance_uid))
        return found

    def dicom_json(self, org: str, requester: Requester, study_uid: str, series_uid: str | None = None,
                   sop_instance_uid: str | None = None) -> list[tuple[str, str, str, bytes]]:
        found = self.index.dicom_json(org, study_uid, series_uid, sop_instance_uid)
        # The Patient ID is in the metadata itself: no second query on this hot path.
        patients = (patient_id_of(found[0][3]),) if found else ()
        self._retrieved(requester, org, "metadata", study_uid, series_uid, sop_instance_uid, len(found), patients)
        if not found:
            raise NotHeld(_describe(study_uid, series_uid, sop_instance_uid))
        return found

    def index_version(self) -> int | None:
        """A number that changes whenever anything is committed to the index, by any process;
        None where it cannot tell (PostgreSQL). Cheap enough for an event loop."""
        return self.index.database.data_version()

    def metadata_served(self, org: str, requester: Requester, study_uid: str, series_uid: str | None,
                        sop_instance_uid: str | None, count: int, patient_id: str) -> None:
        """Audit metadata served again without reading the index: the event `dicom_json` writes."""
        self._retrieved(requester, org, "metadata", study_uid, series_uid, sop_instance_uid, count, (patient_id,))

    def _retrieved(self, requester: Requester, org: str, what: str, study_uid: str, series_uid: str | None,
                   sop_instance_uid: str | None, count: int, patients: tuple[str, ...]) -> None:
        """The retrieve's audit event; `patients` come with what was read (no second query)."""
        scope = _describe(study_uid, series_uid, sop_instance_uid)
        if count:
            event = AuditEvent.for_request(requester, AuditAction.RETRIEVE, org=org, patients=patients,
                                           studies=(study_uid,), detail=f"{what} of {scope}: {count} instance(s)")
        else:
            event = AuditEvent.for_request(requester, AuditAction.RETRIEVE, org=org, studies=(study_uid,),
                                           outcome=Outcome.MINOR_FAILURE, outcome_description="not held",
                                           detail=f"{what} of {scope}")
        self.audit.record(event)

    def open_blob(self, key: str) -> BinaryIO:
        return self.blobs.open(key)

    def read_blob(self, key: str, offset: int, length: int) -> bytes:
        return self.blobs.read_range(key, offset, length)

    # -- delete --------------------------------------------------------------------------------

    def delete(self, org: str, requester: Requester, study_uid: str, series_uid: str | None = None,
               sop_instance_uid: str | None = None) -> int:
        """Audited as DICOM Study Deleted (PS3.15 A.5.3.8), also for a series or an instance."""
        patients = tuple(self.index.patient_ids(org, [study_uid]).values())
        with self.blobs.removing():
            removed, orphaned = self.index.delete(org, study_uid, series_uid, sop_instance_uid)
            self.blobs.delete(orphaned)
        scope = _describe(study_uid, series_uid, sop_instance_uid)
        self.audit.record(AuditEvent.for_request(
            requester, AuditAction.DELETE, org=org, patients=patients, studies=(study_uid,),
            outcome=Outcome.SUCCESS if removed else Outcome.MINOR_FAILURE,
            outcome_description="" if removed else "not held", detail=f"{scope}: {removed} instance(s) deleted"))
        if not removed:
            raise NotHeld(scope)
        return removed

    def forget(self, keys: set[str]) -> None:
        """Delete these committed blobs unless something references them (an import that lost a race)."""
        self._delete_unreferenced(keys)

    def _delete_unreferenced(self, keys: set[str]) -> None:
        # Asked first without the removal lock, which waits for every store placing blobs: an
        # object stored again under the same key leaves nothing to remove.
        keys = keys - self.index.blob_in_use(keys)
        if keys:
            with self.blobs.removing():
                self.blobs.delete(keys - self.index.blob_in_use(keys))


def _store_events(requester: Requester, org: str, records: list[InstanceRecord],
                  outcomes: list[AddOutcome]) -> list[AuditEvent]:
    """One DICOM Instances Transferred event (PS3.15 A.5.3.7, action C) per study stored."""
    by_study: dict[str, list[InstanceRecord]] = {}
    for record, outcome in zip(records, outcomes):
        if outcome is not AddOutcome.CONFLICT:
            by_study.setdefault(record.study_uid, []).append(record)
    return [AuditEvent.for_request(requester, AuditAction.STORE, org=org,
                                   patients=tuple(dict.fromkeys(r.study_columns.get("patient_id", "") for r in stored)),
                                   studies=(study_uid,), detail=f"{len(stored)} instance(s) stored")
            for study_uid, stored in by_study.items()]


def _refused_store(requester: Requester, org: str, reasons: list[str]) -> AuditEvent:
    return AuditEvent.for_request(requester, AuditAction.STORE, org=org, outcome=Outcome.MINOR_FAILURE,
                                  outcome_description=f"{len(reasons)} object(s) refused",
                                  detail="; ".join(reasons)[:4000])


def patient_id_of(dicom_json: bytes) -> str:
    """Patient ID (0010,0020) of an instance's DICOM JSON (PS3.18 F.2)."""
    values = orjson.loads(dicom_json).get("00100020", {}).get("Value") or [""]
    return str(values[0] or "")


def _matched(query: Query, keyword: str) -> tuple[str, ...]:
    """The values a query matches `keyword` on exactly (single values and UID lists)."""
    return tuple(value for match in query.matches if match.keyword == keyword
                 and match.kind in (MatchKind.SINGLE_VALUE, MatchKind.UID_LIST) for value in match.values)


def _describe(study_uid: str, series_uid: str | None, sop_instance_uid: str | None) -> str:
    if sop_instance_uid:
        return f"instance {sop_instance_uid} of series {series_uid} in study {study_uid}"
    if series_uid:
        return f"series {series_uid} in study {study_uid}"
    return f"study {study_uid}"
