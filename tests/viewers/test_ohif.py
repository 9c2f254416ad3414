"""OHIF v3 (the prebuilt `@ohif/app`) on its own origin against a live OIX, configured exactly as
docs/ohif.md says: the study list shows every stored study, a filter typed in it becomes a
QIDO-RS query OIX answers, each study opens with its image drawn (the viewport's pixels are
compared with the stored image, not merely found non-blank), and with authentication on a bearer
token crosses origins: preflights answered, refusals readable (CORS, the Fetch standard)."""

from __future__ import annotations

import base64
import io
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from PIL import Image
from pydicom.pixels import apply_color_lut

from tests.browser import artefact_path
from tests.dicomweb_requests import stow
from tests.real_files import CorpusFile, by_name
from tests.servers import OixServer, new_org_slug, start_server, stop_server
from tests.trust.oidc_issuer import LocalOidcIssuer
from tests.viewers.conftest import OhifSite, ViewerPage, documented_app_config

# Corpus file -> what it exercises in the viewer. Each is a study of its own.
STUDIES = {
    "pydicom/CT_small.dcm": "CT, Explicit VR Little Endian",
    "pydicom-data/emri_small_RLE.dcm": "enhanced MR, 10 frames, RLE Lossless",
    "pydicom-data/RG3_J2KR.dcm": "CR, MONOCHROME1, JPEG 2000 Lossless",
    "pydicom-data/US1_J2KR.dcm": "colour US, JPEG 2000 Lossless (YBR_RCT)",
    "pydicom/examples_ybr_color.dcm": "colour US cine, 30 frames, JPEG Baseline (YBR_FULL_422)",
    "pydicom-data/OBXXXX1A.dcm": "palette colour US (LUTs inline in the metadata)",
}
PAGE_TIMEOUT_MS = 30_000
RENDER_TIMEOUT_SECONDS = 30.0
POLL_MS = 400
HTTP_TIMEOUT_SECONDS = 60.0
# The drawn image against the stored one, sampled on a grid: a wrong decode (byte order, colour
# model, frame layout) or another image correlates far lower; OHIF's windowing is monotonic.
MIN_CORRELATION = 0.95
MIN_VARIANCE = 100.0  # of the viewport's grey levels (0-255): a blank or flat canvas is ~0

# OHIF's viewport canvas, as an image: None until it has one.
CANVAS_PNG = """() => {
    const canvas = document.querySelector('[data-cy="viewport-pane"] canvas.cornerstone-canvas');
    return canvas && canvas.width > 0 && canvas.height > 0 ? canvas.toDataURL('image/png') : null;
}"""
# The study list's rows (not the row of filter boxes), each cell named by its column's sort button
# ("Sort Patient" -> Patient), and how many there are.
STUDY_ROW_ELEMENTS = "[...document.querySelectorAll('tbody tr')].filter(tr => !tr.querySelector('input'))"
STUDY_ROWS = f"""() => {{
    const names = [...document.querySelectorAll('thead th')].map(
        th => (th.querySelector('button[aria-label^="Sort "]')?.getAttribute('aria-label') || '').slice(5));
    return {STUDY_ROW_ELEMENTS}.map(tr => Object.fromEntries(
        [...tr.querySelectorAll('td')].map((td, i) => [names[i] || String(i), td.innerText.trim()])));
}}"""
# A search from the viewer's own script without credentials: its status and WWW-Authenticate.
READ_REFUSAL = """async (url) => {
    const response = await fetch(url, {headers: {Accept: 'application/dicom+json'}});
    return {status: response.status, challenge: response.headers.get('WWW-Authenticate') || ''};
}"""
# Marks the filter box under a column's heading, so that playwright can type into it.
MARK_FILTER = """(column) => {
    const heading = [...document.querySelectorAll('thead th')].find(th => th.innerText.trim() === column);
    if (!heading) return false;
    const box = heading.getBoundingClientRect();
    const input = [...document.querySelectorAll('input[type=text], input:not([type])')].find(i => {
        const r = i.getBoundingClientRect();
        return r.top >= box.bottom - 1 && r.left >= box.left - 2 && r.right <= box.right + 2;
    });
    if (!input) return false;
    input.setAttribute('data-test-filter', column);
    return true;
}"""


@dataclass(frozen=True)
class LiveOix:
    server: OixServer
    org: str

    @property
    def root(self) -> str:
        return self.server.root(self.org)


@pytest.fixture(scope="module")
def studies() -> dict[str, CorpusFile]:
    found = {name: by_name(name) for name in STUDIES}
    assert len({item.study_uid for item in found.values()}) == len(found), "each file must be a study of its own"
    return found


@pytest.fixture(scope="module")
def oix(tmp_path_factory, ohif_site: OhifSite, studies) -> Iterator[LiveOix]:
    """An OIX on another port than the viewer (so every call is cross-origin), in the embedded
    mode without authentication, holding the studies; the viewer's origin is the one allowed."""
    server = start_server(tmp_path_factory.mktemp("ohif") / "data", args=("--cors-origin", ohif_site.origin))
    try:
        org = server.add_org(new_org_slug("ohif"))
        with httpx.Client(timeout=HTTP_TIMEOUT_SECONDS) as http:
            stored = stow(http, server.root(org), [item.data for item in studies.values()])
        assert stored.status_code == 200, (stored.status_code, stored.text[:500])
        yield LiveOix(server, org)
    finally:
        stop_server(server)


@pytest.fixture
def on_oix(viewer_page: ViewerPage, ohif_site: OhifSite, oix: LiveOix) -> ViewerPage:
    """The page, with OHIF configured for `oix` from the next navigation on."""
    ohif_site.app_config = documented_app_config(oix.root)
    viewer_page.traffic.clear()
    return viewer_page


# -- the study list ---------------------------------------------------------------------------------

def test_study_list_shows_every_stored_study(on_oix: ViewerPage, ohif_site: OhifSite, studies, request):
    """PS3.18 10.6 (QIDO-RS Search for Studies, with OHIF's includefield): one row per study with
    its patient, modality, description and accession number as stored."""
    page, traffic = on_oix.page, on_oix.traffic
    page.goto(f"{ohif_site.origin}/", timeout=PAGE_TIMEOUT_MS)
    page.wait_for_function(f"{STUDY_ROW_ELEMENTS}.length >= {len(studies)}", timeout=PAGE_TIMEOUT_MS)
    dismiss_notice(page)
    page.screenshot(path=artefact_path(request.node.nodeid, "study-list.png"))
    rows = page.evaluate(STUDY_ROWS)
    assert len(rows) == len(studies), rows
    for name, item in studies.items():
        matching = [row for row in rows if row_shows(row, item)]
        assert len(matching) == 1, (name, listed(item), rows)
    assert not traffic.refused and not traffic.failed, (traffic.refused, traffic.failed)


def test_study_list_filter_is_a_query_oix_answers(on_oix: ViewerPage, ohif_site: OhifSite, oix: LiveOix, studies,
                                                  request):
    """OHIF turns the text typed under Description into StudyDescription=*text* (supportsWildcard);
    OIX matches it (PS3.4 C.2.2.2.4 wildcard matching) and the list keeps the one study."""
    page, traffic = on_oix.page, on_oix.traffic
    page.goto(f"{ohif_site.origin}/", timeout=PAGE_TIMEOUT_MS)
    page.wait_for_function(f"{STUDY_ROW_ELEMENTS}.length >= {len(studies)}", timeout=PAGE_TIMEOUT_MS)
    dismiss_notice(page)
    assert page.evaluate(MARK_FILTER, "Description"), "no filter box under the Description column"
    wanted = studies["pydicom-data/RG3_J2KR.dcm"]
    word = "fibroma"
    assert word in str(wanted.dataset().StudyDescription)  # "Non-ossifying fibroma of distal tibia"
    with page.expect_response(lambda r: r.url.startswith(f"{oix.root}/studies?") and "StudyDescription=" in r.url,
                              timeout=PAGE_TIMEOUT_MS) as searched:
        page.fill("[data-test-filter=Description]", word)
    assert searched.value.status == 200
    assert f"StudyDescription=%2A{word}%2A" in searched.value.url or f"StudyDescription=*{word}*" in searched.value.url
    page.wait_for_function(f"{STUDY_ROW_ELEMENTS}.length === 1", timeout=PAGE_TIMEOUT_MS)
    page.screenshot(path=artefact_path(request.node.nodeid, "study-list-filtered.png"))
    rows = page.evaluate(STUDY_ROWS)
    assert len(rows) == 1 and row_shows(rows[0], wanted), rows
    assert not traffic.refused and not traffic.failed, (traffic.refused, traffic.failed)


# -- the viewer ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(STUDIES))
def test_viewer_draws_the_stored_image(on_oix: ViewerPage, ohif_site: OhifSite, studies, name, request):
    """Lazy study load (series, then series metadata) and WADO-RS Retrieve Frames with
    transfer-syntax=* (PS3.18 10.4.1.1.6): the frames as stored, decoded by OHIF in the browser,
    drawn so that the viewport matches the stored image."""
    page, traffic = on_oix.page, on_oix.traffic
    item = studies[name]
    page.goto(f"{ohif_site.origin}/viewer?StudyInstanceUIDs={item.study_uid}", timeout=PAGE_TIMEOUT_MS)
    measured = wait_for_image(page, item, request.node.nodeid)
    assert measured.correlation >= MIN_CORRELATION and measured.variance >= MIN_VARIANCE, (name, measured)
    assert not traffic.refused and not traffic.failed, (traffic.refused, traffic.failed)


def test_study_browser_shows_thumbnails_oix_draws(on_oix: ViewerPage, ohif_site: OhifSite, oix: LiveOix, studies,
                                                  request):
    """The guide's alternative, thumbnailRendering: 'thumbnail': OHIF fetches the instance's
    thumbnail resource (PS3.18 10.4.1.1.8, accept=image/jpeg) and shows the JPEG OIX draws."""
    page, traffic = on_oix.page, on_oix.traffic
    documented = documented_app_config(oix.root)
    assert "thumbnailRendering: 'wadors'" in documented
    ohif_site.app_config = documented.replace("thumbnailRendering: 'wadors'", "thumbnailRendering: 'thumbnail'")
    item = studies["pydicom-data/US1_J2KR.dcm"]
    with page.expect_response(lambda r: r.url.startswith(f"{oix.root}/studies/{item.study_uid}/")
                              and "/thumbnail" in r.url, timeout=PAGE_TIMEOUT_MS) as fetched:
        page.goto(f"{ohif_site.origin}/viewer?StudyInstanceUIDs={item.study_uid}", timeout=PAGE_TIMEOUT_MS)
    thumbnail = fetched.value
    assert thumbnail.status == 200 and thumbnail.header_value("content-type") == "image/jpeg"
    drawn = np.asarray(Image.open(io.BytesIO(thumbnail.body())).convert("L"), dtype=np.float64)
    assert drawn.var() >= MIN_VARIANCE, drawn.var()
    page.wait_for_function("[...document.images].some(i => i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0)",
                           timeout=PAGE_TIMEOUT_MS)
    dismiss_notice(page)
    page.screenshot(path=artefact_path(request.node.nodeid, "page.png"))
    assert not traffic.refused and not traffic.failed, (traffic.refused, traffic.failed)


# -- authentication on: a bearer token across origins ---------------------------------------------------

@dataclass(frozen=True)
class SecuredOix(LiveOix):
    issuer: LocalOidcIssuer


@pytest.fixture(scope="module")
def secured_oix(tmp_path_factory, ohif_site: OhifSite, studies) -> Iterator[SecuredOix]:
    """An OIX that requires credentials and trusts a real OpenID provider (on loopback): the set-up
    docs/ohif.md describes, with the study stored by a sender holding a token of its own."""
    issuer = LocalOidcIssuer().start()
    try:
        server = start_server(tmp_path_factory.mktemp("ohif-auth") / "data", auth=True,
                              env=issuer.environment(with_client=False), args=("--cors-origin", ohif_site.origin))
        try:
            org = server.add_org(new_org_slug("ohif"))
            sender = issuer.mint({"oix_orgs": {org: "sender"}})
            with httpx.Client(timeout=HTTP_TIMEOUT_SECONDS) as http:
                stored = stow(http, server.root(org), [studies["pydicom/CT_small.dcm"].data],
                              headers={"Authorization": f"Bearer {sender}"})
            assert stored.status_code == 200, (stored.status_code, stored.text[:500])
            yield SecuredOix(server, org, issuer)
        finally:
            stop_server(server)
    finally:
        issuer.stop()


def test_viewer_sends_a_bearer_token_across_origins(viewer_page: ViewerPage, ohif_site: OhifSite, secured_oix,
                                                    studies, request):
    """Without a token OHIF's first search reaches it as a 401 (the refusal carries CORS headers,
    so the viewer can read it); with `?token=` (docs/ohif.md) every request carries
    Authorization: Bearer, the browser's preflights for it are answered, and the image is drawn."""
    page, traffic = viewer_page.page, viewer_page.traffic
    ohif_site.app_config = documented_app_config(secured_oix.root)
    item = studies["pydicom/CT_small.dcm"]
    viewer_url = f"{ohif_site.origin}/viewer?StudyInstanceUIDs={item.study_uid}"

    traffic.clear()
    with page.expect_response(lambda r: r.url.startswith(secured_oix.root), timeout=PAGE_TIMEOUT_MS) as first:
        page.goto(viewer_url, timeout=PAGE_TIMEOUT_MS)
    assert first.value.status == 401, (first.value.status, first.value.url)
    # What the viewer's own script may read of it, under the browser's CORS rules.
    seen = page.evaluate(READ_REFUSAL, f"{secured_oix.root}/studies")
    assert seen["status"] == 401 and seen["challenge"].startswith("Bearer"), seen

    traffic.clear()
    token = secured_oix.issuer.mint({"oix_orgs": {secured_oix.org: "viewer"}})
    page.goto(f"{viewer_url}&token={token}", timeout=PAGE_TIMEOUT_MS)
    measured = wait_for_image(page, item, request.node.nodeid)
    assert measured.correlation >= MIN_CORRELATION and measured.variance >= MIN_VARIANCE, measured
    assert "token=" not in page.url  # OHIF takes it out of the address bar
    assert not traffic.refused and not traffic.failed, (traffic.refused, traffic.failed)
    preflights = requests_counted(secured_oix.server, "OPTIONS")
    frames = "/dicomweb/{org}/studies/{study}/series/{series}/instances/{instance}/frames/{frames}"
    assert preflights.get((frames, "200"), 0) >= 1, preflights
    assert not [key for key in preflights if key[1] != "200"], preflights


# -- helpers ------------------------------------------------------------------------------------------

def dismiss_notice(page) -> None:
    """OHIF's 'for investigational use only' banner, once per browser context (it covers the
    bottom of the viewport in the screenshots)."""
    button = page.get_by_role("button", name="Confirm and hide")
    if button.count():
        button.first.click(timeout=PAGE_TIMEOUT_MS)


def listed(item: CorpusFile) -> dict[str, str]:
    """What the study list should show of `item`, from the stored file itself."""
    dataset = item.dataset()
    return {"family name": str(dataset.get("PatientName", "")).split("^")[0],
            "Modalities": str(dataset.get("Modality", "")),
            "Description": str(dataset.get("StudyDescription", "") or ""),
            "Accession": str(dataset.get("AccessionNumber", "") or "")}


def row_shows(row: dict[str, str], item: CorpusFile) -> bool:
    expected = listed(item)
    return (expected["family name"] in row.get("Patient", "")
            and row.get("Modalities") == expected["Modalities"]
            and (not expected["Description"] or row.get("Description") == expected["Description"])
            and row.get("Accession", "") == expected["Accession"]
            and row.get("Instances") == "1")


@dataclass(frozen=True)
class Likeness:
    correlation: float  # Pearson, drawn grey levels against stored values on the image's grid
    frame: int  # the stored frame the viewport matches best (1-based)
    variance: float  # of the viewport's grey levels


def stored_frames(item: CorpusFile) -> np.ndarray:
    """The stored image as grey values per frame (frames, rows, columns): colour averaged over
    its channels after the palette (PS3.3 C.7.6.3.1.5), MONOCHROME1 negated (PS3.3 C.7.6.3.1.2)."""
    dataset = item.dataset()
    pixels = dataset.pixel_array
    if dataset.PhotometricInterpretation == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, dataset)
    pixels = pixels.astype(np.float64)
    colour = int(dataset.get("SamplesPerPixel", 1)) > 1 or dataset.PhotometricInterpretation == "PALETTE COLOR"
    if colour:
        pixels = pixels.mean(axis=-1)
    if int(dataset.get("NumberOfFrames") or 1) == 1:
        pixels = pixels[np.newaxis]
    return -pixels if dataset.PhotometricInterpretation == "MONOCHROME1" else pixels


def likeness(drawn: np.ndarray, frames: np.ndarray) -> Likeness:
    """Sample the viewport where each stored pixel lands: OHIF fits the whole image into the
    viewport, centred, at one scale (square pixels, as in every file here)."""
    grey = drawn.mean(axis=2)
    height, width = grey.shape
    rows, columns = frames.shape[1:]
    scale = min(width / columns, height / rows)
    step = max(1, min(rows, columns) // 64)
    sample_rows, sample_columns = np.arange(step // 2, rows, step), np.arange(step // 2, columns, step)
    ys = np.clip(((height - rows * scale) / 2 + (sample_rows + 0.5) * scale).astype(int), 0, height - 1)
    xs = np.clip(((width - columns * scale) / 2 + (sample_columns + 0.5) * scale).astype(int), 0, width - 1)
    seen = grey[np.ix_(ys, xs)].ravel()
    best = (-1.0, 0)
    if seen.std() > 0:
        for index, frame in enumerate(frames):
            stored = frame[np.ix_(sample_rows, sample_columns)].ravel()
            if stored.std() > 0:
                best = max(best, (float(np.corrcoef(seen, stored)[0, 1]), index + 1))
    return Likeness(best[0], best[1], float(grey.var()))


def wait_for_image(page, item: CorpusFile, test_id: str) -> Likeness:
    """Poll the viewport until it shows the stored image (or the time is up), then keep
    screenshots of the viewport and the page."""
    expected = stored_frames(item)
    deadline = time.monotonic() + RENDER_TIMEOUT_SECONDS
    measured = Likeness(-1.0, 0, 0.0)
    while time.monotonic() < deadline:
        data_url = page.evaluate(CANVAS_PNG)
        if data_url:
            drawn = np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))
            measured = likeness(drawn.astype(np.float64), expected)
            if measured.correlation >= MIN_CORRELATION and measured.variance >= MIN_VARIANCE:
                break
        page.wait_for_timeout(POLL_MS)
    dismiss_notice(page)
    page.locator('[data-cy="viewport-pane"]').first.screenshot(path=artefact_path(test_id, "viewport.png"),
                                                              timeout=PAGE_TIMEOUT_MS)
    page.screenshot(path=artefact_path(test_id, "page.png"))
    return measured


def requests_counted(server: OixServer, method: str) -> dict[tuple[str, str], float]:
    """(route, status) -> requests answered, from the server's own /metrics."""
    counts: dict[tuple[str, str], float] = {}
    text = httpx.get(f"{server.base_url}/metrics", timeout=HTTP_TIMEOUT_SECONDS).text
    for line in text.splitlines():
        if line.startswith("oix_http_requests_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            if labels["method"] == method:
                key = (labels["route"], labels["status"])
                counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts
