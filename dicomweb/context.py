"""What the DICOMweb routes are given: the archive they serve and the limits they enforce."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from exchange.archive import Archive


@dataclass(frozen=True)
class DicomWebLimits:
    max_request_bytes: int = 8 << 30  # one STOW request
    max_object_bytes: int = 4 << 30  # one object in it
    bulk_threshold: int = 1024  # binary values longer than this become BulkDataURIs
    max_query_results: int = 1000  # QIDO-RS default and maximum `limit`


@dataclass(frozen=True)
class DicomWebContext:
    archive: Archive
    limits: DicomWebLimits


def context_of(request: Request) -> DicomWebContext:
    return request.app.state.dicomweb


def service_root(request: Request, org: str) -> str:
    """The absolute URL of an organisation's DICOMweb root, as this client reached us."""
    return f"{str(request.base_url).rstrip('/')}/dicomweb/{org}"
