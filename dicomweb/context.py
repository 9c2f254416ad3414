"""What the DICOMweb routes are given: the archive they serve and the limits they enforce."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

from starlette.requests import Request

from exchange.archive import Archive


@dataclass(frozen=True)
class DicomWebLimits:
    max_request_bytes: int = 8 << 30  # one STOW request
    max_object_bytes: int = 4 << 30  # one object in it
    bulk_threshold: int = 1024  # binary values longer than this become BulkDataURIs
    max_query_results: int = 1000  # QIDO-RS default and maximum `limit`


# Checks received parts and makes their index records: `dicomweb.checks.check_parts` itself, or
# the same function run in a pool of parser processes (see `parser_pool`).
PartChecker = Callable[[list, "str | None", int], list]


@dataclass(frozen=True)
class DicomWebContext:
    archive: Archive
    limits: DicomWebLimits
    check_parts: PartChecker


class ParserPool:
    """Runs `dicomweb.checks.check_parts` in worker processes, one batch per request."""

    def __init__(self, workers: int):
        self.workers = workers
        self.executor = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("forkserver"))

    def start(self) -> None:
        """Start every worker now (the executor starts them on demand, each importing pydicom
        and numpy), so the first concurrent uploads do not wait for it."""
        from dicomweb.checks import check_parts

        futures = [self.executor.submit(check_parts, [], None, 0) for _ in range(self.workers)]
        for future in futures:
            future.result()

    def __call__(self, parts: list, study_uid: str | None, bulk_threshold: int) -> list:
        from dicomweb.checks import check_parts

        return self.executor.submit(check_parts, parts, study_uid, bulk_threshold).result()

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def context_of(request: Request) -> DicomWebContext:
    return request.app.state.dicomweb


def service_root(request: Request, org: str) -> str:
    """The absolute URL of an organisation's DICOMweb root, as this client reached us."""
    return f"{str(request.base_url).rstrip('/')}/dicomweb/{org}"
