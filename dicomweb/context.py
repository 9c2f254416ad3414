"""What the DICOMweb routes are given: the archive they serve and the limits they enforce."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from dicomweb.lru import LruCache
from exchange.archive import Archive

METADATA_CACHE_BYTES = 64 << 20


@dataclass(frozen=True)
class DicomWebLimits:
    max_request_bytes: int = 8 << 30  # one STOW request
    max_object_bytes: int = 4 << 30  # one object in it
    bulk_threshold: int = 1024  # binary values longer than this become BulkDataURIs
    max_query_results: int = 1000  # QIDO-RS default and maximum `limit`


# Checks received parts and makes their index records: `dicomweb.checks.check_parts` itself, or
# the same function run in parser processes (`dicomweb.parser_pool.ParserPool`).
PartChecker = Callable[[list, "str | None", int], list]


@dataclass(frozen=True)
class CachedMetadata:
    """A metadata response as served, valid while the index's data version stays `version`."""

    version: int
    body: bytes
    count: int  # instances in it, and the Patient ID of its study: for the audit event
    patient_id: str


@dataclass(frozen=True)
class DicomWebContext:
    archive: Archive
    limits: DicomWebLimits
    check_parts: PartChecker
    # Recent metadata responses by (org, study, series, instance, service root); see wado.py.
    metadata: LruCache[CachedMetadata] = field(default_factory=lambda: LruCache(METADATA_CACHE_BYTES))


def context_of(request: Request) -> DicomWebContext:
    return request.app.state.dicomweb


async def require_organisation(context: DicomWebContext, org: str) -> None:
    """404 (UnknownOrganisation) for a service root of no organisation; asks the index only
    for a code this process has not seen exist."""
    if not context.archive.organisation_known(org):
        await run_in_threadpool(context.archive.require_organisation, org)


def service_root(request: Request, org: str) -> str:
    """The absolute URL of an organisation's DICOMweb root, as this client reached us."""
    return f"{str(request.base_url).rstrip('/')}/dicomweb/{org}"
