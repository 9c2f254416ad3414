"""WADO-RS rendered and thumbnail resources (PS3.18 10.4.1.1.7-8, 8.3.5) against a live server
holding the real corpus: every image that can be decoded is rendered within ±2 grey levels of
a rendering computed here from pydicom's own functions (PS3.4 N.2), never from the server's."""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Iterator

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

from dicomweb.lru import LruCache
from tests.dicomweb_requests import instance_url
from tests.multipart_body import split_related
from tests.real_files import CorpusFile, by_name, corpus_files, layers
from tests.servers import OixServer, new_org_slug, start_server, stop_server

PNG, JPEG, GIF = "image/png", "image/jpeg", "image/gif"
# Corpus files with Pixel Data that no rendering can come from: a clear 406, never a broken image.
UNRENDERABLE = {
    "pydicom/JPEG-lossy.dcm": "12-bit JPEG extended that no installed decoder reads",
    "pydicom/JPEG2000-embedded-sequence-delimiter.dcm": "a codestream the JPEG 2000 decoder refuses",
    "pydicom/badVR.dcm": "deliberately invalid values: Columns is '1A'",
}
IMAGES = [item for item in corpus_files() if item.has_pixel_data and item.name not in UNRENDERABLE]
NOT_IMAGES = [item for item in corpus_files() if not item.has_pixel_data]
FRAME_MACROS = ("PixelValueTransformationSequence", "FrameVOILUTSequence")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[OixServer]:
    running = start_server(tmp_path_factory.mktemp("rendered") / "data")
    try:
        yield running
    finally:
        stop_server(running)


@pytest.fixture(scope="module")
def http(server: OixServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def holder(server: OixServer, http: httpx.Client) -> dict[str, str]:
    """The corpus stored once with STOW-RS: file name -> the organisation holding it (files
    sharing an SOP Instance UID go to different organisations, see tests.real_files.layers)."""
    from tests.dicomweb_requests import stow

    held = {}
    for layer in layers(corpus_files()):
        org = server.add_org(new_org_slug("rendered"))
        response = stow(http, server.root(org), [item.data for item in layer])
        assert response.status_code == 200, response.text[:500]
        held.update({item.name: org for item in layer})
    return held


def url_of(server: OixServer, holder: dict[str, str], item: CorpusFile, tail: str = "/rendered") -> str:
    return instance_url(server.root(holder[item.name]), item.study_uid, item.series_uid, item.sop_instance_uid) + tail


def fetch(http: httpx.Client, url: str, accept: str = PNG, **params) -> httpx.Response:
    response = http.get(url, params=params, headers={"Accept": accept})
    assert response.status_code == 200, (response.status_code, response.text[:300])
    return response


def image_of(response: httpx.Response) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(response.content))).astype(np.int32)


# -- the reference rendering, from pydicom's functions ----------------------------------------------

def expected_display(dataset: pydicom.Dataset, index: int = 0, window: tuple | None = None) -> np.ndarray:
    """Frame `index` as a display shows it, 0-255: pydicom's modality LUT and VOI LUT or window
    (a requested `window` of (center, width, function) instead of the object's), MONOCHROME1
    inverted; colour as RGB, palette colour through pydicom's apply_color_lut."""
    frame = pixel_array(dataset, index=index)
    if dataset.PhotometricInterpretation == "PALETTE COLOR":
        return apply_color_lut(frame, dataset) * (255 / (2 ** dataset.RedPaletteColorLookupTableDescriptor[2] - 1))
    if frame.ndim == 3:
        return frame * (255 / (2 ** dataset.BitsStored - 1))
    attributes = frame_view(dataset, index)
    if window is not None:
        attributes.WindowCenter, attributes.WindowWidth, attributes.VOILUTFunction = window
    values = apply_modality_lut(frame, attributes)
    if "WindowCenter" in attributes and "WindowWidth" in attributes:
        # The window's own output range, whatever pydicom chose for it: its two extremes.
        low, high = apply_voi_lut(np.array([-1e30, 1e30]), attributes, prefer_lut=False)
        shown = (apply_voi_lut(values, attributes, prefer_lut=False) - low) * (255 / (high - low))
    elif "VOILUTSequence" in attributes:
        bits = attributes.VOILUTSequence[0].LUTDescriptor[2]  # PS3.3 C.11.2.1.1: the LUT's output bits
        shown = apply_voi_lut(values, attributes) * (255 / (2 ** bits - 1))
    else:
        values = values.astype(np.float64)
        span = values.max() - values.min()
        shown = (values - values.min()) * (255 / span) if span else values * 0
    return 255 - shown if dataset.PhotometricInterpretation == "MONOCHROME1" else shown


def frame_view(dataset: pydicom.Dataset, index: int) -> pydicom.Dataset:
    """A copy with the frame's functional group macros of PS3.3 C.7.6.16.2.9-10 (per-frame
    before shared) at the top level, where pydicom's LUT functions look."""
    view = copy.deepcopy(dataset)  # pydicom's windowing writes to the dataset it is given
    per_frame = list(dataset.get("PerFrameFunctionalGroupsSequence") or [])[index:index + 1]
    shared = list(dataset.get("SharedFunctionalGroupsSequence") or [])
    for macro in FRAME_MACROS:
        for groups in per_frame + shared:
            if macro in groups:
                view.update(groups[macro][0])
                break
    return view


def assert_close(got: np.ndarray, expected: np.ndarray, tolerance: int = 2) -> None:
    expected = np.rint(np.clip(expected, 0, 255)).astype(np.int32)
    assert got.shape == expected.shape
    difference = np.abs(got - expected)
    assert difference.max() <= tolerance, f"max difference {difference.max()} at {np.argmax(difference)}"


def dataset_of(item: CorpusFile) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return item.dataset()


# -- every image of the corpora --------------------------------------------------------------------

@pytest.mark.parametrize("item", IMAGES, ids=lambda item: item.name)
def test_rendered_png_matches_pydicom_within_two_grey_levels(server, http, holder, item):
    """issue 5 acceptance: PS3.18 10.4.1.1.7 rendered instance (frame 1) as PNG equals pydicom's
    modality LUT + VOI (PS3.4 N.2) within ±2 levels, for every decodable corpus image."""
    response = fetch(http, url_of(server, holder, item))
    assert response.headers["content-type"] == PNG
    assert_close(image_of(response), expected_display(dataset_of(item)))


@pytest.mark.parametrize("name", sorted(UNRENDERABLE))
def test_an_image_no_decoder_reads_is_406_saying_so(server, http, holder, name):
    """PS3.18 8.7.5: no rendered representation can be produced; the message says why and what to do."""
    response = http.get(url_of(server, holder, by_name(name)), headers={"Accept": PNG})
    assert response.status_code == 406
    assert "cannot be rendered" in response.json()["error"] and "application/dicom" in response.json()["error"]


@pytest.mark.parametrize("item", NOT_IMAGES, ids=lambda item: item.name)
def test_an_object_without_pixel_data_has_no_rendering_406(server, http, holder, item):
    """Reports, plans, structure sets, documents: no Pixel Data, so no rendered representation
    (PS3.18 8.7.5); the message points at what can be retrieved instead."""
    response = http.get(url_of(server, holder, item))
    assert response.status_code == 406
    assert "no pixel data" in response.json()["error"]


@pytest.mark.parametrize("name", ["pydicom-data/693_UNCR.dcm", "pydicom-data/RG1_UNCI.dcm",
                                  "pydicom-data/US1_UNCR.dcm", "pydicom-data/OBXXXX1A.dcm"])
def test_rendered_jpeg_is_close_to_the_reference(server, http, holder, name):
    """The default media type (PS3.18 8.7.4): image/jpeg, lossy, so a looser check."""
    item = by_name(name)
    response = fetch(http, url_of(server, holder, item), accept="*/*")
    assert response.headers["content-type"] == JPEG
    expected = np.rint(np.clip(expected_display(dataset_of(item)), 0, 255))
    assert np.abs(image_of(response) - expected).mean() < 3


# -- the pipeline's cases by name -----------------------------------------------------------------

def test_monochrome1_is_inverted(server, http, holder):
    """PS3.3 C.7.6.3.1.2: MONOCHROME1 shows its minimum as white."""
    item = by_name("pydicom-data/RG1_UNCI.dcm")  # a chest radiograph
    got = image_of(fetch(http, url_of(server, holder, item)))
    inverted = expected_display(dataset_of(item))
    assert_close(got, inverted)
    assert np.abs(got - (255 - np.rint(inverted))).mean() > 50  # far from the uninverted rendering


@pytest.mark.parametrize("name", ["pydicom-data/US1_UNCR.dcm", "pydicom/SC_ybr_full_422_uncompressed.dcm",
                                  "pydicom/SC_rgb_jpeg_dcmtk.dcm", "pydicom-data/US1_J2KR.dcm",
                                  "pydicom-data/OBXXXX1A.dcm", "pydicom-data/SC_rgb_16bit.dcm"])
def test_colour_renders_as_rgb(server, http, holder, name):
    """RGB, YBR_FULL_422 (native), YBR_FULL (JPEG), YBR_RCT (JPEG 2000), PALETTE COLOR and 16-bit
    RGB all come out as 8-bit RGB (PS3.3 C.7.6.3.1.2, C.7.6.3.1.5)."""
    item = by_name(name)
    response = fetch(http, url_of(server, holder, item))
    assert Image.open(io.BytesIO(response.content)).mode == "RGB"
    assert_close(image_of(response), expected_display(dataset_of(item)))


def test_signed_ct_goes_through_rescale_and_its_own_window(server, http, holder):
    """A signed 16-bit CT (PixelRepresentation 1) with Rescale Slope/Intercept and a stored
    window: HU then the object's first Window Center/Width (PS3.3 C.11.1, C.11.2)."""
    item = by_name("pydicom-data/693_UNCR.dcm")
    dataset = dataset_of(item)
    assert dataset.PixelRepresentation == 1 and "RescaleIntercept" in dataset and "WindowCenter" in dataset
    assert_close(image_of(fetch(http, url_of(server, holder, item))), expected_display(dataset))


@pytest.mark.parametrize("function", ["linear", "sigmoid", "linear-exact"])
def test_a_requested_window_replaces_the_stored_one(server, http, holder, function):
    """PS3.18 8.3.5.1.4 window=center,width,function; PS3.3 C.11.2.1.2 and C.11.2.1.3."""
    item = by_name("pydicom-data/693_UNCR.dcm")
    dataset = dataset_of(item)
    got = image_of(fetch(http, url_of(server, holder, item), window=f"300,1500,{function}"))
    assert_close(got, expected_display(dataset, window=(300, 1500, function.upper().replace("-", "_"))))
    assert np.abs(got - np.rint(expected_display(dataset))).max() > 50  # the stored window is not used


def test_a_frame_of_a_multiframe_image_is_rendered_by_its_frames_resource(server, http, holder):
    """PS3.18 Table 10.4.1-3 Rendered Frames: frame 5 of 10, not frame 1; the instance's own
    rendered resource is frame 1."""
    item = by_name("pydicom-data/emri_small.dcm")
    dataset = dataset_of(item)
    fifth = image_of(fetch(http, url_of(server, holder, item, "/frames/5/rendered")))
    assert_close(fifth, expected_display(dataset, index=4))
    assert_close(image_of(fetch(http, url_of(server, holder, item))), expected_display(dataset, index=0))
    assert np.abs(fifth - np.rint(expected_display(dataset, index=0))).max() > 20


def test_an_enhanced_ct_frame_uses_its_functional_groups(server, http, holder):
    """PS3.3 C.7.6.16.2.9-10: the rescale and window of an Enhanced CT frame are in its
    functional groups, not at the top level."""
    item = by_name("pydicom-data/eCT_Supplemental.dcm")
    dataset = dataset_of(item)
    assert "RescaleIntercept" not in dataset and "WindowCenter" not in dataset
    assert_close(image_of(fetch(http, url_of(server, holder, item, "/frames/2/rendered"))),
                 expected_display(dataset, index=1))


def test_several_frames_come_as_multipart_related(server, http, holder):
    """PS3.18 8.6: a frame list renders as one part per frame, each naming its resource."""
    item = by_name("pydicom-data/emri_small.dcm")
    response = fetch(http, url_of(server, holder, item, "/frames/2,7/rendered"))
    parts = split_related(response.headers["content-type"], response.content)
    assert [part.headers["content-location"].rsplit("/", 2)[-2] for part in parts] == ["2", "7"]
    for part, index in zip(parts, (1, 6)):
        assert part.content_type == PNG
        assert_close(np.asarray(Image.open(io.BytesIO(part.content))).astype(np.int32),
                     expected_display(dataset_of(item), index=index))


# -- viewport, quality, media types --------------------------------------------------------------

@pytest.mark.parametrize(("viewport", "size"), [("128,128", (32, 128)), ("64,512", (64, 256)),
                                                ("1024,1024", (256, 1024)), ("512,4096", (512, 2048))])
def test_viewport_scales_the_image_to_fit_keeping_its_aspect_ratio(server, http, holder, viewport, size):
    """PS3.18 8.3.5.1.3: a 256x1024 image fitted into vw,vh, not padded."""
    item = by_name("pydicom-data/JPEG2000_UNC.dcm")
    response = fetch(http, url_of(server, holder, item), viewport=viewport)
    assert Image.open(io.BytesIO(response.content)).size == size


def test_viewport_source_region_is_cropped_and_flipped(server, http, holder):
    """PS3.18 8.3.5.1.3 sx,sy,sw,sh: a region of the image; a negative sw flips it."""
    item = by_name("pydicom-data/693_UNCR.dcm")
    expected = expected_display(dataset_of(item))
    region = image_of(fetch(http, url_of(server, holder, item), viewport="100,50,100,200,100,50"))
    assert_close(region, expected[200:250, 100:200])
    flipped = image_of(fetch(http, url_of(server, holder, item), viewport="512,512,,,-512,"))
    assert_close(flipped, expected[:, ::-1])


def test_quality_changes_the_jpeg(server, http, holder):
    """PS3.18 8.3.5.1.2: quality 1-100 for lossy media types."""
    url = url_of(server, holder, by_name("pydicom-data/693_UNCR.dcm"))
    low, high = (fetch(http, url, accept=JPEG, quality=q).content for q in (5, 100))
    assert len(low) * 3 < len(high)


@pytest.mark.parametrize(("accept", "query", "expected"), [
    ("image/png;q=0.5, image/gif;q=0.9", None, GIF),
    ('multipart/related; type="image/png"', None, PNG),
    ("text/html, image/*;q=0.8", None, JPEG),
    ("image/gif", "image/png", PNG),  # the accept query parameter wins (PS3.18 8.3.3.1)
])
def test_media_type_is_negotiated(server, http, holder, accept, query, expected):
    """PS3.18 8.7.4 rendered media types, ranked by q-value."""
    url = url_of(server, holder, by_name("pydicom/CT_small.dcm"))
    response = http.get(url, params={"accept": query} if query else {}, headers={"Accept": accept})
    assert response.status_code == 200 and response.headers["content-type"] == expected
    assert Image.open(io.BytesIO(response.content)).format == expected.split("/")[1].upper()


@pytest.mark.parametrize("accept", ["application/dicom", "image/jp2", 'multipart/related; type="application/dicom"'])
def test_an_unsupported_media_type_is_406_naming_what_is_served(server, http, holder, accept):
    response = http.get(url_of(server, holder, by_name("pydicom/CT_small.dcm")), headers={"Accept": accept})
    assert response.status_code == 406
    assert all(media in response.json()["error"] for media in (JPEG, PNG, GIF))


@pytest.mark.parametrize(("parameter", "value", "says"), [
    ("window", "abc", "center,width,function"),
    ("window", "40,400,cubic", "linear-exact"),
    ("window", "40,0,linear", "width of at least 1"),
    ("window", "40,0,sigmoid", "width above 0"),
    ("window", "40", "center,width,function"),
    ("viewport", "0,100", "1 to 4096"),
    ("viewport", "a,b", "vw,vh"),
    ("viewport", "100,100,600,600,10,10", "outside"),
    ("quality", "0", "1 to 100"),
    ("quality", "high", "1 to 100"),
])
def test_malformed_rendering_parameters_are_400_saying_what_is_expected(server, http, holder, parameter, value, says):
    """PS3.18 8.3.5.1: a value the server cannot use is a client error, explained."""
    response = http.get(url_of(server, holder, by_name("pydicom-data/693_UNCR.dcm")), params={parameter: value})
    assert response.status_code == 400
    assert says in response.json()["error"]


def test_a_frame_the_instance_does_not_have_is_404(server, http, holder):
    response = http.get(url_of(server, holder, by_name("pydicom-data/emri_small.dcm"), "/frames/11/rendered"))
    assert response.status_code == 404
    assert "10 frame(s)" in response.json()["error"]


# -- study and series, thumbnails ---------------------------------------------------------------

MR_STUDY = [item for item in corpus_files() if item.name.startswith("pydicom/dicomdirtests/98892003/")
            and item.study_uid == by_name("pydicom/dicomdirtests/98892003/MR700/4467").study_uid]


def test_a_study_renders_as_one_part_per_image_instance(server, http, holder):
    """PS3.18 10.4.1.1.7 Rendered Study, 8.6: multipart/related, one rendered image (frame 1) per
    instance, each part's Content-Location naming its instance's rendered resource."""
    root = server.root(holder[MR_STUDY[0].name])
    response = fetch(http, f"{root}/studies/{MR_STUDY[0].study_uid}/rendered")
    assert response.headers["content-type"].startswith('multipart/related; type="image/png"')
    parts = split_related(response.headers["content-type"], response.content)
    by_instance = {part.headers["content-location"].split("/instances/")[1].removesuffix("/rendered"): part
                   for part in parts}
    assert set(by_instance) == {item.sop_instance_uid for item in MR_STUDY}
    for item in MR_STUDY:
        assert_close(np.asarray(Image.open(io.BytesIO(by_instance[item.sop_instance_uid].content))).astype(np.int32),
                     expected_display(dataset_of(item)))


def test_a_series_renders_only_its_own_instances(server, http, holder):
    series = [item for item in MR_STUDY if "/MR2/" in item.name]
    root = server.root(holder[series[0].name])
    response = fetch(http, f"{root}/studies/{series[0].study_uid}/series/{series[0].series_uid}/rendered",
                     accept=JPEG)
    parts = split_related(response.headers["content-type"], response.content)
    assert len(parts) == len(series) == 3 and all(part.content_type == JPEG for part in parts)


def test_a_study_of_reports_only_has_no_rendering_406(server, http, holder):
    report = by_name("pydicom/reportsi.dcm")
    response = http.get(f"{server.root(holder[report.name])}/studies/{report.study_uid}/rendered")
    assert response.status_code == 406 and "no rendered representation" in response.json()["error"]


def thumbnail_size(response: httpx.Response) -> tuple[int, int]:
    assert response.headers["content-type"] == JPEG
    return Image.open(io.BytesIO(response.content)).size


def test_thumbnails_at_each_level_are_small_jpegs_of_the_representative_image(server, http, holder):
    """PS3.18 10.4.1.1.8: study, series, instance and frame thumbnails. A study's shows the middle
    image (by Instance Number) of its series with the most images; a series' its middle image."""
    largest = [item for item in MR_STUDY if "/MR700/" in item.name]
    ordered = sorted(largest, key=lambda item: int(dataset_of(item).InstanceNumber))
    middle = ordered[(len(ordered) - 1) // 2]
    root = server.root(holder[middle.name])
    study = fetch(http, f"{root}/studies/{middle.study_uid}/thumbnail", accept="*/*")
    series = fetch(http, f"{root}/studies/{middle.study_uid}/series/{middle.series_uid}/thumbnail", accept="*/*")
    instance = fetch(http, url_of(server, holder, middle, "/thumbnail"), accept="*/*")
    assert study.content == series.content == instance.content
    assert thumbnail_size(study) == (16, 16)  # a 16x16 image is not enlarged
    large = by_name("pydicom-data/RG1_UNCI.dcm")  # 1841x1955
    assert thumbnail_size(fetch(http, url_of(server, holder, large, "/thumbnail"), accept="*/*")) == (121, 128)
    multiframe = by_name("pydicom-data/emri_small.dcm")
    frame = fetch(http, url_of(server, holder, multiframe, "/frames/3/thumbnail"), accept=PNG,
                  viewport="32,32")
    assert Image.open(io.BytesIO(frame.content)).size == (32, 32)
    assert frame.content != fetch(http, url_of(server, holder, multiframe, "/thumbnail"), accept=PNG,
                                  viewport="32,32").content


def test_a_thumbnail_of_something_not_held_is_404(server, http, holder):
    item = by_name("pydicom/CT_small.dcm")
    stranger = next(org for org in server.orgs if org != holder[item.name])
    response = http.get(instance_url(server.root(stranger), item.study_uid, item.series_uid, item.sop_instance_uid)
                        + "/thumbnail")
    assert response.status_code == 404


# -- audit ---------------------------------------------------------------------------------------------

def test_a_rendered_retrieve_is_audited_each_time_even_when_cached(server, http, holder):
    """Invariant 5 / PS3.15 A.5.3.7: each rendered retrieve is one DICOM Instances Transferred
    event naming patient and study, also when the image comes from the cache."""
    item = by_name("pydicom/CT_small.dcm")
    org = holder[item.name]
    responses = [fetch(http, url_of(server, holder, item)) for _ in range(2)]
    assert responses[0].content == responses[1].content
    events = http.get(f"/api/orgs/{org}/audit", params={"limit": 1000}).json()["events"]
    patient = str(dataset_of(item).PatientID)
    for response in responses:
        [event] = [e for e in events if e["request_id"] == response.headers["x-request-id"]]
        assert (event["action"], event["event_action_code"], event["outcome"]) == ("retrieve", "R", 0)
        assert event["studies"] == [item.study_uid] and event["patients"] == [{"id": patient, "issuer": ""}]
        assert event["detail"].startswith("rendered of instance")


def test_the_cache_of_rendered_images_stays_within_its_bound():
    """Least recently used out first; an image above a sixteenth of the bound is not kept."""
    cache = LruCache(max_bytes=1600)
    for number in range(20):
        cache.put(("blob", number), bytes(100), 100)
        cache.get(("blob", 0))  # kept in use
    assert cache.size <= 1600 and cache.get(("blob", 0)) and cache.get(("blob", 19))
    assert cache.get(("blob", 1)) is None
    cache.put(("large",), bytes(101), 101)
    assert cache.get(("large",)) is None
