"""STOW-RS, Store Instances (PS3.18 10.5) against a live server, on both index backends."""

from __future__ import annotations

import hashlib
import io
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pydicom
import pytest
from sqlalchemy import update

from conformance.corpus import new_uid
from storage.content_key import content_key
from storage.database import Database, database_url
from storage.instances import INSTANCE
from tests.dicomweb_requests import (
    RETRIEVE_URL,
    edited,
    failures,
    first_value,
    instance_url,
    make_study,
    referenced_sop_instances,
    retrieve,
    stow,
)
from tests.multipart_body import new_boundary, related_body, stow_content_type
from tests.real_files import KNOWN_BAD, by_name, corpus_roots

CANNOT_UNDERSTAND = 0xC000  # 49152
STUDY_UID_MISMATCH = 0xC409  # 50185
DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
SOP_CLASS_NOT_SUPPORTED = 0x0122
DUPLICATE_SOP_INSTANCE = 0x0111  # 273
MODALITY_PERFORMED_PROCEDURE_STEP = "1.2.840.10008.3.1.2.3.3"  # a SOP Class, but not a Storage one


def instance_count(http: httpx.Client, root: str, study_uid: str) -> int:
    response = http.get(f"{root}/studies/{study_uid}/instances")
    assert response.status_code == 200
    return len(response.json())


def test_stow_stores_all_instances_with_referenced_sop_sequence_and_retrieve_url(server, org, dicomweb):
    """PS3.18 10.5.3: 200 when every instance is stored; the response lists each in the
    Referenced SOP Sequence with its Retrieve URL, and the study's Retrieve URL."""
    study = make_study(instances_per_series=3)
    datasets = [pydicom.dcmread(io.BytesIO(data)) for data in study.parts]
    response = dicomweb.store_instances(datasets)
    referenced = response.ReferencedSOPSequence
    assert sorted(item.ReferencedSOPInstanceUID for item in referenced) == sorted(study.instances)
    for item in referenced:
        series, _ = study.instances[item.ReferencedSOPInstanceUID]
        assert item.RetrieveURL.endswith(
            f"/dicomweb/{org}/studies/{study.study_uid}/series/{series}/instances/{item.ReferencedSOPInstanceUID}")
        assert item.ReferencedSOPClassUID == datasets[0].SOPClassUID
    assert response.RetrieveURL.endswith(f"/dicomweb/{org}/studies/{study.study_uid}")
    assert "FailedSOPSequence" not in response


def test_stow_response_retrieve_urls_are_absolute_and_resolve(server, org, http):
    """PS3.18 10.5.3.1: each Retrieve URL is the instance's WADO-RS URL on this service root."""
    study = make_study(instances_per_series=2)
    root = server.root(org)
    response = stow(http, root, study.parts)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/dicom+json")
    body = response.json()
    assert first_value(body[RETRIEVE_URL]) == f"{root}/studies/{study.study_uid}"
    urls = {item["00081155"]["Value"][0]: first_value(item[RETRIEVE_URL]) for item in body["00081199"]["Value"]}
    for sop, (series, data) in study.instances.items():
        assert urls[sop] == instance_url(root, study.study_uid, series, sop)
        [part] = retrieve(http, urls[sop])
        assert part.content == data


def test_stow_answers_202_when_some_parts_fail(server, org, http):
    """PS3.18 10.5.3: 202 when some instances were stored and others failed; an unparsable
    part fails with 0xC000 in the Failed SOP Sequence, the good one is stored."""
    study = make_study(instances_per_series=1)
    [good] = study.parts
    response = stow(http, server.root(org), [good, b"this is not a DICOM object"])
    assert response.status_code == 202
    body = response.json()
    assert referenced_sop_instances(body) == list(study.instances)
    assert [reason for _, reason in failures(body)] == [CANNOT_UNDERSTAND]
    assert failures(body)[0][1] == 49152
    assert response.headers.get("warning", "").startswith("299 ")
    assert instance_count(http, server.root(org), study.study_uid) == 1


def test_stow_answers_409_when_nothing_is_stored(server, org, http):
    """PS3.18 10.5.3: 409 when no instance of the request was stored."""
    response = stow(http, server.root(org), [b"garbage", b"DICM" * 100])
    assert response.status_code == 409
    body = response.json()
    assert [reason for _, reason in failures(body)] == [CANNOT_UNDERSTAND, CANNOT_UNDERSTAND]
    assert "00081199" not in body


def test_stow_rejects_study_uid_mismatch_with_409(server, org, http):
    """PS3.18 10.5.1: POST /studies/{StudyInstanceUID} stores only instances of that study;
    others fail (reason 0xC409), and here none matched so the answer is 409."""
    study = make_study(instances_per_series=1)
    other_study = new_uid()
    response = stow(http, server.root(org), study.parts, study_uid=other_study)
    assert response.status_code == 409
    assert failures(response.json()) == [(next(iter(study.instances)), STUDY_UID_MISMATCH)]
    assert STUDY_UID_MISMATCH == 50185
    assert http.get(f"{server.root(org)}/studies/{study.study_uid}/instances").json() == []
    assert http.get(f"{server.root(org)}/studies/{other_study}/instances").json() == []


def test_stow_to_a_study_url_keeps_the_matching_instances(server, org, http):
    """PS3.18 10.5.1: with a study in the URL, matching instances are stored (202 with the others failed)."""
    study, stranger = make_study(instances_per_series=2), make_study(instances_per_series=1)
    response = stow(http, server.root(org), [*study.parts, *stranger.parts], study_uid=study.study_uid)
    assert response.status_code == 202
    body = response.json()
    assert sorted(referenced_sop_instances(body)) == sorted(study.instances)
    assert failures(body) == [(next(iter(stranger.instances)), STUDY_UID_MISMATCH)]
    assert first_value(body[RETRIEVE_URL]) == f"{server.root(org)}/studies/{study.study_uid}"


def test_stow_refuses_an_instance_without_sop_instance_uid_with_a900(server, org, http):
    """PS3.4 B.2.3: an object missing a required UID does not match its SOP Class (0xA900)."""
    study = make_study(instances_per_series=1)
    [data] = study.parts
    nameless = edited(data, SOPInstanceUID=None, MediaStorageSOPInstanceUID=None)
    assert pydicom.dcmread(io.BytesIO(nameless)).get("SOPInstanceUID") is None
    response = stow(http, server.root(org), [nameless])
    assert response.status_code == 409
    assert [reason for _, reason in failures(response.json())] == [DATA_SET_DOES_NOT_MATCH_SOP_CLASS]
    assert http.get(f"{server.root(org)}/studies/{study.study_uid}/instances").json() == []


def test_stow_refuses_a_real_file_without_study_instance_uid_with_a900(server, fresh_org, http):
    """PS3.4 B.2.3: JPEGLSNearLossless_08.dcm of pydicom has no Study/Series Instance UID."""
    item = by_name("pydicom/JPEGLSNearLossless_08.dcm")
    assert item.completed  # the corpus completes it; the file as it is must be refused
    response = stow(http, server.root(fresh_org), [item.path.read_bytes()])
    assert response.status_code == 409
    assert failures(response.json()) == [(item.sop_instance_uid, DATA_SET_DOES_NOT_MATCH_SOP_CLASS)]


def test_stow_refuses_a_non_storage_sop_class_with_0122(server, org, http):
    """PS3.4 B.2.3: a SOP Class that is not a Storage SOP Class is refused (0x0122)."""
    study = make_study(instances_per_series=1)
    [data] = study.parts
    sop = next(iter(study.instances))
    odd = edited(data, SOPClassUID=MODALITY_PERFORMED_PROCEDURE_STEP,
                 MediaStorageSOPClassUID=MODALITY_PERFORMED_PROCEDURE_STEP)
    response = stow(http, server.root(org), [odd])
    assert response.status_code == 409
    assert failures(response.json()) == [(sop, SOP_CLASS_NOT_SUPPORTED)]


def test_stow_refuses_a_part_that_is_not_application_dicom(server, org, http):
    """PS3.18 10.5.1.1: with type="application/dicom" every part is a Part 10 object."""
    study = make_study(instances_per_series=1)
    boundary = new_boundary()
    body = related_body(study.parts, boundary, part_type="application/octet-stream")
    response = http.post(f"{server.root(org)}/studies", content=body,
                         headers={"Content-Type": stow_content_type(boundary)})
    assert response.status_code == 409
    assert [reason for _, reason in failures(response.json())] == [CANNOT_UNDERSTAND]


@pytest.mark.parametrize("name", sorted(KNOWN_BAD) + ["pydicom/dicomdirtests/DICOMDIR-nooffset"])
def test_stow_refuses_truncated_real_files_with_c000_and_keeps_no_spool(server, fresh_org, http, name):
    """PS3.18 10.5.3: a truncated object is a per-instance failure (0xC000), never a server
    error, and its spooled bytes do not stay behind."""
    corpus, _, relative = name.partition("/")
    data = (corpus_roots()[corpus] / relative).read_bytes()
    response = stow(http, server.root(fresh_org), [data])
    assert response.status_code == 409, response.text[:300]
    assert [reason for _, reason in failures(response.json())] == [CANNOT_UNDERSTAND]
    assert list((server.data_dir / "incoming").iterdir()) == []


MALFORMED = {
    "no closing delimiter": (lambda b: f"--{b}\r\nContent-Type: application/dicom\r\n\r\nDICM".encode(), True),
    "no boundary parameter": (lambda b: f"--{b}\r\n\r\nx\r\n--{b}--\r\n".encode(), False),
    "no delimiter at all": (lambda b: b"just some bytes, no multipart structure at all", True),
    "body ends inside part headers": (lambda b: f"--{b}\r\nContent-Type: application/dicom".encode(), True),
    "no parts": (lambda b: f"--{b}--\r\n".encode(), True),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_stow_rejects_malformed_multipart_with_400(server, org, http, case):
    """PS3.18 8.6.1.2 / RFC 2046 5.1.1: a body that is not well-formed multipart/related is a 400."""
    make_body, with_boundary = MALFORMED[case]
    boundary = new_boundary()
    content_type = stow_content_type(boundary) if with_boundary else 'multipart/related; type="application/dicom"'
    before = server.blob_files()
    response = http.post(f"{server.root(org)}/studies", content=make_body(boundary),
                         headers={"Content-Type": content_type})
    assert response.status_code == 400, response.text
    assert response.json()["error"]
    assert server.blob_files() == before
    assert list((server.data_dir / "incoming").iterdir()) == []


@pytest.mark.parametrize("content_type", [
    "application/json",
    "application/dicom",
    'multipart/related; type="application/dicom+xml"; boundary={b}',
    'multipart/related; type="application/dicom+json"; boundary={b}',
    "multipart/related; type=application/octet-stream; boundary={b}",
])
def test_stow_rejects_unsupported_media_types_with_415(server, org, http, content_type):
    """PS3.18 10.5.1.1 / 8.7.4: a request media type the server does not support is 415."""
    boundary = new_boundary()
    study = make_study(instances_per_series=1)
    response = http.post(f"{server.root(org)}/studies", content=related_body(study.parts, boundary),
                         headers={"Content-Type": content_type.format(b=boundary)})
    assert response.status_code == 415
    assert http.get(f"{server.root(org)}/studies/{study.study_uid}/instances").json() == []


CONTENT_TYPE_VARIANTS = {
    "quoted type": ('multipart/related; type="application/dicom"; boundary={b}', "plain"),
    "unquoted type": ("multipart/related; type=application/dicom; boundary={b}", "plain"),
    "no type (defaults to application/dicom)": ("multipart/related; boundary={b}", "plain"),
    "start parameter": ('multipart/related; type="application/dicom"; start="<part1@oix>"; boundary={b}', "plain"),
    "boundary first, spaces": ('multipart/related;boundary={b} ;  type="application/dicom"', "plain"),
    "upper-case media type": ('Multipart/Related; Type="Application/DICOM"; Boundary={b}', "plain"),
    "quoted boundary with specials": ('multipart/related; type="application/dicom"; boundary="{b}"', "specials"),
    "boundary of 70 characters": ('multipart/related; type="application/dicom"; boundary={b}', "long"),
    "boundary that looks like a header": ('multipart/related; type="application/dicom"; boundary="{b}"', "dashes"),
}
BOUNDARIES = {
    "plain": "simpleBoundary123",
    "specials": "a'()+_,-./:=? z",
    "long": "b" * 68 + "07",
    "dashes": "----=_Part_0_12345.6789",
}


@pytest.mark.parametrize("variant", sorted(CONTENT_TYPE_VARIANTS))
def test_stow_accepts_content_type_variants(server, org, http, variant):
    """PS3.18 8.6.1.2, RFC 2046 5.1.1 and RFC 2387: type quoted or not, a start parameter,
    any legal boundary; each stores the instance."""
    template, boundary_kind = CONTENT_TYPE_VARIANTS[variant]
    boundary = BOUNDARIES[boundary_kind]
    study = make_study(instances_per_series=2)
    response = http.post(f"{server.root(org)}/studies", content=related_body(study.parts, boundary),
                         headers={"Content-Type": template.format(b=boundary)})
    assert response.status_code == 200, response.text
    assert sorted(referenced_sop_instances(response.json())) == sorted(study.instances)


def test_stow_reads_parts_without_headers_and_ignores_preamble_and_epilogue(server, org, http):
    """RFC 2046 5.1.1: a preamble and an epilogue are ignored; a part without Content-Type
    is the type named by the request's `type` parameter."""
    study = make_study(instances_per_series=2)
    boundary = new_boundary()
    body = (b"This is the preamble, with --" + boundary.encode() + b"x not a delimiter.\r\n"
            + related_body(study.parts, boundary, part_type=None) + b"epilogue to ignore\r\n")
    response = http.post(f"{server.root(org)}/studies", content=body,
                         headers={"Content-Type": stow_content_type(boundary)})
    assert response.status_code == 200, response.text
    for sop, (series, data) in study.instances.items():
        [part] = retrieve(http, instance_url(server.root(org), study.study_uid, series, sop))
        assert part.content == data


def test_stow_reads_a_body_sent_in_tiny_chunks(server, org, http):
    """PS3.18 8.6.1.2: delimiters split across network reads are still found (chunked transfer)."""
    study = make_study(instances_per_series=2)
    boundary = new_boundary()
    body = related_body(study.parts, boundary)

    def trickle():
        for start in range(0, len(body), 7):
            yield body[start:start + 7]

    response = http.post(f"{server.root(org)}/studies", content=trickle(),
                         headers={"Content-Type": stow_content_type(boundary)})
    assert response.status_code == 200, response.text
    for sop, (series, data) in study.instances.items():
        [part] = retrieve(http, instance_url(server.root(org), study.study_uid, series, sop))
        assert part.content == data


def test_stow_re_store_of_identical_instance_is_idempotent(server, org, http):
    """PS3.18 10.5.3: storing the same object again succeeds and leaves one instance."""
    study = make_study(instances_per_series=1)
    root = server.root(org)
    assert stow(http, root, study.parts).status_code == 200
    blobs = server.blob_files()
    again = stow(http, root, study.parts)
    assert again.status_code == 200
    assert referenced_sop_instances(again.json()) == list(study.instances)
    assert instance_count(http, root, study.study_uid) == 1
    [found] = http.get(f"{root}/studies", params={"StudyInstanceUID": study.study_uid}).json()
    assert found["00201208"]["Value"] == [1]
    assert server.blob_files() == blobs


def test_stow_refuses_a_different_object_under_a_held_sop_instance_uid_with_0111(server, org, http):
    """PS3.4 B.2.3 (0x0111, Duplicate SOP Instance): a different object under an SOP Instance
    UID already held is refused and the first one kept, bytes unchanged."""
    study = make_study(instances_per_series=1)
    [(sop, (series, original))] = study.instances.items()
    root = server.root(org)
    assert stow(http, root, [original]).status_code == 200
    blobs = server.blob_files()
    impostor = edited(original, PatientName="Impostor^Ivan")
    response = stow(http, root, [impostor])
    assert response.status_code == 409
    assert failures(response.json()) == [(sop, DUPLICATE_SOP_INSTANCE)]
    assert DUPLICATE_SOP_INSTANCE == 273
    [part] = retrieve(http, instance_url(root, study.study_uid, series, sop))
    assert part.content == original
    assert server.blob_files() == blobs  # the refused object's bytes are not kept


def test_stow_keeps_the_first_of_two_objects_with_one_sop_instance_uid_in_a_request(server, org, http):
    """PS3.4 B.2.3: within one request too, the second, different object under a UID is refused."""
    study = make_study(instances_per_series=1)
    [(sop, (series, original))] = study.instances.items()
    response = stow(http, server.root(org), [original, edited(original, PatientID="OTHER")])
    assert response.status_code == 202
    assert referenced_sop_instances(response.json()) == [sop]
    assert failures(response.json()) == [(sop, DUPLICATE_SOP_INSTANCE)]
    [part] = retrieve(http, instance_url(server.root(org), study.study_uid, series, sop))
    assert part.content == original


def test_stow_refuses_a_real_file_in_another_syntax_under_a_held_uid(server, fresh_org, http):
    """PS3.4 B.2.3: MR_small.dcm and MR_small_RLE.dcm share a SOP Instance UID; the second is
    refused with 0x0111 and the first stays retrievable byte for byte."""
    first, second = by_name("pydicom/MR_small.dcm"), by_name("pydicom/MR_small_RLE.dcm")
    assert first.sop_instance_uid == second.sop_instance_uid
    root = server.root(fresh_org)
    assert stow(http, root, [first.data]).status_code == 200
    response = stow(http, root, [second.data])
    assert response.status_code == 409
    assert failures(response.json()) == [(first.sop_instance_uid, DUPLICATE_SOP_INSTANCE)]
    [part] = retrieve(http, instance_url(root, first.study_uid, first.series_uid, first.sop_instance_uid))
    assert part.content == first.data


def test_concurrent_stows_of_one_study_store_every_instance(server, org, http):
    """PS3.18 10.5: eight clients storing series of the same study at once: every instance
    is stored once and the study's counts add up."""
    study = make_study(modalities=("CT",) * 8, instances_per_series=3)
    root = server.root(org)
    barrier = threading.Barrier(8, timeout=30)

    def store(series_uid: str) -> int:
        with httpx.Client(timeout=60) as client:
            barrier.wait()
            return stow(client, root, list(study.in_series(series_uid).values())).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(store, study.series_uids, timeout=120))
    assert statuses == [200] * 8
    [found] = http.get(f"{root}/studies", params={"StudyInstanceUID": study.study_uid}).json()
    assert found["00201206"]["Value"] == [8]
    assert found["00201208"]["Value"] == [24]
    instances = http.get(f"{root}/studies/{study.study_uid}/instances").json()
    assert sorted(i["00080018"]["Value"][0] for i in instances) == sorted(study.instances)
    for series in http.get(f"{root}/studies/{study.study_uid}/series").json():
        assert series["00201209"]["Value"] == [3]


def test_concurrent_stows_of_the_same_instance_store_it_once(server, org, http):
    """PS3.18 10.5.3: the same object sent by eight clients at once is stored once; all succeed."""
    study = make_study(instances_per_series=2)
    root = server.root(org)
    barrier = threading.Barrier(8, timeout=30)

    def store(_: int) -> int:
        with httpx.Client(timeout=60) as client:
            barrier.wait()
            return stow(client, root, study.parts).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(store, range(8), timeout=120))
    assert statuses == [200] * 8
    assert instance_count(http, root, study.study_uid) == 2
    for sop, (series, data) in study.instances.items():
        [part] = retrieve(http, instance_url(root, study.study_uid, series, sop))
        assert part.content == data


def test_stow_to_an_unknown_organisation_is_404_with_a_message(server, http):
    """PS3.18 8.5: a service root that does not exist is 404; the body says which organisation."""
    study = make_study(instances_per_series=1)
    response = stow(http, f"{server.base_url}/dicomweb/no-such-org", study.parts)
    assert response.status_code == 404
    assert "no-such-org" in response.json()["error"]


def test_an_object_held_under_its_former_sha256_name_stored_again_is_the_same_object(server, fresh_org, http):
    """A data directory from before BLAKE3 named blobs holds them under the SHA-256 of their
    bytes (storage/content_key.py). Stored again, such an object is the same object (200, no
    Duplicate SOP Instance failure, PS3.18 10.5.3), the copy under its new name is not kept,
    and the object is served from its former name as before."""
    root = server.root(fresh_org)
    study = make_study(instances_per_series=2)
    assert stow(http, root, study.parts).status_code == 200
    sop, (series, data) = next(iter(study.instances.items()))
    new_name, former_name = content_key(data), hashlib.sha256(data).hexdigest()
    blobs = server.data_dir / "blobs"
    former_path = blobs / former_name[:2] / former_name[2:4] / former_name
    former_path.parent.mkdir(parents=True, exist_ok=True)
    (blobs / new_name[:2] / new_name[2:4] / new_name).rename(former_path)
    index = Database(database_url(server.database_url, server.data_dir))
    try:
        with index.write() as connection:
            connection.execute(update(INSTANCE).where(INSTANCE.c.org == fresh_org, INSTANCE.c.sop_instance_uid == sop)
                               .values(blob_key=former_name))
    finally:
        index.dispose()

    again = stow(http, root, study.parts)
    assert again.status_code == 200, again.text
    assert sorted(referenced_sop_instances(again.json())) == sorted(study.instances)
    assert new_name not in server.blob_files() and former_name in server.blob_files()
    [part] = retrieve(http, instance_url(root, study.study_uid, series, sop))
    assert part.content == data
