"""Usage metering in SQL: what an organisation's transfers carried over a period, from the
counts and sizes recorded on each transfer's studies when they were sent."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, distinct, func, select

from storage.database import Database
from storage.tables import Instance, Transfer, TransferStudy

TRANSFER = Transfer.__table__
TRANSFER_STUDY = TransferStudy.__table__
INSTANCE = Instance.__table__


@dataclass(frozen=True)
class Volume:
    """What transfers carried: how many transfers, and the studies, instances and bytes in them
    (a study sent in two transfers counts twice: each transfer carried it)."""

    transfers: int = 0
    studies: int = 0
    instances: int = 0
    bytes: int = 0


def study_sizes(connection: Connection, org: str, study_uids: Iterable[str]) -> dict[str, int]:
    """Bytes `org` holds of each study, read in the caller's transaction (a send from holdings
    meters what it shares)."""
    rows = connection.execute(select(INSTANCE.c.study_uid, func.coalesce(func.sum(INSTANCE.c.size), 0)).where(
        INSTANCE.c.org == org, INSTANCE.c.study_uid.in_(list(study_uids))).group_by(INSTANCE.c.study_uid))
    return {study_uid: int(size) for study_uid, size in rows}


class UsageTable:
    def __init__(self, database: Database):
        self.database = database

    def volume(self, side: str, org: str, since: datetime, until: datetime) -> Volume:
        """What the transfers `org` sent (`side` "sender") or received ("destination") carried,
        of those opened in [since, until)."""
        own = TRANSFER.c.sender if side == "sender" else TRANSFER.c.destination
        statement = (select(func.count(distinct(TRANSFER.c.id)), func.count(TRANSFER_STUDY.c.study_uid),
                            func.coalesce(func.sum(TRANSFER_STUDY.c.instances), 0),
                            func.coalesce(func.sum(TRANSFER_STUDY.c.size), 0))
                     .select_from(TRANSFER.outerjoin(TRANSFER_STUDY, TRANSFER_STUDY.c.transfer_id == TRANSFER.c.id))
                     .where(own == org, TRANSFER.c.created_at >= since, TRANSFER.c.created_at < until))
        with self.database.read() as connection:
            transfers, studies, instances, size = connection.execute(statement).one()
        return Volume(int(transfers), int(studies), int(instances), int(size))
