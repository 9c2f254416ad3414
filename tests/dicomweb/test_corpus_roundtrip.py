"""The real corpora (pydicom's test files and pydicom-data) through STOW-RS and WADO-RS: every
file is stored and comes back byte for byte with transfer-syntax=* (PS3.18 8.7.3.5.2), in every
transfer syntax the corpora contain."""

from __future__ import annotations

import pytest

from tests.dicomweb_requests import instance_url, retrieve
from tests.real_files import by_name, corpus_files, scan

CORPUS = corpus_files()
# The transfer syntaxes the corpora hold, so that losing one from the corpus is noticed.
EXPECTED_SYNTAXES = {
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.5",
}


def test_the_corpus_holds_every_expected_transfer_syntax():
    """The byte-exact test below covers these syntaxes only if the corpora still hold them."""
    assert {item.transfer_syntax for item in CORPUS} >= EXPECTED_SYNTAXES
    assert len(CORPUS) > 200
    skipped = {entry.name for entry in scan()[1]}
    assert "pydicom/MR_truncated.dcm" in skipped and "pydicom/CT_small.dcm" not in skipped


@pytest.mark.parametrize("item", CORPUS, ids=lambda item: item.name)
def test_corpus_file_is_retrieved_byte_exact_with_any_transfer_syntax(server, http, stored_corpus, item):
    """PS3.18 8.7.3.5.2: transfer-syntax=* returns the instance as stored, byte for byte,
    its part labelled with the stored transfer syntax."""
    root = server.root(stored_corpus[item.name])
    [part] = retrieve(http, instance_url(root, item.study_uid, item.series_uid, item.sop_instance_uid))
    assert part.content == item.data
    assert f"transfer-syntax={item.transfer_syntax}" in part.content_type


def test_corpus_study_and_series_are_retrieved_byte_exact(server, http, stored_corpus):
    """PS3.18 10.4.1.1.1-2: a whole study and a whole series, each part byte for byte."""
    first = by_name("pydicom/dicomdirtests/TINY_ALPHA/PT000000/ST000000/SE000000/IM000000")
    members = [item for item in CORPUS if item.study_uid == first.study_uid
               and stored_corpus[item.name] == stored_corpus[first.name]]
    assert len(members) >= 50
    root = server.root(stored_corpus[first.name])
    study_parts = retrieve(http, f"{root}/studies/{first.study_uid}")
    assert sorted(part.content for part in study_parts) == sorted(item.data for item in members)
    series_members = [item for item in members if item.series_uid == first.series_uid]
    series_parts = retrieve(http, f"{root}/studies/{first.study_uid}/series/{first.series_uid}")
    assert sorted(part.content for part in series_parts) == sorted(item.data for item in series_members)
