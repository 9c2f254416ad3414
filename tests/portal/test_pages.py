"""The portal's pages one by one (issue 6), against a live OIX: signing in first, what each role
sees and may do, sending studies the organisation holds from the Send page's search, the
receiver's retain, forward and reject actions and the sender's receipt of the rejection, the
inbox's filters, the fragment the inbox polls, and choosing among several organisations."""

from __future__ import annotations

import io
import secrets

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file

from conformance.corpus import new_uid
from tests.browser import screenshot_and_check
from tests.multipart_body import related_body, stow_content_type
from tests.pdf_documents import minimal_pdf
from tests.portal.conftest import Portal
from tests.servers import run_cli

WAIT_MS = 15_000
HTTP_TIMEOUT_SECONDS = 30
PATIENT_ID = "HELD-5521"


def _csrf(page) -> str:
    return page.locator("input[name=csrf_token]").first.get_attribute("value")


@pytest.fixture(scope="module")
def held_study(portal: Portal) -> str:
    """A study A holds as its own (stored with STOW-RS by A's sender, through the session):
    two CT_small.dcm slices of patient PATIENT_ID."""
    study_uid, series_uid = new_uid(), new_uid()
    parts = []
    for number in (1, 2):
        dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study_uid, series_uid
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = new_uid()
        dataset.InstanceNumber = number
        dataset.PatientID, dataset.PatientName, dataset.AccessionNumber = PATIENT_ID, "HOLDEN^Mary", "HLD-1"
        dataset.StudyDescription = "CT chest held"
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        parts.append(buffer.getvalue())
    account = portal.accounts["a-sender"]
    with httpx.Client(base_url=portal.base_url, timeout=HTTP_TIMEOUT_SECONDS) as client:
        client.get("/login")
        client.post("/login", data={"csrf_token": client.cookies.get("oix_login_csrf"),
                                    "username": account.username, "password": account.password, "next": "/"})
        inbox = client.get(f"/orgs/{portal.a}/inbox")
        token = inbox.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        boundary = f"b{secrets.token_hex(8)}"
        stored = client.post(f"/dicomweb/{portal.a}/studies", content=related_body(parts, boundary),
                             headers={"Content-Type": stow_content_type(boundary), "X-CSRF-Token": token,
                                      "Accept": "application/dicom+json"})
    assert stored.status_code == 200, stored.text
    return study_uid


def test_a_page_sends_a_browser_without_a_session_to_sign_in_and_back(portal):
    with httpx.Client(base_url=portal.base_url, timeout=HTTP_TIMEOUT_SECONDS) as client:
        answer = client.get(f"/orgs/{portal.b}/inbox?state=delivered")
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/login?next=%2Forgs%2F{portal.b}%2Finbox%3Fstate%3Ddelivered"
        sign_in = client.get("/login")
        assert '<link rel="stylesheet" href="/static/portal.css">' in sign_in.text
        assert 'aria-label="Portal"' not in sign_in.text  # no navigation before signing in
        assert client.get("/static/portal.css").status_code == 200


def test_a_viewer_sees_the_inbox_but_neither_send_nor_admin(portal, signed_in, request):
    page = signed_in("b-viewer")
    assert page.url.endswith(f"/orgs/{portal.b}/inbox")
    navigation = page.locator("nav[aria-label=Portal]").inner_text()
    assert "Inbox" in navigation and "Sent" in navigation
    assert "Send\n" not in navigation + "\n" and "Audit" not in navigation and "Admin" not in navigation
    refused = page.request.get(f"/orgs/{portal.b}/send")
    assert refused.status == 403 and "does not allow" in refused.text()
    screenshot_and_check(page, request.node.nodeid, "page-1")


def test_an_unknown_transfer_is_a_page_that_says_so(portal, signed_in, request):
    page = signed_in("b-sender")
    answer = page.goto(f"/orgs/{portal.b}/transfers/T0000000000000000")
    assert answer.status == 404
    assert "no transfer 'T0000000000000000'" in page.locator(".error").inner_text()
    screenshot_and_check(page, request.node.nodeid, "page-2")


def test_a_held_study_is_found_sent_retained_forwarded_and_rejected(portal, signed_in, held_study, request):
    sender = signed_in("a-sender")
    sender.goto(f"/orgs/{portal.a}/send?patient=HOLDEN")
    rows = sender.locator("table tbody tr")
    assert rows.count() == 1 and "CT chest held" in rows.inner_text()
    assert sender.locator("table caption").inner_text().startswith("1 study found")
    sender.goto(f"/orgs/{portal.a}/send?accession=NOPE")
    assert "No studies match" in sender.locator("table tbody").inner_text()
    sender.goto(f"/orgs/{portal.a}/send?patient_id={PATIENT_ID}&modality=CT&date_from=2000-01-01")
    screenshot_and_check(sender, request.node.nodeid, "page-3")
    sender.check(f"input[name=study][value='{held_study}']")
    sender.fill("#held-destination", portal.b)
    sender.select_option("#held-urgency", "urgent")
    sender.fill("#held-note", "Comparison for tomorrow's MDT")
    sender.click("text=Send the chosen studies")
    sender.wait_for_url(f"**/orgs/{portal.a}/transfers/T*", timeout=WAIT_MS)
    transfer_id = sender.url.rsplit("/", 1)[1]
    assert "delivered" in sender.locator(".facts .state").inner_text().lower()

    receiver = signed_in("b-sender")
    receiver.goto(f"/orgs/{portal.b}/inbox?urgency=emergency")
    assert "No transfers match these filters" in receiver.locator("#inbox-rows").inner_text()
    fragment = receiver.request.get(f"/orgs/{portal.b}/inbox/rows?urgency=urgent")
    assert fragment.status == 200 and fragment.text().lstrip().startswith("<tbody")
    assert transfer_id in fragment.text()
    receiver.goto(f"/orgs/{portal.b}/inbox?urgency=urgent&patient={PATIENT_ID}")
    row = receiver.locator(f"#inbox-rows tr[data-transfer='{transfer_id}']")
    assert "Urgent" in row.inner_text() and "HOLDEN, Mary" in row.inner_text()
    row.locator("a").first.click()
    receiver.wait_for_url(f"**/transfers/{transfer_id}", timeout=WAIT_MS)
    assert "Comparison for tomorrow's MDT" in receiver.locator(".note").inner_text()

    receiver.click("text=Keep beyond the retention period")
    receiver.wait_for_url(lambda url: "done=retained" in url, timeout=WAIT_MS)
    assert "kept past the retention period" in receiver.locator(".facts").inner_text()

    receiver.fill("#forward-destination", portal.a)
    receiver.fill("#forward-note", "For your records")
    receiver.click("form[action$='/forward'] button")
    receiver.wait_for_url(lambda url: "done=forwarded" in url, timeout=WAIT_MS)
    forwarded = receiver.url.split("/transfers/", 1)[1].split("?", 1)[0]
    assert forwarded != transfer_id and "For your records" in receiver.locator(".note").inner_text()

    receiver.goto(f"/orgs/{portal.b}/transfers/{transfer_id}")
    receiver.fill("#reject-reason", "Wrong patient: not known here")
    receiver.click("form[action$='/reject'] button")
    receiver.wait_for_url(lambda url: "done=rejected" in url, timeout=WAIT_MS)
    assert "rejected" in receiver.locator(".facts .state").inner_text().lower()
    assert receiver.locator("#import-button").count() == 0  # a rejected transfer is not imported
    screenshot_and_check(receiver, request.node.nodeid, "page-4")

    sender.goto(f"/orgs/{portal.a}/sent?state=rejected")
    sent = sender.locator(f"#sent tr[data-transfer='{transfer_id}']")
    assert "Wrong patient: not known here" in sent.inner_text()
    assert "rejected" in sent.locator("ul.receipts").inner_text().lower()
    sender.goto(f"/orgs/{portal.a}/inbox")
    assert sender.locator(f"#inbox-rows tr[data-transfer='{forwarded}']").count() == 1


def test_a_person_of_several_organisations_chooses_which_to_act_for(portal, signed_in, request):
    account = portal.accounts["a-admin"]
    run_cli(["user", "grant", account.username, "--org", portal.b, "--role", "viewer"], portal.cli_env())
    page = signed_in("a-admin")
    assert page.url.endswith("/"), "no organisation is chosen for a member of two"
    choices = page.locator("main li a")
    assert choices.count() == 2
    screenshot_and_check(page, request.node.nodeid, "page-5")
    page.click(f"text=({portal.b})")
    page.wait_for_url(f"**/orgs/{portal.b}/inbox", timeout=WAIT_MS)
    page.select_option("#org-choice", portal.a)
    page.click(".org-switcher button")
    page.wait_for_url(f"**/orgs/{portal.a}/inbox", timeout=WAIT_MS)
    navigation = page.locator("nav[aria-label=Portal]").inner_text()
    assert "Audit" in navigation and "Admin" in navigation  # an admin of A


def test_an_upload_names_each_file_the_server_refused(portal, signed_in, tmp_path, request):
    """PS3.18 10.5.3: a STOW-RS response with failures lists them; the page names the files."""
    good = tmp_path / "slice.dcm"
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = new_uid(), new_uid()
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = new_uid()
    dataset.save_as(good, enforce_file_format=True)
    bad = tmp_path / "referral letter.txt"
    bad.write_text("Not a DICOM file.\n")
    page = signed_in("a-sender")
    page.goto(f"/orgs/{portal.a}/send")
    page.fill("#upload-destination", f"Organisation {portal.b}")  # a name typed stands for its code
    page.set_input_files("#upload-files", [good, bad])
    page.click("#upload-button")
    page.locator("#upload-status").filter(has_text="Sent 1 of 2 file(s)").wait_for(timeout=WAIT_MS)
    failures = page.locator("#upload-failures li").all_inner_texts()
    assert len(failures) == 1 and failures[0].startswith("referral letter.txt: "), failures
    screenshot_and_check(page, request.node.nodeid, "page-6")


def test_the_polled_inbox_rows_are_not_modified_until_a_transfer_arrives(portal, signed_in, held_study):
    """RFC 9110 13.1.2: inbox.js sends the rows' ETag back; while nothing arrived the answer is
    304 and no list of patients is read (nor audited), and a new transfer makes it 200 again."""
    page = signed_in("b-viewer")
    rows_url = f"/orgs/{portal.b}/inbox/rows"
    first = page.request.get(rows_url)
    etag = first.headers["etag"]
    assert first.status == 200 and etag
    assert page.request.get(rows_url, headers={"If-None-Match": etag}).status == 304
    assert page.request.get(rows_url + "?urgency=emergency", headers={"If-None-Match": etag}).status == 200
    key = run_cli(["key", "create", "--org", portal.a, "--role", "sender"], portal.cli_env()).stdout.strip()
    sent = httpx.post(f"{portal.base_url}/api/orgs/{portal.a}/transfers", timeout=HTTP_TIMEOUT_SECONDS,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"destination": portal.b, "studies": [held_study], "urgency": "urgent"})
    assert sent.status_code == 201, sent.text
    changed = page.request.get(rows_url, headers={"If-None-Match": etag})
    assert changed.status == 200 and changed.headers["etag"] != etag
    assert held_study in changed.text() or "HOLDEN" in changed.text()


def test_a_held_study_is_sent_with_a_pdf_report_made_for_it(portal, signed_in, held_study, tmp_path, request):
    """issue 6, Send: a report attached to studies the organisation holds becomes an Encapsulated
    PDF object of the first chosen study (PS3.3 A.45.1), stored, and travels in the transfer."""
    line = "Held study report: no change since the last examination."
    pdf = tmp_path / "held-report.pdf"
    pdf.write_bytes(minimal_pdf(line))
    sender = signed_in("a-sender")
    sender.goto(f"/orgs/{portal.a}/send?patient_id={PATIENT_ID}")
    sender.check(f"input[name=study][value='{held_study}']")
    sender.fill("#held-destination", portal.b)
    sender.set_input_files("#held-report", str(pdf))
    sender.click("text=Send the chosen studies")
    sender.wait_for_url(f"**/orgs/{portal.a}/transfers/T*", timeout=WAIT_MS)
    transfer_id = sender.url.rsplit("/", 1)[1]

    receiver = signed_in("b-sender")
    receiver.goto(f"/orgs/{portal.b}/transfers/{transfer_id}")
    assert line in receiver.locator(".report-text").inner_text()
    pdf_href = receiver.locator("a", has_text="Open the PDF report").get_attribute("href")
    assert receiver.request.get(pdf_href).body() == minimal_pdf(line)
    screenshot_and_check(receiver, request.node.nodeid, "held-with-report")
