"""Metadata served again (PS3.18 10.4.1.1.4; dicomweb/wado.py keeps recent responses while the
SQLite index's data version is unchanged): what is served always follows the index, every read
is audited (PS3.15 A.5.3.7), and the service root and organisation of each request are its own."""

from __future__ import annotations

import httpx

from conformance.corpus import StudySpec
from tests.dicomweb_requests import make_study, stow, store_study

DICOM_JSON = {"Accept": "application/dicom+json"}


def _sops(http: httpx.Client, url: str) -> set[str]:
    response = http.get(url, headers=DICOM_JSON)
    assert response.status_code == 200, response.text[:300]
    return {instance["00080018"]["Value"][0] for instance in response.json()}


def test_metadata_read_again_follows_every_store_and_delete(server, org, http):
    study = store_study(http, server.root(org), make_study(StudySpec(rows=16, columns=16, instances_per_series=2)))
    series = study.series_uids[0]
    urls = [f"{server.root(org)}/studies/{study.study_uid}/metadata",
            f"{server.root(org)}/studies/{study.study_uid}/series/{series}/metadata"]
    for url in urls * 3:  # read again and again: kept and served again
        assert _sops(http, url) == set(study.instances)

    more = make_study(StudySpec(study_uid=study.study_uid, rows=16, columns=16, instances_per_series=1))
    assert stow(http, server.root(org), more.parts).status_code == 200
    assert _sops(http, urls[0]) == set(study.instances) | set(more.instances)

    first = next(iter(study.instances))
    deleted = http.delete(f"{server.root(org)}/studies/{study.study_uid}/series/{series}/instances/{first}")
    assert deleted.status_code in (200, 204)
    for url in urls:
        assert first not in _sops(http, url)


def test_each_metadata_read_is_audited_also_when_served_again(server, org, http):
    study = store_study(http, server.root(org), make_study(StudySpec(rows=16, columns=16, instances_per_series=3)))
    url = f"{server.root(org)}/studies/{study.study_uid}/metadata"
    ids = [http.get(url, headers=DICOM_JSON).headers["x-request-id"] for _ in range(4)]
    events = http.get(f"/api/orgs/{org}/audit", params={"limit": 1000, "action": "retrieve"}).json()["events"]
    by_request = {event["request_id"]: event for event in events}
    for request_id in ids:
        event = by_request[request_id]
        assert event["studies"] == [study.study_uid] and event["outcome"] == 0
        assert event["detail"] == f"metadata of study {study.study_uid}: 3 instance(s)"
        assert event["patients"] == [{"id": study.spec.patient.patient_id, "issuer": ""}]


def test_bulk_data_uris_follow_the_host_each_request_named(server, org, http):
    """PS3.18 F.2.6: the same metadata asked through two host names gives each its own URIs."""
    study = store_study(http, server.root(org), make_study(StudySpec(rows=16, columns=16, instances_per_series=1)))
    path = f"/dicomweb/{org}/studies/{study.study_uid}/metadata"
    port = server.base_url.rsplit(":", 1)[1]
    for _ in range(2):
        for host in ("127.0.0.1", "localhost"):
            [instance] = http.get(path, headers={**DICOM_JSON, "Host": f"{host}:{port}"}).json()
            assert instance["7FE00010"]["BulkDataURI"].startswith(f"http://{host}:{port}/dicomweb/{org}/")


def test_two_organisations_holding_one_study_uid_each_read_their_own(server, org, other_org, http):
    mine = store_study(http, server.root(org), make_study(StudySpec(rows=16, columns=16, instances_per_series=2)))
    theirs = store_study(http, server.root(other_org),
                         make_study(StudySpec(study_uid=mine.study_uid, rows=16, columns=16, instances_per_series=1)))
    for _ in range(3):
        assert _sops(http, f"{server.root(org)}/studies/{mine.study_uid}/metadata") == set(mine.instances)
        assert _sops(http, f"{server.root(other_org)}/studies/{mine.study_uid}/metadata") == set(theirs.instances)
