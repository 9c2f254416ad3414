"""Reports that travel inside the study: a sender's PDF or plain-text report made into a DICOM object
of that study (Encapsulated PDF, PS3.3 A.45.1; Basic Text SR, PS3.3 A.35.1), and the text a RIS
needs read back out of any stored report."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.sr.coding import Code
from pydicom.uid import (
    BasicTextSRStorage,
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    EncapsulatedPDFStorage,
    EnhancedSRStorage,
    ExplicitVRLittleEndian,
    ExtensibleSRStorage,
    generate_uid,
)

from exchange.errors import ExchangeError

MAX_REPORT_BYTES = 50 * 1024 * 1024
REPORT_SERIES_NUMBER = 9001  # high, so that it sorts after the acquired series in a viewer
MANUFACTURER = "OIX"
PDF_HEADER = b"%PDF-"  # ISO 32000-1 7.5.2: the first line of a PDF file is its header

# The SR classes whose content is a text report; Key Object Selection (88.59) and the CAD,
# dose and measurement SRs hold selections and numbers, not a report to copy into a RIS.
SR_REPORT_CLASSES = frozenset({
    BasicTextSRStorage, EnhancedSRStorage, ComprehensiveSRStorage, Comprehensive3DSRStorage, ExtensibleSRStorage,
})
REPORT_CLASSES = SR_REPORT_CLASSES | {EncapsulatedPDFStorage}

# PS3.16 codes of the report tree (TID 2000 "Basic Diagnostic Imaging Report").
DIAGNOSTIC_IMAGING_REPORT = Code("18748-4", "LN", "Diagnostic Imaging Report")  # CID 7000 document title
FINDINGS = Code("59776-5", "LN", "Findings")  # CID 7001 heading; (121070, DCM) is its retired DCMR twin
FINDING = Code("121071", "DCM", "Finding")  # CID 7002 report element, of the TID 2002 narrative
LANGUAGE_OF_CONTENT = Code("121049", "DCM", "Language of Content Item and Descendants")  # TID 1204
ENGLISH = Code("en", "RFC5646", "English")  # CID 5000 Languages, an RFC 5646 language tag
OBSERVER_TYPE = Code("121005", "DCM", "Observer Type")  # TID 1002
PERSON = Code("121006", "DCM", "Person")  # CID 270 Observer Type
PERSON_OBSERVER_NAME = Code("121008", "DCM", "Person Observer Name")  # TID 1003

# PS3.3 C.17.3 Relationship Type: the context an observation or acquisition was made in, not the report.
CONTEXT_RELATIONSHIPS = frozenset({"HAS OBS CONTEXT", "HAS ACQ CONTEXT"})

# The Patient (C.7.1.1) and General Study (C.7.2.1) attributes a report shares with its study:
# type 2 ones are written empty when the study has no value, type 3 ones only when it has one.
STUDY_TYPE_2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                "AccessionNumber", "ReferringPhysicianName", "StudyID")
STUDY_TYPE_3 = ("IssuerOfPatientID", "StudyDescription")


class ReportRefused(ExchangeError):
    """A report that cannot be made into a DICOM object; `reason` is short and machine-readable."""

    reason = "refused"


class NotAPDF(ReportRefused):
    reason = "not-a-pdf"

    def __init__(self, start: bytes):
        super().__init__(f"the report is not a PDF: a PDF starts with '%PDF-', this starts with {start[:8]!r}; "
                         "send a PDF file, or the report as plain text")


class ReportTooLarge(ReportRefused):
    reason = "too-large"

    def __init__(self, size: int, limit: int):
        super().__init__(f"the report is {size} bytes, over the limit of {limit} bytes")


class EmptyReport(ReportRefused):
    reason = "empty"

    def __init__(self):
        super().__init__("the report has no text")


class StudyUnidentified(ReportRefused):
    reason = "no-study-instance-uid"

    def __init__(self):
        super().__init__("the study dataset has no Study Instance UID, so the report cannot join the study")


class UnreadableObject(ExchangeError):
    """Bytes offered as a stored object that are not DICOM Part 10."""

    def __init__(self, detail: str):
        super().__init__(f"not a DICOM Part 10 object: {detail}")


# -- making report objects -----------------------------------------------------------------------


def encapsulated_pdf(pdf: bytes, study: Dataset, *, title: str, author: str | None, when: datetime,
                     max_bytes: int = MAX_REPORT_BYTES) -> bytes:
    """`pdf` as a Part 10 Encapsulated PDF object (PS3.3 A.45.1) in a new series of `study`'s study.

    `study` is any instance of the study. Modules: Patient and General Study (copied), Encapsulated
    Document Series (C.24.1), General Equipment, SC Equipment (C.8.6.1, workstation conversion),
    Encapsulated Document (C.24.2) and SOP Common. `author`, for which the IOD has no attribute, is
    kept as Content Creator's Name (0070,0084): a Type 3 standard attribute added as a Standard
    Extended SOP Class may (PS3.2), which readers unaware of it ignore."""
    if len(pdf) > max_bytes:
        raise ReportTooLarge(len(pdf), max_bytes)
    if not pdf.startswith(PDF_HEADER):
        raise NotAPDF(pdf)
    ds = _report_dataset(study, EncapsulatedPDFStorage, "DOC", title, when)
    ds.ConversionType = "WSD"  # C.8.6.1: workstation
    # C.24.2
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = _date(when), _time(when)
    ds.AcquisitionDateTime = _date(when) + _time(when) + _offset(when)
    ds.BurnedInAnnotation = "YES"  # a report names its patient on the page
    ds.DocumentTitle = title
    ds.ConceptNameCodeSequence = Sequence()
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    # OB values have even length (PS3.5 7.1.1); the true length says where the padding starts.
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.add_new(0x00420011, "OB", pdf + b"\x00" * (len(pdf) % 2))  # Encapsulated Document
    if author:
        ds.ContentCreatorName = author
    return _part10(ds)


def basic_text_sr(text: str, study: Dataset, *, title: str, author: str | None, when: datetime,
                  language: Code = ENGLISH, max_bytes: int = MAX_REPORT_BYTES) -> bytes:
    """`text` as a Part 10 Basic Text SR object (PS3.3 A.35.1) in a new series of `study`'s study.

    Modules: Patient and General Study (copied), SR Document Series (C.17.1), General Equipment,
    SR Document General (C.17.2) and SR Document Content (C.17.3), SOP Common. The content tree
    follows PS3.16 TID 2000: a "Diagnostic Imaging Report" container with its language (TID 1204)
    and, when there is an `author`, its observer (TID 1002/1003), holding a "Findings" section whose
    one TEXT item (TID 2002 "Finding") is `text`. The text is kept as given, in UTF-8 (ISO_IR 192),
    except that trailing spaces, which PS3.5 6.2 makes padding of a UT value, do not survive.
    `title` becomes the Series Description: an SR's document title is its coded root concept."""
    if not text.strip():
        raise EmptyReport()
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise ReportTooLarge(size, max_bytes)
    ds = _report_dataset(study, BasicTextSRStorage, "SR", title, when)
    ds.ReferencedPerformedProcedureStepSequence = Sequence()  # C.17.1: type 2
    # C.17.2
    ds.InstanceNumber = 1
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"  # nobody here attests it; the sender's RIS holds the signed copy
    ds.ContentDate, ds.ContentTime = _date(when), _time(when)
    ds.PerformedProcedureCodeSequence = Sequence()  # type 2
    # C.17.3: the document is the root content item
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code(DIAGNOSTIC_IMAGING_REPORT)])
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentTemplateSequence = Sequence([_template("2000")])
    content = [_content_item("HAS CONCEPT MOD", "CODE", LANGUAGE_OF_CONTENT,
                             ConceptCodeSequence=Sequence([_code(language)]))]
    if author:
        content += [
            _content_item("HAS OBS CONTEXT", "CODE", OBSERVER_TYPE, ConceptCodeSequence=Sequence([_code(PERSON)])),
            _content_item("HAS OBS CONTEXT", "PNAME", PERSON_OBSERVER_NAME, PersonName=author),
        ]
    finding = _content_item("CONTAINS", "TEXT", FINDING, TextValue=text)
    content.append(_content_item("CONTAINS", "CONTAINER", FINDINGS, ContinuityOfContent="SEPARATE",
                                 ContentSequence=Sequence([finding])))
    ds.ContentSequence = Sequence(content)
    return _part10(ds)


def _report_dataset(study: Dataset, sop_class_uid: str, modality: str, title: str, when: datetime) -> Dataset:
    """The attributes both report objects share: the study's patient and study, a new series of
    one new instance, the equipment that made it, and SOP Common."""
    study_uid = study.get("StudyInstanceUID")
    if not study_uid:
        raise StudyUnidentified()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # PS3.3 C.12.1.1.2: UTF-8, so any name or text fits
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceCreationDate, ds.InstanceCreationTime = _date(when), _time(when)
    if when.utcoffset() is not None:
        ds.TimezoneOffsetFromUTC = _offset(when)  # C.12.1 SOP Common: the offset of every local date and time
    for keyword in STUDY_TYPE_2:
        setattr(ds, keyword, study.get(keyword, ""))
    for keyword in STUDY_TYPE_3:
        if study.get(keyword):
            setattr(ds, keyword, study.get(keyword))
    ds.StudyInstanceUID = study_uid
    ds.Modality = modality
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = REPORT_SERIES_NUMBER
    ds.SeriesDate, ds.SeriesTime = _date(when), _time(when)
    ds.SeriesDescription = title.strip() or "Report"
    ds.Manufacturer = MANUFACTURER  # C.7.5.1: type 2
    return ds


def _part10(ds: Dataset) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)  # PS3.10 7.1: preamble, prefix and complete meta group
    return out.getvalue()


def _code(code: Code) -> Dataset:
    item = Dataset()  # PS3.3 8.8 Code Sequence Macro
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def _template(identifier: str) -> Dataset:
    item = Dataset()
    item.MappingResource = "DCMR"
    item.TemplateIdentifier = identifier
    return item


def _content_item(relationship: str, value_type: str, concept: Code, **values) -> Dataset:
    item = Dataset()  # PS3.3 C.17.3 Document Relationship and Document Content Macros
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = Sequence([_code(concept)])
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _date(when: datetime) -> str:
    return when.strftime("%Y%m%d")


def _time(when: datetime) -> str:
    return when.strftime("%H%M%S")


def _offset(when: datetime) -> str:
    return when.strftime("%z") if when.utcoffset() is not None else ""


# -- reading reports back ------------------------------------------------------------------------

PdfTextExtractor = Callable[[bytes], "str | None"]


def _pypdf_extractor() -> PdfTextExtractor | None:
    """The text of a PDF by pypdf, when pypdf is installed; None when it is not."""
    try:
        import pypdf
    except ImportError:
        return None

    def extract(pdf: bytes) -> str | None:
        try:
            reader = pypdf.PdfReader(io.BytesIO(pdf))
            return "\n".join(page.extract_text() or "" for page in reader.pages).strip()
        except Exception:  # a damaged or hostile PDF still gives its title; the text is a bonus
            return None

    return extract


PDF_TEXT_EXTRACTOR = _pypdf_extractor()


@dataclass(frozen=True)
class ReportPassage:
    """One TEXT content item of an SR, or the whole text of a PDF: `concept` is the meaning of its
    concept name ("Finding", "Impression", ...) and `section` that of the container holding it."""

    text: str
    concept: str = ""
    section: str = ""


@dataclass(frozen=True)
class ReportText:
    """What a RIS needs from a stored report. `title`: an SR's root concept name (PS3.3 C.17.3, the
    document title of an SR) or a PDF's Document Title. `text_extracted` is False for a PDF whose text
    could not be read (no PDF text extractor installed, or a damaged PDF)."""

    sop_class_uid: str
    sop_instance_uid: str
    title: str
    passages: tuple[ReportPassage, ...]
    text_extracted: bool = True

    @property
    def text(self) -> str:
        """The passages as plain text to paste into a RIS: each section heading once, each passage
        led by its concept name, a blank line between."""
        blocks, section = [], ""
        for passage in self.passages:
            if passage.section and passage.section != section:
                blocks.append(passage.section)
            section = passage.section
            blocks.append(f"{passage.concept}: {passage.text}" if passage.concept else passage.text)
        return "\n\n".join(blocks)


def is_report(sop_class_uid: str) -> bool:
    """Whether objects of this SOP class are reports: Encapsulated PDF (PS3.3 A.45.1) and the text
    SRs (Basic Text A.35.1, Enhanced A.35.2, Comprehensive A.35.3, Comprehensive 3D, Extensible),
    not Key Object Selection or the CAD, dose and measurement SRs."""
    return sop_class_uid in REPORT_CLASSES


def report_text(part10: bytes | BinaryIO, *, pdf_text: PdfTextExtractor | None = PDF_TEXT_EXTRACTOR
                ) -> ReportText | None:
    """The report in a stored Part 10 object, or None when the object is not a report.

    SR: the text of every TEXT content item in document order (depth first through Content Sequence,
    PS3.3 C.17.3), except those that only give the context of an observation. PDF: its title, and its
    text when `pdf_text` (pypdf, if installed) can read it."""
    source = io.BytesIO(part10) if isinstance(part10, (bytes, bytearray, memoryview)) else part10
    try:
        ds = pydicom.dcmread(source, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, ValueError, struct.error) as error:
        raise UnreadableObject(str(error) or type(error).__name__) from error
    sop_class_uid = str(ds.get("SOPClassUID", ""))
    if not is_report(sop_class_uid):
        return None
    sop_instance_uid = str(ds.get("SOPInstanceUID", ""))
    if sop_class_uid == EncapsulatedPDFStorage:
        title = str(ds.get("DocumentTitle", "") or ds.get("SeriesDescription", ""))
        text = pdf_text(encapsulated_document(ds)) if pdf_text is not None and "EncapsulatedDocument" in ds else None
        passages = (ReportPassage(text),) if text else ()
        return ReportText(sop_class_uid, sop_instance_uid, title, passages, text_extracted=text is not None)
    return ReportText(sop_class_uid, sop_instance_uid, _concept(ds), tuple(_text_items(ds.get("ContentSequence", ()))))


def encapsulated_document(ds: Dataset) -> bytes:
    """The document an Encapsulated Document object holds, without the pad byte PS3.5 7.1.1 adds to
    an odd length: Encapsulated Document Length (PS3.3 C.24.2) says where it ends; when that is
    missing or does not fit the value, the value is taken as it is."""
    value = ds.EncapsulatedDocument
    length = ds.get("EncapsulatedDocumentLength")
    if length is not None and len(value) - 1 <= length <= len(value):
        return value[:length]
    return value


def _text_items(items, section: str = "") -> Iterator[ReportPassage]:
    for item in items:
        value_type = item.get("ValueType")
        if value_type is None or item.get("RelationshipType") in CONTEXT_RELATIONSHIPS:
            continue  # by reference (Referenced Content Item Identifier): an item walked elsewhere
        concept = _concept(item)
        if value_type == "TEXT":
            yield ReportPassage(str(item.get("TextValue", "")), concept, section)
        if "ContentSequence" in item:
            yield from _text_items(item.ContentSequence, concept if value_type == "CONTAINER" else section)


def _concept(item: Dataset) -> str:
    names = item.get("ConceptNameCodeSequence")
    return str(names[0].get("CodeMeaning", "")) if names else ""
