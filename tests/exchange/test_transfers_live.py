"""Transfers between organisations on a live server (issue The exchange): the outbox STOW
root, sending from holdings, inbox and outbox order, the lifecycle both sides see, isolation
from a third organisation, and clear errors that lose nothing."""

from __future__ import annotations

import io
import json
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime, timezone

import httpx
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from exchange.reports import basic_text_sr, encapsulated_pdf
from exchange.webhooks import verify_signature
from tests.dicomweb_requests import stow
from tests.exchange.webhook_receiver import Answer, receiver
from tests.pdf_documents import minimal_pdf
from tests.servers import OixServer, new_org_slug, new_postgresql_database, start_server, stop_server

IDLE_SECONDS = 1.5
WEBHOOK_TIMEOUT_SECONDS = 1.0


@pytest.fixture(scope="module")
def server(backend: str, tmp_path_factory) -> Iterator[OixServer]:
    """A server of the module's own on each index backend (SQLite and PostgreSQL)."""
    with ExitStack() as cleanup:
        database = cleanup.enter_context(new_postgresql_database()) if backend == "postgresql" else None
        running = start_server(tmp_path_factory.mktemp("transfers") / "data", backend=backend,
                               database_url=database, auth=True,
                               env={"OIX_TRANSFER_IDLE_SECONDS": str(IDLE_SECONDS),
                                    "OIX_WEBHOOK_TIMEOUT": str(WEBHOOK_TIMEOUT_SECONDS)})
        cleanup.callback(stop_server, running)
        yield running


class Party:
    """An organisation of the test's own, with a sender key and an admin key."""

    def __init__(self, server: OixServer, prefix: str):
        self.server = server
        self.slug = new_org_slug(prefix)
        server.cli("org", "add", self.slug, f"{prefix.title()} Hospital")
        self.sender = server.cli("key", "create", "--org", self.slug, "--role", "sender").strip()
        self.admin = server.cli("key", "create", "--org", self.slug, "--role", "admin").strip()
        self.http = httpx.Client(base_url=server.base_url, timeout=60,
                                 headers={"Authorization": f"Bearer {self.sender}"})

    def dicomweb(self) -> DICOMwebClient:
        return DICOMwebClient(url=f"{self.server.base_url}/dicomweb/{self.slug}",
                              headers={"Authorization": f"Bearer {self.sender}"})

    def inbox(self, **params) -> list[dict]:
        response = self.http.get(f"/api/orgs/{self.slug}/inbox", params=params)
        assert response.status_code == 200, response.text
        return response.json()["transfers"]

    def outbox(self, **params) -> list[dict]:
        response = self.http.get(f"/api/orgs/{self.slug}/outbox", params=params)
        assert response.status_code == 200, response.text
        return response.json()["transfers"]

    def transfer(self, transfer_id: str) -> httpx.Response:
        return self.http.get(f"/api/orgs/{self.slug}/transfers/{transfer_id}")

    def step(self, transfer_id: str, step: str, **body) -> httpx.Response:
        return self.http.post(f"/api/orgs/{self.slug}/transfers/{transfer_id}/{step}", json=body)


@pytest.fixture
def parties(server) -> Iterator[tuple[Party, Party, Party]]:
    made = (Party(server, "district"), Party(server, "tertiary"), Party(server, "bystander"))
    yield made
    for party in made:
        party.http.close()


def instance(patient_id: str, study_uid: str) -> bytes:
    """pydicom's CT_small.dcm as a new instance of `study_uid` for `patient_id`."""
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    dataset.PatientID, dataset.StudyInstanceUID = patient_id, study_uid
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_an_emergency_sent_through_the_outbox_is_first_in_the_inbox_and_both_sides_see_it_move(parties):
    district, tertiary, _ = parties
    patient = f"P{secrets.token_hex(4)}"
    routine = stow(district.http, f"/dicomweb/{district.slug}/outbox/{tertiary.slug}",
                   [instance(f"R{secrets.token_hex(4)}", generate_uid())])
    assert routine.status_code == 200
    studies = [generate_uid(), generate_uid()]
    sent = [instance(patient, studies[0]), instance(patient, studies[0]), instance(patient, studies[1])]
    response = stow(district.http, f"/dicomweb/{district.slug}/outbox/{tertiary.slug}/emergency", sent,
                    headers={"X-OIX-Note": "Trauma CT, please review now", "X-OIX-Recipient": "On-call neurosurgery"})
    assert response.status_code == 200, response.text

    first = tertiary.inbox()[0]
    assert (first["urgency"], first["patient_id"], first["state"], first["sender"]) == \
        ("emergency", patient, "receiving", district.slug)
    assert (first["note"], first["intended_recipient"]) == ("Trauma CT, please review now", "On-call neurosurgery")
    transfer_id = first["id"]
    assert [t["id"] for t in district.outbox(urgency="emergency")] == [transfer_id]
    detail = tertiary.transfer(transfer_id).json()
    assert {s["study_uid"]: s["instances"] for s in detail["studies"]} == {studies[0]: 2, studies[1]: 1}

    assert district.step(transfer_id, "complete").json()["state"] == "delivered"
    received = tertiary.dicomweb().retrieve_study(studies[0])
    assert sorted(ds.SOPInstanceUID for ds in received) == sorted(
        pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID for data in sent[:2])
    assert tertiary.step(transfer_id, "viewed").json()["state"] == "viewed"
    history = district.transfer(transfer_id).json()["history"]
    assert [event["state"] for event in history] == ["receiving", "delivered", "viewed"]
    assert history[-1]["org"] == tertiary.slug


def test_the_received_copies_are_byte_identical_to_what_was_sent(parties):
    district, tertiary, _ = parties
    study = generate_uid()
    sent = instance(f"P{secrets.token_hex(4)}", study)
    assert stow(district.http, f"/dicomweb/{district.slug}/outbox/{tertiary.slug}", [sent]).status_code == 200
    sop = pydicom.dcmread(io.BytesIO(sent)).SOPInstanceUID
    series = pydicom.dcmread(io.BytesIO(sent)).SeriesInstanceUID
    got = tertiary.http.get(f"/dicomweb/{tertiary.slug}/studies/{study}/series/{series}/instances/{sop}",
                            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    assert got.status_code == 200 and sent in got.content


def test_a_stream_that_mixes_patients_opens_one_transfer_each(parties):
    district, tertiary, _ = parties
    patients = [f"P{secrets.token_hex(4)}", f"P{secrets.token_hex(4)}"]
    stow(district.http, f"/dicomweb/{district.slug}/outbox/{tertiary.slug}",
         [instance(patients[0], generate_uid()), instance(patients[1], generate_uid())])
    assert sorted(t["patient_id"] for t in tertiary.inbox()) == sorted(patients)


def test_a_quiet_outbox_stream_is_delivered_after_the_idle_time(parties):
    district, tertiary, _ = parties
    stow(district.http, f"/dicomweb/{district.slug}/outbox/{tertiary.slug}",
         [instance(f"P{secrets.token_hex(4)}", generate_uid())])
    deadline = time.monotonic() + 20 * IDLE_SECONDS
    while time.monotonic() < deadline and tertiary.inbox()[0]["state"] != "delivered":
        time.sleep(0.25)
    transfer = tertiary.inbox()[0]
    assert transfer["state"] == "delivered"
    assert tertiary.transfer(transfer["id"]).json()["history"][-1]["actor"] == "oix"


def test_studies_already_held_are_sent_without_copying_bytes(server, parties):
    district, tertiary, _ = parties
    patient, study = f"P{secrets.token_hex(4)}", generate_uid()
    assert stow(district.http, f"/dicomweb/{district.slug}", [instance(patient, study)] * 1).status_code == 200
    blobs_before = server.blob_files()
    response = district.http.post(f"/api/orgs/{district.slug}/transfers", json={
        "destination": tertiary.slug, "studies": [study], "urgency": "urgent", "note": "for opinion"})
    assert response.status_code == 201, response.text
    assert response.json()["state"] == "delivered" and response.json()["via"] == "holdings"
    assert server.blob_files() == blobs_before
    assert [s["0020000D"]["Value"][0] for s in tertiary.dicomweb().search_for_studies()] == [study]


def test_a_rejection_carries_a_reason_the_sender_sees(parties):
    district, tertiary, _ = parties
    stow(district.http, f"/dicomweb/{district.slug}/outbox/{tertiary.slug}",
         [instance(f"P{secrets.token_hex(4)}", generate_uid())])
    transfer_id = tertiary.inbox()[0]["id"]
    district.step(transfer_id, "complete")
    assert tertiary.step(transfer_id, "reject").status_code == 400  # no reason
    rejected = tertiary.step(transfer_id, "reject", reason="wrong patient: not known here")
    assert rejected.json()["state"] == "rejected"
    assert district.outbox()[0]["reason"] == "wrong patient: not known here"


def test_each_side_takes_only_its_own_steps(parties):
    district, tertiary, _ = parties
    stow(district.http, f"/dicomweb/{district.slug}/outbox/{tertiary.slug}",
         [instance(f"P{secrets.token_hex(4)}", generate_uid())])
    transfer_id = tertiary.inbox()[0]["id"]
    assert tertiary.step(transfer_id, "complete").status_code == 409
    district.step(transfer_id, "complete")
    assert district.step(transfer_id, "viewed").status_code == 409
    assert district.step(transfer_id, "complete").status_code == 409  # already delivered


def test_nothing_of_a_transfer_is_visible_to_a_third_organisation(parties):
    district, tertiary, bystander = parties
    study = generate_uid()
    stow(district.http, f"/dicomweb/{district.slug}/outbox/{tertiary.slug}", [instance("P-ISO", study)])
    transfer_id = tertiary.inbox()[0]["id"]
    assert bystander.inbox() == [] and bystander.outbox() == []
    assert bystander.transfer(transfer_id).status_code == 404
    assert bystander.step(transfer_id, "viewed").status_code == 404
    assert bystander.http.get(f"/dicomweb/{bystander.slug}/studies", params={"StudyInstanceUID": study}).json() == []
    for step in ("complete", "reject", "retain", "release"):
        assert bystander.step(transfer_id, step, reason="x").status_code == 404, step
    local = {"patient_id": "X1", "issuer_of_patient_id": "X", "patient_name": "A^B", "birth_date": "19700101",
             "sex": "F"}
    assert bystander.step(transfer_id, "import", **local).status_code == 404
    assert bystander.http.get(f"/api/orgs/{bystander.slug}/transfers/{transfer_id}/reports").status_code == 404
    admin = {"Authorization": f"Bearer {bystander.admin}"}
    trail = bystander.http.get(f"/api/orgs/{bystander.slug}/audit", params={"study": study}, headers=admin)
    assert [e["action"] for e in trail.json()["events"]] == ["query"]  # only its own search above
    forwarding = bystander.http.get(f"/api/orgs/{bystander.slug}/forwarding", params={"transfer": transfer_id},
                                    headers=admin)
    assert forwarding.status_code in (200, 404) and transfer_id not in forwarding.text
    usage = bystander.http.get(f"/api/orgs/{bystander.slug}/usage").json()
    assert transfer_id not in str(usage) and "P-ISO" not in str(usage)
    for org in (district.slug, tertiary.slug):
        assert bystander.http.get(f"/dicomweb/{org}/studies/{study}").status_code == 403
        assert bystander.http.get(f"/api/orgs/{org}/transfers/{transfer_id}").status_code == 403
        assert bystander.http.get(f"/api/orgs/{org}/inbox").status_code == 403
        assert bystander.http.get(f"/api/orgs/{org}/audit", headers=admin).status_code == 403


def test_sending_to_an_unknown_organisation_is_refused_and_stores_nothing(server, parties):
    district, _, _ = parties
    blobs_before = server.blob_files()
    response = stow(district.http, f"/dicomweb/{district.slug}/outbox/NOSUCHORG",
                    [instance("P-LOST", generate_uid())])
    assert response.status_code == 404 and "NOSUCHORG" in response.json()["error"]
    assert server.blob_files() == blobs_before
    held = district.http.post(f"/api/orgs/{district.slug}/transfers",
                              json={"destination": "NOSUCHORG", "studies": [generate_uid()]})
    assert held.status_code == 404


def test_sending_studies_not_held_or_of_two_patients_is_refused(parties):
    district, tertiary, _ = parties
    missing = district.http.post(f"/api/orgs/{district.slug}/transfers",
                                 json={"destination": tertiary.slug, "studies": [generate_uid()]})
    assert missing.status_code == 404 and "not held" in missing.json()["error"]
    studies = [generate_uid(), generate_uid()]
    stow(district.http, f"/dicomweb/{district.slug}", [instance("P-ONE", studies[0]), instance("P-TWO", studies[1])])
    mixed = district.http.post(f"/api/orgs/{district.slug}/transfers",
                               json={"destination": tertiary.slug, "studies": studies})
    assert mixed.status_code == 400 and "one patient" in mixed.json()["error"]
    assert tertiary.inbox() == []


def test_a_send_is_audited_for_the_sender_and_a_store_for_the_receiver(parties):
    district, tertiary, _ = parties
    study = generate_uid()
    response = stow(district.http, f"/dicomweb/{district.slug}/outbox/{tertiary.slug}", [instance("P-AUD", study)])
    request_id = response.headers["x-request-id"]

    def events(party: Party) -> list[tuple[str, str | None]]:
        found = party.http.get(f"/api/orgs/{party.slug}/audit", params={"study": study},
                               headers={"Authorization": f"Bearer {party.admin}"}).json()["events"]
        return [(e["action"], e["transfer"]) for e in found if e["request_id"] == request_id]

    transfer_id = tertiary.inbox()[0]["id"]
    assert events(district) == [("send", transfer_id)]
    assert events(tertiary) == [("store", None)]


def test_a_pdf_report_travels_in_the_study_and_its_text_is_given_for_a_ris(parties):
    """issue The exchange, Reports: an Encapsulated PDF (PS3.3 A.45.1) sent with the images."""
    district, tertiary, _ = parties
    study = generate_uid()
    images = [instance("P-REP", study), instance("P-REP", study)]
    report = encapsulated_pdf(minimal_pdf("CT head: no acute abnormality."), pydicom.dcmread(io.BytesIO(images[0])),
                              title="Outside report", author="Dr A Sender", when=datetime.now(timezone.utc))
    response = stow(district.http, f"/dicomweb/{district.slug}/outbox/{tertiary.slug}/emergency", [*images, report])
    assert response.status_code == 200, response.text
    transfer = tertiary.inbox()[0]
    assert transfer["has_report"] is True
    reports = tertiary.http.get(f"/api/orgs/{tertiary.slug}/transfers/{transfer['id']}/reports").json()["reports"]
    assert [r["title"] for r in reports] == ["Outside report"]
    assert "no acute abnormality" in reports[0]["text"]


def test_a_report_the_receiver_stores_into_a_received_study_goes_back_to_the_sender(parties):
    """issue The exchange, Reports: report return, as a reply on the transfer."""
    district, tertiary, _ = parties
    study = generate_uid()
    image = instance("P-RET", study)
    stow(district.http, f"/dicomweb/{district.slug}/outbox/{tertiary.slug}", [image])
    transfer_id = tertiary.inbox()[0]["id"]
    district.step(transfer_id, "complete")
    reply = basic_text_sr("No fracture. Follow up in clinic.", pydicom.dcmread(io.BytesIO(image)),
                          title="Teleradiology report", author="Dr B Reader", when=datetime.now(timezone.utc))
    assert stow(tertiary.http, f"/dicomweb/{tertiary.slug}", [reply]).status_code == 200
    returned = district.http.get(f"/dicomweb/{district.slug}/studies/{study}/instances").json()
    assert [item["00080016"]["Value"][0] for item in returned] == ["1.2.840.10008.5.1.4.1.1.88.11"]
    assert "report returned" in district.transfer(transfer_id).json()["history"][-1]["detail"]


def test_an_emergency_calls_the_destinations_webhook_at_once_and_delivery_calls_it_again(parties):
    """issue The exchange: a signed JSON POST on an emergency, and another on delivery."""
    district, tertiary, _ = parties
    with receiver() as listening:
        added = tertiary.http.post(f"/api/orgs/{tertiary.slug}/webhooks", json={"url": listening.url},
                                   headers={"Authorization": f"Bearer {tertiary.admin}"})
        assert added.status_code == 201, added.text
        secret = added.json()["secret"]
        stow(district.http, f"/dicomweb/{district.slug}/outbox/{tertiary.slug}/emergency",
             [instance("P-HOOK", generate_uid())])
        emergency = listening.wait_for(1, timeout=30)[0]
        body = json.loads(emergency.body)["data"]
        transfer_id = tertiary.inbox()[0]["id"]
        assert (emergency.headers["x-oix-event"], body["transfer"], body["urgency"]) == \
            ("transfer.emergency", transfer_id, "emergency")
        verify_signature(secret, emergency.headers["x-oix-signature"], emergency.body, datetime.now(timezone.utc))
        assert "P-HOOK" not in emergency.body.decode()  # no patient data leaves in a notification
        district.step(transfer_id, "complete")
        delivered = listening.wait_for(2, timeout=30)[1]
        assert delivered.headers["x-oix-event"] == "transfer.delivered"


def test_a_webhook_that_times_out_is_retried_and_nothing_is_lost(server, parties):
    """issue The exchange, bad input: the transfer goes on; the delivery waits for its retry."""
    district, tertiary, _ = parties
    with receiver(Answer(delay=WEBHOOK_TIMEOUT_SECONDS + 1)) as slow:
        tertiary.http.post(f"/api/orgs/{tertiary.slug}/webhooks", json={"url": slow.url},
                           headers={"Authorization": f"Bearer {tertiary.admin}"})
        response = stow(district.http, f"/dicomweb/{district.slug}/outbox/{tertiary.slug}/emergency",
                        [instance("P-SLOW", generate_uid())])
        assert response.status_code == 200
        slow.wait_for(1, timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            deliveries = tertiary.http.get(f"/api/orgs/{tertiary.slug}/webhooks",
                                           headers={"Authorization": f"Bearer {tertiary.admin}"}).json()["deliveries"]
            if deliveries and deliveries[0]["last_error"]:
                break
            time.sleep(0.2)
        assert deliveries[0]["state"] == "queued" and "did not answer" in deliveries[0]["last_error"]
        assert tertiary.inbox()[0]["state"] == "receiving"  # the transfer is unaffected


def test_viewing_and_rejecting_a_transfer_are_audited_for_the_receiver(parties):
    """PS3.15 A.5.3: view is DICOM Instances Accessed (R), reject is the same event (U)."""
    district, tertiary, _ = parties
    study = generate_uid()
    stow(district.http, f"/dicomweb/{district.slug}/outbox/{tertiary.slug}", [instance("P-VR", study)])
    transfer_id = tertiary.inbox()[0]["id"]
    district.step(transfer_id, "complete")
    viewed = tertiary.step(transfer_id, "viewed")
    rejected = tertiary.step(transfer_id, "reject", reason="not our patient")
    found = tertiary.http.get(f"/api/orgs/{tertiary.slug}/audit", params={"study": study},
                              headers={"Authorization": f"Bearer {tertiary.admin}"}).json()["events"]
    by_request = {(e["request_id"], e["action"], e["event_action_code"], e["transfer"]) for e in found}
    assert (viewed.headers["x-request-id"], "view", "R", transfer_id) in by_request
    assert (rejected.headers["x-request-id"], "reject", "U", transfer_id) in by_request


def test_a_report_on_the_receivers_own_study_never_goes_to_a_sender_that_reused_its_uid(parties):
    """Isolation: a sender cannot harvest the receiver's reports by sending into its study UID."""
    victim, mallory, _ = parties[1], parties[2], parties[0]
    study = generate_uid()
    own = instance("P-OWN", study)
    assert stow(victim.http, f"/dicomweb/{victim.slug}", [own]).status_code == 200
    assert stow(mallory.http, f"/dicomweb/{mallory.slug}/outbox/{victim.slug}",
                [instance("P-JUNK", study)]).status_code == 200
    transfer_id = victim.inbox()[0]["id"]
    mallory.step(transfer_id, "complete")
    report = basic_text_sr("Malignancy found.", pydicom.dcmread(io.BytesIO(own)), title="Report",
                           author="Dr V", when=datetime.now(timezone.utc))
    assert stow(victim.http, f"/dicomweb/{victim.slug}", [report]).status_code == 200
    assert mallory.http.get(f"/dicomweb/{mallory.slug}/studies/{study}/instances").json() == []
    assert mallory.http.get(f"/api/orgs/{mallory.slug}/transfers/{transfer_id}/reports").json()["reports"] == []
