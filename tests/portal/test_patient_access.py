"""issue 6, patient access (a subject access request): an admin makes a time-limited link to a
patient's studies; through it, without signing in, the patient sees the images (the built-in
viewer over a read-only DICOMweb subset of just those studies) and downloads a ZIP holding a
DICOM File-set (PS3.10, DICOMDIR PS3.3 F); every use is audited (PS3.15 A.5); the link stops
working when revoked or expired (410 Gone). Real DICOM, a live server, Debian's Chromium."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pydicom
import pytest
from sqlalchemy import update

from oix.app import open_services
from oix.settings import Settings
from storage.tables import PatientAccessLink, utcnow
from tests.browser import screenshot_and_check
from tests.dicomweb_requests import stow
from tests.portal.conftest import PAGE_TIMEOUT_MS, Portal
from tests.real_files import CorpusFile, by_name
from tests.servers import run_cli

PATIENT_FILES = ("pydicom/CT_small.dcm",)  # Patient ID 1CT1: the patient the link is for
OTHER_PATIENT_FILE = "pydicom/MR_small.dcm"  # Patient ID 4MR1: held by the same organisation, not linked
HTTP_TIMEOUT = 30


@dataclass(frozen=True)
class Held:
    patient: list[CorpusFile]
    other: CorpusFile


@pytest.fixture(scope="module")
def held(portal: Portal) -> Held:
    """A's sender key stores the real files into A's own DICOMweb root."""
    key = run_cli(["key", "create", "--org", portal.a, "--role", "sender"], portal.cli_env()).stdout.strip()
    patient = [by_name(name) for name in PATIENT_FILES]
    other = by_name(OTHER_PATIENT_FILE)
    with httpx.Client(base_url=portal.base_url, timeout=HTTP_TIMEOUT,
                      headers={"Authorization": f"Bearer {key}"}) as http:
        for item in [*patient, other]:
            stored = stow(http, f"/dicomweb/{portal.a}", [item.data])
            assert stored.status_code == 200, stored.text[:300]
    return Held(patient, other)


def create_link(page, org: str, patient_id: str, days: int = 7) -> str:
    """The admin creates a link on the admin page; the URL is shown once."""
    page.goto(f"/orgs/{org}/admin/patient-access")
    page.fill("#link-patient", patient_id)
    page.fill("#link-days", str(days))
    page.click("text=Create link")
    page.wait_for_selector("#issued-link")
    return page.input_value("#issued-link")


@pytest.fixture
def admin_page(signed_in):
    return signed_in("a-admin")


@pytest.fixture
def anonymous(browser, portal: Portal) -> Iterator:
    context = browser.new_context(base_url=portal.base_url, viewport={"width": 1366, "height": 900})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def test_a_link_shows_the_patients_images_and_only_theirs(portal, held, admin_page, anonymous, request):
    patient_id = held.patient[0].dataset().PatientID
    link = create_link(admin_page, portal.a, patient_id)
    assert link.startswith(portal.base_url + "/access/") and len(link.rsplit("/", 1)[1]) >= 22  # ≥ 128 bits
    screenshot_and_check(admin_page, request.node.nodeid, "admin-link-created")

    response = anonymous.goto(link)
    assert response.status == 200
    assert response.headers["cache-control"] == "no-store"
    assert patient_id in anonymous.inner_text("main")
    # Every series thumbnail comes from the link's own DICOMweb root and is a decoded image.
    anonymous.wait_for_function("""() => [...document.querySelectorAll('.access-study img')]
        .every(img => img.complete && img.naturalWidth > 0)""")
    thumbnails = anonymous.eval_on_selector_all(".access-study img", "imgs => imgs.map(i => i.src)")
    assert thumbnails and all("/access/" in src and "/dicomweb/studies/" in src for src in thumbnails)
    # The built-in viewer reads the study's metadata through the link's DICOMweb subset.
    anonymous.wait_for_selector(".oix-viewer .oix-series-list li")
    # and draws the first image from its frames, fetched through the link (dataset.shown: painted)
    anonymous.wait_for_function("() => Boolean(document.querySelector('.oix-viewer').dataset.shown)")
    screenshot_and_check(anonymous, request.node.nodeid, "patient-page")

    root = link + "/dicomweb"
    mine = held.patient[0]
    with httpx.Client(timeout=HTTP_TIMEOUT) as http:
        metadata = http.get(f"{root}/studies/{mine.study_uid}/metadata", headers={"Accept": "application/dicom+json"})
        assert metadata.status_code == 200
        assert {item["00080018"]["Value"][0] for item in metadata.json()} == {mine.sop_instance_uid}
        frames = http.get(f"{root}/studies/{mine.study_uid}/series/{mine.series_uid}/instances/"
                          f"{mine.sop_instance_uid}/frames/1",
                          headers={"Accept": 'multipart/related; type="application/octet-stream"; '
                                             'transfer-syntax=1.2.840.10008.1.2.1'})
        assert frames.status_code == 200 and frames.headers["content-type"].startswith("multipart/related")
        # Another patient's study, held by the same organisation, is not there through this link.
        other = http.get(f"{root}/studies/{held.other.study_uid}/metadata",
                         headers={"Accept": "application/dicom+json"})
        assert other.status_code == 404
        # Nothing but reads: the subset has no STOW, no QIDO, no DELETE.
        assert http.post(f"{root}/studies", content=b"").status_code in (404, 405)
        assert http.delete(f"{root}/studies/{mine.study_uid}/metadata").status_code == 405


def test_the_zip_is_a_file_set_pydicom_reads(portal, held, admin_page, tmp_path):
    """PS3.10 8 / PS3.3 F: a DICOMDIR naming every object of the patient's studies, and the
    objects as stored, byte for byte."""
    link = create_link(admin_page, portal.a, held.patient[0].dataset().PatientID)
    with httpx.Client(timeout=HTTP_TIMEOUT) as http:
        response = http.get(link + "/download")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert "attachment" in response.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        archive.extractall(tmp_path)
    dicomdir = pydicom.dcmread(tmp_path / "DICOMDIR")
    assert dicomdir.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
    images = [record for record in dicomdir.DirectoryRecordSequence if record.DirectoryRecordType == "IMAGE"]
    expected = {item.sop_instance_uid: item for item in held.patient}
    assert {record.ReferencedSOPInstanceUIDInFile for record in images} == set(expected)
    for record in images:
        path = Path(tmp_path, *record.ReferencedFileID)
        dataset = pydicom.dcmread(path)
        assert dataset.SOPInstanceUID == record.ReferencedSOPInstanceUIDInFile
        assert path.read_bytes() == expected[dataset.SOPInstanceUID].data  # as stored
    listed = {"DICOMDIR", *("/".join(record.ReferencedFileID) for record in images)}
    assert {path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*") if path.is_file()} == listed


def test_every_use_is_audited_naming_the_link(portal, held, admin_page):
    """PS3.15 A.5.3.7 / A.5.3.10: the page view, each DICOMweb read and the download are events
    of the organisation whose actor is the link."""
    mine = held.patient[0]
    link = create_link(admin_page, portal.a, mine.dataset().PatientID)
    with httpx.Client(timeout=HTTP_TIMEOUT) as http:
        assert http.get(link).status_code == 200
        assert http.get(f"{link}/dicomweb/studies/{mine.study_uid}/thumbnail").status_code == 200
        assert http.get(link + "/download").status_code == 200
    admin_page.goto(f"/orgs/{portal.a}/admin/patient-access")
    newest = admin_page.inner_text("tbody tr:first-child th")
    admin_page.goto(f"/orgs/{portal.a}/audit?actor=patient-access-link:{newest}")
    details = admin_page.inner_text("tbody")
    assert "patient access page" in details and "thumbnail" in details and "ZIP download" in details, details


def test_a_revoked_link_is_gone(portal, held, admin_page, anonymous, request):
    mine = held.patient[0]
    link = create_link(admin_page, portal.a, mine.dataset().PatientID)
    admin_page.goto(f"/orgs/{portal.a}/admin/patient-access")
    link_id = admin_page.inner_text("tbody tr:first-child th")
    admin_page.click(f"button:has-text('Revoke link {link_id}')")
    admin_page.wait_for_selector("text=The patient access link was revoked")
    assert "revoked" in admin_page.inner_text("tbody tr:first-child")

    response = anonymous.goto(link)
    assert response.status == 410
    assert "revoked" in anonymous.inner_text("main")
    screenshot_and_check(anonymous, request.node.nodeid, "revoked")
    with httpx.Client(timeout=HTTP_TIMEOUT) as http:
        assert http.get(link + "/download").status_code == 410
        assert http.get(f"{link}/dicomweb/studies/{mine.study_uid}/metadata").status_code == 410
        assert http.get(portal.base_url + "/access/" + "A" * 43).status_code == 404  # never issued


def test_an_expired_link_is_gone(portal, held, admin_page, anonymous):
    """The expiry is set in the index (no waiting): the link stops working at its expiry time."""
    mine = held.patient[0]
    link = create_link(admin_page, portal.a, mine.dataset().PatientID, days=1)
    admin_page.goto(f"/orgs/{portal.a}/admin/patient-access")
    link_id = admin_page.inner_text("tbody tr:first-child th")
    with httpx.Client(timeout=HTTP_TIMEOUT) as http:
        assert http.get(link).status_code == 200
    services = open_services(Settings(data_dir=portal.server.data_dir, parse_workers=0))
    try:
        with services.database.write() as connection:
            table = PatientAccessLink.__table__
            connection.execute(update(table).where(table.c.link_id == link_id)
                               .values(expires_at=utcnow() - timedelta(seconds=1)))
    finally:
        services.close()
    response = anonymous.goto(link)
    assert response.status == 410
    assert "expired" in anonymous.inner_text("main")
    with httpx.Client(timeout=HTTP_TIMEOUT) as http:
        assert http.get(f"{link}/dicomweb/studies/{mine.study_uid}/thumbnail").status_code == 410


def test_a_link_lasts_at_most_30_days_and_needs_a_held_patient(portal, held, admin_page):
    admin_page.goto(f"/orgs/{portal.a}/admin/patient-access")
    admin_page.fill("#link-patient", held.patient[0].dataset().PatientID)
    admin_page.eval_on_selector("#link-days", "input => input.removeAttribute('max')")
    admin_page.fill("#link-days", "31")
    admin_page.click("text=Create link")
    assert "from 1 to 30 days" in admin_page.inner_text("[role=alert]")
    admin_page.fill("#link-patient", "NOT-A-PATIENT-HERE")
    admin_page.click("text=Create link")
    assert "holds no studies" in admin_page.inner_text("[role=alert]")
