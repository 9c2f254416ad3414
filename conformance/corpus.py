"""Synthetic DICOM studies made on the spot: the corpus the conformance kit, the benchmark and
the tests store into a server, so none of them depends on files someone has to supply."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    PYDICOM_IMPLEMENTATION_UID,
    generate_uid,
)

# A root of our own keeps synthetic UIDs recognisable and collision-free (PS3.5 9.1).
OIX_SYNTHETIC_UID_ROOT = "1.2.826.0.1.3680043.10.1234."

SOP_CLASS_OF_MODALITY = {"CT": CTImageStorage, "MR": MRImageStorage}


def new_uid() -> str:
    return generate_uid(prefix=OIX_SYNTHETIC_UID_ROOT)


@dataclass(frozen=True)
class Patient:
    name: str = "Doe^Jane"
    patient_id: str = "OIX0001"
    birth_date: str = "19700101"
    sex: str = "F"


@dataclass
class StudySpec:
    """What a synthetic study looks like; every field has a realistic default."""

    patient: Patient = field(default_factory=Patient)
    study_uid: str = field(default_factory=new_uid)
    frame_of_reference_uid: str = field(default_factory=new_uid)
    study_date: str = "20240115"
    study_time: str = "101500"
    accession_number: str = "ACC0001"
    study_description: str = "CT HEAD"
    series_count: int = 1
    instances_per_series: int = 4
    modality: str = "CT"
    rows: int = 64
    columns: int = 64
    frames: int = 1
    seed: int = 0


def synthetic_instance(
    spec: StudySpec,
    series_uid: str,
    series_number: int,
    instance_number: int,
    sop_uid: str | None = None,
) -> bytes:
    """One Part 10 object (PS3.10 7.1) of `spec`, Explicit VR Little Endian, 16-bit signed."""
    sop_uid = sop_uid or new_uid()
    sop_class = SOP_CLASS_OF_MODALITY.get(spec.modality, CTImageStorage)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = spec.study_date
    ds.SeriesDate = spec.study_date
    ds.StudyTime = spec.study_time
    ds.AccessionNumber = spec.accession_number
    ds.Modality = spec.modality
    ds.Manufacturer = "OIX synthetic"
    ds.ReferringPhysicianName = "Smith^John"
    ds.StudyDescription = spec.study_description
    ds.SeriesDescription = f"{spec.modality} series {series_number}"
    ds.PatientName = spec.patient.name
    ds.PatientID = spec.patient.patient_id
    ds.PatientBirthDate = spec.patient.birth_date
    ds.PatientSex = spec.patient.sex
    ds.StudyInstanceUID = spec.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [0.0, 0.0, float(instance_number)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.FrameOfReferenceUID = spec.frame_of_reference_uid
    ds.SliceThickness = 1.0
    ds.PixelSpacing = [0.5, 0.5]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = spec.rows
    ds.Columns = spec.columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    if spec.frames > 1:
        ds.NumberOfFrames = spec.frames
    ds.PixelData = _pixels(spec, series_number, instance_number)

    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def synthetic_study(spec: StudySpec) -> Iterator[bytes]:
    """Every instance of `spec`, series by series."""
    for series_number in range(1, spec.series_count + 1):
        series_uid = new_uid()
        for instance_number in range(1, spec.instances_per_series + 1):
            yield synthetic_instance(spec, series_uid, series_number, instance_number)


def _pixels(spec: StudySpec, series_number: int, instance_number: int) -> bytes:
    """A smooth phantom plus noise: distinct per instance, compressible like a real image."""
    rng = np.random.default_rng((spec.seed, series_number, instance_number))
    y, x = np.mgrid[0 : spec.rows, 0 : spec.columns]
    cy, cx = spec.rows / 2, spec.columns / 2
    radius = np.hypot(y - cy, x - cx) / max(cy, cx)
    base = np.where(radius < 0.8, 1040 + 60 * np.cos(radius * 8 + instance_number), 0)
    frames = [
        (base + rng.integers(-20, 20, size=base.shape) + 5 * frame).astype("<i2")
        for frame in range(spec.frames)
    ]
    return np.stack(frames).tobytes()
