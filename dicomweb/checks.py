"""The checks PS3.18 10.5 asks of each object a STOW-RS request carries, and the index record
of each one that passes. Runs in parser processes, so it imports no HTTP or database code."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache

from pydicom.uid import UID_dictionary

from dicomweb.errors import FailureReason
from dicomweb.part10 import Part10Error, UnknownTransferSyntax, read_part10
from dicomweb.records import bulk_uri, instance_record
from storage.blobs import open_blob_file
from storage.keyring import Keyring
from storage.records import InstanceRecord

DICOM = "application/dicom"


@lru_cache(maxsize=1)
def storage_sop_classes() -> frozenset[str]:
    """Every Storage SOP Class in pydicom's copy of PS3.6 Annex A: what this server stores."""
    return frozenset(
        uid for uid, (name, kind, _info, _retired, keyword) in UID_dictionary.items()
        if kind == "SOP Class" and "Storage" in keyword
        and not any(word in keyword for word in ("Commitment", "StorageManagement"))
    )


@dataclass
class Failure:
    sop_class_uid: str
    sop_instance_uid: str
    reason: FailureReason
    message: str


@dataclass(frozen=True)
class PartToCheck:
    """What checking a part needs, picklable so a parser process can do it."""

    number: int
    path: str
    media_type: str
    blob_key: str
    size: int
    keyring: Keyring | None = None  # the spooled file is encrypted under it (encryption at rest)


def check_parts(parts: list[PartToCheck], study_uid: str | None,
                bulk_threshold: int) -> list[Failure | InstanceRecord]:
    """PS3.18 10.5 checks and index records of received parts. Runs in a parser process:
    reading headers is the CPU-heavy part of a store, and Python threads share one core."""
    return [_check(part, study_uid, bulk_threshold) for part in parts]


def _check(part: PartToCheck, study_uid: str | None, bulk_threshold: int) -> Failure | InstanceRecord:
    def fail(reason: FailureReason, message: str, sop_class: str = "", sop_instance: str = "") -> Failure:
        return Failure(sop_class, sop_instance, reason, f"part {part.number}: {message}")

    if part.media_type not in (DICOM, ""):
        return fail(FailureReason.CANNOT_UNDERSTAND, f"media type {part.media_type} is not application/dicom")
    try:
        with open_blob_file(part.path, part.keyring) as handle:
            parsed = read_part10(handle, bulk_threshold, bulk_uri)
    except UnknownTransferSyntax as exc:
        return fail(FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED, str(exc))
    except (Part10Error, ValueError, IndexError, UnicodeError, struct.error) as exc:
        return fail(FailureReason.CANNOT_UNDERSTAND, f"not a readable DICOM Part 10 object: {exc}")
    sop_class, sop_instance = parsed.sop_class_uid, parsed.sop_instance_uid
    missing = [name for name, value in (("SOPClassUID", sop_class), ("SOPInstanceUID", sop_instance),
                                        ("StudyInstanceUID", parsed.study_uid),
                                        ("SeriesInstanceUID", parsed.series_uid)) if not value]
    if missing:
        return fail(FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                    f"required attribute(s) {', '.join(missing)} missing", sop_class, sop_instance)
    if sop_class not in storage_sop_classes():
        return fail(FailureReason.SOP_CLASS_NOT_SUPPORTED,
                    f"SOP Class {sop_class} is not a Storage SOP Class this server accepts", sop_class, sop_instance)
    if study_uid is not None and parsed.study_uid != study_uid:
        return fail(FailureReason.STUDY_UID_MISMATCH,
                    f"StudyInstanceUID {parsed.study_uid} differs from {study_uid} in the request URL",
                    sop_class, sop_instance)
    return instance_record(parsed, part.blob_key, part.size)
