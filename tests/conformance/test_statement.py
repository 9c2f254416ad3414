"""The conformance statement is generated from the code: what it lists is what the modules that
do the work hold, and it changes when they do."""

from __future__ import annotations

import json
import subprocess

import orjson

from conformance.render import statement_html
from conformance.statement import CHOICES, conformance_statement
from dicomweb.context import DicomWebLimits
from dicomweb.errors import FailureReason
from dicomweb.negotiation import EXPLICIT_VR_LITTLE_ENDIAN, NATIVE_FRAME_MEDIA_TYPES
from dicomweb.routes import service_root_mount
from dicomweb.transcode import TARGET_SYNTAXES
from storage.query import LEVELS_FROM, MATCHABLE, QueryLevel
from tests.servers import oix_command

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
NOT_STORAGE = {
    "1.2.840.10008.1.1": "Verification SOP Class",
    "1.2.840.10008.1.20.1": "Storage Commitment Push Model SOP Class",
    "1.2.840.10008.5.1.4.1.2.2.1": "Study Root Query/Retrieve Information Model - FIND",
}


def test_storage_sop_classes_include_ct_image_storage_by_name():
    classes = {c["uid"]: c["name"] for c in conformance_statement()["storage_sop_classes"]}
    assert classes[CT_IMAGE_STORAGE] == "CT Image Storage"


def test_storage_sop_classes_leave_out_classes_that_are_not_storage():
    listed = {c["uid"] for c in conformance_statement()["storage_sop_classes"]}
    assert not listed & set(NOT_STORAGE)


def test_every_matchable_key_is_listed_with_its_vr_at_its_level_and_the_levels_below():
    levels = conformance_statement()["search"]["levels"]
    for level in QueryLevel:
        listed = {(k["keyword"], k["vr"]) for k in levels[level.name]["matching_keys"]}
        expected = {(keyword, vr) for upper in LEVELS_FROM[level] for keyword, vr in MATCHABLE[upper].items()}
        assert listed == expected, level


def test_every_failure_reason_is_listed_with_its_hex_code():
    listed = {r["code"]: r["reason"] for r in conformance_statement()["store_failure_reasons"]}
    assert listed == {f"0x{reason.value:04X}": reason.name for reason in FailureReason}
    assert listed["0xC409"] == "STUDY_UID_MISMATCH"


def test_every_route_of_the_service_root_is_listed_as_a_resource():
    mount = service_root_mount()
    routes = {(method, mount.path + route.path) for route in mount.routes for method in route.methods - {"HEAD"}}
    listed = {(r["method"], r["path"]) for r in conformance_statement()["resources"]}
    assert listed == routes


def test_resources_carry_the_names_ps3_18_gives_them():
    names = {(r["method"], r["path"].removeprefix("/dicomweb/{org}")): (r["resource"], r["transaction"])
             for r in conformance_statement()["resources"]}
    assert names[("POST", "/studies")] == ("All Studies", "Store Instances")
    assert names[("GET", "/studies/{study}/series")] == ("Study's Series", "Search")
    assert names[("GET", "/studies/{study}/series/{series}/metadata")] == ("Series Metadata", "Retrieve")
    assert names[("DELETE", "/studies/{study}")] == ("Study", "Delete")


def test_store_syntaxes_are_every_transfer_syntax_part10_reads():
    accepted = {s["uid"] for s in conformance_statement()["transfer_syntaxes"]["store"]}
    assert {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
            "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5"} <= accepted
    assert CT_IMAGE_STORAGE not in accepted


def test_retrieve_syntaxes_are_as_stored_and_the_transcoder_targets():
    syntaxes = conformance_statement()["transfer_syntaxes"]
    assert [s["uid"] for s in syntaxes["retrieve"]] == ["*", *TARGET_SYNTAXES]
    assert syntaxes["retrieve_default"]["uid"] == EXPLICIT_VR_LITTLE_ENDIAN


def test_frame_media_types_are_the_negotiation_table():
    listed = {f["transfer_syntax"]: f["media_type"] for f in conformance_statement()["frame_media_types"]}
    assert listed == NATIVE_FRAME_MEDIA_TYPES


def test_choices_state_the_values_the_code_runs_with():
    statement = conformance_statement(DicomWebLimits(bulk_threshold=4096, max_query_results=250))
    choices = {c["topic"]: c for c in statement["choices"]}
    assert len(choices) == len(CHOICES)
    assert "4096 bytes" in choices["Bulk data in metadata"]["ours"]
    assert "at most 250" in choices["Default and maximum limit"]["ours"]
    assert "0xC409" in choices["Study Instance UID differs from the request URL"]["ours"]
    assert EXPLICIT_VR_LITTLE_ENDIAN in choices["Default transfer syntax on retrieve"]["ours"]
    for choice in choices.values():
        assert choice["section"] and choice["peers"] and "{" not in choice["ours"]


def test_html_page_is_plain_tables_without_scripts_or_external_assets():
    page = statement_html(conformance_statement())
    assert page.startswith("<!DOCTYPE html>")
    assert "<table>" in page and "CT Image Storage" in page
    for forbidden in ("<script", "<link", "src=", "http://", "https://"):
        assert forbidden not in page


def test_oix_conformance_statement_prints_the_statement_as_json():
    printed = subprocess.run([*oix_command(), "conformance", "statement"], capture_output=True,
                             check=True, timeout=60, env={"PATH": "/usr/bin:/bin"}).stdout
    assert json.loads(printed) == orjson.loads(orjson.dumps(conformance_statement()))
