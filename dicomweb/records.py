"""Turn a parsed Part 10 object into the index record the storage layer keeps: query columns,
prepared QIDO attributes, DICOM JSON ready to serve and the layout of its values."""

from __future__ import annotations

from typing import Any

import orjson

from dicomweb.attributes import AVAILABLE_TRANSFER_SYNTAX, INSTANCE_ATTRIBUTES, SERIES_ATTRIBUTES, STUDY_ATTRIBUTES
from dicomweb.part10 import ParsedInstance, pixel_swap_size
from storage.records import InstanceRecord

# BulkDataURIs are stored below a mark for the service root and made absolute when served,
# so the same prepared JSON answers whatever host name and organisation root the client used.
# The parser knows a value's path before it knows the instance's UIDs: it writes the
# instance mark, which `instance_record` then turns into the instance's path below the root.
INSTANCE_URL_MARK = "@instance@"
SERVICE_ROOT_MARK = "@root@"
# As they appear in serialised JSON: a quote inside a DICOM text value is escaped, so these
# bytes can only be the start of a BulkDataURI value, never text that happens to hold a mark.
MARKED_INSTANCE_URI = b'"BulkDataURI":"' + INSTANCE_URL_MARK.encode()
MARKED_ROOT_URI = b'"BulkDataURI":"' + SERVICE_ROOT_MARK.encode()


def bulk_uri(path: str) -> str:
    return f"{INSTANCE_URL_MARK}/bulkdata/{path}"


def below_service_root(dicom_json: bytes, study_uid: str, series_uid: str, sop_instance_uid: str) -> bytes:
    """The parser's instance marks turned into the instance's own path below the root mark."""
    return dicom_json.replace(MARKED_INSTANCE_URI, b'"BulkDataURI":"%s/studies/%s/series/%s/instances/%s' % (
        SERVICE_ROOT_MARK.encode(), study_uid.encode(), series_uid.encode(), sop_instance_uid.encode()))


def with_service_root(body: bytes, root: bytes) -> bytes:
    """Prepared DICOM JSON (one object or an array of them) with absolute BulkDataURIs."""
    return body.replace(MARKED_ROOT_URI, b'"BulkDataURI":"' + root)


def instance_record(parsed: ParsedInstance, blob_key: str, size: int) -> InstanceRecord:
    dataset = parsed.dataset_json
    full = dict(dataset)
    full[AVAILABLE_TRANSFER_SYNTAX] = {"vr": "UI", "Value": [parsed.transfer_syntax]}
    full = dict(sorted(full.items()))
    return InstanceRecord(
        study_uid=parsed.study_uid,
        series_uid=parsed.series_uid,
        sop_instance_uid=parsed.sop_instance_uid,
        sop_class_uid=parsed.sop_class_uid,
        transfer_syntax=parsed.transfer_syntax,
        blob_key=blob_key,
        size=size,
        instance_number=_int(parsed.first("00200013")),
        number_of_frames=max(len(parsed.frames), 1),
        study_columns={
            "patient_name": _person_name(parsed.first("00100010")),
            "patient_id": _text(parsed.first("00100020")),
            "patient_birth_date": _text(parsed.first("00100030")),
            "patient_sex": _text(parsed.first("00100040")),
            "study_date": _text(parsed.first("00080020")),
            "study_time": _text(parsed.first("00080030")),
            "accession_number": _text(parsed.first("00080050")),
            "study_id": _text(parsed.first("00200010")),
            "referring_physician_name": _person_name(parsed.first("00080090")),
            "study_description": _text(parsed.first("00081030")),
        },
        study_attributes=_subset(dataset, STUDY_ATTRIBUTES),
        series_columns={
            "modality": _text(parsed.first("00080060")),
            "series_number": _int(parsed.first("00200011")),
            "series_description": _text(parsed.first("0008103E")),
            "performed_procedure_step_start_date": _text(parsed.first("00400244")),
            "performed_procedure_step_start_time": _text(parsed.first("00400245")),
        },
        series_attributes=_subset(dataset, SERIES_ATTRIBUTES),
        instance_attributes=_subset(dataset, INSTANCE_ATTRIBUTES),
        dicom_json=below_service_root(orjson.dumps(full), parsed.study_uid, parsed.series_uid,
                                      parsed.sop_instance_uid),
        layout=orjson.dumps(_layout(parsed)),
    )


def _layout(parsed: ParsedInstance) -> dict[str, Any]:
    return {
        "deflated": parsed.transfer_syntax == "1.2.840.10008.1.2.1.99",
        "dataset_offset": parsed.dataset_offset,
        "encapsulated": parsed.encapsulated,
        "bulk": {path: [v.offset, v.length, v.vr, v.big_endian] for path, v in parsed.bulk.items()},
        "frames": [[[v.offset, v.length] for v in frame] for frame in parsed.frames],
        "frame_big_endian": bool(parsed.frames and parsed.frames[0][0].big_endian),
        "pixel_swap_size": pixel_swap_size(parsed.bulk["7FE00010"].vr if "7FE00010" in parsed.bulk else "OB",
                                           _int(parsed.first("00280100"))),
    }


def _subset(dataset: dict[str, Any], tags: tuple[str, ...]) -> bytes:
    return orjson.dumps({tag: dataset[tag] for tag in tags if tag in dataset})


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _person_name(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("Alphabetic", "")
    return _text(value)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
