"""What the statement claims, a live OIX does: every listed matching key is matched on, every
listed retrieve syntax is produced, and a SOP class the statement leaves out is refused."""

from __future__ import annotations

import io

import httpx
import pydicom
import pytest

from conformance.corpus import StudySpec, new_uid, synthetic_instance
from conformance.session import related_parts
from conformance.statement import conformance_statement

SEARCH_PATHS = {"STUDY": "/studies", "SERIES": "/series", "INSTANCE": "/instances"}
VALUE_OF_VR = {"DA": "20240115", "TM": "101500", "IS": "1", "UI": "1.2.826.0.1.3680043.10.1234.1"}
VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"


def matching_keys():
    for level, content in conformance_statement()["search"]["levels"].items():
        for key in content["matching_keys"]:
            yield pytest.param(level, key["keyword"], key["vr"], id=f"{level}-{key['keyword']}")


@pytest.mark.parametrize(("level", "keyword", "vr"), list(matching_keys()))
def test_every_listed_matching_key_is_matched_on(service_root, level, keyword, vr):
    response = httpx.get(f"{service_root}{SEARCH_PATHS[level]}", params={keyword: VALUE_OF_VR.get(vr, "X*")})
    assert response.status_code == 200, response.text


def test_a_key_the_statement_does_not_list_is_refused(service_root):
    listed = {k["keyword"] for k in conformance_statement()["search"]["levels"]["STUDY"]["matching_keys"]}
    assert "Manufacturer" not in listed
    assert httpx.get(f"{service_root}/studies", params={"Manufacturer": "OIX"}).status_code == 400


@pytest.mark.parametrize("syntax", [s["uid"] for s in conformance_statement()["transfer_syntaxes"]["retrieve"]])
def test_every_listed_retrieve_syntax_is_produced(service_root, stored_mr_instance, syntax):
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={syntax}'
    response = httpx.get(f"{service_root}{stored_mr_instance}", headers={"Accept": accept})
    assert response.status_code == 200
    (headers, data), = related_parts(response)
    produced = pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID
    assert produced == (syntax if syntax != "*" else "1.2.840.10008.1.2.1")  # the corpus stores explicit LE
    assert f"transfer-syntax={produced}" in headers["content-type"]


def test_without_a_transfer_syntax_retrieve_sends_the_listed_default(service_root, stored_mr_instance):
    default = conformance_statement()["transfer_syntaxes"]["retrieve_default"]["uid"]
    response = httpx.get(f"{service_root}{stored_mr_instance}",
                         headers={"Accept": 'multipart/related; type="application/dicom"'})
    (_, data), = related_parts(response)
    assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == default


def test_a_listed_storage_class_other_than_ct_is_stored(stored_mr_instance):
    listed = {c["name"] for c in conformance_statement()["storage_sop_classes"]}
    assert "MR Image Storage" in listed  # the stored_mr_instance fixture stored one with 200


def test_a_sop_class_the_statement_leaves_out_is_refused(store_instances):
    listed = {c["uid"] for c in conformance_statement()["storage_sop_classes"]}
    assert VERIFICATION_SOP_CLASS not in listed
    dataset = pydicom.dcmread(io.BytesIO(synthetic_instance(StudySpec(), new_uid(), 1, 1)))
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = VERIFICATION_SOP_CLASS
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    response = store_instances(buffer.getvalue())
    assert response.status_code == 409
    failed = response.json()["00081198"]["Value"][0]
    assert failed["00081197"]["Value"] == [0x0122]
