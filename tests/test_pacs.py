"""oix/pacs.py: what forwarding makes of a PACS's answers to a STOW-RS request, against a real
HTTP server on 127.0.0.1 — per-instance outcomes from a Store Instances Response; later for a
5xx, a 429 or no connection; a refusal of the whole request for other 4xx."""

from __future__ import annotations

import orjson
import pydicom
import pytest
from pydicom.data import get_testdata_file

from exchange.forwarding import OutgoingInstance, PacsRefused, PacsUnavailable
from oix.pacs import StowPacs
from tests.exchange.webhook_receiver import Answer, receiver
from tests.servers import free_port

CT = get_testdata_file("CT_small.dcm")


@pytest.fixture
def instance() -> OutgoingInstance:
    with open(CT, "rb") as handle:
        size = len(handle.read())
    return OutgoingInstance(pydicom.dcmread(CT, stop_before_pixels=True).SOPInstanceUID, size, CT,
                            lambda path: open(path, "rb"))


def store_response(stored: list[str], failed: dict[str, int]) -> bytes:
    """A Store Instances Response (PS3.18 10.5.3) in DICOM JSON."""
    return orjson.dumps({
        "00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": [uid]}} for uid in stored]},
        "00081198": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": [uid]},
                                            "00081197": {"vr": "US", "Value": [reason]}}
                                           for uid, reason in failed.items()]}})


def test_the_instances_go_streamed_as_multipart_related_with_the_rules_authorization(instance):
    answer = Answer(200, headers={"Content-Type": "application/dicom+json"},
                    body=store_response([instance.sop_instance_uid], {}))
    with receiver(answer) as pacs:
        outcome = StowPacs(5).store_instances(pacs.url, [instance], {"Authorization": "Bearer pacs"})
        [request] = pacs.wait_for(1)
    assert outcome.stored == {instance.sop_instance_uid} and not outcome.refused
    assert request.headers["content-type"].startswith('multipart/related; type="application/dicom"')
    assert request.headers["authorization"] == "Bearer pacs"
    with open(CT, "rb") as handle:
        assert handle.read() in request.body


def test_a_refused_instance_comes_back_with_its_failure_reason(instance):
    answer = Answer(409, headers={"Content-Type": "application/dicom+json"},
                    body=store_response([], {instance.sop_instance_uid: 0xA700}))
    with receiver(answer) as pacs:
        outcome = StowPacs(5).store_instances(pacs.url, [instance], {})
    assert outcome.stored == frozenset() and outcome.refused[instance.sop_instance_uid].reason == 0xA700


@pytest.mark.parametrize("status", [503, 429, 408])
def test_a_pacs_that_says_later_is_tried_again_later(instance, status):
    with receiver(Answer(status, body=b"busy")) as pacs, pytest.raises(PacsUnavailable, match=str(status)):
        StowPacs(5).store_instances(pacs.url, [instance], {})


def test_a_pacs_nobody_answers_for_is_tried_again_later(instance):
    with pytest.raises(PacsUnavailable, match="could not reach http://127.0.0.1"):
        StowPacs(2).store_instances(f"http://127.0.0.1:{free_port()}/dicom-web/studies", [instance], {})


def test_a_pacs_that_refuses_the_credentials_refuses_the_request_as_a_whole(instance):
    with receiver(Answer(401, body=b"who are you?")) as pacs, pytest.raises(PacsRefused, match="401"):
        StowPacs(5).store_instances(pacs.url, [instance], {})
