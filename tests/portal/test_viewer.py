"""The built-in viewer (issue 5) in headless Chromium against a live OIX: a 24-slice CT series and a
10-frame MR instance stored in organisation B, drawn from WADO-RS frames (PS3.18 10.4.1.1.6) with
the Modality LUT and the linear VOI window of PS3.3 C.11.2.1.2.1 applied in the browser; every
check of what is drawn compares the canvas with the window formula computed here from the pixels."""

from __future__ import annotations

import base64
import copy
import io
import secrets
import time
from dataclasses import dataclass

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from conformance.corpus import new_uid
from tests.browser import artefact_path, screenshot_and_check
from tests.dicomweb_requests import referenced_sop_instances, stow
from tests.portal.conftest import Portal
from tests.servers import run_cli

CT_SLICES = 24
WAIT_MS = 15_000
HTTP_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class Image:
    """One frame as stored: what the canvas should show through a window."""

    sop_uid: str
    frame: int
    stored: np.ndarray  # stored values, rows × columns
    slope: float
    intercept: float
    invert: bool = False

    @property
    def key(self) -> str:
        return f"{self.sop_uid}/{self.frame}"

    def windowed(self, width: float, center: float) -> np.ndarray:
        """PS3.3 C.11.2.1.2.1 linear VOI to 0..255 after the Modality LUT (C.11.1), inverted for
        MONOCHROME1."""
        x = self.stored.astype(np.float64) * self.slope + self.intercept
        low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
        y = np.where(x <= low, 0.0, np.where(x > high, 255.0, ((x - (center - 0.5)) / (width - 1) + 0.5) * 255))
        y = np.round(y)
        return 255 - y if self.invert else y


@dataclass(frozen=True)
class ViewerStudy:
    study_uid: str
    admin_key: str  # an API key of organisation B's admin role
    ct: list[Image]
    mr: list[Image]  # the frames of one multi-frame instance


def _part10(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def _ct_stack(study_uid: str) -> tuple[list[pydicom.Dataset], list[Image]]:
    """CT_small copied into a stack: new UIDs and, per slice, the pixels shifted and brightened so
    every slice differs from its neighbours."""
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series_uid = new_uid()
    datasets, images = [], []
    for k in range(CT_SLICES):
        dataset = copy.deepcopy(base)
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study_uid, series_uid
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = new_uid()
        dataset.SeriesNumber, dataset.InstanceNumber = 1, k + 1
        dataset.SeriesDescription = "Synthetic CT stack"
        pixels = (np.roll(base.pixel_array, 5 * k, axis=1).astype(np.int32) + 20 * k).astype("<i2")
        dataset.PixelData = pixels.tobytes()
        datasets.append(dataset)
        images.append(Image(dataset.SOPInstanceUID, 1, pixels, float(dataset.RescaleSlope),
                            float(dataset.RescaleIntercept)))
    return datasets, images


def _multi_frame(study_uid: str) -> tuple[pydicom.Dataset, list[Image]]:
    dataset = pydicom.dcmread(get_testdata_file("emri_small.dcm"))  # 10 frames, 64 × 64, 12 of 16 bits
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study_uid, new_uid()
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = new_uid()
    dataset.SeriesNumber, dataset.SeriesDescription = 2, "Multi-frame MR"
    frames = dataset.pixel_array
    return dataset, [Image(dataset.SOPInstanceUID, n + 1, frames[n], 1.0, 0.0) for n in range(len(frames))]


@pytest.fixture(scope="module")
def study(portal: Portal) -> ViewerStudy:
    """Stored in organisation B over STOW-RS with an admin API key from `oix key create`."""
    key = run_cli(["key", "create", "--org", portal.b, "--role", "admin"], portal.cli_env()).stdout.strip()
    study_uid = new_uid()
    ct_datasets, ct = _ct_stack(study_uid)
    mr_dataset, mr = _multi_frame(study_uid)
    with httpx.Client(base_url=portal.base_url, timeout=HTTP_TIMEOUT_SECONDS,
                      headers={"Authorization": f"Bearer {key}"}) as http:
        answer = stow(http, f"/dicomweb/{portal.b}", [_part10(d) for d in [*ct_datasets, mr_dataset]])
    assert answer.status_code == 200, answer.text
    assert len(referenced_sop_instances(answer.json())) == CT_SLICES + 1
    return ViewerStudy(study_uid, key, ct, mr)


@pytest.fixture(scope="module")
def photometric_study(portal: Portal, study: ViewerStudy) -> tuple[str, list[pydicom.Dataset]]:
    """US1_UNCR (RGB) as stored, Planar Configuration 0; the same pixels re-laid colour by plane
    (Planar Configuration 1, PS3.3 C.7.6.3.1.3); and a CT slice declared MONOCHROME1."""
    study_uid = new_uid()
    interleaved = pydicom.dcmread(get_testdata_file("US1_UNCR.dcm"))
    by_plane = copy.deepcopy(interleaved)
    by_plane.PlanarConfiguration = 1
    by_plane.PixelData = np.ascontiguousarray(interleaved.pixel_array.transpose(2, 0, 1)).tobytes()
    inverted = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    inverted.PhotometricInterpretation = "MONOCHROME1"
    datasets = [interleaved, by_plane, inverted]
    for number, dataset in enumerate(datasets, start=1):
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SeriesNumber = study_uid, new_uid(), number
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = new_uid()
    with httpx.Client(base_url=portal.base_url, timeout=HTTP_TIMEOUT_SECONDS,
                      headers={"Authorization": f"Bearer {study.admin_key}"}) as http:
        answer = stow(http, f"/dicomweb/{portal.b}", [_part10(d) for d in datasets])
    assert answer.status_code == 200 and len(referenced_sop_instances(answer.json())) == 3, answer.text
    return study_uid, datasets


# -- what the page shows -------------------------------------------------------------------------

def _until(page, predicate: str, arg=None) -> None:
    """Poll `predicate` (a JavaScript function) until it is true, for at most WAIT_MS. Polled from
    the test driver: the page's Content-Security-Policy (no 'unsafe-eval') stops playwright's
    own in-page polling of wait_for_function."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while not page.evaluate(predicate, arg):
        assert time.monotonic() < deadline, f"not true within {WAIT_MS} ms: {predicate} ({arg})"
        page.wait_for_timeout(20)


def _open(page, portal: Portal, study: ViewerStudy) -> None:
    page.goto(f"/viewer/{portal.b}/studies/{study.study_uid}")


def _wait_shown(page, key: str) -> None:
    """Until the image `key` (SOP Instance UID/frame) is drawn."""
    _until(page, "key => document.querySelector('.oix-viewer').dataset.shown === key", key)


def _canvas_rgba(page) -> np.ndarray:
    """The canvas's RGBA pixels, rows × columns × 4 (sent base64-encoded: an array of numbers
    would be slow to pass)."""
    found = page.evaluate("""() => {
        const canvas = document.querySelector('.oix-canvas');
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let text = '';
        for (let i = 0; i < data.length; i += 0x8000) text += String.fromCharCode(...data.subarray(i, i + 0x8000));
        return {width: canvas.width, height: canvas.height, rgba: btoa(text)};
    }""")
    pixels = np.frombuffer(base64.b64decode(found["rgba"]), dtype=np.uint8)
    return pixels.reshape(found["height"], found["width"], 4).astype(np.float64)


def _canvas(page) -> np.ndarray:
    """The canvas's grey levels (its red channel), rows × columns."""
    return _canvas_rgba(page)[..., 0]


def _window(page) -> tuple[float, float]:
    width, center = page.evaluate("document.querySelector('.oix-viewer').dataset.window").split("/")
    return float(width), float(center)


def _wait_window(page, expected: str) -> None:
    _until(page, "w => document.querySelector('.oix-viewer').dataset.window === w", expected)


def _assert_drawn(page, image: Image) -> np.ndarray:
    """The canvas is `image` through the window the page says it uses, within ±2 grey levels."""
    page.wait_for_timeout(50)  # the draw follows the window change in the next animation frame
    drawn = _canvas(page)
    expected = image.windowed(*_window(page))
    assert drawn.shape == expected.shape
    worst = float(np.abs(drawn - expected).max())
    assert worst <= 2, f"{image.key}: canvas differs from the window formula by up to {worst} grey levels"
    return drawn


def _counter(page) -> str:
    return page.locator(".oix-counter").inner_text()


# -- tests ---------------------------------------------------------------------------------------

def test_viewer_draws_scrolls_and_windows_a_ct_series(portal, study, signed_in, request):
    page = signed_in("b-viewer")
    started = time.monotonic()
    _open(page, portal, study)
    _wait_shown(page, study.ct[0].key)
    assert time.monotonic() - started < WAIT_MS / 1000
    first = _assert_drawn(page, study.ct[0])
    assert first.var() > 100, "the first image is drawn, not a flat canvas"
    assert _counter(page) == f"Image 1 of {CT_SLICES}"
    assert page.evaluate("performance.getEntriesByName('oix-first-image').length") == 1
    page.screenshot(path=artefact_path(request.node.nodeid, "first-image.png"), full_page=True)

    # The mouse wheel moves to the next image.
    box = page.locator(".oix-canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, 120)
    _wait_shown(page, study.ct[1].key)
    assert _counter(page) == f"Image 2 of {CT_SLICES}"
    second = _assert_drawn(page, study.ct[1])
    assert np.abs(second - first).mean() > 1, "scrolling changes what is drawn"

    # The keys: arrows, Page Down (ten on), End, Home; and the slider.
    page.locator(".oix-canvas").focus()
    page.keyboard.press("ArrowDown")
    _wait_shown(page, study.ct[2].key)
    page.keyboard.press("PageDown")
    _wait_shown(page, study.ct[12].key)
    assert _counter(page) == f"Image 13 of {CT_SLICES}"
    _assert_drawn(page, study.ct[12])
    page.keyboard.press("End")
    _wait_shown(page, study.ct[-1].key)
    page.keyboard.press("ArrowUp")
    _wait_shown(page, study.ct[-2].key)
    page.keyboard.press("Home")
    _wait_shown(page, study.ct[0].key)
    page.get_by_label("Image", exact=True).fill("6")
    _wait_shown(page, study.ct[5].key)
    assert _counter(page) == f"Image 6 of {CT_SLICES}"
    image = study.ct[5]

    # Window presets (CT soft tissue W400/L40, lung W1500/L-600) and the key for bone.
    page.get_by_role("button", name="Soft tissue").click()
    _wait_window(page, "400/40")
    soft = _assert_drawn(page, image)
    page.get_by_role("button", name="Lung").click()
    _wait_window(page, "1500/-600")
    lung = _assert_drawn(page, image)
    assert np.abs(lung - soft).mean() > 5, "the lung window draws the slice differently from soft tissue"
    # This slice holds air and soft tissue: the narrow soft-tissue window saturates more of it.
    saturated = lambda grey: int(np.count_nonzero((grey == 0) | (grey == 255)))  # noqa: E731
    assert saturated(soft) > saturated(lung)
    page.locator(".oix-canvas").focus()
    page.keyboard.press("3")
    _wait_window(page, "2000/300")
    _assert_drawn(page, image)
    page.screenshot(path=artefact_path(request.node.nodeid, "bone-window.png"), full_page=True)

    # Left drag windows: across widens, down raises the centre; what is drawn follows at once.
    page.get_by_role("button", name="Lung").click()
    _wait_window(page, "1500/-600")
    box = page.locator(".oix-canvas").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 60, y + 40, steps=6)
    page.mouse.up()
    width, center = _window(page)
    assert width > 1500 and center > -600, (width, center)
    dragged = _assert_drawn(page, image)
    assert np.abs(dragged - lung).mean() > 1

    # Zoom changes the drawing; Fit gives back the pixel-exact image.
    page.get_by_role("button", name="Zoom in").click()
    _until(page, "() => document.querySelector('.oix-zoom-level').textContent === '125%'")
    page.wait_for_timeout(50)
    assert np.abs(_canvas(page) - dragged).mean() > 1
    page.get_by_role("button", name="Fit").click()
    _until(page, "() => document.querySelector('.oix-zoom-level').textContent === '100%'")
    _assert_drawn(page, image)

    # The attributes panel names the patient and the instance shown.
    tags = page.locator(".oix-tags").inner_text()
    assert "CompressedSamples^CT1" in tags and image.sop_uid in tags and "Synthetic CT stack" in tags

    # All 24 frames were prefetched.
    _until(page, "() => performance.getEntriesByName('oix-all-images').length === 1")
    screenshot_and_check(page, request.node.nodeid, "axe")


def test_viewer_plays_the_frames_of_a_multi_frame_instance_and_works_without_thumbnails(
        portal, study, signed_in, request):
    page = signed_in("b-viewer")
    refused = []

    def no_thumbnail(route):
        refused.append(route.request.url)
        route.fulfill(status=404, body="")

    page.route("**/thumbnail", no_thumbnail)
    _open(page, portal, study)
    _wait_shown(page, study.ct[0].key)
    series_two = page.get_by_role("button", name="Series 2")
    assert "Multi-frame MR" in series_two.inner_text() and "10 images" in series_two.inner_text()
    _until(page, "() => document.querySelectorAll('img.oix-thumbnail-failed').length === 2")
    assert len(refused) == 2
    series_two.click()
    _wait_shown(page, study.mr[0].key)
    assert series_two.get_attribute("aria-pressed") == "true"
    assert page.locator(".oix-frame").inner_text() == "Frame 1 of 10"
    _assert_drawn(page, study.mr[0])

    page.get_by_label("Frames per second").fill("20")
    page.get_by_role("button", name="Play").click()
    frame_now = "() => document.querySelector('.oix-viewer').dataset.frame"
    _until(page, "f => document.querySelector('.oix-viewer').dataset.frame !== f", "1")
    _until(page, "f => document.querySelector('.oix-viewer').dataset.frame !== f", page.evaluate(frame_now))
    page.get_by_role("button", name="Pause").click()
    assert page.locator(".oix-play").get_attribute("aria-pressed") == "false"
    stopped = page.locator(".oix-frame").inner_text()
    page.wait_for_timeout(300)
    assert page.locator(".oix-frame").inner_text() == stopped, "paused cine stays on its frame"
    frame = int(page.evaluate(frame_now))
    _wait_shown(page, study.mr[frame - 1].key)
    _assert_drawn(page, study.mr[frame - 1])
    page.screenshot(path=artefact_path(request.node.nodeid, "cine-paused.png"), full_page=True)
    screenshot_and_check(page, request.node.nodeid, "axe")


def test_viewer_page_is_audited_and_refuses_what_is_not_held(portal, study, signed_in):
    page = signed_in("b-viewer")
    missing = f"2.25.{secrets.randbits(96)}"
    answer = page.goto(f"/viewer/{portal.b}/studies/{missing}")
    assert answer.status == 404
    assert "Study not found" in page.locator("h1").inner_text() and missing in page.content()

    with httpx.Client(base_url=portal.base_url, timeout=HTTP_TIMEOUT_SECONDS, follow_redirects=False) as http:
        anonymous = http.get(f"/viewer/{portal.b}/studies/{study.study_uid}")
        assert anonymous.status_code == 303
        assert anonymous.headers["location"].startswith("/login?next=%2Fviewer%2F")
        page.goto(f"/viewer/{portal.b}/studies/{study.study_uid}")
        events = http.get(f"/api/orgs/{portal.b}/audit", params={"study": study.study_uid, "action": "retrieve"},
                          headers={"Authorization": f"Bearer {study.admin_key}"}).json()["events"]
    viewer = portal.accounts["b-viewer"].username
    opened = [e for e in events if viewer in e["actor"] and e["detail"].startswith("viewer page")]
    assert opened and opened[0]["outcome"] == 0, events


def test_viewer_draws_colour_by_pixel_or_by_plane_and_inverts_monochrome1(portal, photometric_study, signed_in,
                                                                          request):
    study_uid, (interleaved, by_plane, inverted) = photometric_study
    page = signed_in("b-viewer")
    page.goto(f"/viewer/{portal.b}/studies/{study_uid}")
    expected_rgb = interleaved.pixel_array.astype(np.float64)
    for number, dataset in ((1, interleaved), (2, by_plane)):
        page.get_by_role("button", name=f"Series {number}").click()
        _wait_shown(page, f"{dataset.SOPInstanceUID}/1")
        drawn = _canvas_rgba(page)
        assert float(np.abs(drawn[..., :3] - expected_rgb).max()) <= 2, f"planar configuration {number - 1}"
        page.screenshot(path=artefact_path(request.node.nodeid, f"rgb-planar-{number - 1}.png"), full_page=True)
    page.get_by_role("button", name="Series 3").click()
    image = Image(inverted.SOPInstanceUID, 1, inverted.pixel_array, float(inverted.RescaleSlope),
                  float(inverted.RescaleIntercept), invert=True)
    _wait_shown(page, image.key)
    page.get_by_role("button", name="Soft tissue").click()
    _wait_window(page, "400/40")
    drawn = _assert_drawn(page, image)
    air = image.stored == image.stored.min()
    assert drawn[air].min() >= 253, "MONOCHROME1 (PS3.3 C.7.6.3.1.2): the lowest values are drawn white"
