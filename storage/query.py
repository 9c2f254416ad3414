"""What the index can be asked (PS3.18 10.6.1.2 matching, PS3.4 C.2.2.2): the query model the
DICOMweb layer fills in from a QIDO-RS request and the index turns into SQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class QueryLevel(str, Enum):
    STUDY = "STUDY"
    SERIES = "SERIES"
    INSTANCE = "IMAGE"


class MatchKind(str, Enum):
    SINGLE_VALUE = "single value"  # PS3.4 C.2.2.2.1
    UID_LIST = "UID list"  # C.2.2.2.2
    WILDCARD = "wild card"  # C.2.2.2.4: * and ?
    RANGE = "range"  # C.2.2.2.5: DA, TM, DT
    UNIVERSAL = "universal"  # C.2.2.2.3: an empty value matches everything


@dataclass(frozen=True)
class AttributeMatch:
    keyword: str
    kind: MatchKind
    values: tuple[str, ...] = ()
    # For RANGE: (low, high), either may be "" for an open range.


@dataclass
class Query:
    level: QueryLevel
    study_uid: str | None = None
    series_uid: str | None = None
    matches: list[AttributeMatch] = field(default_factory=list)
    limit: int = 1000
    offset: int = 0


# The attributes the index can match on, by level and keyword, with their VR: the column of the
# same name (snake_case) on that level's table. Series and instance queries may also match on
# the levels above them (PS3.18 10.6.1.2, "relational" queries).
MATCHABLE: dict[QueryLevel, dict[str, str]] = {
    QueryLevel.STUDY: {
        "StudyDate": "DA",
        "StudyTime": "TM",
        "AccessionNumber": "SH",
        "ModalitiesInStudy": "CS",
        "ReferringPhysicianName": "PN",
        "PatientName": "PN",
        "PatientID": "LO",
        "PatientBirthDate": "DA",
        "PatientSex": "CS",
        "StudyInstanceUID": "UI",
        "StudyID": "SH",
        "StudyDescription": "LO",
    },
    QueryLevel.SERIES: {
        "Modality": "CS",
        "SeriesInstanceUID": "UI",
        "SeriesNumber": "IS",
        "SeriesDescription": "LO",
        "PerformedProcedureStepStartDate": "DA",
        "PerformedProcedureStepStartTime": "TM",
    },
    QueryLevel.INSTANCE: {
        "SOPClassUID": "UI",
        "SOPInstanceUID": "UI",
        "InstanceNumber": "IS",
    },
}

LEVELS_FROM = {
    QueryLevel.STUDY: (QueryLevel.STUDY,),
    QueryLevel.SERIES: (QueryLevel.STUDY, QueryLevel.SERIES),
    QueryLevel.INSTANCE: (QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.INSTANCE),
}


def matchable_at(level: QueryLevel) -> dict[str, str]:
    """Keyword → VR of every attribute a query at `level` may match on."""
    merged: dict[str, str] = {}
    for upper in LEVELS_FROM[level]:
        merged.update(MATCHABLE[upper])
    return merged
