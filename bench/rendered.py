"""`python -m bench.rendered`: rendered JPEG frames per second of a 512×512 16-bit CT from a live
OIX on loopback (PS3.18 10.4.1.1.7): every frame rendered afresh (cold), with one client and with
several; the same frames again (from the server's cache); and thumbnails. Prints one JSON line."""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import time
from dataclasses import dataclass, field

import httpx
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from bench.oix_server import running_oix
from bench.timing import Budget, LatencySummary
from bench.workload import new_client, spread_over_clients
from dicomweb.multipart import encode_related, new_boundary, related_content_type

log = logging.getLogger("bench")

# pydicom-data's 693_UNCR.dcm: a real 512×512 CT, 16 bits allocated (14 stored), signed, with
# Rescale Slope/Intercept and a window; 693_J2KR.dcm is the same image as lossless JPEG 2000.
SOURCES = {"native": "693_UNCR.dcm", "jpeg2000": "693_J2KR.dcm"}
STOW_BATCH = 20
PHASE_SECONDS = 60.0


@dataclass
class Phase:
    name: str
    clients: int
    requests: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)
    statuses: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict:
        latency = LatencySummary.of(self.latencies, self.requests - len(self.latencies), self.statuses)
        return {"phase": self.name, "clients": self.clients, "requests": self.requests,
                "frames_per_second": round(len(self.latencies) / self.seconds, 1) if self.seconds else 0.0,
                "p50_ms": round(latency.p50_ms, 1), "p95_ms": round(latency.p95_ms, 1),
                "statuses": self.statuses}


def ct_instances(source: str, count: int) -> tuple[str, str, list[tuple[str, bytes]]]:
    """`count` copies of the CT as distinct instances of one series (new SOP Instance UIDs, so
    new blobs: the server's cache, keyed by blob, cannot answer a first request)."""
    original = pydicom.dcmread(get_testdata_file(source))
    study, series = generate_uid(), generate_uid()
    instances = []
    for number in range(1, count + 1):
        original.StudyInstanceUID, original.SeriesInstanceUID = study, series
        original.SOPInstanceUID = original.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        original.InstanceNumber = number
        buffer = io.BytesIO()
        original.save_as(buffer, enforce_file_format=True)
        instances.append((original.SOPInstanceUID, buffer.getvalue()))
    return study, series, instances


def store(root: str, instances: list[tuple[str, bytes]]) -> None:
    with new_client() as client:
        for start in range(0, len(instances), STOW_BATCH):
            boundary = new_boundary()
            body = b"".join(encode_related([data for _, data in instances[start:start + STOW_BATCH]],
                                           "application/dicom", boundary))
            response = client.post(f"{root}/studies", content=body,
                                   headers={"Content-Type": related_content_type("application/dicom", boundary)})
            if response.status_code != 200:
                raise RuntimeError(f"STOW-RS answered {response.status_code}: {response.text[:300]}")


def run_phase(name: str, urls: list[str], clients: int, budget: Budget) -> Phase:
    """GET each of `urls` once (image/jpeg), spread over `clients` threads with a connection
    each, until the URLs, the count or the time run out."""
    phase = Phase(name, clients)

    def get(client: httpx.Client, url: str) -> tuple[str, bool, float]:
        started = time.perf_counter()
        try:
            response = client.get(url, headers={"Accept": "image/jpeg"})
            status, ok = str(response.status_code), response.status_code == 200 and bool(response.content)
        except httpx.HTTPError:
            status, ok = "0", False
        return status, ok, time.perf_counter() - started

    def record(_url: str, outcome: tuple[str, bool, float]) -> None:
        status, ok, elapsed = outcome
        phase.requests += 1
        phase.statuses[status] = phase.statuses.get(status, 0) + 1
        if ok:
            phase.latencies.append(elapsed)

    phase.seconds = spread_over_clients(urls[:budget.count], clients, budget.seconds, get, record)
    return phase


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rendered", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200,
                        help="distinct instances stored and rendered per cold phase (default 200)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--source", choices=sorted(SOURCES), default="native",
                        help="the CT as stored: native (Explicit VR Little Endian) or jpeg2000 (lossless)")
    parser.add_argument("--root", help="an OIX service root someone else started, instead of a new server")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)
    count = arguments.frames
    study, series, instances = ct_instances(SOURCES[arguments.source], 2 * count)
    budget = Budget(count, PHASE_SECONDS)

    def measure(root: str) -> list[Phase]:
        store(root, instances)
        log.info("stored %d instances of %s", len(instances), SOURCES[arguments.source])
        rendered = [f"{root}/studies/{study}/series/{series}/instances/{sop}/rendered" for sop, _ in instances]
        thumbnails = [url.removesuffix("/rendered") + "/thumbnail" for url in rendered]
        # Cold phases take instances no earlier phase rendered; the cached one repeats the first's.
        return [run_phase("cold", rendered[:count], 1, budget),
                run_phase("cold", rendered[count:], arguments.clients, budget),
                run_phase("cached", rendered[:count], arguments.clients, budget),
                run_phase("thumbnail cold", thumbnails[:count], arguments.clients, budget)]

    if arguments.root:
        phases = measure(arguments.root)
    else:
        with running_oix() as server:
            phases = measure(server.dicomweb_root)
    print(json.dumps({"bench": "rendered", "image": f"{SOURCES[arguments.source]} (512x512 CT, 16-bit)",
                      "media_type": "image/jpeg", "phases": [phase.summary() for phase in phases]}))
    return 0 if all(set(phase.statuses) == {"200"} for phase in phases) else 1


if __name__ == "__main__":
    sys.exit(main())
