"""Reports travelling inside the study (issue The exchange, Reports): a sender's PDF or text made into
an Encapsulated PDF (PS3.3 A.45.1) or Basic Text SR (PS3.3 A.35.1) of a real study, checked against
the modules' type 1 and 2 attributes, and the text a RIS needs read back from real SR files."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, KeyObjectSelectionDocumentStorage

from exchange.errors import ExchangeError
from exchange.reports import (
    PDF_TEXT_EXTRACTOR,
    EmptyReport,
    NotAPDF,
    ReportPassage,
    ReportTooLarge,
    StudyUnidentified,
    UnreadableObject,
    basic_text_sr,
    encapsulated_document,
    encapsulated_pdf,
    is_report,
    report_text,
)
from tests.pdf_documents import minimal_pdf

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
WHEN = datetime(2025, 6, 3, 14, 5, 9, tzinfo=timezone(timedelta(hours=1)))  # British Summer Time
PDF_LINE = "CT head: no acute intracranial abnormality."
REPORT = "Ångström, naïve café — ✓\r\nNo fracture.\nC:\\reports\\42\n\n  Indented line, leading spaces kept."
STUDY_ATTRIBUTES = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                    "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID", "StudyDescription")


@pytest.fixture(scope="module")
def study() -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file("CT_small.dcm"))


@pytest.fixture(scope="module")
def pdf() -> bytes:
    document = minimal_pdf(PDF_LINE)
    assert len(document) % 2 == 1
    return document


def pydicom_file(name: str) -> bytes:
    return Path(get_testdata_file(name)).read_bytes()


def read(part10: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(part10))


def pdf_object(pdf: bytes, study: pydicom.Dataset, **overrides) -> bytes:
    return encapsulated_pdf(pdf, study, **{"title": "CT head report", "author": "Okafor^Adaeze", "when": WHEN,
                                           **overrides})


def sr_object(text: str, study: pydicom.Dataset, **overrides) -> bytes:
    return basic_text_sr(text, study, **{"title": "CT head report", "author": "Okafor^Adaeze", "when": WHEN,
                                         **overrides})


# -- Encapsulated PDF ----------------------------------------------------------------------------


def test_pdf_report_round_trips_the_exact_pdf_bytes(pdf, study):
    ds = read(pdf_object(pdf, study))

    assert len(ds.EncapsulatedDocument) == len(pdf) + 1  # PS3.5 7.1.1: padded to even length
    assert ds.EncapsulatedDocument[-1:] == b"\x00"
    assert ds.EncapsulatedDocumentLength == len(pdf)
    assert encapsulated_document(ds) == pdf


def test_pdf_report_of_even_length_is_not_padded(pdf, study):
    even = pdf[:-1]  # the last byte is the newline after %%EOF
    ds = read(pdf_object(even, study))

    assert ds.EncapsulatedDocument == even
    assert encapsulated_document(ds) == even


def test_pdf_report_joins_the_study_of_the_given_instance_in_a_new_series(pdf, study):
    ds = read(pdf_object(pdf, study))

    for keyword in STUDY_ATTRIBUTES:
        assert ds[keyword].value == study[keyword].value, keyword
    assert ds.SeriesInstanceUID != study.SeriesInstanceUID
    assert ds.SOPInstanceUID not in (study.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID)
    assert ds.SOPInstanceUID.is_valid and ds.SeriesInstanceUID.is_valid
    again = read(pdf_object(pdf, study))
    assert (again.SeriesInstanceUID, again.SOPInstanceUID) != (ds.SeriesInstanceUID, ds.SOPInstanceUID)


def test_pdf_report_is_an_encapsulated_pdf_document_of_modality_doc(pdf, study):
    part10 = pdf_object(pdf, study)
    ds = read(part10)

    assert part10[128:132] == b"DICM"
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert not ds.original_encoding[0] and ds.original_encoding[1]  # explicit VR, little endian
    assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID == ENCAPSULATED_PDF
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    assert ds.Modality == "DOC"
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert ds.DocumentTitle == "CT head report"
    assert ds.BurnedInAnnotation == "YES"
    assert ds.ConversionType == "WSD"
    assert (ds.SeriesNumber, ds.InstanceNumber) == (9001, 1)
    assert (ds.ContentDate, ds.ContentTime, ds.TimezoneOffsetFromUTC) == ("20250603", "140509", "+0100")
    assert ds.ContentCreatorName == "Okafor^Adaeze"


def test_pdf_report_title_may_be_any_text(pdf, study):
    ds = read(pdf_object(pdf, study, title="Rapport d'échographie — Zoë"))

    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.DocumentTitle == "Rapport d'échographie — Zoë"


@pytest.mark.parametrize("not_pdf", [
    b"",
    b"\x89PNG\r\n\x1a\n" + bytes(64),
    "Findings: normal.".encode(),
    b"  %PDF-1.4 leading spaces",
], ids=["empty", "png", "text", "header-not-first"])
def test_pdf_report_refuses_bytes_that_are_not_a_pdf(not_pdf, study):
    with pytest.raises(NotAPDF) as refused:
        pdf_object(not_pdf, study)

    assert isinstance(refused.value, ExchangeError)
    assert refused.value.reason == "not-a-pdf"
    assert "%PDF-" in str(refused.value)


def test_pdf_report_refuses_a_dicom_file_offered_as_pdf(study):
    with pytest.raises(NotAPDF):
        pdf_object(pydicom_file("CT_small.dcm"), study)


def test_pdf_report_refuses_a_pdf_over_the_size_limit(pdf, study):
    with pytest.raises(ReportTooLarge) as refused:
        pdf_object(pdf, study, max_bytes=len(pdf) - 1)

    assert refused.value.reason == "too-large"
    assert str(len(pdf)) in str(refused.value)
    assert encapsulated_document(read(pdf_object(pdf, study, max_bytes=len(pdf)))) == pdf


def test_report_for_a_dataset_without_a_study_instance_uid_is_refused(pdf, study):
    anonymous = pydicom.Dataset()
    anonymous.PatientName = "Nobody"

    with pytest.raises(StudyUnidentified):
        pdf_object(pdf, anonymous)
    with pytest.raises(StudyUnidentified):
        sr_object(REPORT, anonymous)


# -- Basic Text SR -------------------------------------------------------------------------------


def test_sr_report_keeps_non_ascii_text_and_line_breaks_exactly(study):
    ds = read(sr_object(REPORT, study))

    finding = ds.ContentSequence[-1].ContentSequence[0]
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert finding.ValueType == "TEXT"
    assert finding.TextValue == REPORT


def test_sr_report_drops_only_trailing_spaces_which_ut_treats_as_padding(study):
    # PS3.5 6.2: a UT value may be padded with trailing spaces, which readers may drop.
    ds = read(sr_object("Impression: normal.\r\n   ", study))

    assert ds.ContentSequence[-1].ContentSequence[0].TextValue == "Impression: normal.\r\n"


def test_sr_report_joins_the_study_of_the_given_instance_in_a_new_series(study):
    ds = read(sr_object(REPORT, study))

    for keyword in STUDY_ATTRIBUTES:
        assert ds[keyword].value == study[keyword].value, keyword
    assert ds.SeriesInstanceUID != study.SeriesInstanceUID
    assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID == BASIC_TEXT_SR
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (ds.Modality, ds.SeriesNumber, ds.InstanceNumber) == ("SR", 9001, 1)
    assert ds.SeriesDescription == "CT head report"
    assert (ds.CompletionFlag, ds.VerificationFlag) == ("COMPLETE", "UNVERIFIED")
    assert (ds.ContentDate, ds.ContentTime) == ("20250603", "140509")


def test_sr_report_copies_patient_names_from_a_study_in_another_character_set():
    japanese = pydicom.dcmread(get_charset_files("chrH31.dcm")[0])  # ISO 2022 IR 87
    ds = read(sr_object(REPORT, japanese))

    assert str(ds.PatientName) == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert ds.PatientName == japanese.PatientName


def test_sr_report_follows_tid_2000_with_codes_of_its_context_groups(study):
    ds = read(sr_object(REPORT, study))

    def code(item) -> tuple[str, str, str]:
        return item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning

    def as_tuple(concept) -> tuple[str, str, str]:
        return concept.value, concept.scheme_designator, concept.meaning

    # pydicom's code dictionary is generated from PS3.16, so membership here is membership there.
    assert ds.ValueType == "CONTAINER" and ds.ContinuityOfContent == "SEPARATE"
    assert code(ds.ConceptNameCodeSequence[0]) in {as_tuple(c) for c in (
        getattr(codes.cid7000, name) for name in codes.cid7000.dir())}
    assert (ds.ContentTemplateSequence[0].MappingResource, ds.ContentTemplateSequence[0].TemplateIdentifier) == (
        "DCMR", "2000")
    language, observer_type, observer_name, findings = ds.ContentSequence
    assert (language.RelationshipType, language.ValueType) == ("HAS CONCEPT MOD", "CODE")
    assert code(language.ConceptNameCodeSequence[0]) == as_tuple(codes.DCM.LanguageOfContentItemAndDescendants)
    assert code(observer_type.ConceptNameCodeSequence[0]) == as_tuple(codes.DCM.ObserverType)
    assert code(observer_type.ConceptCodeSequence[0]) == as_tuple(codes.cid270.Person)
    assert code(observer_name.ConceptNameCodeSequence[0]) == as_tuple(codes.DCM.PersonObserverName)
    assert observer_name.PersonName == "Okafor^Adaeze"
    assert (findings.RelationshipType, findings.ValueType) == ("CONTAINS", "CONTAINER")
    assert code(findings.ConceptNameCodeSequence[0]) == as_tuple(codes.cid7001.Findings)
    finding = findings.ContentSequence[0]
    assert (finding.RelationshipType, finding.ValueType) == ("CONTAINS", "TEXT")
    assert code(finding.ConceptNameCodeSequence[0]) == as_tuple(codes.cid7002.Finding)


def test_sr_report_without_an_author_names_no_observer(study):
    ds = read(sr_object(REPORT, study, author=None))

    assert [item.ValueType for item in ds.ContentSequence] == ["CODE", "CONTAINER"]
    assert report_text(sr_object(REPORT, study, author=None)).passages == (
        ReportPassage(REPORT, "Finding", "Findings"),)


# PS3.3 A.35.1 Table A.35.1-2: the relationships a Basic Text SR allows, by source value type.
BASIC_TEXT_SR_RELATIONSHIPS = {
    ("CONTAINER", "CONTAINS"): {"TEXT", "CODE", "DATETIME", "DATE", "TIME", "UIDREF", "PNAME", "COMPOSITE",
                                "IMAGE", "WAVEFORM", "CONTAINER"},
    ("CONTAINER", "HAS OBS CONTEXT"): {"TEXT", "CODE", "DATETIME", "DATE", "TIME", "UIDREF", "PNAME", "COMPOSITE"},
    ("CONTAINER", "HAS CONCEPT MOD"): {"TEXT", "CODE"},
}


def test_sr_report_uses_only_relationships_basic_text_sr_allows(study):
    ds = read(sr_object(REPORT, study))

    def check(source: pydicom.Dataset) -> None:
        for item in source.get("ContentSequence", ()):
            allowed = BASIC_TEXT_SR_RELATIONSHIPS.get((source.ValueType, item.RelationshipType), set())
            assert item.ValueType in allowed, (source.ValueType, item.RelationshipType, item.ValueType)
            check(item)

    check(ds)


@pytest.mark.parametrize("text", ["", "   \r\n\t"], ids=["empty", "blank"])
def test_sr_report_refuses_text_with_nothing_in_it(text, study):
    with pytest.raises(EmptyReport) as refused:
        sr_object(text, study)

    assert refused.value.reason == "empty"


def test_sr_report_refuses_text_over_the_size_limit_in_utf8_bytes(study):
    text = "é" * 10  # 20 bytes in UTF-8

    with pytest.raises(ReportTooLarge):
        sr_object(text, study, max_bytes=19)
    assert read(sr_object(text, study, max_bytes=20)).ContentSequence[-1].ContentSequence[0].TextValue == text


# -- the modules' type 1 and type 2 attributes (what dciodvfy checks first) ----------------------

# PS3.3, by module: type 1 attributes must be present with a value, type 2 present (maybe empty).
PDF_MODULES = {
    "Patient C.7.1.1": ((), ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")),
    "General Study C.7.2.1": (("StudyInstanceUID",),
                              ("StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")),
    "Encapsulated Document Series C.24.1": (("Modality", "SeriesInstanceUID", "SeriesNumber"), ()),
    "General Equipment C.7.5.1": ((), ("Manufacturer",)),
    "SC Equipment C.8.6.1": (("ConversionType",), ()),
    "Encapsulated Document C.24.2": (
        ("InstanceNumber", "BurnedInAnnotation", "MIMETypeOfEncapsulatedDocument", "EncapsulatedDocument"),
        ("ContentDate", "ContentTime", "AcquisitionDateTime", "DocumentTitle", "ConceptNameCodeSequence")),
    "SOP Common C.12.1": (("SOPClassUID", "SOPInstanceUID", "SpecificCharacterSet"), ()),
}
SR_MODULES = {
    "Patient C.7.1.1": PDF_MODULES["Patient C.7.1.1"],
    "General Study C.7.2.1": PDF_MODULES["General Study C.7.2.1"],
    "SR Document Series C.17.1": (("Modality", "SeriesInstanceUID", "SeriesNumber"),
                                  ("ReferencedPerformedProcedureStepSequence",)),
    "General Equipment C.7.5.1": PDF_MODULES["General Equipment C.7.5.1"],
    "SR Document General C.17.2": (("InstanceNumber", "CompletionFlag", "VerificationFlag", "ContentDate",
                                    "ContentTime"), ("PerformedProcedureCodeSequence",)),
    "SR Document Content C.17.3": (("ValueType", "ConceptNameCodeSequence", "ContinuityOfContent",
                                    "ContentSequence"), ()),
    "SOP Common C.12.1": PDF_MODULES["SOP Common C.12.1"],
}
FILE_META = ("FileMetaInformationVersion", "MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID",
             "TransferSyntaxUID", "ImplementationClassUID")  # PS3.10 7.1, all type 1
CONTENT_ITEM_VALUES = {"TEXT": "TextValue", "CODE": "ConceptCodeSequence", "PNAME": "PersonName",
                       "CONTAINER": "ContinuityOfContent"}  # PS3.3 C.17.3 Document Content Macro: 1C by value type


@pytest.mark.parametrize("kind", ["pdf", "sr"])
def test_report_objects_carry_every_type_1_and_type_2_attribute_of_their_modules(kind, pdf, study):
    part10, modules = (pdf_object(pdf, study), PDF_MODULES) if kind == "pdf" else (sr_object(REPORT, study),
                                                                                   SR_MODULES)
    ds = read(part10)

    for keyword in FILE_META:
        assert ds.file_meta.get(keyword), keyword
    for module, (type_1, type_2) in modules.items():
        for keyword in type_1:
            assert keyword in ds and not ds[keyword].is_empty, f"{module}: type 1 {keyword} missing or empty"
        for keyword in type_2:
            assert keyword in ds, f"{module}: type 2 {keyword} missing"


def test_sr_content_items_carry_their_type_1_attributes(study):
    ds = read(sr_object(REPORT, study))

    def check(items) -> None:
        for item in items:
            for keyword in ("RelationshipType", "ValueType", "ConceptNameCodeSequence",
                            CONTENT_ITEM_VALUES[item.ValueType]):
                assert keyword in item and not item[keyword].is_empty, (item.ValueType, keyword)
            for code in [*item.ConceptNameCodeSequence, *item.get("ConceptCodeSequence", ())]:
                assert code.CodeValue and code.CodingSchemeDesignator and code.CodeMeaning  # PS3.3 8.8
            check(item.get("ContentSequence", ()))

    check(ds.ContentSequence)


# -- reading reports back ------------------------------------------------------------------------


def test_report_text_reads_the_text_of_an_sr_made_here(study):
    report = report_text(sr_object(REPORT, study))

    assert report.sop_class_uid == BASIC_TEXT_SR
    assert report.title == "Diagnostic Imaging Report"
    assert report.passages == (ReportPassage(REPORT, "Finding", "Findings"),)
    assert report.text == f"Findings\n\nFinding: {REPORT}"


def test_report_text_reads_every_text_item_of_a_comprehensive_sr_in_document_order():
    report = report_text(pydicom_file("test-SR.dcm"))

    assert report.title == "Diagnosis"
    assert [passage.text for passage in report.passages] == [
        "A mass of", "was detected.", "A mass of", "was detected.",
        "Sample Text\rA\nB\r\nC\n\r", 'Inferred Sample Text\nNew line.\n\r&%$§"!()<>{}/;', "Sample Text 2",
    ]
    assert {passage.concept for passage in report.passages} == {"Text Code", "Code"}


def test_report_text_leaves_out_the_observation_context_of_a_basic_text_sr():
    # pydicom's reportsi.dcm: a recording observer's organisation is a HAS OBS CONTEXT TEXT item.
    report = report_text(pydicom_file("reportsi.dcm"))

    assert report.sop_class_uid == BASIC_TEXT_SR
    assert report.passages == (ReportPassage("Enter text", "Report Text", "Section Heading"),)


def test_report_text_gives_the_title_of_a_pdf_and_says_its_text_was_not_read_without_an_extractor(pdf, study):
    report = report_text(pdf_object(pdf, study), pdf_text=None)

    assert report.sop_class_uid == ENCAPSULATED_PDF
    assert report.title == "CT head report"
    assert report.passages == ()
    assert not report.text_extracted


def test_report_text_hands_the_exact_pdf_bytes_to_the_pdf_text_extractor(pdf, study):
    given = []

    def extractor(document: bytes) -> str:
        given.append(document)
        return PDF_LINE

    report = report_text(pdf_object(pdf, study), pdf_text=extractor)

    assert given == [pdf]
    assert report.passages == (ReportPassage(PDF_LINE),)
    assert report.text == PDF_LINE and report.text_extracted


def test_report_text_of_a_pdf_uses_pypdf_when_it_is_installed(pdf, study):
    report = report_text(pdf_object(pdf, study))

    if PDF_TEXT_EXTRACTOR is None:  # pypdf is not a dependency of OIX (yet): the title alone
        assert (report.title, report.passages, report.text_extracted) == ("CT head report", (), False)
    else:
        assert PDF_LINE in report.text


def test_report_text_reads_from_an_open_binary_file(study, tmp_path):
    path = tmp_path / "report.dcm"
    path.write_bytes(sr_object(REPORT, study))

    with path.open("rb") as stored:
        assert report_text(stored).passages[0].text == REPORT


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "waveform_ecg.dcm"])
def test_report_text_is_none_for_objects_that_are_not_reports(name):
    assert report_text(pydicom_file(name)) is None


def test_report_text_refuses_bytes_that_are_not_dicom(pdf):
    with pytest.raises(UnreadableObject):
        report_text(pdf)


def test_is_report_counts_pdf_and_text_srs_but_not_key_object_selection_or_images():
    assert all(map(is_report, [ENCAPSULATED_PDF, BASIC_TEXT_SR, "1.2.840.10008.5.1.4.1.1.88.22",
                               "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.34"]))
    assert not is_report(KeyObjectSelectionDocumentStorage)
    assert not is_report("1.2.840.10008.5.1.4.1.1.2")  # CT Image Storage
    assert not is_report("")
