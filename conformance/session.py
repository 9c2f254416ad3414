"""One run of the conformance kit against one service root: the fresh study it stores, the
HTTP session with its request budget, and readers for what a DICOMweb server answers."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pydicom
from pydicom.datadict import tag_for_keyword

from conformance.corpus import Patient, StudySpec, new_uid, synthetic_instance
from dicomweb.multipart import MediaType, encode_related, new_boundary, read_parts

MAX_REQUESTS = 60
DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
OCTET_STREAM = "application/octet-stream"


class CheckFailed(Exception):
    pass


class CheckSkipped(Exception):
    pass


def expect(condition: Any, detail: str) -> None:
    if not condition:
        raise CheckFailed(detail)


# -- the study each run stores --------------------------------------------------------------------

@dataclass(frozen=True)
class KitInstance:
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    series_number: int
    instance_number: int
    part10: bytes
    pixel_data: bytes


@dataclass
class KitStudy:
    """A fresh 2-series, 4-instance study with a patient no other run shares."""

    spec: StudySpec
    instances: list[KitInstance]

    @classmethod
    def fresh(cls) -> KitStudy:
        token = new_uid().rsplit(".", 1)[-1][-10:]
        patient = Patient(name=f"OIXKIT{token}^Conformance", patient_id=f"OIXKIT-{token}")
        spec = StudySpec(patient=patient, series_count=2, instances_per_series=2, rows=16, columns=16,
                         accession_number=f"K{token}"[:16])
        instances = []
        for series_number in (1, 2):
            series_uid = new_uid()
            for instance_number in (1, 2):
                data = synthetic_instance(spec, series_uid, series_number, instance_number)
                dataset = pydicom.dcmread(io.BytesIO(data))
                instances.append(KitInstance(spec.study_uid, series_uid, dataset.SOPInstanceUID,
                                             dataset.SOPClassUID, series_number, instance_number, data,
                                             dataset.PixelData))
        return cls(spec, instances)

    @property
    def uid(self) -> str:
        return self.spec.study_uid

    @property
    def series_uids(self) -> list[str]:
        return sorted({i.series_uid for i in self.instances})

    def instance(self, sop_uid: str) -> KitInstance | None:
        return next((i for i in self.instances if i.sop_uid == sop_uid), None)


# -- one run against one service root --------------------------------------------------------------

@dataclass
class Session:
    root: str
    client: httpx.Client
    study: KitStudy
    max_requests: int = MAX_REQUESTS
    requests: int = 0
    stored: bool = False
    studies_to_delete: list[str] = field(default_factory=list)
    bulk_data_uri: str | None = None
    inline_pixel_data: bytes | None = None

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        """One request to `path` below the root (or an absolute URL); every request counts."""
        if self.requests >= self.max_requests:
            raise CheckFailed(f"request budget of {self.max_requests} used up")
        self.requests += 1
        url = path if path.startswith(("http://", "https://")) else f"{self.root}{path}"
        try:
            return self.client.request(method, url, **kwargs)
        except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
            # A server may drop a kept-alive connection (after a 500, say) just as the next request
            # goes out on it: a GET is idempotent, so it is sent once more on a new connection.
            if method != "GET" or self.requests >= self.max_requests:
                raise CheckFailed(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
            self.requests += 1
            try:
                return self.client.request(method, url, **kwargs)
            except httpx.HTTPError as again:
                raise CheckFailed(f"{method} {path}: {type(again).__name__}: {again}") from again
        except httpx.HTTPError as exc:
            raise CheckFailed(f"{method} {path}: {type(exc).__name__}: {exc}") from exc

    def require_stored(self) -> None:
        if not self.stored:
            raise CheckSkipped("needs the study that store_study could not store")

    def store(self, path: str, parts: list[bytes]) -> httpx.Response:
        boundary = new_boundary()
        body = b"".join(encode_related(parts, DICOM, boundary))
        return self.request("POST", path, content=body, headers={
            "Content-Type": f'multipart/related; type="{DICOM}"; boundary={boundary}',
            "Accept": DICOM_JSON,
        })

    def search(self, path: str, params: dict[str, str] | None = None) -> list[dict]:
        """A QIDO-RS response as its list of matches (PS3.18 10.6.3: 200 with matches, or 204)."""
        response = self.request("GET", path, params=params, headers={"Accept": DICOM_JSON})
        if response.status_code == 204:
            return []
        expect(response.status_code == 200, f"GET {path} {params or ''}: status {response.status_code}")
        expect(MediaType.parse(response.headers.get("content-type", "")).type == DICOM_JSON,
               f"GET {path}: Content-Type {response.headers.get('content-type')!r}, not {DICOM_JSON}")
        matches = orjson.loads(response.content)
        expect(isinstance(matches, list), f"GET {path}: the body is not a JSON array")
        return matches


# -- reading DICOM JSON and multipart/related -----------------------------------------------------

def tag(keyword: str) -> str:
    return f"{tag_for_keyword(keyword):08X}"


def first_value(dataset: dict, keyword: str) -> Any:
    element = dataset.get(tag(keyword)) or {}
    values = element.get("Value") or [None]
    value = values[0]
    return value.get("Alphabetic") if isinstance(value, dict) and "Alphabetic" in value else value


def json_object(response: httpx.Response) -> dict:
    """A response body that must be one DICOM JSON dataset (the Store Instances Response)."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise CheckFailed(f"the body is not JSON: {response.content[:80]!r}") from exc
    expect(isinstance(body, dict), f"the body is not a DICOM JSON dataset: {response.content[:80]!r}")
    return body


def missing_attributes(dataset: dict, keywords: tuple[str, ...]) -> list[str]:
    return [keyword for keyword in keywords if tag(keyword) not in dataset]


def related_parts(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/related body (PS3.18 8.6.1.2), headers and bytes each."""
    media = MediaType.parse(response.headers.get("content-type", ""))
    expect(media.type == "multipart/related",
           f"Content-Type {response.headers.get('content-type')!r} is not multipart/related")
    boundary = media.params.get("boundary")
    expect(boundary, "multipart/related response without a boundary parameter")
    parts: list[tuple[dict[str, str], bytes]] = []

    class Sink:
        def __init__(self, headers: dict[str, str]):
            self.headers, self.chunks = headers, []

        async def write(self, chunk: bytes) -> None:
            self.chunks.append(chunk)

        async def close(self) -> None:
            parts.append((self.headers, b"".join(self.chunks)))

    async def body():
        yield response.content

    try:
        asyncio.run(read_parts(body(), boundary, Sink))
    except ValueError as exc:
        raise CheckFailed(f"malformed multipart/related body: {exc}") from exc
    return parts


def sop_uid_of(part10: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(part10), stop_before_pixels=True).SOPInstanceUID)


def instance_path(instance: KitInstance) -> str:
    return f"/studies/{instance.study_uid}/series/{instance.series_uid}/instances/{instance.sop_uid}"


