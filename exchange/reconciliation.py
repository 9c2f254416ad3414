"""Import reconciliation (IHE RAD Import Reconciliation Workflow, IRWF): compare a received object's
demographics with the local patient's, and coerce its identifiers into the local identity domain,
keeping every original value in Original Attributes Sequence (PS3.3 C.12.1.1.9). A pure library:
datasets and streams in, datasets and streams out; transfers, blobs and audit are the caller's."""

from __future__ import annotations

import copy
import io
import re
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import BinaryIO, Protocol

import pydicom
from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian

from exchange.errors import ExchangeError
from exchange.nhs_number import NHS_NUMBER_OID, InvalidNHSNumber, parse_nhs_number

MODIFYING_SYSTEM = "OIX"  # Modifying System (0400,0563): what made the change
NHS_ISSUER = "NHS"  # Issuer of Patient ID of the NHS number item OIX writes
# How an object names the NHS as the issuer of a patient identifier (compared case-insensitively).
NHS_ISSUERS = frozenset({NHS_ISSUER, NHS_NUMBER_OID})
UTF_8 = "ISO_IR 192"
COPY_CHUNK = 1 << 20  # bytes of Pixel Data copied at a time by reconcile_file

# PS3.5 6.2: the longest value of each VR a local identifier is written into.
LO_MAX, SH_MAX, PN_GROUP_MAX = 64, 16, 64
SEXES = frozenset({"M", "F", "O"})  # PS3.3 C.7.1.1, Patient's Sex (0010,0040): Enumerated Values
CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")  # no control characters, and no '\' (the value delimiter)


class ModificationReason(StrEnum):
    """Reason for the Attribute Modification (0400,0565), PS3.3 C.12.1.1.9.2 Defined Terms."""

    COERCE = "COERCE"  # values replaced on import from another institution, or against a master patient index
    CORRECT = "CORRECT"  # incorrect values replaced (a wrong worklist item, an operator's error)


class Demographic(StrEnum):
    """What `differences` compares: DICOM keywords, except the NHS number, which an object holds in
    Patient ID or in an Other Patient IDs Sequence item, wherever its issuer names the NHS."""

    PATIENT_NAME = "PatientName"
    PATIENT_BIRTH_DATE = "PatientBirthDate"
    PATIENT_SEX = "PatientSex"
    NHS_NUMBER = "NHSNumber"


class ReconciliationError(ExchangeError):
    """Base of the failures of import reconciliation; nothing has been written when one is raised."""


class InvalidLocalIdentity(ReconciliationError, ValueError):
    """A local value that cannot be written into a DICOM object; `field` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class UnconfirmedDifferences(ReconciliationError):
    """The object's demographics disagree with the local patient's in ways nobody has confirmed:
    IRWF stops for manual reconciliation. `differences` is what a person must look at and confirm."""

    def __init__(self, differences: list[Difference]):
        listed = ", ".join(difference.attribute.value for difference in differences)
        super().__init__(f"the received object's demographics differ from the local patient's ({listed}); "
                         "confirm the differences to import it under the local identity")
        self.differences = differences


@dataclass(frozen=True, kw_only=True)
class LocalIdentity:
    """Who the object is about in the receiver's own identity domain (IRWF: the local demographics).
    The identifiers are written into the object; the demographics are compared with the object's,
    replace them once the differences are confirmed, and fill them in where the object has none.
    An empty demographic means the local record does not know it: it is neither compared nor
    written. `accession_number` None keeps the object's own; `nhs_number` is validated (modulus 11)
    and kept as its 10 digits. Values a DICOM object cannot hold raise InvalidLocalIdentity."""

    patient_id: str
    issuer_of_patient_id: str
    accession_number: str | None = None
    patient_name: str  # DICOM PN, e.g. "SMITH^JANE"
    birth_date: str  # YYYYMMDD
    sex: str  # M, F or O
    nhs_number: str | None = None

    def __post_init__(self) -> None:
        self._set("patient_id", _text_value("patient_id", self.patient_id, LO_MAX, required=True))
        self._set("issuer_of_patient_id",
                  _text_value("issuer_of_patient_id", self.issuer_of_patient_id, LO_MAX, required=True))
        if self.accession_number is not None:
            self._set("accession_number", _text_value("accession_number", self.accession_number, SH_MAX))
        self._set("patient_name", _person_name_value(self.patient_name))
        self._set("birth_date", _date_value(self.birth_date))
        sex = self.sex.strip().upper()
        if sex and sex not in SEXES:
            raise InvalidLocalIdentity("sex", f"is one of M, F or O (PS3.3 C.7.1.1), not {self.sex!r}")
        self._set("sex", sex)
        if self.nhs_number is not None:
            self._set("nhs_number", parse_nhs_number(self.nhs_number))

    def _set(self, field: str, value: str) -> None:
        object.__setattr__(self, field, value)


@dataclass(frozen=True)
class Difference:
    """One demographic on which the received object and the local patient disagree, as found."""

    attribute: Demographic
    incoming: str
    local: str


class ByteSink(Protocol):
    def write(self, data: bytes, /) -> object: ...


def differences(incoming: Dataset, local: LocalIdentity) -> list[Difference]:
    """Where the object's demographics disagree with the local patient's: names compared without
    regard to case, surrounding spaces or trailing empty components, dates by their digits, NHS
    numbers by their digits. An attribute that is empty (or absent) on either side is no difference:
    there is nothing to disagree with, and an empty incoming value simply takes the local one."""
    found = []
    name = _string(incoming, "PatientName")
    if _person_name_key(name) and local.patient_name and not _same_person_name(name, local.patient_name):
        found.append(Difference(Demographic.PATIENT_NAME, name, local.patient_name))
    birth_date = _string(incoming, "PatientBirthDate")
    if birth_date and local.birth_date and _digits(birth_date) != local.birth_date:
        found.append(Difference(Demographic.PATIENT_BIRTH_DATE, birth_date, local.birth_date))
    sex = _string(incoming, "PatientSex")
    if sex and local.sex and sex.strip().upper() != local.sex:
        found.append(Difference(Demographic.PATIENT_SEX, sex, local.sex))
    if local.nhs_number:
        for value in dict.fromkeys(_incoming_nhs_numbers(incoming)):
            if _without_separators(value) != local.nhs_number:
                found.append(Difference(Demographic.NHS_NUMBER, value, local.nhs_number))
    return found


def reconcile(dataset: Dataset, local: LocalIdentity, *, sender: str, when: datetime,
              confirmed: Collection[Difference] = (),
              reason: ModificationReason = ModificationReason.COERCE) -> Dataset:
    """`dataset` brought into the local identity domain, as a new dataset (`dataset` is left as it is).

    Patient ID and Issuer of Patient ID take the local values (Issuer of Patient ID Qualifiers
    Sequence goes when the issuer changes, since it describes the old one), and so does Accession
    Number when a local one is given (Issuer of Accession Number Sequence goes when it changes).
    The NHS number, the local one or else the one the object carried in Patient ID, is kept as the
    one NHS item of Other Patient IDs Sequence. The demographics take the local values wherever they
    differ or are empty. UIDs are never touched.

    Every attribute changed or removed has its original value, or an empty value where it was absent,
    in one new item appended to Original Attributes Sequence (0400,0561), after the items already
    there (PS3.3 C.12.1.1.9), with `when`, Modifying System "OIX", `sender` as Source of Previous
    Values and `reason`. Nothing changed, no item.

    Raises UnconfirmedDifferences unless every one of `differences(dataset, local)` is in `confirmed`,
    and InvalidNHSNumber when the NHS number to keep fails its check; both before anything changes."""
    modified_at = _date_time(when)
    if not sender.strip() or len(sender) > LO_MAX or CONTROL.search(sender):
        raise ValueError(f"the sender goes into Source of Previous Values (LO): 1 to {LO_MAX} characters, "
                         f"no control characters or backslash; not {sender!r}")
    unconfirmed = [found for found in differences(dataset, local) if found not in confirmed]
    if unconfirmed:
        raise UnconfirmedDifferences(unconfirmed)
    nhs_number = local.nhs_number or _nhs_number_in_patient_id(dataset)

    result = copy.deepcopy(dataset)
    change = _Change(result)
    change.ensure_encodable([local.patient_id, local.issuer_of_patient_id, local.accession_number or "",
                             local.patient_name, sender])
    if _string(result, "IssuerOfPatientID").strip() != local.issuer_of_patient_id:
        change.remove("IssuerOfPatientIDQualifiersSequence")
    change.set("PatientID", local.patient_id)
    change.set("IssuerOfPatientID", local.issuer_of_patient_id)
    if local.accession_number is not None and _string(result, "AccessionNumber").strip() != local.accession_number:
        change.remove("IssuerOfAccessionNumberSequence")
        change.set("AccessionNumber", local.accession_number)
    if nhs_number is not None:
        _keep_nhs_number(change, nhs_number)
    if local.patient_name and not _same_person_name(_string(result, "PatientName"), local.patient_name):
        change.set("PatientName", local.patient_name)
    if local.birth_date and _digits(_string(result, "PatientBirthDate")) != local.birth_date:
        change.set("PatientBirthDate", local.birth_date)
    if local.sex and _string(result, "PatientSex").strip().upper() != local.sex:
        change.set("PatientSex", local.sex)

    if change.originals:
        item = Dataset()
        item.AttributeModificationDateTime = modified_at
        item.ModifyingSystem = MODIFYING_SYSTEM
        item.SourceOfPreviousValues = sender
        item.ReasonForTheAttributeModification = reason.value
        item.ModifiedAttributesSequence = Sequence([change.originals])
        if "OriginalAttributesSequence" not in result:
            result.OriginalAttributesSequence = Sequence()
        result.OriginalAttributesSequence.append(item)
    return result


def reconcile_file(source: BinaryIO, target: ByteSink, local: LocalIdentity, *, sender: str, when: datetime,
                   confirmed: Collection[Difference] = (),
                   reason: ModificationReason = ModificationReason.COERCE) -> None:
    """Write the reconciled Part 10 object read from `source` (seekable, at the object's start) to
    `target`, in the same transfer syntax. Only the header is read into memory and re-encoded; Pixel
    Data and all that follows it are copied byte for byte, COPY_CHUNK at a time. A deflated object,
    whose bytes are one compressed stream, is read and written whole (its Pixel Data is not decoded).
    `target` sees its first byte only once `reconcile` has succeeded; see `reconcile` for the rest."""
    start = source.tell()
    header = pydicom.dcmread(source, stop_before_pixels=True)
    rest = source.tell()
    transfer_syntax = header.file_meta.TransferSyntaxUID
    stream_copy = (transfer_syntax != DeflatedExplicitVRLittleEndian
                   and _encoding_read(header) == (transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian))
    if not stream_copy:
        # The new header cannot be spliced onto the received bytes: a deflated dataset is one compressed
        # stream, and one encoded otherwise than its transfer syntax says is re-encoded as it says.
        # Read and write the whole object; the Pixel Data value bytes go through unchanged.
        source.seek(start)
        header = pydicom.dcmread(source)
        header.set_original_encoding(*_encoding_read(header), header.original_character_set)
    reconciled = reconcile(header, local, sender=sender, when=when, confirmed=confirmed, reason=reason)
    encoded = io.BytesIO()
    pydicom.dcmwrite(encoded, reconciled, enforce_file_format=True)
    target.write(encoded.getbuffer())
    if stream_copy:
        source.seek(rest)
        shutil.copyfileobj(source, target, COPY_CHUNK)  # type: ignore[arg-type]


def _encoding_read(dataset: Dataset) -> tuple[bool, bool]:
    """(implicit VR, little endian) as the top-level elements were actually read. pydicom reads
    implicit VR data labelled explicit VR as what it is, but records the label as the dataset's
    original encoding; each element not yet decoded still knows how it was read."""
    for tag in dataset.keys():
        element = dataset.get_item(tag)
        if isinstance(element, RawDataElement):
            return element.is_implicit_VR, element.is_little_endian
    return dataset.original_encoding  # type: ignore[return-value]


class _Change:
    """Changes to a dataset, each changed or removed attribute's original value kept in `originals`
    (the one item of Modified Attributes Sequence), the first time it changes."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.originals = Dataset()

    def set(self, keyword: str, value: str | Sequence) -> None:
        if isinstance(value, str) and keyword in self.dataset and _string(self.dataset, keyword).strip() == value:
            return
        self._keep(keyword)
        setattr(self.dataset, keyword, value)

    def remove(self, keyword: str) -> None:
        if keyword in self.dataset:
            self._keep(keyword)
            del self.dataset[keyword]

    def ensure_encodable(self, values: list[str]) -> None:
        """Switch the object to UTF-8 when its Specific Character Set cannot encode a new value
        (PS3.5 6.1). Every text value is decoded first, so that each is re-encoded, nested ones too."""
        character_set = self.dataset.get("SpecificCharacterSet")
        if all(_encodable(value, character_set) for value in values):
            return
        self.dataset.decode()
        self.set("SpecificCharacterSet", UTF_8)

    def _keep(self, keyword: str) -> None:
        tag = tag_for_keyword(keyword)
        if tag in self.originals:
            return
        if tag in self.dataset:
            self.originals[tag] = copy.deepcopy(self.dataset[tag])  # `[]` decodes a raw element first
        else:
            vr = dictionary_VR(tag)
            # Absent before: an empty value says so (there is no original value to restore).
            self.originals[tag] = DataElement(tag, vr, Sequence() if vr == "SQ" else None)


def _keep_nhs_number(change: _Change, nhs_number: str) -> None:
    """Make the NHS number the one NHS item of Other Patient IDs Sequence (0010,1002), other items kept."""
    existing = list(change.dataset.get("OtherPatientIDsSequence") or [])
    nhs_items = [item for item in existing if _names_nhs(item)]
    if len(nhs_items) == 1 and _is_nhs_item(nhs_items[0], nhs_number):
        return
    item = Dataset()
    item.PatientID = nhs_number
    item.IssuerOfPatientID = NHS_ISSUER
    item.TypeOfPatientID = "TEXT"
    others = [copy.deepcopy(other) for other in existing if not _names_nhs(other)]
    change.set("OtherPatientIDsSequence", Sequence([*others, item]))


def _is_nhs_item(item: Dataset, nhs_number: str) -> bool:
    return (set(item.keys()) == {tag_for_keyword(k) for k in ("PatientID", "IssuerOfPatientID", "TypeOfPatientID")}
            and _string(item, "PatientID").strip() == nhs_number
            and _string(item, "IssuerOfPatientID").strip() == NHS_ISSUER
            and _string(item, "TypeOfPatientID").strip() == "TEXT")


def _incoming_nhs_numbers(dataset: Dataset) -> list[str]:
    """The NHS numbers the object carries, as written: Patient ID where Issuer of Patient ID names
    the NHS, and each Other Patient IDs Sequence item whose issuer does."""
    found = []
    if _names_nhs(dataset):
        found.append(_string(dataset, "PatientID").strip())
    for item in dataset.get("OtherPatientIDsSequence") or []:
        if _names_nhs(item):
            found.append(_string(item, "PatientID").strip())
    return [value for value in found if value]


def _nhs_number_in_patient_id(dataset: Dataset) -> str | None:
    """The NHS number in Patient ID, about to be replaced by the local one, to keep in Other Patient
    IDs Sequence. It is checked like a local one: an invalid number stops the import, not vanishes."""
    if not _names_nhs(dataset):
        return None
    value = _string(dataset, "PatientID").strip()
    if not value:
        return None
    try:
        return parse_nhs_number(value)
    except InvalidNHSNumber as invalid:
        raise InvalidNHSNumber(value, invalid.problem,
                               f"the NHS number the sender put in Patient ID (0010,0020): {invalid}; "
                               "give the patient's NHS number with the local identity") from invalid


def _names_nhs(dataset: Dataset) -> bool:
    """Whether the issuer of the dataset's Patient ID is the NHS: by Issuer of Patient ID, or by the
    Universal Entity ID of Issuer of Patient ID Qualifiers Sequence (PS3.3 10.14)."""
    if _string(dataset, "IssuerOfPatientID").strip().upper() in NHS_ISSUERS:
        return True
    return any(_string(qualifiers, "UniversalEntityID").strip() == NHS_NUMBER_OID
               for qualifiers in dataset.get("IssuerOfPatientIDQualifiersSequence") or [])


def _same_person_name(first: str, second: str) -> bool:
    """PN values naming the same person: the alphabetic groups agree, and so do the ideographic and
    phonetic groups wherever both names have them (PS3.5 6.2.1)."""
    a, b = _person_name_key(first), _person_name_key(second)
    for index in range(max(len(a), len(b))):
        group_a = a[index] if index < len(a) else ()
        group_b = b[index] if index < len(b) else ()
        if (index == 0 or (group_a and group_b)) and group_a != group_b:
            return False
    return True


def _person_name_key(value: str) -> tuple[tuple[str, ...], ...]:
    """A PN value's component groups, each as its components without case, surrounding or repeated
    spaces and trailing empty components; trailing empty groups dropped."""
    groups = []
    for group in value.split("="):
        components = [" ".join(component.split()).casefold() for component in group.split("^")]
        while components and not components[-1]:
            components.pop()
        groups.append(tuple(components))
    while groups and not groups[-1]:
        groups.pop()
    return tuple(groups)


def _string(dataset: Dataset, keyword: str) -> str:
    """The value of a text attribute as a str ('' when absent or empty; values of VM > 1 joined by '\\')."""
    value = dataset[keyword].value if keyword in dataset else None
    if value is None:
        return ""
    if isinstance(value, (list, MultiValue)):
        return "\\".join(str(part) for part in value)
    return str(value)


def _digits(value: str) -> str:
    return "".join(character for character in value if character.isdigit())


def _without_separators(value: str) -> str:
    return value.strip().replace(" ", "").replace("-", "")


def _encodable(value: str, terms: str | MultiValue | None) -> bool:
    if value.isascii():
        return True
    if not terms or (not isinstance(terms, str) and len(terms) != 1):
        # The default repertoire is ASCII; code extensions (ISO 2022, several terms) are rewritten as
        # UTF-8 rather than reasoned about.
        return False
    try:
        value.encode(convert_encodings(terms)[0])
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _text_value(field: str, value: str, max_length: int, *, required: bool = False) -> str:
    value = value.strip()
    if required and not value:
        raise InvalidLocalIdentity(field, "is required")
    if len(value) > max_length:
        raise InvalidLocalIdentity(field, f"has at most {max_length} characters (PS3.5 6.2), not {len(value)}")
    if CONTROL.search(value):
        raise InvalidLocalIdentity(field, "cannot hold control characters or a backslash")
    return value


def _person_name_value(value: str) -> str:
    value = value.strip()
    if CONTROL.search(value):
        raise InvalidLocalIdentity("patient_name", "cannot hold control characters or a backslash")
    groups = value.split("=")
    if len(groups) > 3 or any(len(group.split("^")) > 5 for group in groups):
        raise InvalidLocalIdentity("patient_name", "is a DICOM person name: FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX, "
                                                   "at most three '='-separated groups (PS3.5 6.2.1)")
    if any(len(group) > PN_GROUP_MAX for group in groups):
        raise InvalidLocalIdentity("patient_name", f"has at most {PN_GROUP_MAX} characters per group (PS3.5 6.2)")
    return value


def _date_value(value: str) -> str:
    value = value.strip()
    if not value:
        return value
    try:
        if len(value) != 8 or not value.isdigit():
            raise ValueError(value)
        date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        raise InvalidLocalIdentity("birth_date", f"is a date as YYYYMMDD, not {value!r}") from None
    return value


def _date_time(when: datetime) -> str:
    """A DT value (PS3.5 6.2) with its UTC offset: a modification time without one is ambiguous."""
    if when.utcoffset() is None:
        raise ValueError("the modification time needs a time zone (an aware datetime)")
    return when.strftime("%Y%m%d%H%M%S.%f%z")
