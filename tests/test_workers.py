"""`oix serve --workers 2`: two server processes on one port and one data directory, on SQLite
and PostgreSQL. Stores from eight clients at once all land and stay searchable (the index's
writers queue across processes), /metrics counts what every worker answered, an audit search
includes reads the other worker served (PS3.15 A.5.3.7 events, DESIGN invariant 5), and a stop
writes every worker's buffered events."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conformance.corpus import StudySpec
from tests.dicomweb_requests import make_study, store_study
from tests.servers import OixServer, start_server, stop_server, wait_until_healthy

CLIENTS = 8
STUDIES = 16
TIMEOUT_SECONDS = 60.0


@pytest.fixture(scope="module")
def workers(start_dedicated_server) -> OixServer:
    return start_dedicated_server(args=("--workers", "2"))


def _worker_pids(server: OixServer) -> list[int]:
    """The supervisor's children that serve HTTP (each also has parser processes of its own)."""
    children = []
    for task in os.listdir(f"/proc/{server.pid}/task"):
        with open(f"/proc/{server.pid}/task/{task}/children") as listed:
            children += [int(pid) for pid in listed.read().split()]
    serving = []
    for pid in children:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            if b"resource_tracker" not in cmdline.read():
                serving.append(pid)
    return serving


def _answered(http: httpx.Client, method: str, route: str) -> float:
    """Requests /metrics counts for `method` and `route`, over every status."""
    prefix = f'oix_http_requests_total{{method="{method}",route="{route}"'
    return sum(float(line.rsplit(" ", 1)[1]) for line in http.get("/metrics").text.splitlines()
               if line.startswith(prefix))


def test_two_worker_processes_serve_one_port(workers):
    assert len(_worker_pids(workers)) == 2


def test_stores_from_eight_clients_at_once_all_land_and_are_counted_once(workers):
    """Every study of 16 (5 instances each) stored at once from 8 connections is found by
    QIDO-RS with all its instances, and /metrics adds up both workers' STOW counts."""
    root = workers.root()
    studies = [make_study(StudySpec(rows=16, columns=16, instances_per_series=5)) for _ in range(STUDIES)]
    clients = [httpx.Client(base_url=workers.base_url, timeout=TIMEOUT_SECONDS) for _ in range(CLIENTS)]
    try:
        before = _answered(clients[0], "POST", "/dicomweb/{org}/studies")
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(lambda pair: store_study(clients[pair[0] % CLIENTS], root, pair[1]), enumerate(studies)))
        for study in studies:
            found = clients[0].get(f"{root}/studies", params={"StudyInstanceUID": study.study_uid},
                                   headers={"Accept": "application/dicom+json"}).json()
            assert [row["00201208"]["Value"][0] for row in found] == [len(study.instances)]
        # Each worker answered some of them; a scrape answered by either counts all.
        assert _answered(clients[0], "POST", "/dicomweb/{org}/studies") - before == STUDIES
    finally:
        for client in clients:
            client.close()


def _read_metadata_from_eight_connections(server: OixServer, instances: int) -> list[str]:
    """Store a study, then read its metadata once from each of eight connections (they land on
    both workers); the request ids of the reads, each answered 200."""
    study = make_study(StudySpec(rows=16, columns=16, instances_per_series=instances))
    clients = [httpx.Client(base_url=server.base_url, timeout=TIMEOUT_SECONDS) for _ in range(CLIENTS)]
    try:
        store_study(clients[0], server.root(), study)
        url = f"{server.root()}/studies/{study.study_uid}/metadata"
        with ThreadPoolExecutor(CLIENTS) as pool:
            responses = list(pool.map(lambda client: client.get(url), clients))
    finally:
        for client in clients:
            client.close()
    assert {response.status_code for response in responses} == {200}
    return [response.headers["x-request-id"] for response in responses]


def _retrieve_events(http: httpx.Client, org: str) -> set[str]:
    events = http.get(f"/api/orgs/{org}/audit", params={"limit": 1000, "action": "retrieve"}).json()["events"]
    return {event["request_id"] for event in events}


def test_an_audit_search_includes_reads_served_by_either_worker(workers):
    """A search right after reads from eight connections finds the retrieve event of each."""
    ids = _read_metadata_from_eight_connections(workers, instances=2)
    with httpx.Client(base_url=workers.base_url, timeout=TIMEOUT_SECONDS) as http:
        assert set(ids) <= _retrieve_events(http, workers.orgs[0])


def test_a_stop_writes_the_events_every_worker_buffered(backend, tmp_path, request):
    """SIGTERM to the supervisor: both workers finish and write their buffered audit events,
    which a server started again on the same data directory finds."""
    database = request.getfixturevalue("postgresql_database") if backend == "postgresql" else None
    first = start_server(tmp_path / "data", backend=backend, database_url=database, orgs=("stopping",),
                         args=("--workers", "2"))
    try:
        ids = _read_metadata_from_eight_connections(first, instances=1)
    finally:
        stop_server(first)
    assert first.process.returncode == 0, first.log_tail()
    again = start_server(tmp_path / "data", backend=backend, database_url=database, orgs=())
    try:
        wait_until_healthy(again)
        with httpx.Client(base_url=again.base_url, timeout=TIMEOUT_SECONDS) as http:
            assert set(ids) <= _retrieve_events(http, "stopping")
    finally:
        stop_server(again)
