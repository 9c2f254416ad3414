"""Transcoding on retrieve (PS3.18 8.7.3; OIX issue 5). Acceptance: every file of the corpora
with pixel data, retrieved in every transfer syntax the server writes, decodes to the pixels
pydicom decodes from the original (exactly for lossless syntaxes, at 40 dB PSNR or more for
lossy ones); where a syntax cannot hold a file's pixel data the reason is stated below and
the server answers 406. One live server for the module, the corpus stored once."""

from __future__ import annotations

import io
import math
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from bench.peak_rss import PeakRssSampler
from dicomweb.transcode import ENCODINGS, TARGET_SYNTAXES
from tests.dicomweb_requests import edited, failures, instance_url, stow
from tests.multipart_body import split_related
from tests.real_files import CorpusFile, by_name, corpus_files, layers
from tests.servers import OixServer, new_org_slug, remove_data_dir, start_server, stop_server

EXPLICIT = "1.2.840.10008.1.2.1"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG_2000 = "1.2.840.10008.1.2.4.91"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR_LOSSLESS = "1.2.840.10008.1.2.4.81"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
LOSSY_METHODS = {JPEG_2000: "ISO_15444_1", JPEG_LS_NEAR_LOSSLESS: "ISO_14495_1"}  # PS3.3 C.7.6.1.1.5.1
MIN_PSNR_DB = 40.0

PIXEL_FILES = [item for item in corpus_files() if item.has_pixel_data]
# Files no installed decoder reads, on purpose: the server cannot decode them either.
UNDECODABLE = {
    "pydicom/JPEG-lossy.dcm": "a non-conformant JPEG codestream (invalid Se in its SOS marker); "
                              "its fixed version, pydicom/JPGExtended.dcm, is decoded",
    "pydicom/JPEG2000-embedded-sequence-delimiter.dcm": "a corrupt JPEG 2000 codestream",
    "pydicom/badVR.dcm": "invalid pixel module values on purpose (VR IS '1A')",
}


def dicom_accept(syntax: str) -> str:
    return f'multipart/related; type="application/dicom"; transfer-syntax={syntax}'


def read(data: bytes) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data))


def decoded(dataset: pydicom.Dataset) -> np.ndarray | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return dataset.pixel_array
        except Exception:
            return None


def psnr(original: np.ndarray, served: np.ndarray) -> float:
    """Peak signal-to-noise ratio over the range of values the original uses (stricter than
    over the range its Bits Stored allows)."""
    error = np.mean((original.astype(np.float64) - served.astype(np.float64)) ** 2)
    used = max(float(original.max()) - float(original.min()), 1.0)
    return math.inf if error == 0 else 10 * math.log10(used ** 2 / error)


# -- why a target cannot hold a file -------------------------------------------------------------

def refusal(dataset: pydicom.Dataset, pixels: np.ndarray, target: str) -> str | None:
    """Why the server cannot write this file's pixel data in `target` (PS3.5 8.2 as pydicom
    enforces it, or a limit of the encoder), or None where it can."""
    syntax = UID(target)
    if not syntax.is_encapsulated:
        return None
    bits_allocated, bits_stored = int(dataset.BitsAllocated), int(dataset.BitsStored)
    samples, rows, columns = int(dataset.SamplesPerPixel), int(dataset.Rows), int(dataset.Columns)
    jpeg_2000, jpeg_ls = target in (JPEG_2000_LOSSLESS, JPEG_2000), target in (JPEG_LS_LOSSLESS, JPEG_LS_NEAR_LOSSLESS)
    if bits_allocated == 1:
        return "PS3.5 Tables 8.2.2-1, 8.2.3-1, 8.2.4-1: RLE, JPEG-LS and JPEG 2000 hold no 1-bit pixel data"
    if target == RLE_LOSSLESS and bits_allocated > 16:
        return "PS3.5 Table 8.2.2-1: RLE Lossless pixel data of 8 or 16 bits allocated"
    if jpeg_ls and bits_allocated > 16:
        return "PS3.5 Table 8.2.3-1: JPEG-LS pixel data of up to 16 bits"
    if jpeg_2000 and bits_stored > 24:
        return "pylibjpeg-openjpeg encodes samples of up to 24 bits"
    if target in LOSSY_METHODS and dataset.PhotometricInterpretation == "PALETTE COLOR":
        return "PS3.5 Tables 8.2.3-1, 8.2.4-1: palette colour indices are compressed only losslessly"
    if jpeg_2000 and min(rows, columns) < 32:
        return "pylibjpeg-openjpeg encodes with 6 wavelet resolutions, which need 32 pixels a side"
    if jpeg_ls and samples == 3 and rows * columns < 16:
        return "CharLS (pyjpegls) runs out of output buffer on a colour image of a few pixels"
    if target == JPEG_LS_NEAR_LOSSLESS and int(dataset.PixelRepresentation) == 1:
        near = int((float(pixels.max()) - float(pixels.min())) / 10 ** (45 / 20))
        limit = 2 ** (bits_stored - 1)
        if near and (pixels.min() < -limit + near or pixels.max() > limit - 1 - near):
            return ("JPEG-LS keeps no sign: a near-lossless error could wrap a value at the limits of "
                    "Bits Stored around, and pydicom refuses")
    return None


# -- one server for the module, the corpus stored once -----------------------------------------

@dataclass
class Stored:
    server: OixServer
    http: httpx.Client
    holder: dict[str, str]  # corpus file name -> organisation holding it

    def url(self, item: CorpusFile) -> str:
        root = self.server.root(self.holder[item.name])
        return instance_url(root, item.study_uid, item.series_uid, item.sop_instance_uid)


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Iterator[Stored]:
    server = start_server(tmp_path_factory.mktemp("transcoding") / "data")
    try:
        with httpx.Client(timeout=120) as http:
            holder: dict[str, str] = {}
            for layer in layers(corpus_files()):
                org = server.add_org(new_org_slug("corpus"))
                response = stow(http, server.root(org), [item.data for item in layer])
                assert response.status_code == 200, (response.status_code, failures(response.json()))
                holder.update({item.name: org for item in layer})
            yield Stored(server, http, holder)
    finally:
        stop_server(server)
        remove_data_dir(server)


# -- acceptance: every file in every syntax ----------------------------------------------------

def test_the_corpora_hold_the_syntaxes_decoded_here():
    """The acceptance test below covers these stored syntaxes only while the corpora hold them."""
    held = {item.transfer_syntax for item in PIXEL_FILES}
    assert held >= {"1.2.840.10008.1.2", EXPLICIT, "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2",
                    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", JPEG_LOSSLESS_SV1, JPEG_LS_LOSSLESS,
                    JPEG_LS_NEAR_LOSSLESS, JPEG_2000_LOSSLESS, JPEG_2000, RLE_LOSSLESS}
    assert len(PIXEL_FILES) > 150
    assert set(UNDECODABLE) <= {item.name for item in PIXEL_FILES}
    assert set(TARGET_SYNTAXES) >= {EXPLICIT, RLE_LOSSLESS, JPEG_2000_LOSSLESS, JPEG_LS_LOSSLESS}


@pytest.mark.parametrize("item", PIXEL_FILES, ids=lambda item: item.name)
def test_corpus_file_is_retrieved_in_every_target_syntax(stored, item):
    """PS3.18 8.7.3.5.2: the instance in each transfer syntax asked for, under its own SOP
    Instance UID (8.7.3.5); lossless pixels equal, lossy ones at 40 dB or more and recorded
    as lossy (PS3.3 C.7.6.1.1.5); what a syntax cannot hold is a 406 naming what can be sent."""
    original = item.dataset()
    pixels = decoded(original)
    assert (pixels is None) == (item.name in UNDECODABLE), item.name
    # Two requests in flight: the server encodes one while this process decodes the other.
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = pool.map(lambda target: (target, stored.http.get(stored.url(item), headers={
            "Accept": dicom_accept(target)})), TARGET_SYNTAXES)
        for target, response in answers:
            check_retrieved(item, original, pixels, target, response)


def check_retrieved(item: CorpusFile, original: pydicom.Dataset, pixels: np.ndarray | None, target: str,
                    response: httpx.Response) -> None:
    where = f"{item.name} as {UID(target).name}"
    if target == item.transfer_syntax:  # named as stored: the stored bytes
        assert response.status_code == 200, (where, response.text[:300])
        [part] = split_related(response.headers["content-type"], response.content)
        assert part.content == item.data, where
        return
    if pixels is None:
        reason = UNDECODABLE[item.name]
        if not UID(item.transfer_syntax).is_encapsulated and not UID(target).is_encapsulated:
            # Native bytes need no decoder: re-encoded around Pixel Data that is left as it is.
            assert response.status_code == 200, (where, response.text[:300])
            [part] = split_related(response.headers["content-type"], response.content)
            assert read(part.content).PixelData == original.PixelData, where
            return
    else:
        reason = refusal(original, pixels, target)
    if reason:
        assert response.status_code == 406, (where, reason, response.status_code)
        assert "transfer-syntax=*" in response.text, (where, response.text)
        return
    assert response.status_code == 200, (where, response.text[:500])
    [part] = split_related(response.headers["content-type"], response.content)
    assert part.content_type == f"application/dicom; transfer-syntax={target}", where
    served = read(part.content)
    assert served.file_meta.TransferSyntaxUID == target, where
    assert served.SOPInstanceUID == item.sop_instance_uid, where
    got = served.pixel_array
    assert got.shape == pixels.shape, where
    if ENCODINGS[UID(target)].lossless:
        assert np.array_equal(got, pixels), where
    else:
        assert psnr(pixels, got) >= MIN_PSNR_DB, (where, psnr(pixels, got))
    if not np.array_equal(got, pixels):
        assert ENCODINGS[UID(target)].method, where
        assert served.LossyImageCompression == "01", where
        assert list(np.atleast_1d(served.LossyImageCompressionMethod))[-1] == LOSSY_METHODS[target], where
        assert float(np.atleast_1d(served.LossyImageCompressionRatio)[-1]) > 0, where


# -- negotiation of instances --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["pydicom/SC_rgb_jpeg_dcmtk.dcm", "pydicom-data/emri_small_jpeg_2k_lossless.dcm",
                                  "pydicom/MR_small_bigendian.dcm", "pydicom/image_dfl.dcm"])
def test_default_syntax_is_explicit_vr_little_endian_decoded(stored, name):
    """PS3.18 8.7.3.5.2 (Table 8.7.3-2): with no transfer-syntax parameter, a compressed, big
    endian or deflated object comes decoded, in Explicit VR Little Endian."""
    item = by_name(name)
    response = stored.http.get(stored.url(item), headers={"Accept": 'multipart/related; type="application/dicom"'})
    [part] = split_related(response.headers["content-type"], response.content)
    assert part.content_type == f"application/dicom; transfer-syntax={EXPLICIT}"
    assert np.array_equal(read(part.content).pixel_array, item.dataset().pixel_array)


def test_default_syntax_of_an_undecodable_object_is_406(stored):
    """PS3.18 8.7.5: a representation the server cannot produce is 406, not a broken 200; the
    stored bytes can still be had."""
    item = by_name("pydicom/JPEG-lossy.dcm")
    response = stored.http.get(stored.url(item), headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert response.status_code == 406
    assert f"transfer-syntax=* (as stored, {item.transfer_syntax})" in response.text



def test_instances_come_in_the_best_accepted_syntax_the_server_can_write(stored):
    """PS3.18 8.7.5: of several accepted representations, by q value, the best one this server
    produces; JPEG Lossless (not encoded here) is passed over for JPEG 2000 Lossless."""
    item = by_name("pydicom/CT_small.dcm")
    accept = (f"{dicom_accept(JPEG_LOSSLESS_SV1)}; q=0.9, {dicom_accept(RLE_LOSSLESS)}; q=0.2, "
              f"{dicom_accept(JPEG_2000_LOSSLESS)}; q=0.5")
    response = stored.http.get(stored.url(item), headers={"Accept": accept})
    assert response.status_code == 200, response.text
    [part] = split_related(response.headers["content-type"], response.content)
    assert part.content_type == f"application/dicom; transfer-syntax={JPEG_2000_LOSSLESS}"
    assert np.array_equal(read(part.content).pixel_array, item.dataset().pixel_array)


def test_a_syntax_nothing_here_encodes_is_406_naming_what_can_be_sent(stored):
    """PS3.18 8.7.5: 406 before any work when no accepted syntax can be produced, with the
    syntaxes that can."""
    item = by_name("pydicom/CT_small.dcm")
    response = stored.http.get(stored.url(item), headers={"Accept": dicom_accept(JPEG_LOSSLESS_SV1)})
    assert response.status_code == 406
    assert "transfer-syntax=*" in response.text and JPEG_2000_LOSSLESS in response.text


def test_an_image_too_small_for_openjpeg_is_refused_before_it_is_encoded(stored):
    """PS3.18 8.7.5: a 16x16 CT in either JPEG 2000 syntax, whole or as a frame, is 406 with
    the reason (OpenJPEG makes 6 wavelet resolutions, which need 32 pixels a side), decided
    before OpenJPEG runs."""
    item = by_name("pydicom/dicomdirtests/77654033/CT2/17106")
    requests = [(stored.url(item), dicom_accept(syntax)) for syntax in (JPEG_2000_LOSSLESS, JPEG_2000)]
    requests += [(f"{stored.url(item)}/frames/1", 'multipart/related; type="image/jp2"')]
    for url, accept in requests:
        response = stored.http.get(url, headers={"Accept": accept})
        assert response.status_code == 406, response.text[:300]
        assert "at least 32 pixels a side" in response.text


JPEG_2000_SOURCES = ["pydicom/CT_small.dcm", "pydicom/MR_small.dcm", "pydicom-data/emri_small.dcm",
                     "pydicom-data/SC_rgb.dcm", "pydicom-data/US1_J2KR.dcm"]
JPEG_2000_REQUESTS = 160


def test_jpeg_2000_encodes_asked_for_at_once_all_succeed_and_the_server_stays_up(stored):
    """PS3.18 8.7.3: many JPEG 2000 transcodes at once, whole objects and frames, in both JPEG
    2000 syntaxes. pylibjpeg-openjpeg's encoder is not safe on two threads at once: before the
    server ran its encodes one at a time, such a burst killed it with a segmentation fault."""
    items = [by_name(name) for name in JPEG_2000_SOURCES]
    requests = []
    for item in items:
        for syntax in (JPEG_2000_LOSSLESS, JPEG_2000):
            requests.append((item, stored.url(item), dicom_accept(syntax)))
        requests.append((item, f"{stored.url(item)}/frames/1", 'multipart/related; type="image/jp2"'))
    requests = (requests * (JPEG_2000_REQUESTS // len(requests) + 1))[:JPEG_2000_REQUESTS]

    def fetch(request):
        item, url, accept = request
        try:
            return item, accept, stored.http.get(url, headers={"Accept": accept})
        except httpx.TransportError as exc:
            return item, accept, exc

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(fetch, requests))
    alive = stored.server.process.poll() is None
    assert alive, f"the server died (exit {stored.server.process.returncode}):\n{stored.server.log_tail()}"
    for item, accept, response in answers:
        assert isinstance(response, httpx.Response) and response.status_code == 200, (item.name, accept, response)
        if JPEG_2000_LOSSLESS in accept:
            (part,) = split_related(response.headers["content-type"], response.content)
            assert np.array_equal(read(part.content).pixel_array, decoded(read(item.data)))


def test_an_instance_a_syntax_cannot_hold_falls_back_to_the_next_accepted(stored):
    """PS3.18 8.7.5, each part its own transfer syntax: in one study a 32-bit dose grid, which
    JPEG 2000 Lossless cannot hold here, comes as stored (the client's second choice) while a
    CT comes in JPEG 2000 Lossless."""
    org = stored.server.add_org(new_org_slug("fallback"))
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    dose, ct = (edited(by_name(name).data, StudyInstanceUID=study, SeriesInstanceUID=series,
                       SOPInstanceUID=uid, MediaStorageSOPInstanceUID=uid)
                for name, uid in (("pydicom/rtdose.dcm", pydicom.uid.generate_uid()),
                                  ("pydicom/CT_small.dcm", pydicom.uid.generate_uid())))
    assert stow(stored.http, stored.server.root(org), [dose, ct]).status_code == 200
    url = f"{stored.server.root(org)}/studies/{study}"
    accept = f"{dicom_accept(JPEG_2000_LOSSLESS)}, {dicom_accept('*')}; q=0.1"
    response = stored.http.get(url, headers={"Accept": accept})
    assert response.status_code == 200, response.text
    parts = {read(part.content).Modality: part for part in split_related(response.headers["content-type"],
                                                                        response.content)}
    assert parts["RTDOSE"].content == dose
    assert parts["CT"].content_type.endswith(f"transfer-syntax={JPEG_2000_LOSSLESS}")
    assert np.array_equal(read(parts["CT"].content).pixel_array, read(ct).pixel_array)


def test_an_object_without_pixel_data_is_sent_in_a_compressed_syntax_as_explicit_vr(stored):
    """PS3.5 A.4: an encapsulated syntax changes only Pixel Data, so an object without any is
    the Explicit VR Little Endian dataset labelled with the syntax asked for."""
    item = by_name("pydicom/rtplan.dcm")
    response = stored.http.get(stored.url(item), headers={"Accept": dicom_accept(JPEG_2000_LOSSLESS)})
    assert response.status_code == 200, response.text
    [part] = split_related(response.headers["content-type"], response.content)
    served = read(part.content)
    assert served.file_meta.TransferSyntaxUID == JPEG_2000_LOSSLESS
    assert served.SOPInstanceUID == item.sop_instance_uid
    assert served.RTPlanLabel == item.dataset().RTPlanLabel


# -- frames ----------------------------------------------------------------------------------------

def frame_parts(stored: Stored, item: CorpusFile, numbers: str, accept: str) -> list:
    response = stored.http.get(f"{stored.url(item)}/frames/{numbers}", headers={"Accept": accept})
    assert response.status_code == 200, (response.status_code, response.text[:300])
    return split_related(response.headers["content-type"], response.content)


def frame_pixels(codestream: bytes, syntax: str, original: pydicom.Dataset) -> np.ndarray:
    """A frame's bitstream decoded by pydicom, with the original's pixel description."""
    options = {key: original.get(keyword) for key, keyword in (
        ("rows", "Rows"), ("columns", "Columns"), ("samples_per_pixel", "SamplesPerPixel"),
        ("bits_allocated", "BitsAllocated"), ("bits_stored", "BitsStored"),
        ("pixel_representation", "PixelRepresentation"))}
    options["photometric_interpretation"] = "RGB" if options["samples_per_pixel"] == 3 else \
        original.PhotometricInterpretation
    options["planar_configuration"] = 0
    options["number_of_frames"] = 1
    pixels, _ = get_decoder(syntax).as_array(encapsulate([codestream]), **options)
    return pixels


@pytest.mark.parametrize("name,media_type,syntax", [
    ("pydicom-data/emri_small_jpeg_2k_lossless.dcm", "image/jp2", JPEG_2000_LOSSLESS),
    ("pydicom-data/emri_small_jpeg_ls_lossless.dcm", "image/jls", JPEG_LS_LOSSLESS),
    ("pydicom-data/emri_small_RLE.dcm", "image/dicom-rle", RLE_LOSSLESS),
    ("pydicom/SC_rgb_jpeg_dcmtk.dcm", "image/jpeg", "1.2.840.10008.1.2.4.50"),
])
def test_frames_in_their_stored_media_type_are_the_stored_bitstreams(stored, name, media_type, syntax):
    """PS3.18 Table 8.7.3-5: a compressed media type with no transfer syntax, of an instance
    stored in a syntax of that type, is each frame's fragments as stored (PS3.5 A.4)."""
    item = by_name(name)
    expected = list(generate_frames(item.dataset().PixelData, number_of_frames=item.number_of_frames))
    numbers = [1, 2] if item.number_of_frames > 1 else [1]
    parts = frame_parts(stored, item, ",".join(map(str, numbers)), f'multipart/related; type="{media_type}"')
    assert [part.content for part in parts] == [expected[n - 1] for n in numbers]
    assert all(part.content_type == f"{media_type}; transfer-syntax={syntax}" for part in parts)


@pytest.mark.parametrize("name", ["pydicom-data/emri_small.dcm", "pydicom-data/emri_small_RLE.dcm",
                                  "pydicom-data/emri_small_big_endian.dcm", "pydicom/image_dfl.dcm",
                                  "pydicom/SC_rgb_rle_2frame.dcm"])
@pytest.mark.parametrize("media_type,syntax", [
    ("image/jp2", JPEG_2000_LOSSLESS), ("image/jls", JPEG_LS_LOSSLESS), ("image/dicom-rle", RLE_LOSSLESS),
    ("image/x-dicom-rle", RLE_LOSSLESS), ("image/jp2", JPEG_2000), ("image/jls", JPEG_LS_NEAR_LOSSLESS),
])
def test_frames_are_transcoded_into_a_compressed_media_type(stored, name, media_type, syntax):
    """PS3.18 8.7.3.3.2: frames of an instance stored otherwise, encoded into the media type and
    transfer syntax asked for; lossless ones decode to the original frame, lossy ones at 40 dB."""
    item = by_name(name)
    original = item.dataset()
    pixels = original.pixel_array if item.number_of_frames > 1 else original.pixel_array[np.newaxis]
    accept = f'multipart/related; type="{media_type}"; transfer-syntax={syntax}'
    if syntax == RLE_LOSSLESS and item.transfer_syntax == RLE_LOSSLESS:
        accept = f'multipart/related; type="{media_type}"'  # as stored; checked above
    numbers = [1, 2] if item.number_of_frames > 1 else [1]
    parts = frame_parts(stored, item, ",".join(map(str, numbers)), accept)
    canonical = "image/dicom-rle" if media_type == "image/x-dicom-rle" else media_type
    for number, part in zip(numbers, parts, strict=True):
        assert part.content_type == f"{canonical}; transfer-syntax={syntax}"
        got = frame_pixels(part.content, syntax, original)
        if ENCODINGS[UID(syntax)].lossless:
            assert np.array_equal(got, pixels[number - 1])
        else:
            assert psnr(pixels[number - 1], got) >= MIN_PSNR_DB


def test_frames_negotiation_takes_the_best_media_type_that_can_be_produced(stored):
    """PS3.18 8.7.5: image/jpeg (JPEG Lossless by default, not encoded here) is passed over for
    the next choice by q value; OHIF's octet-stream with transfer-syntax=* is the stored bitstream."""
    item = by_name("pydicom-data/emri_small_RLE.dcm")
    accept = ('multipart/related; type="image/jpeg", multipart/related; type="image/jls"; q=0.8, '
              'multipart/related; type="application/octet-stream"; q=0.5')
    [part] = frame_parts(stored, item, "1", accept)
    assert part.content_type == f"image/jls; transfer-syntax={JPEG_LS_LOSSLESS}"
    [part] = frame_parts(stored, item, "1", "multipart/related; type=application/octet-stream; transfer-syntax=*")
    assert part.content_type == f"application/octet-stream; transfer-syntax={RLE_LOSSLESS}"
    assert part.content == next(generate_frames(item.dataset().PixelData, number_of_frames=10))


def test_frames_in_a_media_type_that_cannot_be_produced_are_406_naming_what_can(stored):
    """PS3.18 8.7.5: 406, and the message names the representations this instance has."""
    item = by_name("pydicom-data/emri_small.dcm")
    response = stored.http.get(f"{stored.url(item)}/frames/1", headers={"Accept": 'multipart/related; type="image/jpeg"'})
    assert response.status_code == 406
    assert "image/jp2" in response.text and "application/octet-stream" in response.text
    # A frame of 32 bits that no compressed media type here can hold: the encoder's reason.
    dose = by_name("pydicom/rtdose.dcm")
    response = stored.http.get(f"{stored.url(dose)}/frames/1", headers={"Accept": 'multipart/related; type="image/jls"'})
    assert response.status_code == 406 and "32 bits allocated" in response.text


# -- memory ----------------------------------------------------------------------------------------

MEMORY_OBJECTS = 32
MEMORY_ROWS, MEMORY_COLUMNS = 2048, 4096  # 16 MiB of 16-bit pixel data per object, 512 MiB in all
OBJECT_BYTES = MEMORY_ROWS * MEMORY_COLUMNS * 2
# Transcoding one object holds its stored bytes, the decoded pixels (pydicom joins the frames
# it decodes: twice, for a moment), the written object, and the previous part on its way out:
# about 8 objects' worth measured, for a study of 16, 32 or 64 objects alike. Held whole, this
# study would be 32.
MEMORY_GROWTH_LIMIT = 12 * OBJECT_BYTES


def big_rle_instances(study: str, series: str, count: int) -> Iterator[bytes]:
    """`count` objects of a 16 MiB CT-like image (a ramp) stored as RLE Lossless, each under
    UIDs of its own (so each is a blob of its own); encoded once, copied with new UIDs."""
    dataset = read(by_name("pydicom/CT_small.dcm").data)
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study, series
    dataset.Rows, dataset.Columns, dataset.BitsStored, dataset.HighBit = MEMORY_ROWS, MEMORY_COLUMNS, 12, 11
    dataset.PixelRepresentation = 0
    ramp = np.arange(MEMORY_ROWS * MEMORY_COLUMNS, dtype=np.uint32) % 4096
    dataset.compress(RLE_LOSSLESS, ramp.astype(np.uint16).reshape(MEMORY_ROWS, MEMORY_COLUMNS),
                     encoding_plugin="pylibjpeg")
    for number in range(1, count + 1):
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        dataset.InstanceNumber = number
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        yield buffer.getvalue()


@pytest.fixture
def memory_server(tmp_path):
    server = start_server(tmp_path / "data", orgs=("memory",))
    try:
        yield server
    finally:
        stop_server(server)


@pytest.mark.timeout(240)
def test_transcoded_retrieve_of_a_study_streams_instance_by_instance(memory_server):
    """DESIGN invariant 4 with transcoding (PS3.18 8.7.3): a 512 MiB study (32 objects of
    16 MiB, stored as RLE) retrieved in Explicit VR Little Endian grows the server's memory by
    less than 12 objects: one object is decoded and written at a time, whatever the study's size."""
    server = memory_server
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    objects = big_rle_instances(study, series, MEMORY_OBJECTS)
    with httpx.Client(timeout=120) as http:
        for _ in range(MEMORY_OBJECTS // 8):
            assert stow(http, server.root(), [next(objects) for _ in range(8)]).status_code == 200
    with PeakRssSampler(server.pid, interval=0.05) as idle:
        time.sleep(0.5)
    accept = dicom_accept(EXPLICIT)
    marker = f"transfer-syntax={EXPLICIT}".encode()
    received, parts, tail, started = 0, 0, b"", time.monotonic()
    with PeakRssSampler(server.pid, interval=0.05) as rss, httpx.Client(timeout=120) as http, \
            http.stream("GET", f"{server.root()}/studies/{study}", headers={"Accept": accept}) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes(1 << 20):
            received += len(chunk)
            seen = tail + chunk  # a part head may straddle two chunks
            parts += seen.count(marker)
            tail = seen[-len(marker) + 1:]
    growth = rss.peak_bytes - idle.peak_bytes
    print(f"transcoded {received / 2**20:.0f} MiB in {time.monotonic() - started:.1f} s; server RSS "
          f"{idle.peak_bytes / 2**20:.0f} MiB idle, {rss.peak_bytes / 2**20:.0f} MiB at peak")
    assert parts == MEMORY_OBJECTS and received > MEMORY_OBJECTS * OBJECT_BYTES
    assert growth < MEMORY_GROWTH_LIMIT, f"RSS grew {growth / 2**20:.0f} MiB for a {received / 2**20:.0f} MiB study"
