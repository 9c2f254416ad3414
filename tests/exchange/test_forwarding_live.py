"""Auto-forwarding to a real PACS (issue "The exchange"): a live `oix serve` forwards the studies an
organisation receives to Orthanc with its DICOMweb plugin, over STOW-RS; every instance arrives,
byte for byte; with Orthanc stopped mid-way, or OIX restarted while Orthanc is away, forwarding
resumes and completes when it returns; a rule forwards only the transfers it names."""

from __future__ import annotations

import io
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.dicomweb_requests import stow
from tests.orthanc import Orthanc
from tests.servers import OixServer, new_org_slug, start_server, stop_server

BATCH = 2  # instances per STOW-RS request: a stop can fall between two requests of one study
SERVER_ENV = {"OIX_FORWARD_BACKOFF_SECONDS": "0.2", "OIX_FORWARD_BACKOFF_MAX_SECONDS": "1",
              "OIX_FORWARD_TIMEOUT": "5", "OIX_FORWARD_BATCH": str(BATCH)}
WAIT_SECONDS = 30.0


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory) -> Iterator[Orthanc]:
    pacs = Orthanc(tmp_path_factory.mktemp("orthanc"))
    pacs.start()
    try:
        yield pacs
    finally:
        pacs.stop()


@pytest.fixture
def pacs(orthanc: Orthanc) -> Orthanc:
    orthanc.start()  # running at the start of every test, whatever the one before did to it
    return orthanc


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[OixServer]:
    running = start_server(tmp_path_factory.mktemp("forwarding") / "data", auth=True, env=SERVER_ENV)
    try:
        yield running
    finally:
        stop_server(running)


class Party:
    """An organisation of the test's own, with a sender key and an admin key."""

    def __init__(self, server: OixServer, prefix: str):
        self.slug = new_org_slug(prefix)
        server.cli("org", "add", self.slug, f"{prefix.title()} Hospital")
        self.sender_key = server.cli("key", "create", "--org", self.slug, "--role", "sender").strip()
        self.admin_key = server.cli("key", "create", "--org", self.slug, "--role", "admin").strip()
        self.connect(server)

    def connect(self, server: OixServer) -> None:
        self.http = httpx.Client(base_url=server.base_url, timeout=60,
                                 headers={"Authorization": f"Bearer {self.sender_key}"})
        self.admin = httpx.Client(base_url=server.base_url, timeout=60,
                                  headers={"Authorization": f"Bearer {self.admin_key}"})

    def close(self) -> None:
        self.http.close()
        self.admin.close()

    def forward_to(self, pacs: Orthanc, **rule) -> dict:
        added = self.admin.post(f"/api/orgs/{self.slug}/forwarding",
                                json={"target_url": pacs.dicomweb_root, "name": "Orthanc", **rule})
        assert added.status_code == 201, added.text
        return added.json()

    def forwarding(self, transfer_id: str) -> dict:
        """The rules, this transfer's forwarding jobs, and its per-instance records."""
        response = self.admin.get(f"/api/orgs/{self.slug}/forwarding", params={"transfer": transfer_id})
        assert response.status_code == 200, response.text
        found = response.json()
        found["jobs"] = [job for job in found["jobs"] if job["transfer"] == transfer_id]
        return found

    def send(self, destination: Party, objects: list[bytes], urgency: str = "") -> str:
        """`objects` through the outbox to `destination`, then completed: the transfer is delivered."""
        root = f"/dicomweb/{self.slug}/outbox/{destination.slug}" + (f"/{urgency}" if urgency else "")
        response = stow(self.http, root, objects)
        assert response.status_code == 200, response.text
        [transfer] = [t for t in destination.inbox() if t["state"] == "receiving" and t["sender"] == self.slug]
        completed = self.http.post(f"/api/orgs/{self.slug}/transfers/{transfer['id']}/complete")
        assert completed.json()["state"] == "delivered", completed.text
        return transfer["id"]

    def inbox(self) -> list[dict]:
        response = self.http.get(f"/api/orgs/{self.slug}/inbox")
        assert response.status_code == 200, response.text
        return response.json()["transfers"]

    def transfer_state(self, transfer_id: str) -> str:
        return self.http.get(f"/api/orgs/{self.slug}/transfers/{transfer_id}").json()["state"]


@pytest.fixture
def parties(server) -> Iterator[tuple[Party, Party]]:
    made = (Party(server, "district"), Party(server, "tertiary"))
    yield made
    for party in made:
        party.close()


def study(count: int, patient_id: str) -> tuple[str, dict[str, bytes]]:
    """A new study of `count` real CT instances (pydicom's CT_small.dcm, new UIDs), by SOP Instance UID."""
    study_uid, series_uid = generate_uid(), generate_uid()
    made = {}
    for number in range(1, count + 1):
        dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        dataset.PatientID, dataset.StudyInstanceUID, dataset.SeriesInstanceUID = patient_id, study_uid, series_uid
        dataset.InstanceNumber = number
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        out = io.BytesIO()
        dataset.save_as(out, enforce_file_format=True)
        made[dataset.SOPInstanceUID] = out.getvalue()
    return study_uid, made


def wait_for(what: str, check: Callable[[], object], timeout: float = WAIT_SECONDS,
             seen: Callable[[], object] | None = None, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"{what} within {timeout:.0f} s" + (f"; last seen: {seen()}" if seen else ""))


def by_state(status: dict) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {"pending": set(), "sent": set(), "failed": set()}
    for record in status["instances"]:
        found[record["state"]].add(record["sop_instance_uid"])
    return found


# -- the tests ------------------------------------------------------------------------------

def test_every_instance_of_a_delivered_study_arrives_in_orthanc_and_the_transfer_is_imported(parties, pacs):
    district, tertiary = parties
    rule = tertiary.forward_to(pacs, mark_imported=True, authorization="Bearer not-checked-by-this-orthanc")
    assert rule["authorization"] is True and "not-checked" not in str(rule)
    study_uid, sent = study(6, f"P{secrets.token_hex(4)}")
    transfer_id = district.send(tertiary, list(sent.values()))

    wait_for("the transfer imported", lambda: tertiary.transfer_state(transfer_id) == "imported")
    assert sorted(pacs.sop_instance_uids(study_uid)) == sorted(sent)
    assert all(pacs.instance_bytes(uid) == data for uid, data in sent.items())  # byte for byte
    status = tertiary.forwarding(transfer_id)
    [job] = status["jobs"]
    assert (job["state"], job["attempts"], job["instances"]) == ("succeeded", 1,
                                                                 {"pending": 0, "sent": 6, "failed": 0})
    assert by_state(status)["sent"] == set(sent)
    assert all(record["attempts"] == 1 and record["sent_at"] for record in status["instances"])
    history = tertiary.http.get(f"/api/orgs/{tertiary.slug}/transfers/{transfer_id}").json()["history"]
    assert (history[-1]["state"], history[-1]["actor"]) == ("imported", "oix")


def test_with_orthanc_stopped_mid_way_forwarding_resumes_and_completes_when_it_returns(parties, pacs):
    district, tertiary = parties
    tertiary.forward_to(pacs, mark_imported=True)
    study_uid, sent = study(16, f"P{secrets.token_hex(4)}")
    before = pacs.instance_count()
    transfer_id = district.send(tertiary, list(sent.values()))

    # Watched closely: the study takes Orthanc about half a second, and the stop must fall inside it.
    wait_for("the first instances in Orthanc", lambda: pacs.instance_count() > before, timeout=10, interval=0.002)
    pacs.crash()
    retrying = wait_for("a retry to fail while Orthanc is away", lambda: [
        status for status in [tertiary.forwarding(transfer_id)]
        if status["jobs"] and status["jobs"][0]["attempts"] >= 2 and status["jobs"][0]["state"] == "queued"],
        seen=lambda: tertiary.forwarding(transfer_id)["jobs"])[0]
    states = by_state(retrying)
    # Orthanc holds part of the study; OIX counts as sent only what Orthanc confirmed before the
    # stop (possibly nothing, when the stop fell between Orthanc storing and answering).
    assert states["pending"], f"not stopped mid-way: {retrying['jobs']}"
    assert states["sent"] | states["pending"] == set(sent) and not states["failed"]  # nothing lost
    assert "could not reach" in retrying["jobs"][0]["last_error"]
    assert tertiary.transfer_state(transfer_id) == "delivered"

    pacs.start()  # the same port and storage
    wait_for("the transfer imported", lambda: tertiary.transfer_state(transfer_id) == "imported")
    assert sorted(pacs.sop_instance_uids(study_uid)) == sorted(sent)
    status = tertiary.forwarding(transfer_id)
    assert status["jobs"][0]["state"] == "succeeded" and by_state(status)["sent"] == set(sent)
    # Only what was pending went again: an instance sent before the stop was sent once.
    assert all(record["attempts"] == 1 for record in status["instances"]
               if record["sop_instance_uid"] in states["sent"])


def test_queued_forwarding_survives_a_restart_of_the_oix_server(tmp_path: Path, pacs):
    server = start_server(tmp_path / "data", auth=True, env=SERVER_ENV)
    district, tertiary = Party(server, "district"), Party(server, "tertiary")
    try:
        tertiary.forward_to(pacs, mark_imported=True)
        study_uid, sent = study(5, f"P{secrets.token_hex(4)}")
        pacs.stop()
        transfer_id = district.send(tertiary, list(sent.values()))
        wait_for("a failed attempt", lambda: tertiary.forwarding(transfer_id)["jobs"][0]["last_error"])
        stop_server(server)

        pacs.start()
        server = start_server(tmp_path / "data", auth=True, env=SERVER_ENV)
        for party in (district, tertiary):
            party.close()
            party.connect(server)
        wait_for("the transfer imported", lambda: tertiary.transfer_state(transfer_id) == "imported")
        assert sorted(pacs.sop_instance_uids(study_uid)) == sorted(sent)
    finally:
        district.close()
        tertiary.close()
        stop_server(server)


def test_an_emergency_only_rule_does_not_forward_a_routine_transfer(parties, pacs):
    district, tertiary = parties
    tertiary.forward_to(pacs, match={"urgency": ["emergency"]})
    routine_study, routine = study(2, f"P{secrets.token_hex(4)}")
    routine_id = district.send(tertiary, list(routine.values()))
    assert tertiary.forwarding(routine_id)["jobs"] == []  # queued with the delivery, or never

    emergency_study, emergency = study(2, f"P{secrets.token_hex(4)}")
    emergency_id = district.send(tertiary, list(emergency.values()), urgency="emergency")
    wait_for("the emergency in Orthanc", lambda: len(pacs.sop_instance_uids(emergency_study)) == 2)
    assert pacs.sop_instance_uids(routine_study) == []
    assert tertiary.forwarding(routine_id)["instances"] == []
    assert tertiary.transfer_state(emergency_id) == "delivered"  # this rule does not mark imported


def test_a_rule_is_added_listed_and_removed_by_the_organisations_admin(parties, pacs):
    _, tertiary = parties
    refused = tertiary.admin.post(f"/api/orgs/{tertiary.slug}/forwarding",
                                  json={"target_url": "https://user:pw@pacs.example/dicom-web"})
    assert refused.status_code == 400 and "carries credentials" in refused.json()["error"]
    rule = tertiary.forward_to(pacs, match={"modality": ["ct", "MR"]})
    assert rule["match"] == {"urgency": [], "modality": ["CT", "MR"], "sender": []}
    listed = tertiary.admin.get(f"/api/orgs/{tertiary.slug}/forwarding").json()["rules"]
    assert [r["id"] for r in listed] == [rule["id"]]
    assert tertiary.admin.delete(f"/api/orgs/{tertiary.slug}/forwarding/{rule['id']}").status_code == 204
    assert tertiary.admin.delete(f"/api/orgs/{tertiary.slug}/forwarding/{rule['id']}").status_code == 404
    assert tertiary.admin.get(f"/api/orgs/{tertiary.slug}/forwarding").json()["rules"] == []
    assert tertiary.http.get(f"/api/orgs/{tertiary.slug}/forwarding").status_code == 403  # a sender
