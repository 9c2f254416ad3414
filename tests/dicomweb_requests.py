"""Raw DICOMweb requests the tests make with httpx (status codes, headers, exact bytes), and
readers for the DICOM JSON the server answers with."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterable

import httpx
import pydicom

from conformance.corpus import StudySpec, new_uid, synthetic_instance
from tests.multipart_body import Part, new_boundary, related_body, split_related, stow_content_type

ANY_SYNTAX = 'multipart/related; type="application/dicom"; transfer-syntax=*'
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"

# PS3.18 Table 10.5.3-1 / PS3.4 Annex B.2.3: tags of the Store Instances Response.
RETRIEVE_URL = "00081190"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_INSTANCE = "00081155"
FAILURE_REASON = "00081197"


def stow(http: httpx.Client, root: str, parts: Iterable[bytes], study_uid: str | None = None,
         content_type: str | None = None, boundary: str | None = None,
         headers: dict[str, str] | None = None) -> httpx.Response:
    """POST the Part 10 objects `parts` as one STOW-RS request (PS3.18 10.5)."""
    boundary = boundary or new_boundary()
    url = f"{root}/studies" + (f"/{study_uid}" if study_uid else "")
    return http.post(url, content=related_body(parts, boundary),
                     headers={"Content-Type": content_type or stow_content_type(boundary), **(headers or {})})


def referenced_sop_instances(body: dict) -> list[str]:
    items = body.get(REFERENCED_SOP_SEQUENCE, {}).get("Value", [])
    return [item[REFERENCED_SOP_INSTANCE]["Value"][0] for item in items]


def failures(body: dict) -> list[tuple[str | None, int]]:
    """(Referenced SOP Instance UID or None, Failure Reason) of each failed object."""
    found = []
    for item in body.get(FAILED_SOP_SEQUENCE, {}).get("Value", []):
        sop = item.get(REFERENCED_SOP_INSTANCE, {}).get("Value", [None])[0]
        found.append((sop, item[FAILURE_REASON]["Value"][0]))
    return found


def first_value(element: dict | None):
    values = (element or {}).get("Value") or [None]
    return values[0]


def retrieve(http: httpx.Client, url: str, accept: str = ANY_SYNTAX) -> list[Part]:
    response = http.get(url, headers={"Accept": accept})
    assert response.status_code == 200, (response.status_code, response.text[:300])
    return split_related(response.headers["content-type"], response.content)


def instance_url(root: str, study: str, series: str, sop: str) -> str:
    return f"{root}/studies/{study}/series/{series}/instances/{sop}"


@dataclasses.dataclass
class SyntheticStudy:
    """A synthetic study as stored: its UIDs and the exact bytes of each instance."""

    spec: StudySpec
    instances: dict[str, tuple[str, bytes]]  # SOP Instance UID -> (Series Instance UID, Part 10 bytes)

    @property
    def study_uid(self) -> str:
        return self.spec.study_uid

    @property
    def series_uids(self) -> list[str]:
        return list(dict.fromkeys(series for series, _ in self.instances.values()))

    def in_series(self, series_uid: str) -> dict[str, bytes]:
        return {sop: data for sop, (series, data) in self.instances.items() if series == series_uid}

    @property
    def parts(self) -> list[bytes]:
        return [data for _, data in self.instances.values()]


def make_study(spec: StudySpec | None = None, modalities: tuple[str, ...] | None = None,
               instances_per_series: int | None = None) -> SyntheticStudy:
    """A synthetic study: one series per entry of `modalities` (default: spec.series_count of spec.modality)."""
    spec = spec or StudySpec(rows=16, columns=16)
    if instances_per_series is not None:
        spec = dataclasses.replace(spec, instances_per_series=instances_per_series)
    modalities = modalities or (spec.modality,) * spec.series_count
    instances: dict[str, tuple[str, bytes]] = {}
    for number, modality in enumerate(modalities, start=1):
        series_uid = new_uid()
        series_spec = dataclasses.replace(spec, modality=modality)
        for instance_number in range(1, spec.instances_per_series + 1):
            sop = new_uid()
            instances[sop] = (series_uid, synthetic_instance(series_spec, series_uid, number, instance_number, sop))
    return SyntheticStudy(spec, instances)


def store_study(http: httpx.Client, root: str, study: SyntheticStudy) -> SyntheticStudy:
    response = stow(http, root, study.parts)
    assert response.status_code == 200, (response.status_code, response.text[:500])
    return study


def edited(data: bytes, **changes) -> bytes:
    """`data` re-encoded with some attributes changed (None deletes the attribute); file meta
    keywords (group 0002) change the file meta."""
    dataset = pydicom.dcmread(io.BytesIO(data))
    for keyword, value in changes.items():
        target = dataset.file_meta if keyword.startswith(("MediaStorage", "TransferSyntax")) else dataset
        if value is None:
            if keyword in target:
                delattr(target, keyword)
        else:
            setattr(target, keyword, value)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()

