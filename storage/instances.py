"""The instance index: adding stored objects, answering queries in SQL, listing what a
retrieve or a metadata request covers, and deleting. Every statement is scoped by organisation."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, exists, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import ColumnElement

from storage.bulk_insert import BulkInsert
from storage.database import Database
from storage.records import InstanceRecord
from storage.query import MATCHABLE, AttributeMatch, MatchKind, Query, QueryLevel, matchable_at
from storage.tables import Instance, Series, Study, TransferOriginal

STUDY = Study.__table__
SERIES = Series.__table__
INSTANCE = Instance.__table__
ORIGINAL = TransferOriginal.__table__
TABLE_OF_LEVEL = {QueryLevel.STUDY: STUDY, QueryLevel.SERIES: SERIES, QueryLevel.INSTANCE: INSTANCE}


# The store's inserts (storage/bulk_insert.py): a held SOP Instance UID, study or series is left
# as it is; the instance insert names the rows it added.
_INSERT_INSTANCES = BulkInsert(INSTANCE, conflict=("org", "sop_instance_uid"), returning="sop_instance_uid")
_INSERT_STUDIES = BulkInsert(STUDY, conflict=("org", "study_uid"))
_INSERT_SERIES = BulkInsert(SERIES, conflict=("org", "study_uid", "series_uid"))


class ImportRaced(Exception):
    pass


class AddOutcome(Enum):
    STORED = "stored"
    ALREADY_STORED = "already stored"  # the same bytes under the same SOP Instance UID
    CONFLICT = "conflict"  # different bytes under an SOP Instance UID already held


@dataclass
class Held:
    """A stored instance as a retrieve sees it."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    blob_key: str
    size: int
    layout: bytes = b""
    patient_id: str = ""  # of its study, for the retrieve's audit event


@dataclass
class QueryRow:
    """One QIDO-RS match: the prepared attributes of each level it spans, and counts."""

    attributes: list[bytes]
    study_uid: str
    series_uid: str | None = None
    sop_instance_uid: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    modalities: list[str] = field(default_factory=list)


def dialect_insert(connection: Connection, table):
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


class InstanceIndex:
    def __init__(self, database: Database):
        self.database = database

    # -- store --------------------------------------------------------------------------------

    def add(self, org: str, records: Sequence[InstanceRecord],
            also: Callable[[Connection, list[AddOutcome]], None] | None = None,
            same_bytes: Callable[[str, str], bool] | None = None) -> list[AddOutcome]:
        """Index `records` (their blobs already durable) in one transaction; `also` writes more
        rows in it (the audit events of the store), knowing each record's outcome.
        `same_bytes(held, key)` tells whether a blob key held under a SOP Instance UID names the
        same bytes as the new `key` all the same (a name from before BLAKE3: storage/content_key.py)."""
        with self.database.write() as connection:
            outcomes = self._add(connection, org, records, same_bytes)
            if also is not None:
                also(connection, outcomes)
            return outcomes

    def _add(self, connection: Connection, org: str, records: Sequence[InstanceRecord],
             same_bytes: Callable[[str, str], bool] | None = None) -> list[AddOutcome]:
        """Insert first, ask later: the instance insert reports which SOP Instance UIDs were
        new, and only the others (already held, or stored by another writer meanwhile) are
        looked up to tell an identical re-store from a conflict. Study and series rows are
        written for stored instances only, so a refused object leaves no empty study behind."""
        first: dict[str, InstanceRecord] = {}  # the first object of each SOP Instance UID in the request
        for record in records:
            first.setdefault(record.sop_instance_uid, record)
        inserted = set(_INSERT_INSTANCES.run(connection, [_instance_row(org, r) for r in first.values()]))
        stored = [record for uid, record in first.items() if uid in inserted]
        if stored:
            _INSERT_STUDIES.run(connection, [
                {"org": org, "study_uid": uid, "attributes": r.study_attributes, **r.study_columns}
                for uid, r in {r.study_uid: r for r in stored}.items()])
            _INSERT_SERIES.run(connection, [
                {"org": org, "study_uid": s, "series_uid": se, "attributes": r.series_attributes, **r.series_columns}
                for (s, se), r in {(r.study_uid, r.series_uid): r for r in stored}.items()])
        held = self._held_blob_keys(connection, org, [uid for uid in first if uid not in inserted])
        outcomes = []
        for record in records:
            uid = record.sop_instance_uid
            if uid in inserted and first[uid] is record:
                outcomes.append(AddOutcome.STORED)
                continue
            # What the index now holds under this UID: the copy stored first in this request, or
            # the object held before it.
            kept = first[uid].blob_key if uid in inserted else held.get(uid)
            same = kept == record.blob_key or (kept is not None and same_bytes is not None
                                               and same_bytes(kept, record.blob_key))
            outcomes.append(AddOutcome.ALREADY_STORED if same else AddOutcome.CONFLICT)
        return outcomes

    def _held_blob_keys(self, connection: Connection, org: str, uids: list[str]) -> dict[str, str]:
        if not uids:
            return {}
        rows = connection.execute(
            select(INSTANCE.c.sop_instance_uid, INSTANCE.c.blob_key).where(
                INSTANCE.c.org == org, INSTANCE.c.sop_instance_uid.in_(uids))
        )
        return {uid: key for uid, key in rows}

    # -- query --------------------------------------------------------------------------------

    def search(self, org: str, query: Query) -> list[QueryRow]:
        with self.database.read() as connection:
            if query.level is QueryLevel.STUDY:
                return self._search_studies(connection, org, query)
            if query.level is QueryLevel.SERIES:
                return self._search_series(connection, org, query)
            return self._search_instances(connection, org, query)

    def _search_studies(self, connection: Connection, org: str, query: Query) -> list[QueryRow]:
        series_count = (select(func.count()).where(SERIES.c.org == STUDY.c.org,
                                                   SERIES.c.study_uid == STUDY.c.study_uid)
                        .correlate(STUDY).scalar_subquery())
        instance_count = (select(func.count()).where(INSTANCE.c.org == STUDY.c.org,
                                                     INSTANCE.c.study_uid == STUDY.c.study_uid)
                          .correlate(STUDY).scalar_subquery())
        statement = (
            select(STUDY.c.study_uid, STUDY.c.attributes, series_count, instance_count)
            .where(STUDY.c.org == org, *self._conditions(org, query))
            .order_by(STUDY.c.study_date.desc(), STUDY.c.study_time.desc(), STUDY.c.id.desc())
            .limit(query.limit).offset(query.offset)
        )
        rows = [
            QueryRow([attributes], study_uid,
                     counts={"NumberOfStudyRelatedSeries": n_series, "NumberOfStudyRelatedInstances": n_inst})
            for study_uid, attributes, n_series, n_inst in connection.execute(statement)
        ]
        modalities = self._modalities(connection, org, [row.study_uid for row in rows])
        for row in rows:
            row.modalities = modalities.get(row.study_uid, [])
        return rows

    def _modalities(self, connection: Connection, org: str, study_uids: list[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        if not study_uids:
            return found
        statement = (select(SERIES.c.study_uid, SERIES.c.modality)
                     .where(SERIES.c.org == org, SERIES.c.study_uid.in_(study_uids), SERIES.c.modality != "")
                     .group_by(SERIES.c.study_uid, SERIES.c.modality)
                     .order_by(SERIES.c.study_uid, SERIES.c.modality))
        for study_uid, modality in connection.execute(statement):
            found.setdefault(study_uid, []).append(modality)
        return found

    def _search_series(self, connection: Connection, org: str, query: Query) -> list[QueryRow]:
        instance_count = (select(func.count()).where(INSTANCE.c.org == SERIES.c.org,
                                                     INSTANCE.c.study_uid == SERIES.c.study_uid,
                                                     INSTANCE.c.series_uid == SERIES.c.series_uid)
                          .correlate(SERIES).scalar_subquery())
        statement = (
            select(SERIES.c.study_uid, SERIES.c.series_uid, STUDY.c.attributes, SERIES.c.attributes,
                   instance_count)
            .join_from(SERIES, STUDY, and_(STUDY.c.org == SERIES.c.org, STUDY.c.study_uid == SERIES.c.study_uid))
            .where(SERIES.c.org == org, *self._conditions(org, query))
            .order_by(SERIES.c.study_uid, SERIES.c.series_number, SERIES.c.id)
            .limit(query.limit).offset(query.offset)
        )
        return [
            QueryRow([study_attributes, series_attributes], study_uid, series_uid,
                     counts={"NumberOfSeriesRelatedInstances": count})
            for study_uid, series_uid, study_attributes, series_attributes, count in connection.execute(statement)
        ]

    def _search_instances(self, connection: Connection, org: str, query: Query) -> list[QueryRow]:
        statement = (
            select(INSTANCE.c.study_uid, INSTANCE.c.series_uid, INSTANCE.c.sop_instance_uid,
                   STUDY.c.attributes, SERIES.c.attributes, INSTANCE.c.attributes)
            .join_from(INSTANCE, SERIES, and_(SERIES.c.org == INSTANCE.c.org,
                                              SERIES.c.study_uid == INSTANCE.c.study_uid,
                                              SERIES.c.series_uid == INSTANCE.c.series_uid))
            .join(STUDY, and_(STUDY.c.org == INSTANCE.c.org, STUDY.c.study_uid == INSTANCE.c.study_uid))
            .where(INSTANCE.c.org == org, *self._conditions(org, query))
            .order_by(INSTANCE.c.study_uid, INSTANCE.c.series_uid, INSTANCE.c.instance_number, INSTANCE.c.id)
            .limit(query.limit).offset(query.offset)
        )
        return [
            QueryRow([a, b, c], study_uid, series_uid, sop_uid)
            for study_uid, series_uid, sop_uid, a, b, c in connection.execute(statement)
        ]

    def _conditions(self, org: str, query: Query) -> list[ColumnElement[bool]]:
        table = TABLE_OF_LEVEL[query.level]
        conditions: list[ColumnElement[bool]] = []
        if query.study_uid is not None:
            conditions.append(table.c.study_uid == query.study_uid)
        if query.series_uid is not None:
            conditions.append(table.c.series_uid == query.series_uid)
        vrs = matchable_at(query.level)
        for match in query.matches:
            if match.kind is MatchKind.UNIVERSAL:
                continue
            if match.keyword == "ModalitiesInStudy":
                conditions.append(self._modalities_condition(org, query.level, match))
                continue
            column = _column(query.level, match.keyword)
            conditions.append(_condition(column, vrs[match.keyword], match))
        return conditions

    def _modalities_condition(self, org: str, level: QueryLevel, match: AttributeMatch) -> ColumnElement[bool]:
        # PS3.4 C.6.2.1.2: ModalitiesInStudy matches a study if any of its series matches.
        study_table = TABLE_OF_LEVEL[level]
        inner = SERIES.alias("modality_series")
        values = match.values if match.kind is MatchKind.UID_LIST else (match.values[0],)
        modality_match = _condition(inner.c.modality, "CS",
                                    AttributeMatch("Modality", match.kind if match.kind is MatchKind.WILDCARD
                                                   else MatchKind.UID_LIST, values))
        return exists(select(literal(1)).where(inner.c.org == org, inner.c.study_uid == study_table.c.study_uid,
                                               modality_match))

    # -- retrieve -----------------------------------------------------------------------------

    def held(self, org: str, study_uid: str, series_uid: str | None = None,
             sop_instance_uid: str | None = None, with_layout: bool = False) -> list[Held]:
        columns = [INSTANCE.c.study_uid, INSTANCE.c.series_uid, INSTANCE.c.sop_instance_uid,
                   INSTANCE.c.sop_class_uid, INSTANCE.c.transfer_syntax, INSTANCE.c.blob_key, INSTANCE.c.size,
                   STUDY.c.patient_id]
        if with_layout:
            columns.append(INSTANCE.c.layout)
        statement = (select(*columns)
                     .join_from(INSTANCE, STUDY, and_(STUDY.c.org == INSTANCE.c.org,
                                                      STUDY.c.study_uid == INSTANCE.c.study_uid))
                     .where(*self._scope(org, study_uid, series_uid, sop_instance_uid))
                     .order_by(INSTANCE.c.series_uid, INSTANCE.c.instance_number, INSTANCE.c.id))
        with self.database.read() as connection:
            return [Held(**row) for row in connection.execute(statement).mappings()]

    def dicom_json(self, org: str, study_uid: str, series_uid: str | None = None,
                   sop_instance_uid: str | None = None) -> list[tuple[str, str, str, bytes]]:
        """(study, series, instance, DICOM JSON) of each instance in scope."""
        scope = _given(org, study_uid, series_uid, sop_instance_uid)
        with self.database.read() as connection:
            return connection.execute(_DICOM_JSON_IN[tuple(scope)], scope).all()  # type: ignore[return-value]

    def first_dicom_json(self, org: str, level: QueryLevel, keys: Iterable[tuple[str, str | None]]) -> dict:
        """The DICOM JSON of one instance per study (or series): the source of attributes that
        a QIDO-RS `includefield` asks for beyond the prepared ones."""
        keys = list(keys)
        if not keys:
            return {}
        first = (select(func.min(INSTANCE.c.id)).where(INSTANCE.c.org == org)
                 .group_by(INSTANCE.c.study_uid, *( [INSTANCE.c.series_uid] if level is not QueryLevel.STUDY else [])))
        study_uids = {study for study, _ in keys}
        first = first.where(INSTANCE.c.study_uid.in_(study_uids))
        statement = select(INSTANCE.c.study_uid, INSTANCE.c.series_uid, INSTANCE.c.dicom_json).where(
            INSTANCE.c.id.in_(first))
        with self.database.read() as connection:
            found = {}
            for study_uid, series_uid, payload in connection.execute(statement):
                found[(study_uid, None if level is QueryLevel.STUDY else series_uid)] = payload
            return found

    def _scope(self, org: str, study_uid: str, series_uid: str | None, sop_instance_uid: str | None):
        return [INSTANCE.c[key] == value
                for key, value in _given(org, study_uid, series_uid, sop_instance_uid).items()]

    # -- delete -------------------------------------------------------------------------------

    def delete(self, org: str, study_uid: str, series_uid: str | None = None,
               sop_instance_uid: str | None = None) -> tuple[int, list[str]]:
        """Remove index rows in scope; return how many instances went and the blob keys that
        no instance of any organisation references any more."""
        with self.database.write() as connection:
            scope = self._scope(org, study_uid, series_uid, sop_instance_uid)
            keys = set(connection.execute(select(INSTANCE.c.blob_key).where(*scope)).scalars())
            removed = connection.execute(delete(INSTANCE).where(*scope)).rowcount
            # Series and studies left without instances go too.
            connection.execute(delete(SERIES).where(
                SERIES.c.org == org, SERIES.c.study_uid == study_uid,
                ~exists(select(literal(1)).where(INSTANCE.c.org == org, INSTANCE.c.study_uid == study_uid,
                                                 INSTANCE.c.series_uid == SERIES.c.series_uid))))
            connection.execute(delete(STUDY).where(
                STUDY.c.org == org, STUDY.c.study_uid == study_uid,
                ~exists(select(literal(1)).where(SERIES.c.org == org, SERIES.c.study_uid == study_uid))))
            still_used = referenced_blobs(connection, keys)
            return removed, sorted(keys - still_used)

    def replace_instances(self, org: str, replaced: dict[str, str], records: Sequence[InstanceRecord],
                          also: Callable[[Connection], None]) -> None:
        """In one transaction: `org`'s instances in `replaced` (SOP Instance UID → the blob key
        read when the import began) give way to `records` (the import's reconciled objects, same
        UIDs, new blobs), and their studies' rows are rebuilt from them. Instances
        stored meanwhile are left alone; one changed meanwhile stops it (ImportRaced)."""
        with self.database.write() as connection:
            now_held = dict(connection.execute(select(INSTANCE.c.sop_instance_uid, INSTANCE.c.blob_key).where(
                INSTANCE.c.org == org, INSTANCE.c.sop_instance_uid.in_(list(replaced)))).all())
            if now_held != replaced:
                raise ImportRaced("the transfer's objects changed while they were being imported; try again")
            study_uids = sorted({record.study_uid for record in records})
            connection.execute(delete(INSTANCE).where(INSTANCE.c.org == org,
                                                      INSTANCE.c.sop_instance_uid.in_(list(replaced))))
            # The study rows carry the patient: rebuilt from the reconciled objects below. Series
            # rows carry no patient attributes and stay, for any instance stored meanwhile.
            connection.execute(delete(STUDY).where(STUDY.c.org == org, STUDY.c.study_uid.in_(study_uids)))
            self._add(connection, org, records)
            also(connection)

    def copy_studies(self, source: str, target: str, study_uids: Sequence[str],
                     also: Callable[[Connection, int], None] | None = None) -> int:
        """Index `source`'s instances of `study_uids` for `target` too (the blobs are shared and
        immutable: nothing is copied but rows); what `target` already holds is left as it is.
        `also` writes more rows in the same transaction, given how many instances were added."""
        with self.database.write() as connection:
            added = self.copy_rows(connection, source, target, study_uids)
            if also is not None:
                also(connection, added)
            return added

    def copy_rows(self, connection: Connection, source: str, target: str, study_uids: Sequence[str],
                  sop_instance_uids: Sequence[str] | None = None) -> int:
        """In the caller's transaction: hold `source`'s rows of these studies (or only these
        instances of them) for `target` too. Returns the instances added."""
        added = 0
        for table in (STUDY, SERIES, INSTANCE):
            columns = [column for column in table.columns if column.name != "id"]
            chosen = select(*[literal(target).label("org") if column.name == "org" else column
                              for column in columns]).where(table.c.org == source, table.c.study_uid.in_(study_uids))
            if table is INSTANCE and sop_instance_uids is not None:
                chosen = chosen.where(INSTANCE.c.sop_instance_uid.in_(sop_instance_uids))
            elif table is SERIES and sop_instance_uids is not None:  # only the series they are in
                chosen = chosen.where(SERIES.c.series_uid.in_(select(INSTANCE.c.series_uid).where(
                    INSTANCE.c.org == source, INSTANCE.c.sop_instance_uid.in_(sop_instance_uids))))
            keys = {"study": ["org", "study_uid"], "series": ["org", "study_uid", "series_uid"],
                    "instance": ["org", "sop_instance_uid"]}[table.name]
            result = connection.execute(dialect_insert(connection, table)
                                        .from_select([column.name for column in columns], chosen)
                                        .on_conflict_do_nothing(index_elements=keys))
            if table is INSTANCE:
                added = result.rowcount
        return added

    def patient_names(self, org: str, study_uids: Iterable[str]) -> dict[str, str]:
        study_uids = list(study_uids)
        with self.database.read() as connection:
            rows = connection.execute(select(STUDY.c.study_uid, STUDY.c.patient_name).where(
                STUDY.c.org == org, STUDY.c.study_uid.in_(study_uids)))
            return {study_uid: name for study_uid, name in rows}

    def instance_counts(self, org: str, study_uids: Iterable[str], connection: Connection) -> dict[str, int]:
        """Instances held of each study, read in the caller's transaction."""
        rows = connection.execute(select(INSTANCE.c.study_uid, func.count()).where(
            INSTANCE.c.org == org, INSTANCE.c.study_uid.in_(list(study_uids))).group_by(INSTANCE.c.study_uid))
        return {study_uid: int(count) for study_uid, count in rows}

    def patient_ids(self, org: str, study_uids: Iterable[str]) -> dict[str, str]:
        """The Patient ID of each study held (for audit events)."""
        study_uids = list(study_uids)
        if not study_uids:
            return {}
        with self.database.read() as connection:
            rows = connection.execute(select(STUDY.c.study_uid, STUDY.c.patient_id).where(
                STUDY.c.org == org, STUDY.c.study_uid.in_(study_uids)))
            return {study_uid: patient_id for study_uid, patient_id in rows}

    def totals(self) -> tuple[int, int]:
        """(instances, bytes) over every organisation, for monitoring."""
        with self.database.read() as connection:
            count, size = connection.execute(select(func.count(), func.coalesce(func.sum(INSTANCE.c.size), 0))).one()
        return int(count), int(size)

    def blob_in_use(self, keys: Iterable[str]) -> set[str]:
        with self.database.read() as connection:
            return referenced_blobs(connection, set(keys))


def referenced_blobs(connection: Connection, keys: set[str]) -> set[str]:
    """The blob keys some organisation's instance, or a kept original of an import, still uses."""
    if not keys:
        return set()
    used = set(connection.execute(select(INSTANCE.c.blob_key).where(INSTANCE.c.blob_key.in_(keys)).distinct()).scalars())
    return used | set(connection.execute(select(ORIGINAL.c.blob_key).where(ORIGINAL.c.blob_key.in_(keys - used))
                                         .distinct()).scalars())


def _instance_row(org: str, record: InstanceRecord) -> dict[str, Any]:
    return {
        "org": org,
        "study_uid": record.study_uid,
        "series_uid": record.series_uid,
        "sop_instance_uid": record.sop_instance_uid,
        "sop_class_uid": record.sop_class_uid,
        "instance_number": record.instance_number,
        "transfer_syntax": record.transfer_syntax,
        "blob_key": record.blob_key,
        "size": record.size,
        "number_of_frames": record.number_of_frames,
        "attributes": record.instance_attributes,
        "dicom_json": record.dicom_json,
        "layout": record.layout,
    }


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def column_name(keyword: str) -> str:
    """`PatientBirthDate` → `patient_birth_date`; UIDs keep their short names."""
    special = {"StudyInstanceUID": "study_uid", "SeriesInstanceUID": "series_uid",
               "SOPInstanceUID": "sop_instance_uid", "SOPClassUID": "sop_class_uid", "StudyID": "study_id"}
    return special.get(keyword) or _CAMEL.sub("_", keyword).lower()


def _column(level: QueryLevel, keyword: str):
    """The column holding `keyword`, on the table of the level that defines it (joined in)."""
    for defining_level, keywords in MATCHABLE.items():
        if keyword in keywords:
            return TABLE_OF_LEVEL[defining_level].c[column_name(keyword)]
    raise KeyError(keyword)


def _like_pattern(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _condition(column, vr: str, match: AttributeMatch) -> ColumnElement[bool]:
    if match.kind is MatchKind.UID_LIST:
        return column.in_(match.values)
    if match.kind is MatchKind.RANGE:
        low, high = match.values
        parts = []
        if low:
            parts.append(column >= low)
        if high:
            parts.append(column <= high)
        # PS3.4 C.2.2.2.5: an empty stored value never falls inside a range.
        return and_(column != "", *parts)
    value = match.values[0]
    if vr == "IS":
        return column == int(value)
    if match.kind is MatchKind.WILDCARD:
        pattern = _like_pattern(value)
        if vr == "PN":
            return column.ilike(pattern, escape="\\")
        return column.like(pattern, escape="\\")
    if vr == "PN":  # PS3.4 C.2.2.2.1: PN matching is case-insensitive here, as at Orthanc
        return func.lower(column) == value.lower()
    return column == value


def _given(org: str, study_uid: str, series_uid: str | None, sop_instance_uid: str | None) -> dict[str, str]:
    """The instance columns that scope a study, series or instance request, with their values:
    always the organisation and study, then the series and instance where they are named."""
    scope = {"org": org, "study_uid": study_uid, "series_uid": series_uid, "sop_instance_uid": sop_instance_uid}
    return {key: value for key, value in scope.items() if value is not None}


# Study metadata is the hottest read (a viewer's first request): its statements are built once
# for each scope `_given` can name, and bound per call.
_DICOM_JSON_IN = {
    keys: select(INSTANCE.c.study_uid, INSTANCE.c.series_uid, INSTANCE.c.sop_instance_uid, INSTANCE.c.dicom_json)
    .where(*(INSTANCE.c[key] == bindparam(key) for key in keys))
    .order_by(INSTANCE.c.series_uid, INSTANCE.c.instance_number, INSTANCE.c.id)
    for keys in (("org", "study_uid"), ("org", "study_uid", "series_uid"), ("org", "study_uid", "sop_instance_uid"),
                 ("org", "study_uid", "series_uid", "sop_instance_uid"))
}
