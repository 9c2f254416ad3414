"""QIDO-RS attributes (PS3.18 10.6.3.3, Tables 10.6.3-3/4/5): what each level returns by
default, and how a query parameter names an attribute (keyword or tag)."""

from __future__ import annotations

from pydicom.datadict import dictionary_keyword, dictionary_VR, tag_for_keyword

from storage.query import QueryLevel

# Tags (8 hex digits) returned for every match at each level, beyond the computed ones.
STUDY_ATTRIBUTES = (
    "00080020",  # StudyDate
    "00080030",  # StudyTime
    "00080050",  # AccessionNumber
    "00080090",  # ReferringPhysicianName
    "00081030",  # StudyDescription (not in the table; every viewer's study list shows it)
    "00100010",  # PatientName
    "00100020",  # PatientID
    "00100030",  # PatientBirthDate
    "00100040",  # PatientSex
    "0020000D",  # StudyInstanceUID
    "00200010",  # StudyID
)
SERIES_ATTRIBUTES = (
    "00080060",  # Modality
    "0008103E",  # SeriesDescription
    "0020000E",  # SeriesInstanceUID
    "00200011",  # SeriesNumber
    "00400244",  # PerformedProcedureStepStartDate
    "00400245",  # PerformedProcedureStepStartTime
    "00400275",  # RequestAttributesSequence
)
INSTANCE_ATTRIBUTES = (
    "00080016",  # SOPClassUID
    "00080018",  # SOPInstanceUID
    "00200013",  # InstanceNumber
    "00280010",  # Rows
    "00280011",  # Columns
    "00280100",  # BitsAllocated
    "00280008",  # NumberOfFrames
)
# Computed per response rather than stored (PS3.18 Table 10.6.3-3/4/5).
INSTANCE_AVAILABILITY = "00080056"
RETRIEVE_URL = "00081190"
MODALITIES_IN_STUDY = "00080061"
COUNT_TAGS = {
    "NumberOfStudyRelatedSeries": "00201206",
    "NumberOfStudyRelatedInstances": "00201208",
    "NumberOfSeriesRelatedInstances": "00201209",
}
AVAILABLE_TRANSFER_SYNTAX = "00083002"

ATTRIBUTES_OF_LEVEL = {
    QueryLevel.STUDY: STUDY_ATTRIBUTES,
    QueryLevel.SERIES: SERIES_ATTRIBUTES,
    QueryLevel.INSTANCE: INSTANCE_ATTRIBUTES,
}


class UnknownAttribute(ValueError):
    pass


def resolve(name: str) -> tuple[str, str]:
    """A query parameter's attribute, by keyword (`PatientName`) or tag (`00100010`),
    as (keyword, tag). Nested paths (`a.b`) are not supported."""
    text = name.strip()
    if len(text) == 8 and all(c in "0123456789abcdefABCDEF" for c in text):
        tag = int(text, 16)
        keyword = dictionary_keyword(tag) if _known(tag) else ""
        return keyword, text.upper()
    tag = tag_for_keyword(text)
    if tag is None:
        raise UnknownAttribute(f"'{name}' is neither a DICOM keyword nor an 8-digit tag")
    return text, f"{tag:08X}"


def _known(tag: int) -> bool:
    try:
        dictionary_VR(tag)
        return True
    except KeyError:
        return False
