"""The clinician's journey through the portal (issue 6), in headless Chromium against a live OIX:
A's radiographer uploads a study from a folder in the browser (STOW-RS to the outbox service root,
PS3.18 10.5) and sends it to B as a clinical emergency with a note and a PDF report (made into an
Encapsulated PDF object, PS3.3 A.45.1); B's radiologist, whose inbox is already open, sees it
pinned at the top without reloading, opens the images (the viewed step), and imports it under
local identifiers after confirming a highlighted name mismatch (IHE RAD Import Reconciliation
Workflow); A sees "imported" on Sent; B's admin finds every step in the audit trail and downloads
it as CSV. Every page is screenshotted and checked with axe-core (no serious or critical
WCAG 2.1 AA violations)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from conformance.corpus import new_uid
from tests.browser import artefact_path, screenshot_and_check
from tests.pdf_documents import minimal_pdf

WAIT_MS = 20_000  # every wait is bounded; the inbox polls every 5 s
PATIENT_NAME = "CROSS^Amelia"
LOCAL_NAME = "CROSS^Amelie"  # the receiver's record spells it differently: a mismatch to confirm
REPORT_LINE = "CT head: no acute intracranial abnormality."
NOTE = "Head injury, GCS 13. Please review urgently for neurosurgery."


@dataclass(frozen=True)
class UploadedStudy:
    folder: Path
    files: list[Path]
    report: Path
    study_uid: str


@pytest.fixture(scope="module")
def study_folder(tmp_path_factory) -> UploadedStudy:
    """A study of real corpus images in a folder, as a PACS export leaves it: four CT slices
    (CT_small.dcm, each with its own SOP Instance UID) and a multi-frame MR series, one patient."""
    folder = tmp_path_factory.mktemp("export") / "CROSS_AMELIA"
    folder.mkdir()
    study_uid = new_uid()
    files = []
    sources = [("CT_small.dcm", 4), ("emri_small.dcm", 1)]
    for source, copies in sources:
        series_uid = new_uid()
        for number in range(1, copies + 1):
            dataset = pydicom.dcmread(get_testdata_file(source))
            dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study_uid, series_uid
            dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = new_uid()
            dataset.InstanceNumber = number
            dataset.PatientName, dataset.PatientID, dataset.PatientBirthDate = PATIENT_NAME, "RXA-4471", "19700102"
            dataset.StudyDescription = "CT head and MR brain"
            dataset.AccessionNumber = "RXA-ACC-77"
            path = folder / f"{Path(source).stem}-{number}.dcm"
            dataset.save_as(path, enforce_file_format=True)
            files.append(path)
    report = folder.parent / "CT head report.pdf"
    report.write_bytes(minimal_pdf(REPORT_LINE))
    return UploadedStudy(folder, files, report, study_uid)


def test_a_study_goes_from_a_browser_upload_to_an_import_and_back(portal, signed_in, study_folder, request):
    a, b = portal.a, portal.b

    # B's radiologist has the inbox open before anything is sent.
    radiologist = signed_in("b-sender")
    radiologist.goto("/")
    assert radiologist.url.endswith(f"/orgs/{b}/inbox"), "one organisation: the home is its inbox"
    radiologist.evaluate("window.__notReloaded = true")
    screenshot_and_check(radiologist, request.node.nodeid, "01-inbox-empty")

    # A's radiographer uploads the folder with a note and a PDF, as a clinical emergency.
    sender = signed_in("a-sender")
    sender.goto(f"/orgs/{a}/send")
    screenshot_and_check(sender, request.node.nodeid, "02-send")
    sender.fill("#upload-destination", b)
    sender.select_option("#upload-urgency", "emergency")
    sender.fill("#upload-note", NOTE)
    sender.set_input_files("#upload-folder", study_folder.folder)
    sender.set_input_files("#upload-report", study_folder.report)
    sender.click("#upload-button")
    status = sender.locator("#upload-status")
    count = len(study_folder.files) + 1  # and the report
    status.filter(has_text=f"Sent {count} of {count} file(s)").wait_for(timeout=WAIT_MS)
    assert sender.locator("#upload-progress").get_attribute("value") == "100"
    assert sender.locator("#upload-failures li").count() == 0
    transfer_link = status.locator("a")
    transfer_link.wait_for(timeout=WAIT_MS)
    transfer_id = transfer_link.get_attribute("href").rsplit("/", 1)[1]
    screenshot_and_check(sender, request.node.nodeid, "03-sent-from-browser")

    # B's inbox shows it, pinned first and marked an emergency, without a reload.
    first_row = radiologist.locator("#inbox-rows tr").first
    radiologist.wait_for_function(
        "id => { const row = document.querySelector('#inbox-rows tr'); return row && row.dataset.transfer === id; }",
        arg=transfer_id, timeout=WAIT_MS)
    assert radiologist.evaluate("window.__notReloaded === true"), "the inbox refreshed itself without a reload"
    assert "emergency" in first_row.get_attribute("class")
    assert "Clinical emergency" in first_row.inner_text()
    assert "CROSS, Amelia" in first_row.inner_text() and "1970-01-02" in first_row.inner_text()
    assert "CT head and MR brain" in first_row.inner_text()
    assert "new transfer" in radiologist.locator("#inbox-status").inner_text()
    screenshot_and_check(radiologist, request.node.nodeid, "04-inbox-emergency")

    # The transfer page: images with thumbnails, the note, the report's text and its PDF.
    first_row.locator("a").first.click()
    radiologist.wait_for_url(f"**/orgs/{b}/transfers/{transfer_id}", timeout=WAIT_MS)
    assert NOTE in radiologist.locator(".note").inner_text()
    assert radiologist.locator(".series img").count() == 2
    assert REPORT_LINE in radiologist.locator(".report-text").inner_text()
    pdf_href = radiologist.locator("a", has_text="Open the PDF report").get_attribute("href")
    pdf = radiologist.request.get(pdf_href)
    assert pdf.status == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.body() == minimal_pdf(REPORT_LINE)
    screenshot_and_check(radiologist, request.node.nodeid, "05-transfer")

    # Opening the images records the viewed step and goes to the viewer.
    radiologist.click("#open-images")
    radiologist.wait_for_url(f"**/viewer/{b}/studies/{study_folder.study_uid}", timeout=WAIT_MS)
    # the viewer's own test checks its page with axe; here it only has to be where the link leads
    radiologist.screenshot(path=str(artefact_path(request.node.nodeid, "06-viewer.png")), full_page=True)
    radiologist.goto(f"/orgs/{b}/transfers/{transfer_id}")
    assert "viewed" in radiologist.locator("ol.history").inner_text().lower()

    # Import under local identifiers: the name differs, shown side by side, confirmed, imported.
    radiologist.fill("#import-patient-id", "BH-0042")
    radiologist.fill("#import-accession", "BH-ACC-9")
    radiologist.fill("#import-name", LOCAL_NAME)
    radiologist.fill("#import-birth-date", "1970-01-02")
    radiologist.click("#import-button")
    mismatch = radiologist.locator("table.compare tr.mismatch")
    mismatch.first.wait_for(timeout=WAIT_MS)
    assert mismatch.count() == 1
    assert PATIENT_NAME in mismatch.inner_text() and LOCAL_NAME in mismatch.inner_text()
    assert "imported" not in radiologist.locator(".facts").inner_text().lower()
    screenshot_and_check(radiologist, request.node.nodeid, "07-import-mismatch")
    radiologist.check("input[name=confirm]")
    radiologist.click("#import-button")
    radiologist.wait_for_url(lambda url: "done=imported" in url, timeout=WAIT_MS)
    assert "imported" in radiologist.locator(".facts .state").inner_text().lower()
    screenshot_and_check(radiologist, request.node.nodeid, "08-imported")

    # A's Sent list carries the receipts: delivered, viewed, imported.
    sender.goto(f"/orgs/{a}/sent")
    row = sender.locator(f"#sent tr[data-transfer='{transfer_id}']")
    assert "imported" in row.locator(".state").first.inner_text().lower()
    receipts = row.locator("ul.receipts").inner_text().lower()
    assert all(step in receipts for step in ("delivered", "viewed", "imported"))
    screenshot_and_check(sender, request.node.nodeid, "09-sent")

    # B's admin finds every step in the audit trail, and downloads it as CSV.
    admin = signed_in("b-admin")
    admin.goto(f"/orgs/{b}/audit?patient=RXA-4471")
    screenshot_and_check(admin, request.node.nodeid, "10-audit")
    shown = set(admin.locator(".audit-table tbody td:nth-child(2)").all_inner_texts())
    assert {"store", "view", "reconcile", "import"} <= shown, shown
    with admin.expect_download(timeout=WAIT_MS) as started:
        admin.locator("a", has_text="Download CSV").click()
    lines = list(csv.DictReader(io.StringIO(Path(started.value.path()).read_text(encoding="utf-8"))))
    # the CSV carries the page's filter: every event naming the patient, by B
    assert lines and all("RXA-4471" in line["patient_ids"].split("\\") for line in lines)
    steps = {line["action"] for line in lines}
    assert {"store", "query", "retrieve", "view", "reconcile", "import"} <= steps, steps
    assert {line["action"] for line in lines if line["transfer"] == transfer_id} >= {"view", "reconcile", "import"}
