"""An organisation's holdings: storing, searching, retrieving and deleting instances, always
for one organisation at a time, with blobs made durable before the index says they exist."""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from exchange.errors import NotHeld
from exchange.organisations import OrganisationDirectory
from storage.blobs import BlobStore, BlobWriter
from storage.instances import AddOutcome, Held, InstanceIndex, InstanceRecord, QueryRow
from storage.query import Query, QueryLevel


@dataclass
class Incoming:
    """One received object ready to keep: its spooled bytes and its index record."""

    writer: BlobWriter
    record: InstanceRecord


class Archive:
    def __init__(self, directory: OrganisationDirectory, index: InstanceIndex, blobs: BlobStore):
        self.directory = directory
        self.index = index
        self.blobs = blobs

    def require_organisation(self, org: str) -> None:
        self.directory.require(org)

    # -- store --------------------------------------------------------------------------------

    def store(self, org: str, incoming: list[Incoming]) -> list[AddOutcome]:
        """Keep `incoming` for `org`: blobs durable first, then one index transaction
        (DESIGN invariant 1). Returns an outcome per object, in order."""
        if not incoming:
            return []
        with self.blobs.placing():
            self.blobs.commit([item.writer for item in incoming])
            outcomes = self.index.add(org, [item.record for item in incoming])
        refused = {item.record.blob_key for item, outcome in zip(incoming, outcomes)
                   if outcome is AddOutcome.CONFLICT}
        if refused:
            self._delete_unreferenced(refused)
        return outcomes

    def discard(self, writers: list[BlobWriter]) -> None:
        for writer in writers:
            writer.discard()

    # -- search and retrieve -------------------------------------------------------------------

    def search(self, org: str, query: Query) -> list[QueryRow]:
        return self.index.search(org, query)

    def representative_json(self, org: str, level: QueryLevel, keys) -> dict:
        return self.index.first_dicom_json(org, level, keys)

    def held(self, org: str, study_uid: str, series_uid: str | None = None,
             sop_instance_uid: str | None = None, with_layout: bool = False) -> list[Held]:
        found = self.index.held(org, study_uid, series_uid, sop_instance_uid, with_layout)
        if not found:
            raise NotHeld(_describe(study_uid, series_uid, sop_instance_uid))
        return found

    def dicom_json(self, org: str, study_uid: str, series_uid: str | None = None,
                   sop_instance_uid: str | None = None) -> list[tuple[str, str, str, bytes]]:
        found = self.index.dicom_json(org, study_uid, series_uid, sop_instance_uid)
        if not found:
            raise NotHeld(_describe(study_uid, series_uid, sop_instance_uid))
        return found

    def open_blob(self, key: str) -> BinaryIO:
        return self.blobs.open(key)

    def read_blob(self, key: str, offset: int, length: int) -> bytes:
        return self.blobs.read_range(key, offset, length)

    # -- delete --------------------------------------------------------------------------------

    def delete(self, org: str, study_uid: str, series_uid: str | None = None,
               sop_instance_uid: str | None = None) -> int:
        with self.blobs.removing():
            removed, orphaned = self.index.delete(org, study_uid, series_uid, sop_instance_uid)
            self.blobs.delete(orphaned)
        if not removed:
            raise NotHeld(_describe(study_uid, series_uid, sop_instance_uid))
        return removed

    def _delete_unreferenced(self, keys: set[str]) -> None:
        with self.blobs.removing():
            self.blobs.delete(keys - self.index.blob_in_use(keys))


def _describe(study_uid: str, series_uid: str | None, sop_instance_uid: str | None) -> str:
    if sop_instance_uid:
        return f"instance {sop_instance_uid} of series {series_uid} in study {study_uid}"
    if series_uid:
        return f"series {series_uid} in study {study_uid}"
    return f"study {study_uid}"
