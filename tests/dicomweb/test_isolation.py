"""One service root per organisation (DESIGN invariant 2): nothing organisation A holds is
visible, retrievable or deletable through any DICOMweb route of organisation B."""

from __future__ import annotations

import pytest

from conformance.corpus import StudySpec
from tests.dicomweb_requests import ANY_SYNTAX, instance_url, make_study, retrieve, store_study


@pytest.fixture
def held_by_a(server, org, http):
    """A two-series study of A's, frames and bulk data included."""
    return store_study(http, server.root(org), make_study(StudySpec(rows=8, columns=8, frames=2),
                                                          modalities=("CT", "MR"), instances_per_series=2))


def test_searches_of_another_organisation_never_show_the_study(server, org, other_org, http, held_by_a):
    """PS3.18 10.6: QIDO-RS at all six resource paths of B finds nothing of A's study."""
    study = held_by_a
    series = study.series_uids[0]
    sop = next(iter(study.in_series(series)))
    b = server.root(other_org)
    searches = {
        f"{b}/studies": {"StudyInstanceUID": study.study_uid},
        f"{b}/series": {"StudyInstanceUID": study.study_uid},
        f"{b}/instances": {"SOPInstanceUID": sop},
        f"{b}/studies/{study.study_uid}/series": {},
        f"{b}/studies/{study.study_uid}/instances": {},
        f"{b}/studies/{study.study_uid}/series/{series}/instances": {},
    }
    for url, params in searches.items():
        response = http.get(url, params=params)
        assert response.status_code == 200 and response.json() == [], url
    everything = http.get(f"{b}/studies", params={"limit": 1000}).json()
    assert study.study_uid not in {r["0020000D"]["Value"][0] for r in everything}
    # ... while A finds it at the same paths.
    a = server.root(org)
    assert len(http.get(f"{a}/studies/{study.study_uid}/instances").json()) == 4


def test_retrieves_of_another_organisation_are_404(server, org, other_org, http, held_by_a):
    """PS3.18 10.4: instances, metadata, frames and bulk data of A's study are 404 at B's root."""
    study = held_by_a
    series = study.series_uids[0]
    sop = next(iter(study.in_series(series)))
    a, b = server.root(org), server.root(other_org)
    [metadata] = http.get(f"{instance_url(a, study.study_uid, series, sop)}/metadata").json()
    bulk_path = metadata["7FE00010"]["BulkDataURI"].split("/bulkdata/", 1)[1]
    instance = instance_url(b, study.study_uid, series, sop)
    urls = [
        f"{b}/studies/{study.study_uid}",
        f"{b}/studies/{study.study_uid}/series/{series}",
        instance,
        f"{b}/studies/{study.study_uid}/metadata",
        f"{b}/studies/{study.study_uid}/series/{series}/metadata",
        f"{instance}/metadata",
        f"{instance}/frames/1",
        f"{instance}/bulkdata/{bulk_path}",
    ]
    def accept(url: str) -> dict[str, str]:
        return {} if any(word in url for word in ("metadata", "frames", "bulkdata")) else {"Accept": ANY_SYNTAX}

    for url in urls:
        assert http.get(url, headers=accept(url)).status_code == 404, url
    # The same requests under A answer: the 404s above are the organisation boundary, nothing else.
    for url in urls:
        assert http.get(url.replace(b, a), headers=accept(url)).status_code == 200, url


def test_deletes_of_another_organisation_are_404_and_change_nothing(server, org, other_org, http, held_by_a):
    """DELETE at B's root cannot remove A's study, series or instance; A keeps every byte."""
    study = held_by_a
    series = study.series_uids[0]
    sop = next(iter(study.in_series(series)))
    b = server.root(other_org)
    for url in (instance_url(b, study.study_uid, series, sop), f"{b}/studies/{study.study_uid}/series/{series}",
                f"{b}/studies/{study.study_uid}"):
        assert http.delete(url).status_code == 404, url
    parts = retrieve(http, f"{server.root(org)}/studies/{study.study_uid}")
    assert sorted(part.content for part in parts) == sorted(study.parts)


def test_the_same_study_uid_in_two_organisations_is_two_separate_holdings(server, org, other_org, http):
    """DESIGN invariant 2: B storing instances of a study UID A also holds sees only its own."""
    study = store_study(http, server.root(org), make_study(instances_per_series=2))
    extra = make_study(StudySpec(study_uid=study.study_uid, rows=8, columns=8), instances_per_series=1)
    store_study(http, server.root(other_org), extra)
    in_b = http.get(f"{server.root(other_org)}/studies/{study.study_uid}/instances").json()
    assert [i["00080018"]["Value"][0] for i in in_b] == list(extra.instances)
    [row] = http.get(f"{server.root(other_org)}/studies", params={"StudyInstanceUID": study.study_uid}).json()
    assert row["00201208"]["Value"] == [1]
    [row] = http.get(f"{server.root(org)}/studies", params={"StudyInstanceUID": study.study_uid}).json()
    assert row["00201208"]["Value"] == [2]
