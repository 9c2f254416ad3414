"""The studies and series an organisation holds, as the portal's pages show them: found through
the archive's QIDO search (audited as a query) and read from the DICOM JSON of each match
(PS3.18 Annex F) into plain values."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from exchange.access import Requester
from exchange.archive import Archive
from exchange.nhs_number import format_nhs_number, is_valid_nhs_number
from storage.query import AttributeMatch, MatchKind, Query, QueryLevel

MAX_STUDIES = 200


@dataclass(frozen=True)
class StudySummary:
    study_uid: str
    patient_name: str = ""
    patient_id: str = ""
    birth_date: str = ""
    nhs_number: str = ""
    description: str = ""
    date: str = ""
    accession: str = ""
    modalities: tuple[str, ...] = ()
    images: int = 0
    series: int = 0


@dataclass(frozen=True)
class SeriesSummary:
    study_uid: str
    series_uid: str
    number: str = ""
    modality: str = ""
    description: str = ""
    images: int = 0


@dataclass(frozen=True)
class HoldingsSearch:
    """What the Send page's search names; empty fields match everything (PS3.4 C.2.2.2.3)."""

    patient: str = ""  # a part of the name
    patient_id: str = ""
    nhs_number: str = ""
    accession: str = ""
    date_from: str = ""  # YYYY-MM-DD from an <input type=date>
    date_to: str = ""
    modality: str = ""

    def query(self) -> Query:
        matches = []
        if self.patient.strip():  # PS3.4 C.2.2.2.4 wild card: any name containing the text
            matches.append(AttributeMatch("PatientName", MatchKind.WILDCARD, (f"*{self.patient.strip()}*",)))
        if self.patient_id.strip():
            matches.append(AttributeMatch("PatientID", MatchKind.SINGLE_VALUE, (self.patient_id.strip(),)))
        if self.nhs_number.strip():
            digits = "".join(character for character in self.nhs_number if character.isdigit())
            matches.append(AttributeMatch("PatientID", MatchKind.SINGLE_VALUE, (digits,)))
        if self.accession.strip():
            matches.append(AttributeMatch("AccessionNumber", MatchKind.SINGLE_VALUE, (self.accession.strip(),)))
        if self.date_from or self.date_to:  # PS3.4 C.2.2.2.5 range matching, either end open
            matches.append(AttributeMatch("StudyDate", MatchKind.RANGE,
                                          (self.date_from.replace("-", ""), self.date_to.replace("-", ""))))
        if self.modality.strip():
            matches.append(AttributeMatch("ModalitiesInStudy", MatchKind.SINGLE_VALUE,
                                          (self.modality.strip().upper(),)))
        return Query(QueryLevel.STUDY, matches=matches, limit=MAX_STUDIES)

    @property
    def empty(self) -> bool:
        return not self.query().matches


def search_studies(archive: Archive, org: str, search: HoldingsSearch, requester: Requester) -> list[StudySummary]:
    return [_study(row) for row in archive.search(org, search.query(), requester, "portal: studies held")]


def studies(archive: Archive, org: str, study_uids: list[str], requester: Requester) -> dict[str, StudySummary]:
    """The named studies the organisation holds, by Study Instance UID (PS3.4 C.2.2.2.2 UID list)."""
    if not study_uids:
        return {}
    query = Query(QueryLevel.STUDY, matches=[AttributeMatch("StudyInstanceUID", MatchKind.UID_LIST,
                                                            tuple(study_uids))], limit=len(study_uids))
    return {row.study_uid: _study(row) for row in archive.search(org, query, requester, "portal: transfer studies")}


def series_of(archive: Archive, org: str, study_uid: str, requester: Requester) -> list[SeriesSummary]:
    rows = archive.search(org, Query(QueryLevel.SERIES, study_uid=study_uid), requester, "portal: series")
    found = []
    for row in rows:
        values = _values(row.attributes)
        found.append(SeriesSummary(row.study_uid, row.series_uid or "", _text(values, "00200011"),
                                   _text(values, "00080060"), _text(values, "0008103E"),
                                   row.counts.get("NumberOfSeriesRelatedInstances", 0)))
    return found


def _study(row) -> StudySummary:
    values = _values(row.attributes)
    patient_id = _text(values, "00100020")
    # An NHS number is the Patient ID of the NHS's identity domain (or one that passes its check digit).
    nhs = format_nhs_number(patient_id) if patient_id.isdigit() and is_valid_nhs_number(patient_id) else ""
    return StudySummary(
        row.study_uid, _text(values, "00100010"), patient_id, _date(_text(values, "00100030")), nhs,
        _text(values, "00081030"), _date(_text(values, "00080020")), _text(values, "00080050"),
        tuple(row.modalities), row.counts.get("NumberOfStudyRelatedInstances", 0),
        row.counts.get("NumberOfStudyRelatedSeries", 0))


def _values(attributes: list[bytes]) -> dict:
    merged: dict = {}
    for chunk in attributes:
        merged.update(orjson.loads(chunk))
    return merged


def _text(values: dict, tag: str) -> str:
    """The first value of an element as text; a person name's Alphabetic group as people read it."""
    element = values.get(tag) or {}
    found = (element.get("Value") or [""])[0]
    if isinstance(found, dict):
        return person_name(str(found.get("Alphabetic", "")))
    return str(found)


def person_name(value: str) -> str:
    """A PN value (PS3.5 6.2.1: family^given^middle^prefix^suffix) as people read it: "Family, Given"."""
    family, _, rest = value.partition("^")
    given = " ".join(part for part in rest.split("^") if part)
    return f"{family}, {given}" if family and given else family or given


def _date(value: str) -> str:
    """DA (YYYYMMDD, PS3.5 6.2) as ISO 8601 for people to read."""
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value
