"""The checks of the conformance kit, as data: each a function of the run's Session that returns
what it saw or raises CheckFailed / CheckSkipped, named with the PS3.18 section it tests."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import orjson

from conformance.corpus import StudySpec, new_uid, synthetic_instance
from conformance.session import (
    DICOM,
    DICOM_JSON,
    OCTET_STREAM,
    CheckFailed,
    CheckSkipped,
    Session,
    expect,
    first_value,
    instance_path,
    json_object,
    missing_attributes,
    related_parts,
    sop_uid_of,
    tag,
)
from dicomweb.multipart import MediaType

ACCEPT_AS_STORED = f'multipart/related; type="{DICOM}"; transfer-syntax=*'
ACCEPT_FRAMES_AS_STORED = f'multipart/related; type="{OCTET_STREAM}"; transfer-syntax=*'

# PS3.18 Tables 10.6.3-3/4/5: attributes a search returns for every match, as far as the
# synthetic corpus gives them values.
STUDY_RESULT_ATTRIBUTES = (
    "StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability", "ModalitiesInStudy",
    "ReferringPhysicianName", "RetrieveURL", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyInstanceUID", "StudyID", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
)
SERIES_RESULT_ATTRIBUTES = (
    "Modality", "SeriesDescription", "SeriesNumber", "SeriesInstanceUID", "NumberOfSeriesRelatedInstances",
    "RetrieveURL",
)
INSTANCE_RESULT_ATTRIBUTES = (
    "SOPClassUID", "SOPInstanceUID", "InstanceAvailability", "RetrieveURL", "InstanceNumber", "Rows",
    "Columns", "BitsAllocated",
)


def store_study(s: Session) -> str:
    response = s.store("/studies", [i.part10 for i in s.study.instances])
    s.studies_to_delete.append(s.study.uid)
    expect(response.status_code == 200, f"status {response.status_code}, not 200: {response.text[:200]}")
    expect(MediaType.parse(response.headers.get("content-type", "")).type == DICOM_JSON,
           f"Content-Type {response.headers.get('content-type')!r}, not {DICOM_JSON}")
    referenced = (json_object(response).get(tag("ReferencedSOPSequence")) or {}).get("Value") or []
    stored = {first_value(item, "ReferencedSOPInstanceUID") for item in referenced}
    expect(stored == {i.sop_uid for i in s.study.instances},
           f"ReferencedSOPSequence lists {len(stored)} of {len(s.study.instances)} stored instances")
    without_url = [item for item in referenced if not first_value(item, "RetrieveURL")]
    expect(not without_url, f"{len(without_url)} ReferencedSOPSequence item(s) without a RetrieveURL")
    s.stored = True
    return f"{len(stored)} instances in 2 series; each has a RetrieveURL"


def store_rejects_study_mismatch(s: Session) -> str:
    s.require_stored()
    other = StudySpec(patient=s.study.spec.patient, rows=16, columns=16)
    stray = synthetic_instance(other, new_uid(), 1, 1)
    stray_uid = sop_uid_of(stray)
    response = s.store(f"/studies/{s.study.uid}", [stray])
    s.studies_to_delete.append(other.study_uid)
    expect(response.status_code in (409, 202),
           f"status {response.status_code}: an instance of another study was not refused with 409")
    failed = (json_object(response).get(tag("FailedSOPSequence")) or {}).get("Value") or []
    item = next((i for i in failed if first_value(i, "ReferencedSOPInstanceUID") == stray_uid), None)
    expect(item is not None, "FailedSOPSequence does not name the refused instance")
    reason = first_value(item, "FailureReason")
    expect(reason is not None, "the FailedSOPSequence item has no FailureReason")
    return f"{response.status_code}, FailureReason 0x{int(reason):04X}"


def store_rejects_unsupported_media_type(s: Session) -> str:
    response = s.request("POST", "/studies", content=b"this is not DICOM",
                         headers={"Content-Type": "text/plain", "Accept": DICOM_JSON})
    expect(response.status_code == 415, f"status {response.status_code}, not 415, for Content-Type text/plain")
    return "415 for text/plain"


def search_study_by_uid(s: Session) -> str:
    s.require_stored()
    matches = s.search("/studies", {"StudyInstanceUID": s.study.uid})
    expect(len(matches) == 1, f"{len(matches)} matches, not 1")
    study = matches[0]
    missing = missing_attributes(study, STUDY_RESULT_ATTRIBUTES)
    expect(not missing, f"missing Table 10.6.3-3 attributes: {', '.join(missing)}")
    expect(first_value(study, "PatientID") == s.study.spec.patient.patient_id, "wrong PatientID")
    expect(first_value(study, "StudyDate") == s.study.spec.study_date, "wrong StudyDate")
    counts = (first_value(study, "NumberOfStudyRelatedSeries"), first_value(study, "NumberOfStudyRelatedInstances"))
    expect(tuple(map(_int, counts)) == (2, 4), f"related series/instances {counts}, not (2, 4)")
    return "1 match with every required attribute; 2 series, 4 instances"


def search_patient_name_wildcard(s: Session) -> str:
    s.require_stored()
    family = s.study.spec.patient.name.split("^")[0]
    pattern = family[:-3] + "*"
    matches = s.search("/studies", {"PatientName": pattern})
    uids = [first_value(m, "StudyInstanceUID") for m in matches]
    expect(uids == [s.study.uid], f"PatientName={pattern} found {len(uids)} studies, not the stored one")
    return f"PatientName={pattern} finds the study"


def search_study_date_range(s: Session) -> str:
    s.require_stored()
    patient_id = s.study.spec.patient.patient_id
    inside = s.search("/studies", {"StudyDate": "20240101-20240131", "PatientID": patient_id})
    expect(len(inside) == 1, f"StudyDate=20240101-20240131 found {len(inside)} studies, not 1")
    outside = s.search("/studies", {"StudyDate": "20230101-20231231", "PatientID": patient_id})
    expect(not outside, f"StudyDate=20230101-20231231 found {len(outside)} studies, not 0")
    return "inside the range found, outside not"


def search_series_in_study(s: Session) -> str:
    s.require_stored()
    matches = s.search(f"/studies/{s.study.uid}/series")
    found = sorted(first_value(m, "SeriesInstanceUID") for m in matches)
    expect(found == s.study.series_uids, f"{len(found)} series found, not the 2 stored")
    for series in matches:
        missing = missing_attributes(series, SERIES_RESULT_ATTRIBUTES)
        expect(not missing, f"missing Table 10.6.3-4 attributes: {', '.join(missing)}")
        expect(_int(first_value(series, "NumberOfSeriesRelatedInstances")) == 2,
               "NumberOfSeriesRelatedInstances is not 2")
        expect(first_value(series, "Modality") == "CT", "Modality is not CT")
    return "2 series, each with 2 related instances"


def search_instances(s: Session) -> str:
    s.require_stored()
    in_study = s.search(f"/studies/{s.study.uid}/instances")
    found = {first_value(m, "SOPInstanceUID") for m in in_study}
    expect(found == {i.sop_uid for i in s.study.instances}, f"{len(found)} instances in the study, not 4")
    series_uid = s.study.series_uids[0]
    in_series = s.search(f"/studies/{s.study.uid}/series/{series_uid}/instances")
    expected = {i.sop_uid for i in s.study.instances if i.series_uid == series_uid}
    found = {first_value(m, "SOPInstanceUID") for m in in_series}
    expect(found == expected, f"{len(found)} instances in the series, not 2")
    for instance in in_series:
        missing = missing_attributes(instance, INSTANCE_RESULT_ATTRIBUTES)
        expect(not missing, f"missing Table 10.6.3-5 attributes: {', '.join(missing)}")
        expect(first_value(instance, "SOPClassUID") == s.study.instances[0].sop_class_uid, "wrong SOPClassUID")
    return "4 in the study, 2 in the series, with the required attributes"


def search_limit_offset(s: Session) -> str:
    s.require_stored()
    path = f"/studies/{s.study.uid}/instances"
    first = s.search(path, {"limit": "2", "offset": "0"})
    second = s.search(path, {"limit": "2", "offset": "2"})
    expect(len(first) == 2 and len(second) == 2, f"pages of {len(first)} and {len(second)}, not 2 and 2")
    pages = {first_value(m, "SOPInstanceUID") for m in first + second}
    expect(pages == {i.sop_uid for i in s.study.instances}, "the two pages do not cover the 4 instances")
    return "two pages of 2 cover the 4 instances"


def search_without_match(s: Session) -> str:
    matches = s.search("/studies", {"StudyInstanceUID": new_uid()})
    expect(matches == [], f"{len(matches)} matches for a UID nobody holds")
    return "no match: 200 [] or 204"


def retrieve_instance_as_stored(s: Session) -> str:
    s.require_stored()
    instance = s.study.instances[0]
    response = s.request("GET", instance_path(instance), headers={"Accept": ACCEPT_AS_STORED})
    expect(response.status_code == 200, f"status {response.status_code}, not 200")
    parts = related_parts(response)
    expect(len(parts) == 1, f"{len(parts)} parts, not 1")
    headers, data = parts[0]
    expect(MediaType.parse(headers.get("content-type", DICOM)).type == DICOM,
           f"part Content-Type {headers.get('content-type')!r}, not {DICOM}")
    expect(data == instance.part10, f"{len(data)} bytes differ from the {len(instance.part10)} stored")
    return "byte-exact with transfer-syntax=*"


def retrieve_study(s: Session) -> str:
    s.require_stored()
    response = s.request("GET", f"/studies/{s.study.uid}", headers={"Accept": ACCEPT_AS_STORED})
    expect(response.status_code == 200, f"status {response.status_code}, not 200")
    parts = related_parts(response)
    expect(len(parts) == len(s.study.instances), f"{len(parts)} parts, not {len(s.study.instances)}")
    for _, data in parts:
        instance = s.study.instance(sop_uid_of(data))
        expect(instance is not None, "a part is not one of the stored instances")
        expect(data == instance.part10, f"instance {instance.sop_uid} differs from what was stored")
    return f"{len(parts)} instances, byte-exact"


def retrieve_metadata(s: Session) -> str:
    s.require_stored()
    response = s.request("GET", f"/studies/{s.study.uid}/metadata", headers={"Accept": DICOM_JSON})
    expect(response.status_code == 200, f"status {response.status_code}, not 200")
    datasets = orjson.loads(response.content)
    expect(isinstance(datasets, list) and len(datasets) == len(s.study.instances),
           f"{len(datasets) if isinstance(datasets, list) else 'no'} datasets, not {len(s.study.instances)}")
    kinds = set()
    for dataset in datasets:
        instance = s.study.instance(first_value(dataset, "SOPInstanceUID"))
        expect(instance is not None, "metadata of an instance that was not stored")
        for keyword, wanted in (("PatientID", s.study.spec.patient.patient_id), ("Rows", 16), ("Columns", 16),
                                ("BitsAllocated", 16), ("SeriesInstanceUID", instance.series_uid),
                                ("InstanceNumber", instance.instance_number)):
            expect(_same(first_value(dataset, keyword), wanted),
                   f"{keyword} is {first_value(dataset, keyword)!r}, not {wanted!r}")
        pixels = dataset.get(tag("PixelData")) or {}
        expect(pixels.get("vr") in ("OW", "OB"), f"PixelData VR {pixels.get('vr')!r}, not OW or OB")
        expect("BulkDataURI" in pixels or "InlineBinary" in pixels,
               "PixelData has neither BulkDataURI nor InlineBinary")
        kinds.add("BulkDataURI" if "BulkDataURI" in pixels else "InlineBinary")
        if instance is s.study.instances[0]:
            if "BulkDataURI" in pixels:
                s.bulk_data_uri = urljoin(str(response.url), pixels["BulkDataURI"])
            else:
                s.inline_pixel_data = base64.b64decode(pixels["InlineBinary"])
    return f"{len(datasets)} datasets; PixelData as {', '.join(sorted(kinds))}"


def retrieve_bulk_data(s: Session) -> str:
    s.require_stored()
    expected = s.study.instances[0].pixel_data
    if s.inline_pixel_data is not None:
        expect(s.inline_pixel_data == expected, "InlineBinary PixelData differs from the stored pixels")
        return "PixelData inline and equal"
    if not s.bulk_data_uri:
        raise CheckSkipped("no PixelData BulkDataURI from retrieve_metadata")
    response = s.request("GET", s.bulk_data_uri, headers={"Accept": ACCEPT_FRAMES_AS_STORED})
    expect(response.status_code == 200, f"status {response.status_code}, not 200")
    parts = related_parts(response)
    expect(len(parts) == 1, f"{len(parts)} parts, not 1")
    expect(parts[0][1] == expected, f"{len(parts[0][1])} bytes differ from the {len(expected)} stored")
    return "PixelData BulkDataURI returns the stored pixels"


def retrieve_frame(s: Session) -> str:
    s.require_stored()
    instance = s.study.instances[0]
    response = s.request("GET", instance_path(instance) + "/frames/1", headers={"Accept": ACCEPT_FRAMES_AS_STORED})
    expect(response.status_code == 200, f"status {response.status_code}, not 200")
    parts = related_parts(response)
    expect(len(parts) == 1, f"{len(parts)} parts, not 1")
    expect(parts[0][1] == instance.pixel_data,
           f"{len(parts[0][1])} bytes differ from the {len(instance.pixel_data)} bytes of frame 1")
    return "frame 1 equals the stored pixels"


def retrieve_unknown_study(s: Session) -> str:
    response = s.request("GET", f"/studies/{new_uid()}", headers={"Accept": ACCEPT_AS_STORED})
    expect(response.status_code == 404, f"status {response.status_code}, not 404, for a study nobody holds")
    return "404"


def retrieve_unsupported_accept(s: Session) -> str:
    s.require_stored()
    response = s.request("GET", instance_path(s.study.instances[0]), headers={"Accept": "application/x-oix-unknown"})
    expect(response.status_code == 406, f"status {response.status_code}, not 406, for an unsupported Accept")
    return "406"


def delete_stored(s: Session) -> str:
    """Remove what the run stored, where the server has DELETE (not in PS3.18: never a failure)."""
    answers = []
    for study_uid in s.studies_to_delete:
        try:
            answers.append(s.request("DELETE", f"/studies/{study_uid}").status_code)
        except CheckFailed as exc:
            raise CheckSkipped(str(exc)) from exc
    if not answers:
        raise CheckSkipped("nothing was stored")
    if answers[0] not in (200, 202, 204):
        raise CheckSkipped(f"DELETE answered {answers[0]}: the study stays on the server")
    return f"DELETE answered {', '.join(map(str, answers))}"


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _same(found: Any, wanted: Any) -> bool:
    return found == wanted or (isinstance(wanted, int) and _int(found) == wanted)


@dataclass(frozen=True)
class Check:
    name: str
    section: str
    run: Callable[[Session], str]


CHECKS: tuple[Check, ...] = (
    Check("store_study", "10.5", store_study),
    Check("store_rejects_study_mismatch", "10.5.3", store_rejects_study_mismatch),
    Check("store_rejects_unsupported_media_type", "10.5.3", store_rejects_unsupported_media_type),
    Check("search_study_by_uid", "10.6.3.3", search_study_by_uid),
    Check("search_patient_name_wildcard", "8.3.4.1", search_patient_name_wildcard),
    Check("search_study_date_range", "8.3.4.1", search_study_date_range),
    Check("search_series_in_study", "10.6.3.3", search_series_in_study),
    Check("search_instances", "10.6.3.3", search_instances),
    Check("search_limit_offset", "8.3.4.4", search_limit_offset),
    Check("search_without_match", "10.6.3", search_without_match),
    Check("retrieve_instance_as_stored", "8.7.3.5", retrieve_instance_as_stored),
    Check("retrieve_study", "10.4", retrieve_study),
    Check("retrieve_metadata", "10.4, F.2", retrieve_metadata),
    Check("retrieve_bulk_data", "10.4, F.2.6", retrieve_bulk_data),
    Check("retrieve_frame", "10.4, 8.7.3", retrieve_frame),
    Check("retrieve_unknown_study", "10.4.3", retrieve_unknown_study),
    Check("retrieve_unsupported_accept", "8.7", retrieve_unsupported_accept),
)

# Run last whatever happened before: removes what the run stored, where the server allows it.
CLEAN_UP = Check("delete_study", "not in PS3.18", delete_stored)
