"""Retention in SQL: the received transfers past their destination's retention period, the
studies the destination holds for another reason, and removing the destination's rows of the
rest, always in the caller's transaction and only ever for the destination organisation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, delete, exists, func, literal, not_, select, update
from sqlalchemy.sql import ColumnElement

from storage.bulk_insert import BulkInsert
from storage.instances import referenced_blobs
from storage.tables import (Instance, OwnStudy, Series, Study, Transfer, TransferEvent, TransferOriginal,
                            TransferStudy)

TRANSFER = Transfer.__table__
TRANSFER_STUDY = TransferStudy.__table__
TRANSFER_EVENT = TransferEvent.__table__
ORIGINAL = TransferOriginal.__table__
OWN_STUDY = OwnStudy.__table__
_INSERT_OWN_STUDIES = BulkInsert(OWN_STUDY, conflict=("org", "study_uid"))  # the first store of a study counts
STUDY, SERIES, INSTANCE = Study.__table__, Series.__table__, Instance.__table__
KEYS_PER_STATEMENT = 5000  # bound the parameters of one IN list, well under SQLite's and PostgreSQL's limits


@dataclass(frozen=True)
class ExpiryRule:
    """When a received transfer's copies expire: in one of `states`, not retained, and entered
    `delivered_state` before `cutoff` (now minus the destination's retention period)."""

    states: tuple[str, ...]
    delivered_state: str
    cutoff: datetime


@dataclass(frozen=True)
class RemovedRows:
    instances: int
    bytes: int
    blob_keys: frozenset[str]  # the blobs the removed rows used: deleted if nothing else uses them


class RetentionTable:
    def expired(self, connection: Connection, destination: str, rule: ExpiryRule) -> list[Transfer]:
        """The transfers to `destination` whose copies expire under `rule`, oldest first."""
        rows = connection.execute(select(TRANSFER).where(TRANSFER.c.destination == destination, _expires(rule))
                                  .order_by(TRANSFER.c.created_at, TRANSFER.c.id)).mappings().all()
        return [Transfer(**row) for row in rows]

    def held_otherwise(self, connection: Connection, destination: str, transfer_id: str, study_uids: Sequence[str],
                       rule: ExpiryRule, expired_state: str) -> set[str]:
        """Those of `study_uids` that `destination` holds for a reason other than this transfer:
        it stored objects into them itself, or another transfer to it that does not expire under
        `rule` (retained, within retention, or in a state that does not expire) brought them."""
        if not study_uids:
            return set()
        brought = connection.execute(
            select(TRANSFER_STUDY.c.study_uid).join(TRANSFER, TRANSFER.c.id == TRANSFER_STUDY.c.transfer_id)
            .where(TRANSFER.c.destination == destination, TRANSFER.c.id != transfer_id,
                   TRANSFER_STUDY.c.study_uid.in_(study_uids), TRANSFER.c.state != expired_state,
                   not_(_expires(rule)))).scalars()
        own = connection.execute(select(OWN_STUDY.c.study_uid).where(
            OWN_STUDY.c.org == destination, OWN_STUDY.c.study_uid.in_(study_uids))).scalars()
        return {*brought, *own}

    def remove(self, connection: Connection, org: str, study_uids: Sequence[str], transfer_id: str) -> RemovedRows:
        """Remove `org`'s study, series and instance rows of `study_uids` (no other organisation's)
        and the originals an import of the transfer kept."""
        keys: set[str] = set()
        instances = size = 0
        if study_uids:
            scope = (INSTANCE.c.org == org, INSTANCE.c.study_uid.in_(study_uids))
            instances, size = connection.execute(
                select(func.count(), func.coalesce(func.sum(INSTANCE.c.size), 0)).where(*scope)).one()
            keys.update(connection.execute(select(INSTANCE.c.blob_key).where(*scope).distinct()).scalars())
            for table in (INSTANCE, SERIES, STUDY):
                connection.execute(delete(table).where(table.c.org == org, table.c.study_uid.in_(study_uids)))
        keys.update(connection.execute(select(ORIGINAL.c.blob_key).where(ORIGINAL.c.transfer_id == transfer_id)
                                       .distinct()).scalars())
        connection.execute(delete(ORIGINAL).where(ORIGINAL.c.transfer_id == transfer_id))
        return RemovedRows(int(instances), int(size), frozenset(keys))

    def unreferenced(self, connection: Connection, keys: frozenset[str]) -> set[str]:
        """The blob keys no row of any organisation uses any more, as the caller's transaction sees it."""
        ordered = sorted(keys)
        used: set[str] = set()
        for start in range(0, len(ordered), KEYS_PER_STATEMENT):
            used |= referenced_blobs(connection, set(ordered[start:start + KEYS_PER_STATEMENT]))
        return set(keys) - used

    def set_retained(self, connection: Connection, transfer_id: str, retained: bool, expired_state: str) -> bool:
        """Retain (or release) a transfer not yet expired; False if that changed nothing."""
        return connection.execute(update(TRANSFER).where(
            TRANSFER.c.id == transfer_id, TRANSFER.c.state != expired_state, TRANSFER.c.retained.is_(not retained))
            .values(retained=retained)).rowcount > 0

    def note_own(self, connection: Connection, org: str, study_uids: Sequence[str], now: datetime) -> None:
        """`org` stored objects into these studies through its own service root."""
        _INSERT_OWN_STUDIES.run(connection, [{"org": org, "study_uid": uid, "first_stored_at": now}
                                             for uid in study_uids])


def _expires(rule: ExpiryRule) -> ColumnElement[bool]:
    """The transfer (the TRANSFER row of the enclosing statement) expires under `rule`."""
    delivered_before = exists(select(literal(1)).where(
        TRANSFER_EVENT.c.transfer_id == TRANSFER.c.id, TRANSFER_EVENT.c.state == rule.delivered_state,
        TRANSFER_EVENT.c.at < rule.cutoff))
    return and_(TRANSFER.c.state.in_(rule.states), TRANSFER.c.retained.is_(False), delivered_before)
