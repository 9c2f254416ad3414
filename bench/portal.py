"""Portal page speed (issue 6): "each page renders in < 300 ms server time with 10,000 transfers
in the inbox". A fresh `oix serve`; synthetic studies of several patients stored over STOW-RS;
10,000 transfers made by the exchange's own `send_held` (each a real send: audit event, shared
index rows, transfer and study rows, delivered); then each page timed by loopback GETs.

    .venv/bin/python -m bench.portal [--transfers 10000] [--samples 20] [--keep]

Prints one JSON line: per page p50/p95/max of the loopback response time, in milliseconds."""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.oix_server import CLI_TIMEOUT_SECONDS, oix_executable
from bench.server_process import free_port, stop, wait_until_ready
from bench.timing import Budget, LatencySummary, measure_latency
from conformance.corpus import Patient, StudySpec, new_uid, synthetic_instance
from dicomweb.multipart import encode_related, new_boundary, related_content_type

log = logging.getLogger("bench")

SENDER, DESTINATION = "bench-sender", "bench-dest"
PATIENTS = 20
STUDIES_PER_PATIENT = 2
BUDGET_SECONDS = 60.0  # per page, at most
TARGET_MS = 300.0
DICOM = "application/dicom"
SEED_TIMEOUT_SECONDS = 1800.0
SEED_THREADS = 8


def _cli(env: dict, *args: str) -> str:
    return subprocess.run([oix_executable(), *args], env=env, check=True, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL).stdout


def store_studies(base: str) -> list[str]:
    """Synthetic CT studies (one series of 4 small images) of PATIENTS patients, over STOW-RS."""
    studies = []
    with httpx.Client(base_url=base, timeout=60) as http:
        for number in range(PATIENTS * STUDIES_PER_PATIENT):
            patient = Patient(name=f"Bench^Patient{number % PATIENTS:02d}", patient_id=f"BENCH{number % PATIENTS:04d}")
            spec = StudySpec(patient=patient, accession_number=f"ACC{number:05d}", seed=number)
            series = new_uid()
            parts = [synthetic_instance(spec, series, 1, index + 1) for index in range(spec.instances_per_series)]
            boundary = new_boundary()
            answer = http.post(f"/dicomweb/{SENDER}/studies", content=b"".join(encode_related(parts, DICOM, boundary)),
                               headers={"Content-Type": related_content_type(DICOM, boundary)})
            answer.raise_for_status()
            studies.append(spec.study_uid)
    return studies


def seed_transfers(data_dir: Path, studies: list[str], count: int) -> list[str]:
    """`count` transfers SENDER → DESTINATION through Transfers.send_held, urgencies mixed as an
    inbox sees them (mostly routine). Runs in this process on the server's own data directory."""
    from exchange.access import SYSTEM_REQUESTER
    from exchange.transfers import Urgency
    from oix.app import open_services
    from oix.settings import Settings

    services = open_services(Settings(data_dir=data_dir, parse_workers=0))
    urgencies = [Urgency.ROUTINE] * 17 + [Urgency.URGENT] * 2 + [Urgency.EMERGENCY]
    plan = list(itertools.islice(zip(itertools.cycle(studies), itertools.cycle(urgencies)), count))
    deadline = time.monotonic() + SEED_TIMEOUT_SECONDS

    def send(index: int) -> str | None:
        if time.monotonic() > deadline:
            return None
        study, urgency = plan[index]
        return services.transfers.send_held(SENDER, DESTINATION, [study], SYSTEM_REQUESTER, urgency=urgency,
                                            note=f"bench transfer {index}").transfer.id

    try:
        # Several senders at once, as a server sees them: their index commits share fsyncs.
        with ThreadPoolExecutor(SEED_THREADS) as pool:
            created = [transfer for transfer in pool.map(send, range(len(plan))) if transfer]
        services.audit.flush()
    finally:
        services.close()
    return created


def pages(transfer: str, patient: str) -> dict[str, tuple[str, int]]:
    """name → (path, expected status) of each portal page timed."""
    inbox, sent = f"/orgs/{DESTINATION}", f"/orgs/{SENDER}"
    admin = f"/orgs/{DESTINATION}/admin"
    return {
        "inbox": (f"{inbox}/inbox", 200),
        "inbox filtered": (f"{inbox}/inbox?urgency=emergency&patient={patient}", 200),
        "inbox page 50": (f"{inbox}/inbox?page=50", 200),
        "transfer": (f"{inbox}/transfers/{transfer}", 200),
        "sent": (f"{sent}/sent", 200),
        "send search": (f"{sent}/send?patient={patient}", 200),
        "audit": (f"{inbox}/audit", 200),
        "audit filtered": (f"{inbox}/audit?action=store&patient={patient}", 200),
        "audit failures": (f"{inbox}/audit?outcome=failure", 200),
        "admin": (admin, 200),
        "admin keys": (f"{admin}/keys", 200),
        "admin forwarding": (f"{admin}/forwarding", 200),
        "admin webhooks": (f"{admin}/webhooks", 200),
        "admin usage": (f"{admin}/usage", 200),
        "admin patient access": (f"{admin}/patient-access", 200),
    }


def time_pages(base: str, targets: dict[str, tuple[str, int]], samples: int) -> dict[str, LatencySummary]:
    found = {}
    with httpx.Client(base_url=base, timeout=60) as http:
        for name, (path, expected) in targets.items():
            http.get(path)  # warm: templates compiled, caches filled
            found[name] = measure_latency(lambda _i, path=path: http.get(path).status_code,
                                          Budget(samples, BUDGET_SECONDS), expected)
    return found


def run(transfers: int, samples: int, keep: bool) -> dict:
    data_dir = Path(tempfile.mkdtemp(prefix="oix-bench-portal-"))
    env = {**os.environ, "OIX_DATA_DIR": str(data_dir), "OIX_LOG_LEVEL": "warning"}
    log_path = data_dir.parent / f"{data_dir.name}.log"
    process = None
    try:
        for org in (SENDER, DESTINATION):
            _cli(env, "org", "add", org, f"Organisation {org}")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with open(log_path, "wb") as log_file:
            # Loopback without authentication (the embedded single-user mode): the pages render
            # as for an admin of both organisations, with no sign-in in the timing.
            process = subprocess.Popen([oix_executable(), "serve", "--host", "127.0.0.1", "--port", str(port),
                                        "--no-auth"], env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
        wait_until_ready(process, f"{base}/healthz", log_path)
        started = time.monotonic()
        studies = store_studies(base)
        created = seed_transfers(data_dir, studies, transfers)
        seeded_seconds = time.monotonic() - started
        timed = time_pages(base, pages(created[len(created) // 2], "BENCH0007"), samples)
    finally:
        if process is not None:
            stop(process)
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)
            log_path.unlink(missing_ok=True)
    return {
        "bench": "portal", "transfers": len(created), "studies": len(studies), "patients": PATIENTS,
        "seed_seconds": round(seeded_seconds, 1), "samples_per_page": samples, "target_ms": TARGET_MS,
        "pages": {name: {"p50_ms": round(summary.p50_ms, 1), "p95_ms": round(summary.p95_ms, 1),
                         "max_ms": round(summary.max_ms, 1), "errors": summary.errors, "statuses": summary.statuses}
                  for name, summary in timed.items()},
        "slower_than_target": sorted(name for name, summary in timed.items()
                                     if summary.errors or not summary.p95_ms < TARGET_MS),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=20, help="requests per page (bounded by time too)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory and log")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per timed request
    print(json.dumps(run(args.transfers, args.samples, args.keep)))


if __name__ == "__main__":
    main()
