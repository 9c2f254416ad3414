"""WADO-RS, Retrieve (PS3.18 10.4): instances, metadata, bulk data and frames, on both index
backends; and DELETE of what an organisation holds."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames
from pydicom.pixels.utils import get_expected_length

from sqlalchemy import select, update

from conformance.corpus import StudySpec
from dicomweb.records import MARKED_INSTANCE_URI, MARKED_ROOT_URI
from storage.content_key import content_key
from storage.database import Database, database_url
from storage.instances import INSTANCE
from tests.dicom_json import BIG_ENDIAN, differences, pixel_swap_size, pydicom_json, swap
from tests.dicomweb_requests import (
    ANY_SYNTAX,
    EXPLICIT_VR_LITTLE_ENDIAN,
    instance_url,
    make_study,
    retrieve,
    store_study,
)
from tests.multipart_body import split_related
from tests.real_files import CorpusFile, by_name, corpus_files

DICOM_DEFAULT = 'multipart/related; type="application/dicom"'
OCTET_ANY = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
OCTET_DEFAULT = 'multipart/related; type="application/octet-stream"'

def corpus_url(server, stored_corpus, item: CorpusFile) -> str:
    return instance_url(server.root(stored_corpus[item.name]), item.study_uid, item.series_uid, item.sop_instance_uid)


def read(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


# -- instances --------------------------------------------------------------------------------

def test_wado_retrieves_study_series_and_instance_byte_exact(server, org, http):
    """PS3.18 10.4.1.1.1-3 and 8.7.3.5.2: study, series and instance, as stored, with transfer-syntax=*."""
    study = store_study(http, server.root(org), make_study(modalities=("CT", "MR"), instances_per_series=2))
    root = server.root(org)
    parts = retrieve(http, f"{root}/studies/{study.study_uid}")
    assert sorted(part.content for part in parts) == sorted(study.parts)
    for series_uid in study.series_uids:
        parts = retrieve(http, f"{root}/studies/{study.study_uid}/series/{series_uid}")
        assert sorted(part.content for part in parts) == sorted(study.in_series(series_uid).values())
    for sop, (series_uid, data) in study.instances.items():
        [part] = retrieve(http, instance_url(root, study.study_uid, series_uid, sop))
        assert part.content == data
        assert part.content_type == f"application/dicom; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"


def test_wado_retrieves_with_dicomweb_client(server, org, http, dicomweb):
    """PS3.18 10.4: a stock client's retrieve_study / retrieve_instance read what was stored."""
    study = store_study(http, server.root(org), make_study(instances_per_series=3))
    datasets = dicomweb.retrieve_study(study.study_uid, media_types=(("application/dicom", "*"),))
    assert sorted(ds.SOPInstanceUID for ds in datasets) == sorted(study.instances)
    sop, (series_uid, data) = next(iter(study.instances.items()))
    instance = dicomweb.retrieve_instance(study.study_uid, series_uid, sop)
    assert np.array_equal(instance.pixel_array, read(data).pixel_array)
    assert instance.PatientName == read(data).PatientName


def test_wado_default_is_explicit_vr_little_endian(server, http, stored_corpus):
    """PS3.18 8.7.3.5.2 (Table 8.7.3-2): with no transfer-syntax parameter, instances come in
    Explicit VR Little Endian; an Implicit VR original is re-encoded, values unchanged."""
    item = by_name("pydicom/MR_small_implicit.dcm")
    [part] = retrieve(http, corpus_url(server, stored_corpus, item), accept=DICOM_DEFAULT)
    assert part.content_type == f"application/dicom; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"
    served, original = read(part.content), item.dataset()
    assert served.file_meta.TransferSyntaxUID == EXPLICIT_VR_LITTLE_ENDIAN
    assert served.PatientName == original.PatientName and served.SOPInstanceUID == original.SOPInstanceUID
    assert np.array_equal(served.pixel_array, original.pixel_array)


@pytest.mark.parametrize("accept", [
    'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50',
    'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.201',
    'multipart/related; type="image/png"',
])
def test_wado_answers_406_for_an_unsupported_representation(server, org, http, accept):
    """PS3.18 8.7.5: a representation the server cannot produce (JPEG Baseline and HTJ2K are not
    encoded here) is 406 Not Acceptable. Transcoding itself: tests/dicomweb/test_transcoding.py."""
    study = store_study(http, server.root(org), make_study(instances_per_series=1))
    sop, (series_uid, _) = next(iter(study.instances.items()))
    response = http.get(instance_url(server.root(org), study.study_uid, series_uid, sop), headers={"Accept": accept})
    assert response.status_code == 406


def test_wado_serves_the_stored_syntax_when_asked_for_it(server, http, stored_corpus):
    """PS3.18 8.7.3.5.2: naming the stored syntax returns the stored bytes."""
    item = by_name("pydicom/MR_small_RLE.dcm")
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={item.transfer_syntax}'
    [part] = retrieve(http, corpus_url(server, stored_corpus, item), accept=accept)
    assert part.content == item.data


def test_wado_of_something_not_held_is_404(server, org, http):
    """PS3.18 10.4.3: a study, series or instance the organisation does not hold is 404."""
    study = make_study(instances_per_series=1)  # never stored
    sop, (series_uid, _) = next(iter(study.instances.items()))
    root = server.root(org)
    for url in (f"{root}/studies/{study.study_uid}", f"{root}/studies/{study.study_uid}/series/{series_uid}",
                instance_url(root, study.study_uid, series_uid, sop)):
        assert http.get(url, headers={"Accept": ANY_SYNTAX}).status_code == 404
    assert http.get(f"{root}/studies/{study.study_uid}/metadata").status_code == 404
    assert http.get(f"{instance_url(root, study.study_uid, series_uid, sop)}/frames/1").status_code == 404


# -- metadata ---------------------------------------------------------------------------------

def bulk_reader(http: httpx.Client):
    def read_bulk(uri: str, where: str) -> bytes:
        response = http.get(uri)
        assert response.status_code == 200, (where, uri, response.status_code)
        [part] = split_related(response.headers["content-type"], response.content)
        return part.content

    return read_bulk


def assert_metadata_equals_file(http, metadata: dict, item_data: bytes, transfer_syntax: str) -> None:
    dataset = read(item_data)
    encapsulated = pydicom.uid.UID(transfer_syntax).is_encapsulated
    found = differences(metadata, pydicom_json(dataset), transfer_syntax=transfer_syntax,
                        read_bulk=bulk_reader(http), encapsulated=encapsulated)
    assert found == []
    assert metadata["00083002"]["Value"] == [transfer_syntax]  # Available Transfer Syntax UID


def test_wado_metadata_at_three_levels_equals_the_stored_attributes(server, org, http, dicomweb):
    """PS3.18 10.4.1.1.4 and Annex F: study, series and instance metadata hold each instance's
    attributes, bulk data by BulkDataURI."""
    study = store_study(http, server.root(org), make_study(modalities=("CT", "MR"), instances_per_series=2))
    root = server.root(org)
    by_sop = {}
    study_metadata = http.get(f"{root}/studies/{study.study_uid}/metadata").json()
    assert len(study_metadata) == 4
    for metadata in study_metadata:
        sop = metadata["00080018"]["Value"][0]
        by_sop[sop] = metadata
        assert_metadata_equals_file(http, metadata, study.instances[sop][1], EXPLICIT_VR_LITTLE_ENDIAN)
    series_uid = study.series_uids[1]
    series_metadata = http.get(f"{root}/studies/{study.study_uid}/series/{series_uid}/metadata").json()
    assert sorted(m["00080018"]["Value"][0] for m in series_metadata) == sorted(study.in_series(series_uid))
    sop = next(iter(study.in_series(series_uid)))
    [instance_metadata] = http.get(f"{instance_url(root, study.study_uid, series_uid, sop)}/metadata").json()
    assert instance_metadata == by_sop[sop]
    client_metadata = dicomweb.retrieve_study_metadata(study.study_uid)
    assert sorted(m["00080018"]["Value"][0] for m in client_metadata) == sorted(study.instances)


CHARSET_FILES = [item for item in corpus_files() if item.name.startswith("pydicom-charset/")]


def test_the_charset_corpus_is_stored():
    """The files below carry Specific Character Sets from Latin-1 to ISO 2022 and GB18030."""
    names = {item.name for item in CHARSET_FILES}
    assert {"pydicom-charset/chrH31.dcm", "pydicom-charset/chrX1.dcm", "pydicom-charset/chrX2.dcm",
            "pydicom-charset/chrI2.dcm", "pydicom-charset/chrRuss.dcm"} <= names


@pytest.mark.parametrize("item", CHARSET_FILES, ids=lambda item: item.name)
def test_wado_metadata_decodes_specific_character_sets(server, http, stored_corpus, item):
    """PS3.18 F.2 and PS3.5 6.1: text is served as Unicode, decoded from the object's Specific
    Character Set; Person Names keep their alphabetic, ideographic and phonetic groups."""
    [metadata] = http.get(f"{corpus_url(server, stored_corpus, item)}/metadata").json()
    expected = pydicom_json(item.dataset())
    assert metadata["00100010"] == expected["00100010"]
    assert_metadata_equals_file(http, metadata, item.data, item.transfer_syntax)


def test_wado_metadata_makes_bulk_data_uris_absolute_and_leaves_text_alone(server, org, http):
    """PS3.18 F.2.6: each BulkDataURI is the instance's own URL below the service root the
    client used; a text value that spells the server's internal mark is served as sent."""
    lookalike = '"BulkDataURI":"@root@ and @instance@'
    study = store_study(http, server.root(org), make_study(StudySpec(rows=16, columns=16,
                                                                     study_description=lookalike)))
    metadata = http.get(f"{server.root(org)}/studies/{study.study_uid}/metadata").json()
    assert len(metadata) == len(study.instances)
    for instance in metadata:
        sop, series = instance["00080018"]["Value"][0], instance["0020000E"]["Value"][0]
        url = instance_url(server.root(org), study.study_uid, series, sop)
        assert instance["7FE00010"]["BulkDataURI"] == f"{url}/bulkdata/7FE00010"
        assert instance["00081030"]["Value"] == [lookalike]


def test_wado_metadata_prepared_with_per_instance_marks_is_still_served(server, org, http):
    """Rows prepared by an earlier version mark the BulkDataURI relative to the instance; they
    are served with the same absolute URIs, and the bulk data behind them."""
    study = store_study(http, server.root(org), make_study(StudySpec(rows=16, columns=16)))
    sop, (series, data) = next(iter(study.instances.items()))
    database = Database(database_url(server.database_url, server.data_dir))
    try:
        with database.write() as connection:
            [prepared] = connection.execute(select(INSTANCE.c.dicom_json).where(
                INSTANCE.c.org == org, INSTANCE.c.sop_instance_uid == sop)).scalars()
            earlier = prepared.replace(MARKED_ROOT_URI + f"/studies/{study.study_uid}/series/{series}/instances/{sop}"
                                       .encode(), MARKED_INSTANCE_URI)
            assert earlier != prepared
            connection.execute(update(INSTANCE).where(INSTANCE.c.org == org, INSTANCE.c.sop_instance_uid == sop)
                               .values(dicom_json=earlier))
    finally:
        database.dispose()
    url = instance_url(server.root(org), study.study_uid, series, sop)
    for metadata_url in (f"{server.root(org)}/studies/{study.study_uid}/metadata", f"{url}/metadata"):
        by_sop = {item["00080018"]["Value"][0]: item for item in http.get(metadata_url).json()}
        uri = by_sop[sop]["7FE00010"]["BulkDataURI"]
        assert uri == f"{url}/bulkdata/7FE00010"
    response = http.get(uri)
    [part] = split_related(response.headers["content-type"], response.content)
    assert part.content == pydicom.dcmread(io.BytesIO(data)).PixelData


@pytest.mark.parametrize("name", ["pydicom/CT_small.dcm", "pydicom/ExplVR_BigEnd.dcm", "pydicom/rtdose.dcm",
                                  "pydicom/examples_overlay.dcm", "pydicom-data/emri_small_big_endian.dcm",
                                  "pydicom/JPEG2000.dcm", "pydicom/image_dfl.dcm", "pydicom-data/liver.dcm",
                                  "pydicom/rtdose_expb.dcm", "pydicom-data/OBXXXX1A_expb.dcm"])
def test_wado_metadata_of_real_files_equals_pydicom(server, http, stored_corpus, name):
    """PS3.18 F.2: real files' metadata, bulk values resolved through their BulkDataURIs."""
    item = by_name(name)
    [metadata] = http.get(f"{corpus_url(server, stored_corpus, item)}/metadata").json()
    assert_metadata_equals_file(http, metadata, item.data, item.transfer_syntax)


@pytest.mark.parametrize("name", ["pydicom/CT_small.dcm", "pydicom/ExplVR_BigEnd.dcm", "pydicom/rtdose.dcm",
                                  "pydicom/rtdose_expb.dcm", "pydicom/liver_expb_1frame.dcm",
                                  "pydicom/MR_small_bigendian.dcm", "pydicom/image_dfl.dcm"])
def test_wado_bulkdata_uri_of_pixel_data_returns_the_pixel_bytes(server, http, stored_corpus, name):
    """PS3.18 10.4.1.1.5 and 8.7.3.3.2: the BulkDataURI of native Pixel Data returns its bytes,
    little endian: the pixels pydicom decodes from the original."""
    item = by_name(name)
    [metadata] = http.get(f"{corpus_url(server, stored_corpus, item)}/metadata").json()
    uri = metadata["7FE00010"]["BulkDataURI"]
    assert uri.startswith(corpus_url(server, stored_corpus, item) + "/bulkdata/")
    response = http.get(uri)
    assert response.status_code == 200
    [part] = split_related(response.headers["content-type"], response.content)
    assert part.content_type.startswith("application/octet-stream")
    assert part.content == little_endian_pixel_data(item.dataset())


def little_endian_pixel_data(dataset: pydicom.Dataset) -> bytes:
    """Native Pixel Data as little endian bytes: big endian samples wider than a byte swapped
    (as pydicom decodes them), 8-bit OW in 16-bit words (PS3.5 7.3)."""
    data = dataset.PixelData
    if dataset.file_meta.TransferSyntaxUID != BIG_ENDIAN:
        return data
    size = pixel_swap_size(dataset["PixelData"].VR, dataset.BitsAllocated)
    return swap(data, size) if size > 1 else data


def test_wado_bulkdata_of_an_unknown_path_is_404(server, http, stored_corpus):
    """PS3.18 10.4.1.1.5: a bulk data path the instance does not have is 404."""
    item = by_name("pydicom/CT_small.dcm")
    assert http.get(f"{corpus_url(server, stored_corpus, item)}/bulkdata/00091001").status_code == 404


# -- frames -----------------------------------------------------------------------------------

def frames(http, url: str, numbers: str, accept: str) -> list[bytes]:
    response = http.get(f"{url}/frames/{numbers}", headers={"Accept": accept})
    assert response.status_code == 200, (response.status_code, response.text[:200])
    return [part.content for part in split_related(response.headers["content-type"], response.content)]


def native_frames(dataset: pydicom.Dataset) -> list[bytes]:
    count = int(dataset.get("NumberOfFrames") or 1)
    size = get_expected_length(dataset, unit="bytes") // count
    return [dataset.PixelData[i * size:(i + 1) * size] for i in range(count)]


def test_wado_retrieves_the_frame_of_a_single_frame_instance(server, http, stored_corpus):
    """PS3.18 10.4.1.1.6: frame 1 of a single-frame native instance is its Pixel Data."""
    item = by_name("pydicom/CT_small.dcm")
    assert frames(http, corpus_url(server, stored_corpus, item), "1", OCTET_ANY) == [item.dataset().PixelData]


def test_wado_retrieves_chosen_frames_of_a_multi_frame_instance(server, http, stored_corpus):
    """PS3.18 10.4.1.1.6: frames 1 and 3 of emri_small.dcm (10 frames), in the order asked."""
    item = by_name("pydicom-data/emri_small.dcm")
    expected = native_frames(item.dataset())
    url = corpus_url(server, stored_corpus, item)
    assert frames(http, url, "1,3", OCTET_ANY) == [expected[0], expected[2]]
    assert frames(http, url, "3,1", OCTET_DEFAULT) == [expected[2], expected[0]]


def test_wado_retrieves_frames_of_a_synthetic_multi_frame_instance(server, org, http, dicomweb):
    """PS3.18 10.4.1.1.6: frames of a 5-frame instance, also through dicomweb-client."""
    study = store_study(http, server.root(org), make_study(StudySpec(rows=16, columns=16, frames=5),
                                                           instances_per_series=1))
    sop, (series_uid, data) = next(iter(study.instances.items()))
    expected = native_frames(read(data))
    assert len(expected) == 5 and len(set(expected)) == 5
    got = dicomweb.retrieve_instance_frames(study.study_uid, series_uid, sop, frame_numbers=[2, 5],
                                            media_types=(("application/octet-stream", "*"),))
    assert got == [expected[1], expected[4]]


@pytest.mark.parametrize("name", ["pydicom-data/emri_small_jpeg_2k_lossless.dcm",
                                  "pydicom-data/emri_small_RLE.dcm", "pydicom-data/emri_small_jpeg_ls_lossless.dcm",
                                  "pydicom/SC_rgb_rle_2frame.dcm", "pydicom/JPEG2000.dcm"])
def test_wado_retrieves_compressed_frames_as_stored_with_any_syntax(server, http, stored_corpus, name):
    """PS3.18 8.7.3.5.2 and 10.4.1.1.6: with transfer-syntax=* each frame is its compressed
    bitstream, the fragment data of PS3.5 A.4."""
    item = by_name(name)
    dataset = item.dataset()
    expected = list(generate_frames(dataset.PixelData, number_of_frames=item.number_of_frames))
    numbers = [1, 3] if item.number_of_frames >= 3 else list(range(1, item.number_of_frames + 1))
    response = http.get(f"{corpus_url(server, stored_corpus, item)}/frames/{','.join(map(str, numbers))}",
                        headers={"Accept": OCTET_ANY})
    assert response.status_code == 200
    parts = split_related(response.headers["content-type"], response.content)
    assert [part.content for part in parts] == [expected[n - 1] for n in numbers]
    assert all(f"transfer-syntax={item.transfer_syntax}" in part.content_type for part in parts)


@pytest.mark.parametrize("name", ["pydicom-data/emri_small_jpeg_2k_lossless.dcm", "pydicom-data/emri_small_RLE.dcm",
                                  "pydicom/MR_small_jpeg_ls_lossless.dcm", "pydicom-data/emri_small_big_endian.dcm",
                                  "pydicom/rtdose_expb.dcm", "pydicom-data/liver_expb.dcm",
                                  "pydicom-data/SC_rgb_expb_2frame.dcm", "pydicom/image_dfl.dcm"])
def test_wado_decodes_frames_by_default(server, http, stored_corpus, name):
    """PS3.18 8.7.3.5.2 (Table 8.7.3-4): frames asked for without a transfer syntax come
    uncompressed and little endian: pydicom's decoding of compressed frames, the native frame
    bytes (swapped from big endian) otherwise."""
    item = by_name(name)
    dataset = item.dataset()
    numbers = [1, 3] if item.number_of_frames >= 3 else [1]
    got = frames(http, corpus_url(server, stored_corpus, item), ",".join(map(str, numbers)), OCTET_DEFAULT)
    if dataset.file_meta.TransferSyntaxUID.is_encapsulated:
        pixels = dataset.pixel_array
        pixels = pixels if item.number_of_frames > 1 else pixels[np.newaxis]
        expected = [pixels[n - 1].astype(pixels.dtype.newbyteorder("<")).tobytes() for n in numbers]
    else:
        size = get_expected_length(dataset, unit="bytes") // item.number_of_frames
        data = little_endian_pixel_data(dataset)
        expected = [data[(n - 1) * size:n * size] for n in numbers]
    assert got == expected


def test_wado_frame_out_of_range_is_404_and_frame_zero_400(server, http, stored_corpus):
    """PS3.18 10.4.1.1.6 and 10.4.3: frames are numbered from 1; one past the last is not found."""
    item = by_name("pydicom-data/emri_small.dcm")
    url = corpus_url(server, stored_corpus, item)
    assert http.get(f"{url}/frames/11", headers={"Accept": OCTET_ANY}).status_code == 404
    assert http.get(f"{url}/frames/1,11", headers={"Accept": OCTET_ANY}).status_code == 404
    assert http.get(f"{url}/frames/0", headers={"Accept": OCTET_ANY}).status_code == 400
    assert http.get(f"{url}/frames/one", headers={"Accept": OCTET_ANY}).status_code == 400
    assert http.get(f"{url}/frames/10", headers={"Accept": OCTET_ANY}).status_code == 200


# -- delete -----------------------------------------------------------------------------------

def test_delete_instance_series_and_study_removes_rows_and_unreferenced_blobs(server, org, http):
    """DELETE on the WADO-RS resource paths (as Orthanc and dcm4chee): rows go, and blob
    files no instance references any more go from the data directory's blobs/ folder."""
    root = server.root(org)
    study = store_study(http, root, make_study(modalities=("CT", "MR"), instances_per_series=2))
    blobs_with = server.blob_files()
    ct_series, mr_series = study.series_uids
    sop, data = next(iter(study.in_series(ct_series).items()))
    key = content_key(data)
    assert key in blobs_with

    response = http.delete(instance_url(root, study.study_uid, ct_series, sop))
    assert response.status_code == 200 and response.json()["deleted_instances"] == 1
    assert key not in server.blob_files()
    assert http.get(instance_url(root, study.study_uid, ct_series, sop)).status_code == 404
    assert len(http.get(f"{root}/studies/{study.study_uid}/instances").json()) == 3

    response = http.delete(f"{root}/studies/{study.study_uid}/series/{mr_series}")
    assert response.json()["deleted_instances"] == 2
    assert http.get(f"{root}/studies/{study.study_uid}/series").json()[0]["0020000E"]["Value"] == [ct_series]
    [row] = http.get(f"{root}/studies", params={"StudyInstanceUID": study.study_uid}).json()
    assert row["00201206"]["Value"] == [1] and row["00201208"]["Value"] == [1]
    assert row["00080061"]["Value"] == ["CT"]

    response = http.delete(f"{root}/studies/{study.study_uid}")
    assert response.json()["deleted_instances"] == 1
    assert http.get(f"{root}/studies", params={"StudyInstanceUID": study.study_uid}).json() == []
    assert http.get(f"{root}/studies/{study.study_uid}", headers={"Accept": ANY_SYNTAX}).status_code == 404
    assert not {content_key(d) for d in study.parts} & server.blob_files()
    assert http.delete(f"{root}/studies/{study.study_uid}").status_code == 404


def test_delete_keeps_a_blob_another_organisation_still_holds(server, org, other_org, http, dicomweb):
    """DESIGN (blobs): identical bytes held by two organisations are one blob; deleting one
    organisation's instance keeps it for the other, deleting the last removes it."""
    study = make_study(instances_per_series=1)
    store_study(http, server.root(org), study)
    store_study(http, server.root(other_org), study)
    key = content_key(study.parts[0])
    assert key in server.blob_files()
    dicomweb.delete_study(study.study_uid)
    assert key in server.blob_files()
    sop, (series_uid, data) = next(iter(study.instances.items()))
    [part] = retrieve(http, instance_url(server.root(other_org), study.study_uid, series_uid, sop))
    assert part.content == data
    assert http.delete(f"{server.root(other_org)}/studies/{study.study_uid}").status_code == 200
    assert key not in server.blob_files()
