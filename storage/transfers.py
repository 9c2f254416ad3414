"""Transfer rows: the transfers between organisations, the studies each bundles, and each one's
history. Every lookup names the organisation asking, as sender or destination."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, case, func, select, update

from storage.database import Database
from storage.instances import dialect_insert
from storage.tables import OwnStudy, Transfer, TransferEvent, TransferStudy

TRANSFER = Transfer.__table__
TRANSFER_STUDY = TransferStudy.__table__
TRANSFER_EVENT = TransferEvent.__table__
OWN_STUDY = OwnStudy.__table__
URGENCY_ORDER = case({"emergency": 0, "urgent": 1}, value=TRANSFER.c.urgency, else_=2)


@dataclass(frozen=True)
class TransferFilter:
    state: str | None = None
    urgency: str | None = None
    patient_id: str | None = None
    counterpart: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class TransferTable:
    def __init__(self, database: Database):
        self.database = database

    # -- writing, inside the caller's transaction -----------------------------------------------

    def insert(self, connection: Connection, transfer: Transfer) -> None:
        connection.execute(TRANSFER.insert().values(**transfer.model_dump()))

    def open_receiving(self, connection: Connection, sender: str, destination: str, patient_id: str,
                       urgency: str, active_since: datetime) -> Transfer | None:
        """The transfer an outbox stream of this patient's objects still feeds, if any."""
        row = connection.execute(select(TRANSFER).where(
            TRANSFER.c.sender == sender, TRANSFER.c.destination == destination, TRANSFER.c.via == "outbox",
            TRANSFER.c.state == "receiving", TRANSFER.c.patient_id == patient_id, TRANSFER.c.urgency == urgency,
            TRANSFER.c.updated_at >= active_since).order_by(TRANSFER.c.created_at.desc())).mappings().first()
        return Transfer(**row) if row else None

    def add_studies(self, connection: Connection, transfer_id: str, counts: dict[str, int], now: datetime,
                    sizes: dict[str, int] | None = None) -> None:
        """Count `counts` more instances (and `sizes` more bytes) of each study into the transfer:
        one upsert each, so concurrent streams into one transfer add up instead of colliding."""
        sizes = sizes or {}
        for study_uid, count in counts.items():
            statement = dialect_insert(connection, TRANSFER_STUDY).values(
                transfer_id=transfer_id, study_uid=study_uid, instances=count, size=sizes.get(study_uid, 0))
            connection.execute(statement.on_conflict_do_update(
                index_elements=["transfer_id", "study_uid"],
                set_={"instances": TRANSFER_STUDY.c.instances + statement.excluded.instances,
                      "size": TRANSFER_STUDY.c.size + statement.excluded.size}))
        connection.execute(update(TRANSFER).where(TRANSFER.c.id == transfer_id).values(updated_at=now))

    def mark_report(self, connection: Connection, transfer_id: str) -> None:
        connection.execute(update(TRANSFER).where(TRANSFER.c.id == transfer_id).values(has_report=True))

    def received_with(self, connection: Connection, destination: str, study_uids: list[str]) -> list[Transfer]:
        """The transfers that brought these studies to `destination`, newest first."""
        rows = connection.execute(select(TRANSFER).join(TRANSFER_STUDY, TRANSFER_STUDY.c.transfer_id == TRANSFER.c.id)
                                  .where(TRANSFER.c.destination == destination,
                                         TRANSFER_STUDY.c.study_uid.in_(study_uids))
                                  .order_by(TRANSFER.c.created_at.desc())).mappings().all()
        seen: dict[str, Transfer] = {}
        for row in rows:
            seen.setdefault(row["id"], Transfer(**row))
        return list(seen.values())

    def own_before(self, connection: Connection, org: str, study_uids: list[str], moment: datetime) -> set[str]:
        """Those of `study_uids` that `org` stored into its own holdings before `moment`."""
        return set(connection.execute(select(OWN_STUDY.c.study_uid).where(
            OWN_STUDY.c.org == org, OWN_STUDY.c.study_uid.in_(study_uids),
            OWN_STUDY.c.first_stored_at < moment)).scalars())

    def study_uids(self, connection: Connection, transfer_id: str) -> set[str]:
        return set(connection.execute(select(TRANSFER_STUDY.c.study_uid)
                                      .where(TRANSFER_STUDY.c.transfer_id == transfer_id)).scalars())

    def move(self, connection: Connection, transfer_id: str, from_state: str, to_state: str, event: TransferEvent,
             reason: str | None = None, unless_retained: bool = False) -> bool:
        """Change state if it is still `from_state` (a concurrent change wins otherwise) and, with
        `unless_retained`, if its destination has not retained it meanwhile."""
        values = {"state": to_state, "updated_at": event.at}
        if reason is not None:
            values["reason"] = reason
        conditions = [TRANSFER.c.id == transfer_id, TRANSFER.c.state == from_state]
        if unless_retained:
            conditions.append(TRANSFER.c.retained.is_(False))
        moved = connection.execute(update(TRANSFER).where(*conditions).values(**values)).rowcount
        if moved:
            self.log(connection, event)
        return bool(moved)

    def log(self, connection: Connection, event: TransferEvent) -> None:
        values = event.model_dump()
        values.pop("id")
        connection.execute(TRANSFER_EVENT.insert().values(**values))

    # -- reading ----------------------------------------------------------------------------------

    def get(self, transfer_id: str) -> Transfer | None:
        with self.database.read() as connection:
            row = connection.execute(select(TRANSFER).where(TRANSFER.c.id == transfer_id)).mappings().first()
        return Transfer(**row) if row else None

    def studies(self, transfer_id: str) -> list[TransferStudy]:
        with self.database.read() as connection:
            rows = connection.execute(select(TRANSFER_STUDY).where(TRANSFER_STUDY.c.transfer_id == transfer_id)
                                      .order_by(TRANSFER_STUDY.c.study_uid)).mappings().all()
        return [TransferStudy(**row) for row in rows]

    def history(self, transfer_id: str) -> list[TransferEvent]:
        return self.histories([transfer_id])[transfer_id]

    def histories(self, transfer_ids: list[str]) -> dict[str, list[TransferEvent]]:
        """The events of each transfer, oldest first, in one query (a page of a list at once)."""
        found: dict[str, list[TransferEvent]] = {transfer_id: [] for transfer_id in transfer_ids}
        if not transfer_ids:
            return found
        with self.database.read() as connection:
            rows = connection.execute(select(TRANSFER_EVENT).where(TRANSFER_EVENT.c.transfer_id.in_(transfer_ids))
                                      .order_by(TRANSFER_EVENT.c.id)).mappings().all()
        for row in rows:
            found[row["transfer_id"]].append(TransferEvent(**row))
        return found

    def last_change(self, side: str, org: str) -> tuple[int, datetime | None]:
        """How many transfers an organisation has on `side` (destination or sender), and when the
        latest of them last changed: what a list of them shows changes only with these."""
        own = TRANSFER.c.destination if side == "destination" else TRANSFER.c.sender
        with self.database.read() as connection:
            count, latest = connection.execute(select(func.count(), func.max(TRANSFER.c.updated_at))
                                               .where(own == org)).one()
        return count, latest

    def listing(self, side: str, org: str, where: TransferFilter, limit: int, offset: int) -> tuple[int, list[Transfer]]:
        """An organisation's inbox (`side` destination) or outbox (sender): emergencies first,
        then urgent, then routine; oldest first within each."""
        own, other = (TRANSFER.c.destination, TRANSFER.c.sender) if side == "destination" else \
            (TRANSFER.c.sender, TRANSFER.c.destination)
        conditions = [own == org]
        if where.state:
            conditions.append(TRANSFER.c.state == where.state)
        if where.urgency:
            conditions.append(TRANSFER.c.urgency == where.urgency)
        if where.patient_id:
            conditions.append(TRANSFER.c.patient_id == where.patient_id)
        if where.counterpart:
            conditions.append(other == where.counterpart)
        if where.since:
            conditions.append(TRANSFER.c.created_at >= where.since)
        if where.until:
            conditions.append(TRANSFER.c.created_at < where.until)
        with self.database.read() as connection:
            total = connection.execute(select(func.count()).select_from(TRANSFER).where(*conditions)).scalar_one()
            rows = connection.execute(select(TRANSFER).where(*conditions)
                                      .order_by(URGENCY_ORDER, TRANSFER.c.created_at, TRANSFER.c.id)
                                      .limit(limit).offset(offset)).mappings().all()
        return total, [Transfer(**row) for row in rows]

    def idle_receiving(self, before: datetime) -> list[Transfer]:
        with self.database.read() as connection:
            rows = connection.execute(select(TRANSFER).where(TRANSFER.c.state == "receiving",
                                                             TRANSFER.c.updated_at < before)).mappings().all()
        return [Transfer(**row) for row in rows]
