"""QIDO-RS, Search (PS3.18 10.6) against a live server, on both index backends. Every query is
scoped to this module's patients (PatientID `<tag>-*`), so other tests' studies never match."""

from __future__ import annotations

import secrets

import pydicom
import pytest

from conformance.corpus import Patient, StudySpec, new_uid
from tests.dicomweb_requests import edited, make_study, store_study
from tests.multipart_body import split_related

STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
NUMBER_OF_STUDY_RELATED_SERIES, NUMBER_OF_STUDY_RELATED_INSTANCES = "00201206", "00201208"
NUMBER_OF_SERIES_RELATED_INSTANCES = "00201209"
MODALITIES_IN_STUDY, RETRIEVE_URL = "00080061", "00081190"
MANUFACTURER, SLICE_THICKNESS, PIXEL_SPACING, PIXEL_DATA = "00080070", "00180050", "00280030", "7FE00010"

TAG = f"Q{secrets.token_hex(4)}"
SCOPE = {"PatientID": f"{TAG}-*"}

# name: (patient name, birth date, study date, study time, modalities, instances per series)
WORLD = {
    "jane": ("Doe^Jane", "19700101", "20240115", "101500", ("CT", "CT"), 2),
    "hans": ("Müller^Hans", "19650302", "20240220", "143000", ("CT", "MR"), 2),
    "john": ("Doe^John", "19800505", "20231231", "235959", ("MR",), 3),
    "sean": ("O'Brien^Sean", "19900909", "20240301", "080000", ("CT",), 1),
    "anna": ("Smith^Anna", "20010101", "20220610", "120000", ("US",), 1),
    "wei": ("Zhang^Wei", "19551111", "20240115", "090000", ("CT",), 1),
}


@pytest.fixture(scope="module")
def world(server, org, http):
    """Six studies of six patients, stored once per backend; name -> SyntheticStudy."""
    studies = {}
    for number, (name, (patient, birth, date, time, modalities, count)) in enumerate(WORLD.items(), start=1):
        spec = StudySpec(patient=Patient(patient, f"{TAG}-{number}", birth, "O"), study_date=date,
                         study_time=time, accession_number=f"{TAG}-A{number}",
                         study_description=f"{modalities[0]} {name.upper()}", rows=8, columns=8)
        studies[name] = store_study(http, server.root(org), make_study(spec, modalities, count))
    return studies


def search(http, root, path="/studies", **params):
    response = http.get(f"{root}{path}", params={**SCOPE, **params})
    assert response.status_code == 200, (response.status_code, response.text)
    return response.json()


def study_names(world, results) -> set[str]:
    by_uid = {study.study_uid: name for name, study in world.items()}
    return {by_uid[result[STUDY_UID]["Value"][0]] for result in results}


def value(result, tag):
    return result.get(tag, {}).get("Value")


def test_qido_searches_all_six_resource_paths(server, org, world, dicomweb):
    """PS3.18 10.6.1 (Table 10.6.1-2): studies, series and instances at the service root, and
    below a study and a series."""
    hans = world["hans"]
    ct_series, mr_series = hans.series_uids
    filters = dict(SCOPE)
    studies = dicomweb.search_for_studies(search_filters=filters)
    assert study_names(world, studies) == set(WORLD)
    all_series = dicomweb.search_for_series(search_filters=filters)
    assert {value(s, SERIES_UID)[0] for s in all_series} == {u for s in world.values() for u in s.series_uids}
    all_instances = dicomweb.search_for_instances(search_filters=filters)
    assert {value(i, SOP_UID)[0] for i in all_instances} == {u for s in world.values() for u in s.instances}
    in_study = dicomweb.search_for_series(study_instance_uid=hans.study_uid)
    assert {value(s, SERIES_UID)[0] for s in in_study} == {ct_series, mr_series}
    study_instances = dicomweb.search_for_instances(study_instance_uid=hans.study_uid)
    assert {value(i, SOP_UID)[0] for i in study_instances} == set(hans.instances)
    series_instances = dicomweb.search_for_instances(study_instance_uid=hans.study_uid,
                                                     series_instance_uid=mr_series)
    assert {value(i, SOP_UID)[0] for i in series_instances} == set(hans.in_series(mr_series))


def test_qido_matches_a_single_value(server, org, world, http):
    """PS3.4 C.2.2.2.1: single value matching."""
    results = search(http, server.root(org), PatientID=f"{TAG}-3")
    assert study_names(world, results) == {"john"}
    assert study_names(world, search(http, server.root(org), StudyDate="20240115")) == {"jane", "wei"}
    assert study_names(world, search(http, server.root(org), AccessionNumber=f"{TAG}-A4")) == {"sean"}


def test_qido_matches_wildcards_star_and_question_mark(server, org, world, http):
    """PS3.4 C.2.2.2.4: `*` matches any run of characters, `?` exactly one."""
    root = server.root(org)
    assert study_names(world, search(http, root, PatientName="Doe*")) == {"jane", "john"}
    assert study_names(world, search(http, root, PatientName="Doe^Ja?e")) == {"jane"}
    assert study_names(world, search(http, root, PatientName="Do?^J*")) == {"jane", "john"}
    assert study_names(world, search(http, root, StudyDescription="CT*")) == {"jane", "hans", "sean", "wei"}
    assert search(http, root, PatientName="Doe^J?") == []


def test_qido_matches_person_names_case_insensitively(server, org, world, http):
    """PS3.4 C.2.2.2.1: PN may be matched insensitive to case; other VRs are case-sensitive."""
    root = server.root(org)
    assert study_names(world, search(http, root, PatientName="doe^jane")) == {"jane"}
    assert study_names(world, search(http, root, PatientName="DOE*")) == {"jane", "john"}
    assert search(http, root, StudyDescription="ct*") == []


def test_qido_matches_non_ascii_person_names(server, org, world, http):
    """PS3.18 8.3.4.1: query values are UTF-8; names stored in ISO_IR 192 match and come back decoded."""
    [result] = search(http, server.root(org), PatientName="Müller^Hans")
    assert value(result, "00100010") == [{"Alphabetic": "Müller^Hans"}]


def test_qido_matches_date_ranges_including_open_ones(server, org, world, http):
    """PS3.4 C.2.2.2.5: DA ranges, closed and open at either end."""
    root = server.root(org)
    assert study_names(world, search(http, root, StudyDate="20240101-20240131")) == {"jane", "wei"}
    assert study_names(world, search(http, root, StudyDate="20240201-")) == {"hans", "sean"}
    assert study_names(world, search(http, root, StudyDate="-20231231")) == {"john", "anna"}
    assert study_names(world, search(http, root, PatientBirthDate="19600101-19751231")) == {"jane", "hans"}


def test_qido_matches_time_ranges(server, org, world, http):
    """PS3.4 C.2.2.2.5: TM ranges, closed and open."""
    root = server.root(org)
    assert study_names(world, search(http, root, StudyTime="100000-150000")) == {"jane", "hans", "anna"}
    assert study_names(world, search(http, root, StudyTime="-085959")) == {"sean"}
    assert study_names(world, search(http, root, StudyTime="230000-")) == {"john"}
    assert study_names(world, search(http, root, StudyDate="20240115", StudyTime="-100000")) == {"wei"}


def test_qido_matches_a_uid_list(server, org, world, http):
    """PS3.18 8.3.4.1 / PS3.4 C.2.2.2.2: a comma-separated list of UIDs."""
    root = server.root(org)
    uids = f"{world['jane'].study_uid},{world['john'].study_uid},{new_uid()}"
    assert study_names(world, search(http, root, StudyInstanceUID=uids)) == {"jane", "john"}
    series = world["hans"].series_uids
    results = search(http, root, "/series", SeriesInstanceUID=",".join(series))
    assert {value(r, SERIES_UID)[0] for r in results} == set(series)


def test_qido_accepts_keys_by_keyword_and_by_tag(server, org, world, http):
    """PS3.18 8.3.4.1: an attribute is named by keyword or by its 8-hex-digit tag."""
    root = server.root(org)
    by_keyword = search(http, root, PatientID=f"{TAG}-2")
    by_tag = http.get(f"{root}/studies", params={"00100020": f"{TAG}-2"}).json()
    assert study_names(world, by_keyword) == study_names(world, by_tag) == {"hans"}
    assert study_names(world, search(http, root, **{"00080020": "20240301"})) == {"sean"}


def test_qido_includefield_adds_attributes_by_keyword_tag_and_all(server, org, world, http):
    """PS3.18 10.6.3.3: includefield names extra attributes to return, or `all`."""
    root = server.root(org)
    [plain] = search(http, root, PatientID=f"{TAG}-1")
    assert MANUFACTURER not in plain and SLICE_THICKNESS not in plain
    [by_keyword] = search(http, root, PatientID=f"{TAG}-1", includefield="Manufacturer")
    assert value(by_keyword, MANUFACTURER) == ["OIX synthetic"]
    assert SLICE_THICKNESS not in by_keyword
    [by_tag] = search(http, root, PatientID=f"{TAG}-1", includefield="00180050")
    assert value(by_tag, SLICE_THICKNESS) == [1]
    [everything] = search(http, root, PatientID=f"{TAG}-1", includefield="all")
    assert value(everything, MANUFACTURER) == ["OIX synthetic"]
    assert value(everything, PIXEL_SPACING) == [0.5, 0.5]
    assert PIXEL_DATA not in everything  # bulk data is never part of a search result
    [both] = http.get(f"{root}/studies", params=[("PatientID", f"{TAG}-1"), ("includefield", "Manufacturer"),
                                                 ("includefield", "SliceThickness")]).json()
    assert MANUFACTURER in both and SLICE_THICKNESS in both


def test_qido_includefield_of_a_sequence_with_bulk_data_gives_absolute_bulk_data_uris(server, org, http):
    """PS3.18 10.6.3.3 and F.2.6: an included sequence is returned whole; a bulk value nested in
    it is a BulkDataURI that resolves, below the service root the client used."""
    # Outside SCOPE: the other tests here count this module's world of studies.
    spec = StudySpec(patient=Patient("Icon^Ida", f"{TAG}icon", "19700101", "O"), rows=8, columns=8)
    study = make_study(spec)
    sop, (series, data) = next(iter(study.instances.items()))
    icon = pydicom.Dataset()
    icon.Rows = icon.Columns = 64  # 4 KiB: over the 1 KiB bulk threshold
    icon.SamplesPerPixel, icon.PhotometricInterpretation = 1, "MONOCHROME2"
    icon.BitsAllocated = icon.BitsStored = 8
    icon.HighBit, icon.PixelRepresentation = 7, 0
    icon.PixelData = bytes(range(256)) * 16
    study.instances[sop] = (series, edited(data, IconImageSequence=pydicom.Sequence([icon])))
    store_study(http, server.root(org), study)
    root = server.root(org)
    [result] = search(http, root, "/instances", PatientID=f"{TAG}icon", SOPInstanceUID=sop,
                      includefield="IconImageSequence")
    uri = result["00880200"]["Value"][0][PIXEL_DATA]["BulkDataURI"]
    assert uri.startswith(f"{root}/studies/{study.study_uid}/series/{series}/instances/{sop}/bulkdata/")
    response = http.get(uri)
    assert response.status_code == 200
    [part] = split_related(response.headers["content-type"], response.content)
    assert part.content == bytes(range(256)) * 16


def test_qido_accepts_fuzzymatching_with_a_warning(server, org, world, http):
    """PS3.18 10.6.3.2 (Table 10.6.3-1): fuzzymatching=true is accepted; a server that does
    not perform it says so in a Warning header (PS3.18 8.3.4.2)."""
    root = server.root(org)
    response = http.get(f"{root}/studies", params={**SCOPE, "PatientName": "Doe^Jane", "fuzzymatching": "true"})
    assert response.status_code == 200
    assert response.headers["warning"].startswith("299 ")
    assert "fuzzy" in response.headers["warning"].lower()
    assert study_names(world, response.json()) == {"jane"}
    plain = http.get(f"{root}/studies", params={**SCOPE, "PatientName": "Doe^Jane"})
    assert "warning" not in plain.headers


def test_qido_pages_with_limit_and_offset_stably_and_disjointly(server, org, world, http):
    """PS3.18 10.6.3.2 (Table 10.6.3-1, 8.3.4.4): limit and offset page through one stable order."""
    root = server.root(org)
    everything = [r[STUDY_UID]["Value"][0] for r in search(http, root)]
    assert len(everything) == len(WORLD)
    pages = [[r[STUDY_UID]["Value"][0] for r in search(http, root, limit=2, offset=offset)]
             for offset in (0, 2, 4)]
    assert [len(page) for page in pages] == [2, 2, 2]
    assert [uid for page in pages for uid in page] == everything
    assert [r[STUDY_UID]["Value"][0] for r in search(http, root, limit=2, offset=2)] == pages[1]
    assert search(http, root, limit=2, offset=6) == []
    series = [r[SERIES_UID]["Value"][0] for r in search(http, root, "/series")]
    halves = [[r[SERIES_UID]["Value"][0] for r in search(http, root, "/series", limit=4, offset=o)] for o in (0, 4)]
    assert halves[0] + halves[1] == series and not set(halves[0]) & set(halves[1])


def test_qido_returns_200_and_an_empty_array_when_nothing_matches(server, org, world, http):
    """PS3.18 10.6.3: no match is a success with an empty result."""
    response = http.get(f"{server.root(org)}/studies", params={"PatientID": f"nobody-{secrets.token_hex(4)}"})
    assert response.status_code == 200
    assert response.json() == []


@pytest.mark.parametrize("key", ["NoSuchKeyword", "PatientNme"])
def test_qido_rejects_an_unknown_key_with_400_naming_it(server, org, http, key):
    """PS3.18 8.3.4.1: a query key that is no attribute is a 400 that says which."""
    response = http.get(f"{server.root(org)}/studies", params={key: "x"})
    assert response.status_code == 400
    assert key in response.json()["error"]


@pytest.mark.parametrize(("path", "key"), [("/studies", "Modality"), ("/studies", "SOPInstanceUID"),
                                           ("/series", "InstanceNumber"), ("/instances", "Manufacturer")])
def test_qido_rejects_a_key_not_matchable_at_the_level_with_400(server, org, http, path, key):
    """PS3.18 10.6.1.2: only the level's (and the levels above) attributes are matching keys."""
    response = http.get(f"{server.root(org)}{path}", params={key: "1"})
    assert response.status_code == 400
    assert key in response.json()["error"]


@pytest.mark.parametrize("params", [{"StudyDate": "2024-01-15"}, {"StudyDate": "yesterday"}, {"StudyDate": "20240230"},
                                    {"StudyDate": "20240101-20241301"}, {"StudyTime": "2500"},
                                    {"StudyDate": "20240115-2024"}, {"StudyTime": "25:00"},
                                    {"limit": "ten"}, {"offset": "-1"}])
def test_qido_rejects_invalid_values_with_400(server, org, http, params):
    """PS3.18 8.3.4.1 / PS3.5 6.2: DA is YYYYMMDD, TM HHMMSS; limit and offset are integers."""
    response = http.get(f"{server.root(org)}/studies", params=params)
    assert response.status_code == 400
    assert response.json()["error"]


def test_qido_returns_counts_modalities_and_retrieve_urls_at_study_level(server, org, world, http):
    """PS3.18 Table 10.6.3-3: NumberOfStudyRelatedSeries/Instances, ModalitiesInStudy, RetrieveURL."""
    root = server.root(org)
    [hans] = search(http, root, PatientID=f"{TAG}-2")
    assert value(hans, NUMBER_OF_STUDY_RELATED_SERIES) == [2]
    assert value(hans, NUMBER_OF_STUDY_RELATED_INSTANCES) == [4]
    assert sorted(value(hans, MODALITIES_IN_STUDY)) == ["CT", "MR"]
    assert value(hans, RETRIEVE_URL) == [f"{root}/studies/{world['hans'].study_uid}"]
    assert value(hans, "00100020") == [f"{TAG}-2"]
    assert value(hans, "00080020") == ["20240220"]
    [john] = search(http, root, PatientID=f"{TAG}-3")
    assert value(john, NUMBER_OF_STUDY_RELATED_SERIES) == [1]
    assert value(john, NUMBER_OF_STUDY_RELATED_INSTANCES) == [3]


def test_qido_returns_counts_and_retrieve_urls_at_series_and_instance_level(server, org, world, http):
    """PS3.18 Tables 10.6.3-4/5: NumberOfSeriesRelatedInstances and RetrieveURL of each level."""
    root = server.root(org)
    john = world["john"]
    [series] = search(http, root, "/series", PatientID=f"{TAG}-3")
    [series_uid] = john.series_uids
    assert value(series, NUMBER_OF_SERIES_RELATED_INSTANCES) == [3]
    assert value(series, "00080060") == ["MR"]
    assert value(series, RETRIEVE_URL) == [f"{root}/studies/{john.study_uid}/series/{series_uid}"]
    instances = search(http, root, f"/studies/{john.study_uid}/series/{series_uid}/instances")
    assert len(instances) == 3
    for instance in instances:
        sop = value(instance, SOP_UID)[0]
        assert value(instance, RETRIEVE_URL) == [f"{root}/studies/{john.study_uid}/series/{series_uid}/instances/{sop}"]
        assert value(instance, "00080016") == ["1.2.840.10008.5.1.4.1.1.4"]
        assert value(instance, "00280010") == [8]
    [second] = search(http, root, "/instances", PatientID=f"{TAG}-3", InstanceNumber="2")
    assert value(second, "00200013") == [2]


def test_qido_modalities_in_study_matches_any_series_modality(server, org, world, http):
    """PS3.4 C.6.2.1.2: ModalitiesInStudy=MR matches a study with CT and MR series, and the
    answer lists all of its modalities."""
    root = server.root(org)
    results = search(http, root, ModalitiesInStudy="MR")
    assert study_names(world, results) == {"hans", "john"}
    hans = next(r for r in results if r[STUDY_UID]["Value"][0] == world["hans"].study_uid)
    assert sorted(value(hans, MODALITIES_IN_STUDY)) == ["CT", "MR"]
    assert study_names(world, search(http, root, ModalitiesInStudy="CT")) == {"jane", "hans", "sean", "wei"}
    assert study_names(world, search(http, root, ModalitiesInStudy="US,MR")) == {"hans", "john", "anna"}


def test_qido_series_search_matches_study_and_series_keys(server, org, world, http):
    """PS3.18 10.6.1.2: a series search may match on study attributes as well as its own."""
    root = server.root(org)
    results = search(http, root, "/series", Modality="MR")
    assert {value(r, SERIES_UID)[0] for r in results} == {world["hans"].series_uids[1], *world["john"].series_uids}
    results = search(http, root, f"/studies/{world['hans'].study_uid}/series", Modality="CT")
    assert {value(r, SERIES_UID)[0] for r in results} == {world["hans"].series_uids[0]}
    results = search(http, root, "/series", PatientName="Doe^Jane", SeriesNumber="2")
    assert {value(r, SERIES_UID)[0] for r in results} == {world["jane"].series_uids[1]}


def test_qido_on_an_unknown_organisation_is_404(server, http):
    """PS3.18 8.5: there is no service root for an organisation that does not exist."""
    response = http.get(f"{server.base_url}/dicomweb/no-such-org/studies")
    assert response.status_code == 404
    assert "no-such-org" in response.json()["error"]
