"""The measurements, each against any DICOMweb service root (PS3.18): STOW-RS throughput,
QIDO-RS and metadata latency, WADO-RS retrieve throughput and frame latency, and the
server's peak memory while they run."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import httpx

from bench.cpu import CpuMeter
from bench.metrics import MB, Metric, headline_metrics
from bench.peak_rss import PeakRssSampler
from bench.scale import Scale
from bench.server_process import ServerExited, ServerUnderTest, process_alive
from bench.studies import BenchStudies, InstanceRef, StowRequest
from bench.timing import Budget, LatencySummary, measure_latency
from dicomweb.multipart import MediaType

log = logging.getLogger("bench")

DICOM_JSON = "application/dicom+json"
ACCEPT_INSTANCES = 'multipart/related; type="application/dicom"; transfer-syntax=*'
ACCEPT_FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
# Compression off on both sides: over loopback it is pure cost, and servers differ in
# whether they apply it (Orthanc gzips JSON and frames when asked).
NO_COMPRESSION = {"Accept-Encoding": "identity"}
REQUEST_TIMEOUT = httpx.Timeout(300.0, connect=10.0)
TRANSPORT_ERROR = 0  # the status recorded when no HTTP answer came back
STOW_REFERENCED_SOPS = "00081199"  # PS3.18 Table 10.5.3-1, ReferencedSOPSequence
RETRIEVE_STREAM_CHUNK = 256 * 1024
T = TypeVar("T")
R = TypeVar("R")


def new_client() -> httpx.Client:
    return httpx.Client(timeout=REQUEST_TIMEOUT, headers=NO_COMPRESSION)


@dataclass
class StowResult:
    requests: int = 0
    failed_requests: int = 0
    instances_stored: int = 0
    body_bytes: int = 0
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    timed_out: bool = False
    cpu: dict = field(default_factory=dict)  # bench.cpu.CpuUse while the requests ran

    @property
    def instances_per_second(self) -> float:
        return self.instances_stored / self.seconds if self.seconds else 0.0

    @property
    def megabytes_per_second(self) -> float:
        return self.body_bytes / MB / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "instances_per_second": self.instances_per_second,
            "megabytes_per_second": self.megabytes_per_second,
        }


def store_instances(
    root: str, requests: list[StowRequest], concurrency: int, budget: Budget, server_pid: int | None = None
) -> StowResult:
    """STOW-RS `POST {root}/studies` of `requests` from `concurrency` threads, each with its
    own connection, until the requests or the budget run out. Throughput counts only the
    instances the server says it stored (and the bodies of requests answered 200); the
    processor time of the server (`server_pid`), the clients and the machine is measured."""
    result = StowResult()
    batch = requests[: budget.count]

    def record(request: StowRequest, outcome: tuple[int, int]) -> None:
        status, stored = outcome
        result.requests += 1
        result.statuses[str(status)] = result.statuses.get(str(status), 0) + 1
        result.instances_stored += stored
        if status == 200:
            result.body_bytes += len(request.body)
        else:
            result.failed_requests += 1

    with CpuMeter(server_pid) as meter:
        result.seconds = spread_over_clients(batch, concurrency, budget.seconds,
                                             lambda client, request: _post_stow(client, root, request), record)
    result.cpu = meter.use.as_dict()
    result.timed_out = result.requests < len(batch)
    return result


def spread_over_clients(items: list[T], concurrency: int, seconds: float, send: Callable[[httpx.Client, T], R],
                        record: Callable[[T, R], None]) -> float:
    """`send(client, item)` for each of `items`, from `concurrency` threads with a connection
    each, until the items or `seconds` run out; `record(item, outcome)` runs under one lock.
    The clock starts once threads and connections exist (their start-up is not measured);
    returns the seconds from then until the last thread finished."""
    pending = iter(items)
    lock = threading.Lock()
    go = threading.Event()
    deadline = 0.0  # set when the clock starts
    clients = [new_client() for _ in range(concurrency)]

    def next_item() -> T | None:
        with lock:
            return next(pending, None) if time.monotonic() < deadline else None

    def worker(client: httpx.Client) -> None:
        go.wait()
        while (item := next_item()) is not None:
            outcome = send(client, item)
            with lock:
                record(item, outcome)

    threads = [threading.Thread(target=worker, args=(client,), daemon=True) for client in clients]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + seconds
    started = time.perf_counter()
    go.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for client in clients:
        client.close()
    return elapsed


def _post_stow(client: httpx.Client, root: str, request: StowRequest) -> tuple[int, int]:
    """(status, instances the server reports stored)."""
    try:
        response = client.post(
            f"{root}/studies",
            content=request.body,
            headers={"Content-Type": request.content_type, "Accept": DICOM_JSON},
        )
    except httpx.HTTPError as error:
        log.warning("STOW-RS transport error: %s", error)
        return TRANSPORT_ERROR, 0
    if response.status_code not in (200, 202):
        log.warning("STOW-RS answered %s: %s", response.status_code, response.text[:200])
        return response.status_code, 0
    try:
        referenced = response.json().get(STOW_REFERENCED_SOPS, {}).get("Value", [])
        return response.status_code, len(referenced)
    except ValueError:
        # No parseable body: a 200 means every instance was stored (PS3.18 10.5.3).
        stored = len(request.instances) if response.status_code == 200 else 0
        return response.status_code, stored


def _get_status(client: httpx.Client, url: str, accept: str, params: dict | None = None) -> int:
    """GET and read the whole body; the status, or TRANSPORT_ERROR."""
    try:
        response = client.get(url, params=params, headers={"Accept": accept})
        return response.status_code
    except httpx.HTTPError as error:
        log.warning("GET %s failed: %s", url, error)
        return TRANSPORT_ERROR


@dataclass(frozen=True)
class FirstAnswer:
    """What one untimed request before a latency loop shows: is the answer the right one?"""

    status: int
    content_type: str = ""
    body_bytes: int = 0
    json_items: int | None = None  # entries of a DICOM JSON array

    @classmethod
    def fetch(
        cls, client: httpx.Client, url: str, accept: str, params: dict | None = None
    ) -> FirstAnswer:
        response = None
        # One retry: a server that closed the connection after an earlier error should
        # not hide what this request answers.
        for _ in range(2):
            try:
                response = client.get(url, params=params, headers={"Accept": accept})
                break
            except httpx.HTTPError as error:
                log.warning("GET %s failed: %s", url, error)
        if response is None:
            return cls(TRANSPORT_ERROR)
        content_type = MediaType.parse(response.headers.get("content-type", "")).type
        items = None
        if response.status_code == 200 and content_type == DICOM_JSON:
            try:
                items = len(response.json())
            except ValueError:
                log.warning("GET %s: the DICOM JSON answer does not parse", url)
        return cls(response.status_code, content_type, len(response.content), items)


def query_latency(client: httpx.Client, root: str, params: dict, budget: Budget) -> dict:
    """QIDO-RS `GET {root}/studies?...`; p50/p95 and how many studies matched."""
    url = f"{root}/studies"
    first = FirstAnswer.fetch(client, url, DICOM_JSON, params)
    summary = measure_latency(lambda _: _get_status(client, url, DICOM_JSON, params), budget)
    return {"params": params, "first": asdict(first), **asdict(summary)}


def metadata_latency(client: httpx.Client, root: str, study_uid: str, budget: Budget) -> dict:
    """WADO-RS `GET {root}/studies/{uid}/metadata` as DICOM JSON; p50/p95."""
    url = f"{root}/studies/{study_uid}/metadata"
    first = FirstAnswer.fetch(client, url, DICOM_JSON)
    summary = measure_latency(lambda _: _get_status(client, url, DICOM_JSON), budget)
    return {"first": asdict(first), **asdict(summary)}


def retrieve_throughput(client: httpx.Client, root: str, study_uid: str, budget: Budget) -> dict:
    """WADO-RS `GET {root}/studies/{uid}` as multipart/related application/dicom in any
    transfer syntax, read as a stream; MB/s over all retrieves."""
    url = f"{root}/studies/{study_uid}"
    clock = budget.start()
    total_bytes, total_seconds, retrieves = 0, 0.0, 0
    seconds: list[float] = []
    statuses: dict[str, int] = {}
    content_type = ""
    while clock.take():
        started = time.perf_counter()
        received, status = 0, TRANSPORT_ERROR
        try:
            with client.stream("GET", url, headers={"Accept": ACCEPT_INSTANCES}) as response:
                status = response.status_code
                content_type = response.headers.get("content-type", "")
                for chunk in response.iter_raw(RETRIEVE_STREAM_CHUNK):
                    received += len(chunk)
        except httpx.HTTPError as error:
            log.warning("WADO-RS retrieve failed: %s", error)
        elapsed = time.perf_counter() - started
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        if status == 200:
            total_bytes += received
            total_seconds += elapsed
            retrieves += 1
            seconds.append(elapsed)
    return {
        "retrieves": retrieves,
        "bytes_per_retrieve": total_bytes // retrieves if retrieves else 0,
        "megabytes_per_second": total_bytes / MB / total_seconds if total_seconds else 0.0,
        "content_type": MediaType.parse(content_type).type if content_type else "",
        "latency": asdict(LatencySummary.of(seconds, sum(statuses.values()) - retrieves, statuses)),
    }


def frame_latency(
    client: httpx.Client, root: str, instances: list[InstanceRef], budget: Budget
) -> dict:
    """WADO-RS `.../frames/1` as multipart/related application/octet-stream, cycling through
    `instances` so a cache of one instance does not answer every request."""

    def url(index: int) -> str:
        ref = instances[index % len(instances)]
        return (
            f"{root}/studies/{ref.study_uid}/series/{ref.series_uid}"
            f"/instances/{ref.sop_uid}/frames/1"
        )

    first = FirstAnswer.fetch(client, url(0), ACCEPT_FRAMES)
    summary = measure_latency(lambda i: _get_status(client, url(i), ACCEPT_FRAMES), budget)
    return {"first": asdict(first), **asdict(summary)}


def run_workload(
    server: ServerUnderTest, studies: BenchStudies, scale: Scale, disk_ceiling: dict | None = None
) -> tuple[list[Metric], dict]:
    """Every measurement in order against a fresh (or at least writable) service root.
    `disk_ceiling` (bench.disk, for a server on this machine) is reported beside the STOW
    figures. Returns the headline metrics and the full details."""
    root = server.dicomweb_root.rstrip("/")
    details: dict = {"target": server.name, "root": root, "scale": scale.name}
    if disk_ceiling is not None:
        details["disk_ceiling"] = disk_ceiling

    def checkpoint() -> None:
        # A dead server would answer every remaining loop with connection errors.
        if server.pid and not process_alive(server.pid):
            raise ServerExited(server.name, details)

    sampler = PeakRssSampler(server.pid) if server.pid else None
    try:
        with sampler or nullcontext():
            _store_phase(root, server.pid, studies, scale, details, checkpoint)
            with new_client() as client:
                _read_phase(client, root, studies, scale, details, checkpoint)
    finally:
        if sampler:
            details["peak_rss_bytes"] = sampler.peak_bytes
            details["rss_samples"] = sampler.samples
    return headline_metrics(details, scale), details


def _store_phase(
    root: str, server_pid: int | None, studies: BenchStudies, scale: Scale, details: dict,
    checkpoint: Callable[[], None]
) -> None:
    corpus = {"64x64": studies.query_requests, "512x512": studies.large_requests}
    consumed = {size: 0 for size in corpus}
    phases = (
        ("64x64", 1, scale.stow_small_sequential),
        ("64x64", scale.concurrency, scale.stow_small_concurrent),
        ("512x512", 1, scale.stow_large_sequential),
        ("512x512", scale.concurrency, scale.stow_large_concurrent),
    )
    # One untimed request first, so neither server's cold start (imports, caches, first
    # connection) lands in the first measured phase.
    warm_up = store_instances(root, corpus["64x64"][:1], 1, Budget(count=1, seconds=60))
    consumed["64x64"] = warm_up.requests
    stow: dict = {"warm_up": {"concurrency": 1, **warm_up.as_dict()}}
    for size, concurrency, budget in phases:
        # Each phase stores requests no earlier phase stored: nothing is sent twice.
        result = store_instances(root, corpus[size][consumed[size] :], concurrency, budget, server_pid)
        consumed[size] += result.requests
        name = f"{size}_c{'N' if concurrency > 1 else '1'}"
        stow[name] = {"concurrency": concurrency, **result.as_dict()}
        details["stow"] = stow
        _log_stow(name, result)
        checkpoint()
    # The rest of the 64×64 corpus, metadata studies first, so the queries see ≥10,000
    # instances; stored at full concurrency and reported, but not a headline figure.
    rest = studies.metadata_requests + corpus["64x64"][consumed["64x64"] :]
    fill = store_instances(root, rest, scale.concurrency, scale.fill)
    stow["fill"] = {"concurrency": scale.concurrency, **fill.as_dict()}
    _log_stow("fill", fill)
    details["instances_indexed"] = sum(phase["instances_stored"] for phase in stow.values())
    checkpoint()


def _log_stow(name: str, result: StowResult) -> None:
    log.info(
        "STOW %-10s %4d requests %6d instances %7.1f inst/s %6.1f MB/s%s%s",
        name,
        result.requests,
        result.instances_stored,
        result.instances_per_second,
        result.megabytes_per_second,
        f" failed={result.failed_requests}" if result.failed_requests else "",
        " (time bound)" if result.timed_out else "",
    )


def _read_phase(
    client: httpx.Client,
    root: str,
    studies: BenchStudies,
    scale: Scale,
    details: dict,
    checkpoint: Callable[[], None],
) -> None:
    queries = {
        "studies_limit_100": {"limit": "100"},
        "studies_by_patient_id": {"PatientID": studies.patient_id_query},
        "studies_by_date_range": {"StudyDate": studies.date_range_query, "limit": "100"},
    }
    details["qido"] = {}
    for name, params in queries.items():
        details["qido"][name] = query_latency(client, root, params, scale.query)
        result = details["qido"][name]
        _log_latency(f"QIDO {name} ({result['first']['json_items']} matches)", result)
        checkpoint()
    details["metadata"] = {
        "small_study": metadata_latency(
            client, root, studies.metadata_small_study, scale.metadata_small
        ),
        "large_study": metadata_latency(
            client, root, studies.metadata_large_study, scale.metadata_large
        ),
        # What a viewer opens: a CT series of 512×512 instances (the study retrieved below).
        "ct_study": metadata_latency(client, root, studies.retrieve_study, scale.metadata_small),
    }
    for name, result in details["metadata"].items():
        _log_latency(f"metadata {name} ({result['first']['json_items']} inst)", result)
    checkpoint()
    details["retrieve"] = retrieve_throughput(client, root, studies.retrieve_study, scale.retrieve)
    log.info(
        "WADO study retrieve %.1f MB/s (%d × %.1f MB)",
        details["retrieve"]["megabytes_per_second"],
        details["retrieve"]["retrieves"],
        details["retrieve"]["bytes_per_retrieve"] / MB,
    )
    checkpoint()
    details["frames"] = frame_latency(client, root, studies.frame_instances, scale.frames)
    _log_latency("frames/1", details["frames"])


def _log_latency(name: str, result: dict) -> None:
    log.info(
        "%-40s p50 %8.1f ms  p95 %8.1f ms  n=%d errors=%d",
        name,
        result["p50_ms"],
        result["p95_ms"],
        result["samples"],
        result["errors"],
    )
