"""Forwarding rows: an organisation's rules for pushing the transfers it receives to its PACS,
and where each instance of a forwarded transfer stands with each rule's PACS."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from storage.database import Database
from storage.tables import ForwardedInstance, ForwardRule, Series, TransferStudy

RULE = ForwardRule.__table__
FORWARDED = ForwardedInstance.__table__
SERIES = Series.__table__
TRANSFER_STUDY = TransferStudy.__table__

PENDING, SENT, FAILED = "pending", "sent", "failed"
MAX_ERROR_CHARS = 1000


class UnknownForwardingOrganisation(Exception):
    pass


@dataclass(frozen=True)
class Tracked:
    """An instance a rule is to forward: where it is in its study."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class Result:
    """What became of one instance in one request: its new state, and why if not sent."""

    sop_instance_uid: str
    state: str
    error: str = ""


class ForwardingTable:
    def __init__(self, database: Database):
        self.database = database

    # -- rules --------------------------------------------------------------------------------

    def add(self, rule: ForwardRule) -> ForwardRule:
        values = rule.model_dump(exclude={"id"})
        try:
            with self.database.write() as connection:
                rule_id = connection.execute(RULE.insert().values(**values)).inserted_primary_key[0]
        except IntegrityError as exc:  # the organisation's foreign key
            raise UnknownForwardingOrganisation(rule.org) from exc
        return ForwardRule(id=rule_id, **values)

    def get(self, rule_id: int) -> ForwardRule | None:
        with self.database.read() as connection:
            row = connection.execute(select(RULE).where(RULE.c.id == rule_id)).mappings().first()
        return ForwardRule(**row) if row else None

    def of_org(self, org: str, include_disabled: bool = False,
               connection: Connection | None = None) -> list[ForwardRule]:
        """`org`'s rules, oldest first; with `connection`, read inside the caller's transaction."""
        statement = select(RULE).where(RULE.c.org == org)
        if not include_disabled:
            statement = statement.where(RULE.c.disabled_at.is_(None))
        statement = statement.order_by(RULE.c.id)
        if connection is not None:
            rows = connection.execute(statement).mappings().all()
        else:
            with self.database.read() as opened:
                rows = opened.execute(statement).mappings().all()
        return [ForwardRule(**row) for row in rows]

    def disable(self, org: str, rule_id: int, at: datetime) -> bool:
        """Disable `org`'s rule `rule_id`; False if it has no such rule still enabled."""
        with self.database.write() as connection:
            return connection.execute(update(RULE).where(
                RULE.c.id == rule_id, RULE.c.org == org, RULE.c.disabled_at.is_(None))
                .values(disabled_at=at)).rowcount == 1

    def transfer_modalities(self, connection: Connection, org: str, transfer_id: str) -> set[str]:
        """The modalities of the series `org` holds in the transfer's studies, in the caller's
        transaction (a rule may match on them)."""
        studies = select(TRANSFER_STUDY.c.study_uid).where(TRANSFER_STUDY.c.transfer_id == transfer_id)
        return set(connection.execute(select(SERIES.c.modality).distinct().where(
            SERIES.c.org == org, SERIES.c.study_uid.in_(studies))).scalars()) - {""}

    # -- per-instance status ----------------------------------------------------------------------

    def track(self, org: str, rule_id: int, transfer_id: str, instances: Iterable[Tracked],
              now: datetime) -> dict[str, ForwardedInstance]:
        """Record `instances` as pending for the rule and transfer, unless already recorded
        (in whatever state), and return every record of the rule and transfer by SOP Instance UID."""
        scope = (FORWARDED.c.rule_id == rule_id, FORWARDED.c.transfer_id == transfer_id)
        with self.database.write() as connection:
            known = set(connection.execute(select(FORWARDED.c.sop_instance_uid).where(*scope)).scalars())
            new = [{"rule_id": rule_id, "transfer_id": transfer_id, "org": org, "study_uid": item.study_uid,
                    "series_uid": item.series_uid, "sop_instance_uid": item.sop_instance_uid, "state": PENDING,
                    "attempts": 0, "last_error": "", "updated_at": now, "sent_at": None}
                   for item in _unique(instances) if item.sop_instance_uid not in known]
            if new:
                connection.execute(insert(FORWARDED), new)
            rows = connection.execute(select(FORWARDED).where(*scope)).mappings().all()
        return {row["sop_instance_uid"]: ForwardedInstance(**row) for row in rows}

    def record(self, rule_id: int, transfer_id: str, results: Sequence[Result], now: datetime,
               attempted: bool = True) -> None:
        """The outcome of one request for each of its instances, in one transaction; `attempted`
        counts the request as an attempt of each."""
        if not results:
            return
        with self.database.write() as connection:
            for result in results:
                values = {"state": result.state, "last_error": result.error[:MAX_ERROR_CHARS], "updated_at": now}
                if attempted:
                    values["attempts"] = FORWARDED.c.attempts + 1
                if result.state == SENT:
                    values["sent_at"] = now
                connection.execute(update(FORWARDED).where(
                    FORWARDED.c.rule_id == rule_id, FORWARDED.c.transfer_id == transfer_id,
                    FORWARDED.c.sop_instance_uid == result.sop_instance_uid,
                    FORWARDED.c.state == PENDING).values(**values))

    def counts(self, pairs: Iterable[tuple[int, str]]) -> dict[tuple[int, str], dict[str, int]]:
        """(rule, transfer) -> instances in each state, for each pair asked about."""
        pairs = list(dict.fromkeys(pairs))
        found: dict[tuple[int, str], dict[str, int]] = {pair: {PENDING: 0, SENT: 0, FAILED: 0} for pair in pairs}
        if not pairs:
            return found
        with self.database.read() as connection:
            rows = connection.execute(
                select(FORWARDED.c.rule_id, FORWARDED.c.transfer_id, FORWARDED.c.state, func.count())
                .where(tuple_(FORWARDED.c.rule_id, FORWARDED.c.transfer_id).in_(pairs))
                .group_by(FORWARDED.c.rule_id, FORWARDED.c.transfer_id, FORWARDED.c.state)).all()
        for rule_id, transfer_id, state, count in rows:
            found[(rule_id, transfer_id)][state] = int(count)
        return found

    def recent(self, org: str, transfer_id: str | None = None, limit: int = 200) -> list[ForwardedInstance]:
        """`org`'s instance records, the most recently begun first."""
        statement = select(FORWARDED).where(FORWARDED.c.org == org)
        if transfer_id is not None:
            statement = statement.where(FORWARDED.c.transfer_id == transfer_id)
        with self.database.read() as connection:
            rows = connection.execute(statement.order_by(FORWARDED.c.id.desc()).limit(limit)).mappings().all()
        return [ForwardedInstance(**row) for row in rows]


def _unique(instances: Iterable[Tracked]) -> list[Tracked]:
    seen: dict[str, Tracked] = {}
    for item in instances:
        seen.setdefault(item.sop_instance_uid, item)
    return list(seen.values())
