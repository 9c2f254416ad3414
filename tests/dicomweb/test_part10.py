"""The Part 10 reader (dicomweb.part10) against pydicom, file by file over the real corpora:
its DICOM JSON equals pydicom's `to_json_dict` except for the deliberate differences listed in
tests.dicom_json, and the frames it finds are pydicom's frames (PS3.5 8.2, A.4)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames
from pydicom.pixels.utils import get_expected_length

from dicomweb.part10 import Part10Error, read_part10
from tests.dicom_json import BIG_ENDIAN, SWAP_SIZES, differences, pixel_swap_size, pydicom_json, swap
from tests.real_files import KNOWN_BAD, by_name, corpus_files, corpus_roots

BULK_THRESHOLD = 1024
DEFLATED = "1.2.840.10008.1.2.1.99"
# pydicom itself cannot make JSON or frames of these, so there is nothing to compare with.
NOT_FOR_PYDICOM = {
    "pydicom/badVR.dcm": "invalid IS values ('1A') that pydicom's to_json_dict and frame length refuse",
}
CORPUS = corpus_files()


def dataset_bytes(item) -> bytes:
    """The bytes the reader's offsets refer to: the file, or the inflated dataset if deflated."""
    raw = item.path.read_bytes()
    if item.transfer_syntax != DEFLATED:
        return raw
    meta_end = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True).file_meta
    offset = 132 + 12 + meta_end.FileMetaInformationGroupLength
    return zlib.decompress(raw[offset:], -zlib.MAX_WBITS)


@pytest.mark.parametrize("item", CORPUS, ids=lambda item: item.name)
def test_part10_json_equals_pydicoms_to_json_dict(item):
    """PS3.18 Annex F: the JSON made at store time is pydicom's, but for the documented differences."""
    if item.name in NOT_FOR_PYDICOM:
        pytest.skip(NOT_FOR_PYDICOM[item.name])
    parsed = read_part10(str(item.path), BULK_THRESHOLD, lambda path: path)
    data = dataset_bytes(item)

    def read_bulk(uri: str, _where: str) -> bytes:
        # As WADO-RS serves it: big endian values made little endian, Pixel Data by sample size.
        location = parsed.bulk[uri]
        raw = data[location.offset:location.offset + location.length]
        size = SWAP_SIZES.get(location.vr, 1)
        if uri == "7FE00010":
            size = pixel_swap_size(location.vr, parsed.first("00280100"))
        return swap(raw, size) if location.big_endian and size > 1 else raw

    theirs = pydicom_json(pydicom.dcmread(item.path))
    found = differences(parsed.dataset_json, theirs, transfer_syntax=item.transfer_syntax, read_bulk=read_bulk,
                        encapsulated=parsed.encapsulated)
    assert found == []


@pytest.mark.parametrize("item", [item for item in CORPUS if item.has_pixel_data], ids=lambda item: item.name)
def test_part10_frames_are_pydicoms_frames(item):
    """PS3.5 8.2 and A.4: each frame the reader locates holds that frame's bytes: a slice of
    native Pixel Data, or the fragments pydicom assigns to the frame."""
    if item.name in NOT_FOR_PYDICOM:
        pytest.skip(NOT_FOR_PYDICOM[item.name])
    dataset = pydicom.dcmread(item.path)
    parsed = read_part10(str(item.path), BULK_THRESHOLD, lambda path: path)
    data = dataset_bytes(item)
    found = [b"".join(data[v.offset:v.offset + v.length] for v in frame) for frame in parsed.frames]
    if parsed.encapsulated:
        expected = list(generate_frames(dataset.PixelData, number_of_frames=item.number_of_frames))
    else:
        size = get_expected_length(dataset, unit="bytes") // item.number_of_frames
        expected = [dataset.PixelData[i * size:(i + 1) * size] for i in range(item.number_of_frames)]
    assert len(found) == item.number_of_frames
    assert found == expected


def test_part10_reads_big_endian_pixel_data_location_as_big_endian():
    """PS3.5 7.3: big endian word values are flagged for swapping to little endian on retrieve."""
    item = by_name("pydicom/MR_small_bigendian.dcm")
    parsed = read_part10(str(item.path), BULK_THRESHOLD, lambda path: path)
    location = parsed.bulk["7FE00010"]
    assert item.transfer_syntax == BIG_ENDIAN and location.big_endian and location.vr == "OW"
    raw = item.path.read_bytes()[location.offset:location.offset + location.length]
    little = pydicom.dcmread(by_name("pydicom/MR_small.dcm").path).pixel_array
    assert np.array_equal(np.frombuffer(swap(raw, 2), dtype="<i2").reshape(little.shape), little)


def test_part10_gives_identifying_uids_and_transfer_syntax():
    """PS3.10 7.1: the UIDs come from the dataset, the transfer syntax from the file meta."""
    item = by_name("pydicom/CT_small.dcm")
    parsed = read_part10(str(item.path), BULK_THRESHOLD, lambda path: path)
    assert (parsed.transfer_syntax, parsed.sop_class_uid, parsed.sop_instance_uid, parsed.study_uid,
            parsed.series_uid) == (item.transfer_syntax, item.sop_class_uid, item.sop_instance_uid,
                                   item.study_uid, item.series_uid)


def test_part10_uses_the_bulk_uri_maker_for_large_binary_values():
    """PS3.18 F.2.7: binary values over the threshold, and all Pixel Data, become BulkDataURIs
    made by the caller's function from the value's path."""
    item = by_name("pydicom/CT_small.dcm")
    parsed = read_part10(str(item.path), BULK_THRESHOLD, lambda path: f"bulk://{path}")
    assert parsed.dataset_json["7FE00010"] == {"vr": "OW", "BulkDataURI": "bulk://7FE00010"}
    everything_bulk = read_part10(str(item.path), 0, lambda path: f"bulk://{path}")
    binary = [tag for tag, element in everything_bulk.dataset_json.items() if element["vr"] in ("OB", "OW")]
    assert binary and all("BulkDataURI" in everything_bulk.dataset_json[tag] for tag in binary)


@pytest.mark.parametrize("name", sorted(KNOWN_BAD) + ["pydicom/dicomdirtests/DICOMDIR-nooffset"])
def test_part10_refuses_truncated_files(name):
    """PS3.10 7: a file cut short is not a Part 10 object the reader accepts."""
    corpus, _, relative = name.partition("/")
    with pytest.raises((Part10Error, ValueError, IndexError, struct.error)):
        read_part10(str(corpus_roots()[corpus] / relative), BULK_THRESHOLD, lambda path: path)


def test_part10_refuses_bytes_without_the_dicm_prefix():
    """PS3.10 7.1: a Part 10 file has a 128-byte preamble and 'DICM'."""
    with pytest.raises(Part10Error):
        read_part10(io.BytesIO(b"\0" * 128 + b"DICX" + b"\0" * 64), BULK_THRESHOLD, lambda path: path)
