"""What one retrieve may make the server decode (PS3.18 8.7, PS3.3 C.7.6.3): a small stored
object claiming huge pixel dimensions is refused before decoding, never decoded into gigabytes;
a frame list names each frame at most once; and a decoded lossy object still says it was lossy
(PS3.3 C.7.6.1.1.5)."""

from __future__ import annotations

import io

import pydicom
from pydicom.uid import generate_uid

from dicomweb.transcode import MAX_DECODED_FRAME_BYTES
from tests.dicomweb_requests import EXPLICIT_VR_LITTLE_ENDIAN, edited, instance_url, retrieve, stow
from tests.real_files import by_name

DICOM_IN = f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}'
OCTET_IN = f'multipart/related; type="application/octet-stream"; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}'


def stored_copy(http, root: str, name: str, **changes) -> str:
    """A corpus file with new UIDs (and `changes`), stored; its instance URL."""
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    data = edited(by_name(name).data, StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=sop,
                  MediaStorageSOPInstanceUID=sop, **changes)
    answer = stow(http, root, [data])
    assert answer.status_code == 200, answer.text[:300]
    return instance_url(root, study, series, sop)


def test_an_object_claiming_huge_frames_is_refused_before_decoding(server, fresh_org, http):
    """An RLE object of a few KB that says it is 20000 x 20000 x 16 bits (800 MB a frame)."""
    url = stored_copy(http, server.root(fresh_org), "pydicom/MR_small_RLE.dcm", Rows=20000, Columns=20000)
    assert 20000 * 20000 * 2 > MAX_DECODED_FRAME_BYTES
    for path, accept in (("", DICOM_IN), ("/frames/1", OCTET_IN), ("/rendered", "image/png"),
                         ("/thumbnail", "image/jpeg")):
        answer = http.get(url + path, headers={"Accept": accept})
        assert answer.status_code == 406, (path, answer.status_code, answer.text[:200])
        assert "decoded" in answer.text and "more than" in answer.text, answer.text[:300]
    # As stored it is served: nothing is decoded.
    assert http.get(url, headers={"Accept": 'multipart/related; type="application/dicom"; '
                                            "transfer-syntax=*"}).status_code == 200


def test_a_frame_list_names_each_frame_at_most_once(server, fresh_org, http):
    """PS3.18 10.4.1.1.6: a frame list longer than the instance's frames repeats some (400)."""
    url = stored_copy(http, server.root(fresh_org), "pydicom-data/emri_small.dcm")  # 10 frames
    assert http.get(url + "/frames/1,2,3", headers={"Accept": OCTET_IN}).status_code == 200
    repeated = http.get(url + "/frames/" + ",".join(["1"] * 11), headers={"Accept": OCTET_IN})
    assert repeated.status_code == 400 and "name each frame once" in repeated.text
    assert http.get(url + "/frames/" + ",".join(["1"] * 11) + "/rendered").status_code == 400


def test_a_decoded_lossy_jpeg_still_says_it_was_lossy(server, fresh_org, http):
    """PS3.3 C.7.6.1.1.5: a JPEG baseline object that does not say it is lossy, retrieved
    uncompressed, carries Lossy Image Compression 01 and the method ISO_10918_1."""
    url = stored_copy(http, server.root(fresh_org), "pydicom/SC_rgb_jpeg_dcmtk.dcm", LossyImageCompression=None,
                      LossyImageCompressionMethod=None, LossyImageCompressionRatio=None)
    [part] = retrieve(http, url, DICOM_IN)
    dataset = pydicom.dcmread(io.BytesIO(part.content))
    assert dataset.file_meta.TransferSyntaxUID == EXPLICIT_VR_LITTLE_ENDIAN
    assert dataset.LossyImageCompression == "01"
    assert dataset.LossyImageCompressionMethod == "ISO_10918_1"
    assert float(dataset.LossyImageCompressionRatio) > 1
