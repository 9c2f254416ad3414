"""Import reconciliation (IHE RAD Import Reconciliation Workflow, IRWF) on real DICOM files from
pydicom's test data and pydicom-data: demographics compared, identifiers coerced into the local
domain, originals kept in Original Attributes Sequence (PS3.3 C.12.1.1.9), Pixel Data untouched."""

from __future__ import annotations

import copy
import io
import tracemalloc
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from exchange.errors import ExchangeError
from exchange.nhs_number import NHS_NUMBER_OID, InvalidNHSNumber, NHSNumberProblem
from exchange.reconciliation import (
    Demographic,
    Difference,
    InvalidLocalIdentity,
    LocalIdentity,
    ModificationReason,
    UnconfirmedDifferences,
    differences,
    reconcile,
    reconcile_file,
)

WHEN = datetime(2025, 3, 1, 14, 30, 5, 250000, tzinfo=timezone.utc)
WHEN_DT = "20250301143005.250000+0000"
SENDER = "Sheffield Teaching Hospitals"
NHS_NUMBER = "9434765919"
OTHER_NHS_NUMBER = "4010232137"
UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
# One file per encoding that matters to splicing a new header onto the original Pixel Data bytes.
TRANSFER_SYNTAX_FILES = [
    "CT_small.dcm",  # Explicit VR Little Endian
    "MR_small_implicit.dcm",  # Implicit VR Little Endian
    "MR_small_bigendian.dcm",  # Explicit VR Big Endian
    "MR_small_RLE.dcm",  # RLE Lossless, encapsulated
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG Baseline, encapsulated
    "emri_small_jpeg_2k_lossless.dcm",  # JPEG 2000 Lossless, from pydicom-data
]


def file_bytes(name: str) -> bytes:
    path = get_testdata_file(name) or get_charset_files(name)[0]
    return Path(path).read_bytes()


def read(data: bytes) -> pydicom.FileDataset:
    return pydicom.dcmread(io.BytesIO(data))


def encode(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def local_for(dataset: Dataset, **changes) -> LocalIdentity:
    """A local identity whose demographics agree with the dataset's; identifiers from the receiver."""
    values = dict(patient_id="RHQ-000123", issuer_of_patient_id="RHQ", accession_number="RHQ-ACC-9",
                  patient_name=str(dataset.get("PatientName") or ""), birth_date=dataset.get("PatientBirthDate") or "",
                  sex=dataset.get("PatientSex") or "", nhs_number=None)
    values.update(changes)
    return LocalIdentity(**values)


def nhs_item(number: str, issuer: str = "NHS") -> Dataset:
    item = Dataset()
    item.PatientID = number
    item.IssuerOfPatientID = issuer
    item.TypeOfPatientID = "TEXT"
    return item


def pixel_data_offset(data: bytes) -> int:
    """Where the top-level Pixel Data element starts: pydicom stops reading just before it."""
    handle = io.BytesIO(data)
    pydicom.dcmread(handle, stop_before_pixels=True)
    return handle.tell()


def modified_item(dataset: Dataset, index: int = -1) -> Dataset:
    return dataset.OriginalAttributesSequence[index].ModifiedAttributesSequence[0]


# -- differences: what stops an import for manual reconciliation ---------------------------------

def test_no_differences_when_demographics_agree_but_for_case_spaces_and_empty_components():
    """IRWF: only a real disagreement stops the import, not how a PN or an NHS number is written."""
    dataset = read(file_bytes("MR_small.dcm"))  # CompressedSamples^MR1, F
    dataset.PatientBirthDate = "19700101"
    dataset.OtherPatientIDsSequence = Sequence([nhs_item("943 476 5919")])
    local = LocalIdentity(patient_id="RHQ-1", issuer_of_patient_id="RHQ", patient_name="  compressedsamples ^ mr1 ^^ ",
                          birth_date="19700101", sex="f", nhs_number=NHS_NUMBER)
    assert differences(dataset, local) == []


def test_finds_a_different_patient_name():
    dataset = read(file_bytes("CT_small.dcm"))
    assert differences(dataset, local_for(dataset, patient_name="SMITH^JANE")) == [
        Difference(Demographic.PATIENT_NAME, "CompressedSamples^CT1", "SMITH^JANE")]


def test_finds_a_different_birth_date():
    dataset = read(file_bytes("emri_small_jpeg_2k_lossless.dcm"))  # born 20000101
    assert differences(dataset, local_for(dataset, birth_date="20000110")) == [
        Difference(Demographic.PATIENT_BIRTH_DATE, "20000101", "20000110")]


def test_finds_a_different_sex():
    dataset = read(file_bytes("MR_small.dcm"))  # F
    assert differences(dataset, local_for(dataset, sex="M")) == [Difference(Demographic.PATIENT_SEX, "F", "M")]


def test_finds_a_different_nhs_number_in_other_patient_ids_issued_by_the_nhs():
    dataset = read(file_bytes("CT_small.dcm"))  # two Other Patient IDs items without an issuer
    dataset.OtherPatientIDsSequence.append(nhs_item("401 023 2137"))
    assert differences(dataset, local_for(dataset, nhs_number=NHS_NUMBER)) == [
        Difference(Demographic.NHS_NUMBER, "401 023 2137", NHS_NUMBER)]


def test_finds_a_different_nhs_number_in_patient_id_when_its_issuer_is_the_nhs_oid():
    dataset = read(file_bytes("MR_small.dcm"))
    dataset.PatientID = OTHER_NHS_NUMBER
    dataset.IssuerOfPatientID = NHS_NUMBER_OID
    assert differences(dataset, local_for(dataset, nhs_number=NHS_NUMBER)) == [
        Difference(Demographic.NHS_NUMBER, OTHER_NHS_NUMBER, NHS_NUMBER)]


def test_finds_an_nhs_number_named_by_the_universal_entity_id_of_its_issuer():
    """PS3.3 10.14: the issuer named by Issuer of Patient ID Qualifiers Sequence, not by its label."""
    dataset = read(file_bytes("MR_small.dcm"))
    item = nhs_item(OTHER_NHS_NUMBER, issuer="NHS England")
    qualifiers = Dataset()
    qualifiers.UniversalEntityID = NHS_NUMBER_OID
    qualifiers.UniversalEntityIDType = "ISO"
    item.IssuerOfPatientIDQualifiersSequence = Sequence([qualifiers])
    dataset.OtherPatientIDsSequence = Sequence([item])
    assert [d.attribute for d in differences(dataset, local_for(dataset, nhs_number=NHS_NUMBER))] == [
        Demographic.NHS_NUMBER]


def test_identifiers_of_other_issuers_are_not_compared_with_the_nhs_number():
    dataset = read(file_bytes("CT_small.dcm"))  # Other Patient IDs ABCD1234 and 1234ABCD, no issuer
    assert differences(dataset, local_for(dataset, nhs_number=NHS_NUMBER)) == []


def test_empty_incoming_demographics_are_no_difference():
    """image_dfl.dcm has the name '^^^^' and no birth date or sex: nothing to disagree with."""
    dataset = read(file_bytes("image_dfl.dcm"))
    local = local_for(dataset, patient_name="SMITH^JANE", birth_date="19700101", sex="F", nhs_number=NHS_NUMBER)
    assert differences(dataset, local) == []


def test_a_name_agrees_by_its_alphabetic_group_when_the_local_name_has_no_other():
    """chrH31.dcm: Yamada^Tarou=山田^太郎=やまだ^たろう; the local record knows the alphabetic group only."""
    dataset = read(file_bytes("chrH31.dcm"))
    assert differences(dataset, local_for(dataset, patient_name="YAMADA^TAROU")) == []
    assert [d.attribute for d in differences(dataset, local_for(dataset, patient_name="YAMADA^HANAKO"))] == [
        Demographic.PATIENT_NAME]


# -- reconcile: the identifiers coerced, the originals kept --------------------------------------

def test_reconcile_coerces_patient_id_issuer_and_accession_number_and_keeps_the_uids():
    """IRWF: identifiers take local values; UIDs stay, so the study is still the same study."""
    dataset = read(file_bytes("CT_small.dcm"))
    result = reconcile(dataset, local_for(dataset), sender=SENDER, when=WHEN)
    assert (result.PatientID, result.IssuerOfPatientID, result.AccessionNumber) == ("RHQ-000123", "RHQ", "RHQ-ACC-9")
    for keyword in UIDS:
        assert result[keyword].value == dataset[keyword].value
    assert result.file_meta.MediaStorageSOPInstanceUID == dataset.SOPInstanceUID


def test_reconcile_appends_one_item_holding_exactly_the_original_values_of_what_changed():
    """PS3.3 C.12.1.1.9: one Original Attributes Sequence item per modification, its Modified
    Attributes Sequence holding the previous values; an attribute that was absent is kept empty."""
    dataset = read(file_bytes("CT_small.dcm"))  # Patient ID 1CT1, no issuer, empty Accession Number
    result = reconcile(dataset, local_for(dataset), sender=SENDER, when=WHEN)

    assert len(result.OriginalAttributesSequence) == 1
    item = result.OriginalAttributesSequence[0]
    assert item.AttributeModificationDateTime == WHEN_DT
    assert item.ModifyingSystem == "OIX"
    assert item.SourceOfPreviousValues == SENDER
    assert item.ReasonForTheAttributeModification == "COERCE"
    assert len(item.ModifiedAttributesSequence) == 1
    originals = item.ModifiedAttributesSequence[0]
    assert sorted(element.keyword for element in originals) == ["AccessionNumber", "IssuerOfPatientID", "PatientID"]
    assert originals.PatientID == "1CT1"
    assert originals["IssuerOfPatientID"].is_empty
    assert originals["AccessionNumber"].is_empty


def test_reconcile_records_nothing_for_identifiers_that_already_have_their_local_values():
    dataset = read(file_bytes("CT_small.dcm"))
    dataset.IssuerOfPatientID = "RHQ"
    result = reconcile(dataset, local_for(dataset, accession_number=None), sender=SENDER, when=WHEN)
    assert [element.keyword for element in modified_item(result)] == ["PatientID"]
    assert result.AccessionNumber == dataset.AccessionNumber


def test_reconciling_an_already_reconciled_object_adds_no_item():
    """Nothing changed, nothing to keep: importing the same object twice does not pile up items."""
    dataset = read(file_bytes("CT_small.dcm"))
    local = local_for(dataset, nhs_number=NHS_NUMBER)
    once = reconcile(dataset, local, sender=SENDER, when=WHEN)
    twice = reconcile(once, local, sender=SENDER, when=WHEN)
    assert len(twice.OriginalAttributesSequence) == 1
    assert twice == once


def test_reconcile_keeps_the_existing_original_attributes_items_first():
    """PS3.3 C.12.1.1.9: earlier modifications stay recorded, in order; ours is appended after them."""
    dataset = read(file_bytes("MR_small.dcm"))
    earlier = Dataset()
    earlier.AttributeModificationDateTime = "20240105090000.000000+0000"
    earlier.ModifyingSystem = "PACS-A"
    earlier.SourceOfPreviousValues = "RIS"
    earlier.ReasonForTheAttributeModification = "CORRECT"
    previous = Dataset()
    previous.PatientName = "SAMPLES^COMPRESSED"
    earlier.ModifiedAttributesSequence = Sequence([previous])
    dataset.OriginalAttributesSequence = Sequence([earlier])
    source = encode(dataset)  # a real file that arrives with an Original Attributes Sequence

    target = io.BytesIO()
    reconcile_file(io.BytesIO(source), target, local_for(dataset), sender=SENDER, when=WHEN)

    result = read(target.getvalue())
    assert len(result.OriginalAttributesSequence) == 2
    assert result.OriginalAttributesSequence[0] == read(source).OriginalAttributesSequence[0]
    assert result.OriginalAttributesSequence[1].SourceOfPreviousValues == SENDER
    assert modified_item(result).PatientID == "4MR1"


def test_reconcile_keeps_the_nhs_number_in_other_patient_ids_beside_the_other_items():
    dataset = read(file_bytes("CT_small.dcm"))  # Other Patient IDs ABCD1234 and 1234ABCD
    result = reconcile(dataset, local_for(dataset, nhs_number="943 476 5919"), sender=SENDER, when=WHEN)

    items = result.OtherPatientIDsSequence
    assert [item.PatientID for item in items] == ["ABCD1234", "1234ABCD", NHS_NUMBER]
    assert (items[2].IssuerOfPatientID, items[2].TypeOfPatientID) == ("NHS", "TEXT")
    assert [item.PatientID for item in modified_item(result).OtherPatientIDsSequence] == ["ABCD1234", "1234ABCD"]


def test_reconcile_replaces_an_earlier_nhs_item_once_the_difference_is_confirmed():
    dataset = read(file_bytes("MR_small.dcm"))
    dataset.OtherPatientIDsSequence = Sequence([nhs_item(OTHER_NHS_NUMBER)])
    local = local_for(dataset, nhs_number=NHS_NUMBER)

    result = reconcile(dataset, local, sender=SENDER, when=WHEN, confirmed=differences(dataset, local))

    assert [(item.PatientID, item.IssuerOfPatientID) for item in result.OtherPatientIDsSequence] == [
        (NHS_NUMBER, "NHS")]
    assert modified_item(result).OtherPatientIDsSequence[0].PatientID == OTHER_NHS_NUMBER


def test_reconcile_moves_an_nhs_number_from_patient_id_to_other_patient_ids():
    """The sender's Patient ID was the NHS number; the local Patient ID replaces it, the NHS number stays."""
    dataset = read(file_bytes("MR_small.dcm"))
    dataset.PatientID = "943 476 5919"
    dataset.IssuerOfPatientID = "NHS"
    result = reconcile(dataset, local_for(dataset), sender=SENDER, when=WHEN)
    assert result.PatientID == "RHQ-000123"
    assert [(item.PatientID, item.IssuerOfPatientID) for item in result.OtherPatientIDsSequence] == [
        (NHS_NUMBER, "NHS")]
    assert modified_item(result).PatientID == "943 476 5919"
    assert modified_item(result).IssuerOfPatientID == "NHS"


def test_reconcile_removes_the_issuer_qualifiers_of_a_replaced_issuer_and_keeps_them_as_originals():
    dataset = read(file_bytes("MR_small.dcm"))
    dataset.IssuerOfPatientID = "RHH"
    qualifiers = Dataset()
    qualifiers.UniversalEntityID = "2.16.840.1.113883.2.1.3.2.4.18.48"
    qualifiers.UniversalEntityIDType = "ISO"
    dataset.IssuerOfPatientIDQualifiersSequence = Sequence([qualifiers])

    result = reconcile(dataset, local_for(dataset), sender=SENDER, when=WHEN)

    assert "IssuerOfPatientIDQualifiersSequence" not in result
    kept = modified_item(result).IssuerOfPatientIDQualifiersSequence[0]
    assert kept.UniversalEntityID == "2.16.840.1.113883.2.1.3.2.4.18.48"


def test_reconcile_leaves_the_input_dataset_as_it_was():
    """The received original is never changed: the import is a new object."""
    dataset = read(file_bytes("CT_small.dcm"))
    before = copy.deepcopy(dataset)
    before_bytes = encode(dataset)
    reconcile(dataset, local_for(dataset, nhs_number=NHS_NUMBER), sender=SENDER, when=WHEN)
    assert dataset == before
    assert encode(dataset) == before_bytes
    assert "OriginalAttributesSequence" not in dataset


def test_reconcile_refuses_unconfirmed_differences_and_names_them():
    """IRWF: a demographic mismatch stops the import for manual reconciliation."""
    dataset = read(file_bytes("MR_small.dcm"))
    local = local_for(dataset, patient_name="SMITH^JANE", sex="M")
    with pytest.raises(UnconfirmedDifferences) as raised:
        reconcile(dataset, local, sender=SENDER, when=WHEN)
    assert raised.value.differences == differences(dataset, local)
    assert "PatientName" in str(raised.value) and "PatientSex" in str(raised.value)
    assert isinstance(raised.value, ExchangeError)

    name_only = [d for d in differences(dataset, local) if d.attribute is Demographic.PATIENT_NAME]
    with pytest.raises(UnconfirmedDifferences) as raised:
        reconcile(dataset, local, sender=SENDER, when=WHEN, confirmed=name_only)
    assert [d.attribute for d in raised.value.differences] == [Demographic.PATIENT_SEX]


def test_confirmed_differences_take_the_local_demographics_and_keep_the_sender_s():
    dataset = read(file_bytes("MR_small.dcm"))  # CompressedSamples^MR1, F
    local = local_for(dataset, patient_name="SMITH^JANE", sex="M")
    result = reconcile(dataset, local, sender=SENDER, when=WHEN, confirmed=differences(dataset, local))
    assert (result.PatientName, result.PatientSex) == ("SMITH^JANE", "M")
    assert (modified_item(result).PatientName, modified_item(result).PatientSex) == ("CompressedSamples^MR1", "F")


def test_reconcile_records_the_reason_it_is_given():
    dataset = read(file_bytes("CT_small.dcm"))
    result = reconcile(dataset, local_for(dataset), sender=SENDER, when=WHEN, reason=ModificationReason.CORRECT)
    assert result.OriginalAttributesSequence[0].ReasonForTheAttributeModification == "CORRECT"


def test_reconcile_switches_to_utf8_when_the_character_set_cannot_hold_a_local_value():
    """PS3.5 6.1: chrFren.dcm is ISO_IR 100 (Latin-1), which has no 'ą'; the object becomes UTF-8 and
    the Latin-1 original, and the character set it was in, are kept."""
    dataset = read(file_bytes("chrFren.dcm"))  # Buc^Jérôme
    local = local_for(dataset, patient_name="Bąk^Jérôme")
    result = read(encode(reconcile(dataset, local, sender=SENDER, when=WHEN, confirmed=differences(dataset, local))))
    assert result.SpecificCharacterSet == "ISO_IR 192"
    assert result.PatientName == "Bąk^Jérôme"
    assert modified_item(result).SpecificCharacterSet == "ISO_IR 100"
    assert modified_item(result).PatientName == "Buc^Jérôme"


def test_reconcile_wants_an_aware_modification_time():
    dataset = read(file_bytes("CT_small.dcm"))
    with pytest.raises(ValueError, match="time zone"):
        reconcile(dataset, local_for(dataset), sender=SENDER, when=datetime(2025, 3, 1, 14, 30))


# -- invalid input: a clear error, nothing lost ---------------------------------------------------

def test_a_local_identity_with_an_invalid_nhs_number_cannot_be_made():
    with pytest.raises(InvalidNHSNumber) as raised:
        LocalIdentity(patient_id="RHQ-1", issuer_of_patient_id="RHQ", patient_name="SMITH^JANE",
                      birth_date="19700101", sex="F", nhs_number="943 476 5910")
    assert raised.value.problem is NHSNumberProblem.CHECK_DIGIT_MISMATCH


def test_a_local_identity_keeps_its_nhs_number_as_ten_digits():
    local = LocalIdentity(patient_id="RHQ-1", issuer_of_patient_id="RHQ", patient_name="SMITH^JANE",
                          birth_date="19700101", sex="f", nhs_number="943-476-5919")
    assert (local.nhs_number, local.sex) == (NHS_NUMBER, "F")


@pytest.mark.parametrize(("field", "value"), [
    ("birth_date", "1970-01-01"), ("birth_date", "19700230"), ("sex", "X"), ("patient_id", ""),
    ("patient_id", "A\\B"), ("accession_number", "A" * 17), ("issuer_of_patient_id", "I" * 65),
    ("patient_name", "A^B^C^D^E^F"),
])
def test_a_local_identity_refuses_values_a_dicom_object_cannot_hold(field, value):
    values = dict(patient_id="RHQ-1", issuer_of_patient_id="RHQ", patient_name="SMITH^JANE",
                  birth_date="19700101", sex="F")
    values[field] = value
    with pytest.raises(InvalidLocalIdentity) as raised:
        LocalIdentity(**values)
    assert raised.value.field == field


def test_an_invalid_nhs_number_received_in_patient_id_stops_reconcile_file_before_it_writes():
    """Issue 'The exchange', bad input: reconciling with an invalid NHS number gets a clear error
    and loses nothing: the number is not dropped, the target gets no byte, the source is as it was."""
    dataset = read(file_bytes("CT_small.dcm"))
    dataset.PatientID = "943 476 5910"
    dataset.IssuerOfPatientID = "NHS"
    source = encode(dataset)
    target = io.BytesIO()

    with pytest.raises(InvalidNHSNumber) as raised:
        reconcile_file(io.BytesIO(source), target, local_for(dataset), sender=SENDER, when=WHEN)

    assert "Patient ID (0010,0020)" in str(raised.value)
    assert target.getvalue() == b""
    assert read(source).PatientID == "943 476 5910"


def test_unconfirmed_differences_stop_reconcile_file_before_it_writes():
    data = file_bytes("MR_small.dcm")
    target = io.BytesIO()
    with pytest.raises(UnconfirmedDifferences):
        reconcile_file(io.BytesIO(data), target, local_for(read(data), sex="M"), sender=SENDER, when=WHEN)
    assert target.getvalue() == b""


# -- reconcile_file: the header re-encoded, Pixel Data copied as it is ----------------------------

@pytest.mark.parametrize("name", TRANSFER_SYNTAX_FILES)
def test_reconcile_file_keeps_the_transfer_syntax_and_the_pixel_data_bytes(name):
    """The import is a new object with the same transfer syntax; everything from the Pixel Data
    element to the end of the file is the received bytes, compressed fragments included."""
    source = file_bytes(name)
    target = io.BytesIO()
    reconcile_file(io.BytesIO(source), target, local_for(read(source), nhs_number=NHS_NUMBER),
                   sender=SENDER, when=WHEN)

    original, result = read(source), read(target.getvalue())
    assert result.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert result["PixelData"].value == original["PixelData"].value
    tail = source[pixel_data_offset(source):]
    assert target.getvalue().endswith(tail)
    assert pixel_data_offset(target.getvalue()) == len(target.getvalue()) - len(tail)
    assert result.PatientID == "RHQ-000123"
    assert [element.keyword for element in modified_item(result)] == [
        "AccessionNumber", "PatientID", "IssuerOfPatientID", "OtherPatientIDsSequence"]
    for keyword in UIDS:
        assert result[keyword].value == original[keyword].value


def test_reconcile_file_writes_a_deflated_object_deflated_with_the_same_pixel_data():
    """A deflated dataset is one compressed stream: it is re-encoded whole, Pixel Data not decoded."""
    source = file_bytes("image_dfl.dcm")
    target = io.BytesIO()
    reconcile_file(io.BytesIO(source), target, local_for(read(source)), sender=SENDER, when=WHEN)
    original, result = read(source), read(target.getvalue())
    assert result.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert result["PixelData"].value == original["PixelData"].value
    assert result.PatientID == "RHQ-000123"


def test_reconcile_file_rewrites_implicit_vr_data_labelled_explicit_as_its_label_says():
    """Some writers label Implicit VR data as Explicit VR Little Endian; pydicom reads what is there.
    An explicit header cannot be spliced onto implicit VR Pixel Data, so the whole object is written
    again, all of it in the transfer syntax its file meta names, the Pixel Data value unchanged."""
    dataset = read(file_bytes("MR_small.dcm"))  # Explicit VR Little Endian
    mislabelled = DicomBytesIO()
    mislabelled.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(mislabelled, dataset.file_meta, enforce_standard=True)
    mislabelled.is_implicit_VR, mislabelled.is_little_endian = True, True
    write_dataset(mislabelled, dataset)
    source = mislabelled.getvalue()
    target = io.BytesIO()

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Expected explicit VR, but found implicit VR")
        reconcile_file(io.BytesIO(source), target, local_for(dataset), sender=SENDER, when=WHEN)

    result = read(target.getvalue())
    assert result.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert not result.get_item("PixelData").is_implicit_VR
    assert result["PixelData"].value == dataset["PixelData"].value
    assert (result.PatientID, result.Rows) == ("RHQ-000123", dataset.Rows)


def test_reconcile_file_memory_does_not_grow_with_pixel_data(tmp_path):
    """DESIGN invariant 4: a 32 MiB object is reconciled in about the header plus one copy chunk."""
    dataset = read(file_bytes("CT_small.dcm"))
    frames = 1024
    dataset.NumberOfFrames = frames
    dataset.PixelData = bytes(dataset.Rows * dataset.Columns * 2 * frames)
    source_path, target_path = tmp_path / "received.dcm", tmp_path / "imported.dcm"
    dataset.save_as(source_path, enforce_file_format=True)
    local = local_for(dataset)
    del dataset

    tracemalloc.start()
    try:
        with open(source_path, "rb") as source, open(target_path, "wb") as target:
            reconcile_file(source, target, local, sender=SENDER, when=WHEN)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    size = source_path.stat().st_size
    assert size > 32 << 20
    assert peak < 4 << 20, f"peak {peak} bytes for a {size}-byte object"
    assert target_path.read_bytes().endswith(source_path.read_bytes()[pixel_data_offset(source_path.read_bytes()):])
