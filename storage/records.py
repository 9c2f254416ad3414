"""What the index keeps about one stored object: a plain record, light enough for the parser
processes that make it to import without the database layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class InstanceRecord:
    """Everything the index keeps about one object, made by the DICOM layer at store time."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    blob_key: str
    size: int
    instance_number: int | None
    number_of_frames: int
    study_columns: dict[str, Any]
    study_attributes: bytes
    series_columns: dict[str, Any]
    series_attributes: bytes
    instance_attributes: bytes
    dicom_json: bytes
    layout: bytes
