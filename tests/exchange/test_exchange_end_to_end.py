"""The exchange end to end (issue The exchange, acceptance 1 and 5): A sends a two-study bundle
to B as an emergency with a PDF report through the outbox STOW root with a stock DICOMweb
client; B's webhook receiver is called; B lists it first, retrieves it, and imports it with its
own identifiers (IHE RAD IRWF); A sees the states change; the imported objects carry the
originals in (0400,0561) and the received copies are kept byte for byte."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone

import httpx
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from exchange.reports import encapsulated_pdf
from storage.content_key import content_key
from tests.dicomweb_requests import stow
from tests.exchange.webhook_receiver import receiver
from tests.pdf_documents import minimal_pdf
from tests.servers import OixServer, new_org_slug, new_postgresql_database, start_server, stop_server

ANY_SYNTAX = 'multipart/related; type="application/dicom"; transfer-syntax=*'
LOCAL = {"patient_id": "RJ1-0042", "issuer_of_patient_id": "RJ1-MRN", "accession_number": "RJ1ACC7",
         "patient_name": "JONES^ALICE", "birth_date": "19700101", "sex": "F", "nhs_number": "943 476 5919"}


@pytest.fixture(scope="module")
def server(backend: str, tmp_path_factory) -> Iterator[OixServer]:
    """A server of the module's own on each index backend (SQLite and PostgreSQL)."""
    with ExitStack() as cleanup:
        database = cleanup.enter_context(new_postgresql_database()) if backend == "postgresql" else None
        running = start_server(tmp_path_factory.mktemp("exchange") / "data", backend=backend,
                               database_url=database, auth=True, env={"OIX_TRANSFER_IDLE_SECONDS": "600"})
        cleanup.callback(stop_server, running)
        yield running


def organisation(server: OixServer, prefix: str) -> tuple[str, str]:
    slug = new_org_slug(prefix)
    server.cli("org", "add", slug, f"{prefix.title()} Hospital")
    return slug, server.cli("key", "create", "--org", slug, "--role", "admin").strip()


def part10(dataset: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def bundle(patient_id: str, name: str) -> list[pydicom.Dataset]:
    """Two studies of one patient from pydicom's real CT and MR files, with fresh UIDs."""
    made = []
    for file_name, copies in (("CT_small.dcm", 2), ("MR_small.dcm", 1)):
        study, series = generate_uid(), generate_uid()
        for _ in range(copies):
            dataset = pydicom.dcmread(get_testdata_file(file_name))
            dataset.PatientID, dataset.PatientName, dataset.PatientBirthDate = patient_id, name, "19700101"
            dataset.PatientSex = "F"
            dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study, series
            dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            made.append(dataset)
    return made


def test_an_emergency_bundle_travels_is_retrieved_and_imported_with_local_identifiers(server):
    a, a_key = organisation(server, "district")
    b, b_key = organisation(server, "tertiary")
    as_a = httpx.Client(base_url=server.base_url, timeout=60, headers={"Authorization": f"Bearer {a_key}"})
    as_b = httpx.Client(base_url=server.base_url, timeout=60, headers={"Authorization": f"Bearer {b_key}"})
    earlier = bundle(f"R{secrets.token_hex(3)}", "EARLIER^ROUTINE")[:1]
    assert stow(as_a, f"/dicomweb/{a}/outbox/{b}", [part10(earlier[0])]).status_code == 200

    patient = f"EXT{secrets.token_hex(3)}"
    images = bundle(patient, "JONES^ALICE^M")  # the sender spells the name with a middle initial
    report = pydicom.dcmread(io.BytesIO(encapsulated_pdf(
        minimal_pdf("CT head: no acute abnormality."), images[0], title="Outside report",
        author="Dr A Sender", when=datetime.now(timezone.utc))))
    sent = {dataset.SOPInstanceUID: part10(dataset) for dataset in [*images, report]}
    with receiver() as hook:
        added = as_b.post(f"/api/orgs/{b}/webhooks", json={"url": hook.url})
        assert added.status_code == 201
        # A plain STOW-RS client that knows only a base URL and a token sends to B.
        outbox = DICOMwebClient(url=f"{server.base_url}/dicomweb/{a}/outbox/{b}/emergency",
                                headers={"Authorization": f"Bearer {a_key}"})
        outbox.store_instances([*images, report])
        assert hook.wait_for(1, timeout=30)[0].headers["x-oix-event"] == "transfer.emergency"

        inbox = as_b.get(f"/api/orgs/{b}/inbox").json()["transfers"]
        first = inbox[0]
        assert (first["urgency"], first["patient_id"], first["has_report"]) == ("emergency", patient, True)
        assert inbox[1]["urgency"] == "routine"
        transfer_id = first["id"]
        detail = as_b.get(f"/api/orgs/{b}/transfers/{transfer_id}").json()
        assert len(detail["studies"]) == 2

        assert as_a.post(f"/api/orgs/{a}/transfers/{transfer_id}/complete").json()["state"] == "delivered"
        assert hook.wait_for(2, timeout=30)[1].headers["x-oix-event"] == "transfer.delivered"

    reader = DICOMwebClient(url=f"{server.base_url}/dicomweb/{b}", headers={"Authorization": f"Bearer {b_key}"})
    received = [ds for study in {ds.StudyInstanceUID for ds in images} for ds in reader.retrieve_study(study)]
    assert {ds.SOPInstanceUID for ds in received} == set(sent)
    for dataset in received:  # byte for byte what A sent
        raw = as_b.get(f"/dicomweb/{b}/studies/{dataset.StudyInstanceUID}/series/{dataset.SeriesInstanceUID}"
                       f"/instances/{dataset.SOPInstanceUID}", headers={"Accept": ANY_SYNTAX})
        assert sent[dataset.SOPInstanceUID] in raw.content
    assert as_b.post(f"/api/orgs/{b}/transfers/{transfer_id}/viewed").json()["state"] == "viewed"

    # The names differ: the import stops for reconciliation, then goes ahead when confirmed.
    unconfirmed = as_b.post(f"/api/orgs/{b}/transfers/{transfer_id}/import", json=LOCAL)
    assert unconfirmed.status_code == 409
    assert [d["attribute"] for d in unconfirmed.json()["differences"]] == ["PatientName"]
    imported = as_b.post(f"/api/orgs/{b}/transfers/{transfer_id}/import", json={**LOCAL, "confirm": True})
    assert imported.status_code == 200, imported.text
    assert imported.json()["state"] == "imported" and imported.json()["imported_instances"] == len(sent)

    trail = as_b.get(f"/api/orgs/{b}/audit", params={"limit": 1000}).json()["events"]
    decided = {(e["request_id"], e["action"], e["outcome"]) for e in trail if e["transfer"] == transfer_id}
    assert (unconfirmed.headers["x-request-id"], "reconcile", 4) in decided  # differences shown
    assert (imported.headers["x-request-id"], "reconcile", 0) in decided  # PS3.15 Patient Record, U
    assert (imported.headers["x-request-id"], "import", 0) in decided  # PS3.15 A.5.3.6 Import
    outbox_view = as_a.get(f"/api/orgs/{a}/transfers/{transfer_id}").json()
    assert [event["state"] for event in outbox_view["history"]] == ["receiving", "delivered", "viewed", "imported"]
    now_held = [ds for study in {ds.StudyInstanceUID for ds in images} for ds in reader.retrieve_study(study)]
    assert {ds.SOPInstanceUID for ds in now_held} == set(sent)  # UIDs kept
    for dataset in now_held:
        assert (dataset.PatientID, dataset.IssuerOfPatientID, dataset.PatientName) == \
            ("RJ1-0042", "RJ1-MRN", "JONES^ALICE")
        nhs = [item for item in dataset.OtherPatientIDsSequence if item.get("IssuerOfPatientID") == "NHS"]
        assert [item.PatientID for item in nhs] == ["9434765919"]
        originals = dataset.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0]
        assert (originals.PatientID, str(originals.PatientName)) == (patient, "JONES^ALICE^M")
    # The received copies are kept, byte for byte: their content-addressed blobs are still on disk.
    assert {content_key(data) for data in sent.values()} <= server.blob_files()

    again = as_b.post(f"/api/orgs/{b}/transfers/{transfer_id}/import", json={**LOCAL, "confirm": True})
    assert again.status_code == 409 and "cannot be imported again" in again.json()["error"]

    # Past B's retention period the received originals go; what B imported is its own and stays.
    later = (datetime.now(timezone.utc) + timedelta(days=31)).isoformat()
    server.cli("retention", "run", "--now", later)
    assert as_b.get(f"/api/orgs/{b}/transfers/{transfer_id}").json()["state"] == "expired"
    kept = as_b.get(f"/dicomweb/{b}/instances", params={"PatientID": "RJ1-0042"}).json()
    assert len(kept) == len(sent)
    assert not {content_key(data) for data in sent.values()} & server.blob_files()


def test_an_invalid_nhs_number_is_refused_and_nothing_changes(server):
    a, a_key = organisation(server, "district")
    b, b_key = organisation(server, "tertiary")
    as_a = httpx.Client(base_url=server.base_url, timeout=60, headers={"Authorization": f"Bearer {a_key}"})
    as_b = httpx.Client(base_url=server.base_url, timeout=60, headers={"Authorization": f"Bearer {b_key}"})
    images = bundle("EXT-NHS", "JONES^ALICE")
    assert stow(as_a, f"/dicomweb/{a}/outbox/{b}", [part10(ds) for ds in images]).status_code == 200
    transfer_id = as_b.get(f"/api/orgs/{b}/inbox").json()["transfers"][0]["id"]
    as_a.post(f"/api/orgs/{a}/transfers/{transfer_id}/complete")
    blobs_before = server.blob_files()
    refused = as_b.post(f"/api/orgs/{b}/transfers/{transfer_id}/import",
                        json={**LOCAL, "nhs_number": "943 476 5910", "confirm": True})
    assert refused.status_code == 400 and "NHS number" in refused.json()["error"]
    assert server.blob_files() == blobs_before
    assert as_b.get(f"/api/orgs/{b}/transfers/{transfer_id}").json()["state"] == "delivered"
    held = as_b.get(f"/dicomweb/{b}/studies", params={"PatientID": "EXT-NHS"}).json()
    assert len(held) == 2
