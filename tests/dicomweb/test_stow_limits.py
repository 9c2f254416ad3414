"""STOW-RS size limits (OIX_MAX_OBJECT_BYTES, OIX_MAX_REQUEST_BYTES): a request over a limit
is refused with 413 (PS3.18 8.5, RFC 9110 15.5.14) and nothing already stored is lost."""

from __future__ import annotations

import httpx
import pytest

from conformance.corpus import StudySpec
from tests.dicomweb_requests import instance_url, make_study, retrieve, stow
from tests.multipart_body import new_boundary, related_body, stow_content_type

MAX_OBJECT_BYTES = 64 * 1024
MAX_REQUEST_BYTES = 256 * 1024


@pytest.fixture(scope="module")
def limited(start_dedicated_server):
    """A server of its own with small limits, holding one study stored before the tests."""
    server = start_dedicated_server(env={"OIX_MAX_OBJECT_BYTES": str(MAX_OBJECT_BYTES),
                                         "OIX_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES)})
    with httpx.Client(timeout=60) as http:
        kept = make_study(instances_per_series=2)
        assert stow(http, server.root(), kept.parts).status_code == 200
        yield server, http, kept


def assert_nothing_lost(server, http, kept, refused_study_uids, blobs_before):
    for sop, (series, data) in kept.instances.items():
        [part] = retrieve(http, instance_url(server.root(), kept.study_uid, series, sop))
        assert part.content == data
    for study_uid in refused_study_uids:
        assert http.get(f"{server.root()}/studies/{study_uid}/instances").json() == []
    assert server.blob_files() == blobs_before
    assert list((server.data_dir / "incoming").iterdir()) == []


def test_stow_rejects_an_object_over_the_object_limit_with_413(limited):
    """PS3.18 8.5: one part larger than OIX_MAX_OBJECT_BYTES refuses the request with 413;
    the request's other, small part is not stored either, and earlier studies are intact."""
    server, http, kept = limited
    small = make_study(instances_per_series=1)
    big = make_study(StudySpec(rows=256, columns=256), instances_per_series=1)  # 128 KiB of pixels
    assert len(big.parts[0]) > MAX_OBJECT_BYTES
    blobs = server.blob_files()
    response = stow(http, server.root(), [*small.parts, *big.parts])
    assert response.status_code == 413
    assert str(MAX_OBJECT_BYTES) in response.json()["error"]
    assert_nothing_lost(server, http, kept, [small.study_uid, big.study_uid], blobs)


def test_stow_rejects_a_declared_length_over_the_request_limit_with_413(limited):
    """PS3.18 8.5: a Content-Length over OIX_MAX_REQUEST_BYTES is refused before the body is read."""
    server, http, kept = limited
    study = make_study(StudySpec(rows=160, columns=160), instances_per_series=6)  # 6 x ~51 KiB
    assert all(len(part) < MAX_OBJECT_BYTES for part in study.parts)
    body = related_body(study.parts, boundary := new_boundary())
    assert len(body) > MAX_REQUEST_BYTES
    blobs = server.blob_files()
    response = http.post(f"{server.root()}/studies", content=body,
                         headers={"Content-Type": stow_content_type(boundary)})
    assert response.status_code == 413
    assert_nothing_lost(server, http, kept, [study.study_uid], blobs)


def test_stow_rejects_a_chunked_body_over_the_request_limit_with_413(limited):
    """PS3.18 8.5: without a Content-Length, the limit is enforced as the bytes arrive."""
    server, http, kept = limited
    study = make_study(StudySpec(rows=160, columns=160), instances_per_series=6)
    body = related_body(study.parts, boundary := new_boundary())

    def chunks():
        for start in range(0, len(body), 16 * 1024):
            yield body[start:start + 16 * 1024]

    blobs = server.blob_files()
    response = http.post(f"{server.root()}/studies", content=chunks(),
                         headers={"Content-Type": stow_content_type(boundary)})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert str(MAX_REQUEST_BYTES) in response.json()["error"]
    assert_nothing_lost(server, http, kept, [study.study_uid], blobs)


def test_stow_under_the_limits_still_stores(limited):
    """The limits refuse only what exceeds them: a request just under both is stored."""
    server, http, kept = limited
    study = make_study(StudySpec(rows=160, columns=160), instances_per_series=4)
    assert len(related_body(study.parts, new_boundary())) < MAX_REQUEST_BYTES
    assert stow(http, server.root(), study.parts).status_code == 200
    assert len(http.get(f"{server.root()}/studies/{study.study_uid}/instances").json()) == 4
