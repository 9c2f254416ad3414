"""Read a DICOM Part 10 object once, at store time, into what the index keeps: its DICOM JSON
(PS3.18 Annex F) with bulk data replaced by references, where each bulk value and each frame
lies in the stored bytes, and the identifying UIDs.

pydicom reads and encodes one CT header in ~5 ms; storing hundreds of instances a second on two
cores needs about a tenth of that, so this walks the encoded bytes directly. pydicom still
supplies the data dictionary and the character set decoding of PS3.5 6.1, and tests check the
JSON against pydicom's own `to_json_dict` for every file of the test corpora.
"""

from __future__ import annotations

import base64
import io
import math
import mmap
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import DicomDictionary, private_dictionary_VR
from pydicom.uid import UID

from dicomweb.file_view import FileView
from storage.direct_file import CACHED_HEAD

PREAMBLE_LENGTH = 128
UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIMITATION = 0xFFFEE00D
SEQUENCE_DELIMITATION = 0xFFFEE0DD
PIXEL_DATA_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)  # float, double float, pixel data
PIXEL_DATA = 0x7FE00010
SPECIFIC_CHARACTER_SET = 0x00080005
# A smaller file is read whole; a larger one is mapped, so that only the pages of its header
# are read (a CT image's header is a few KiB before half a MiB of Pixel Data). A spooled upload
# has only its first CACHED_HEAD bytes in the page cache; the rest went straight to the disk.
READ_WHOLE_BYTES = CACHED_HEAD

DEFLATED_EXPLICIT_LITTLE = "1.2.840.10008.1.2.1.99"
IMPLICIT_LITTLE = "1.2.840.10008.1.2"
EXPLICIT_BIG = "1.2.840.10008.1.2.2"

# PS3.5 7.1.2: explicit VRs with a 2-byte reserved field and a 4-byte length.
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
TEXT_VRS_WITH_CHARSET = frozenset({"SH", "LO", "UC", "ST", "LT", "UT", "PN"})
UNSPLIT_TEXT_VRS = frozenset({"ST", "LT", "UT", "UR"})
# Text VRs whose values are strings kept as written, bar padding (not PN, DS or IS, not unsplit).
PLAIN_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "SH", "TM", "UC", "UI"})
TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
                      "UR", "UT"})
DEFAULT_ENCODINGS = ["iso8859"]  # the default repertoire, read leniently as Latin-1 (as pydicom does)
CONTEXT_TAGS = frozenset({SPECIFIC_CHARACTER_SET, 0x00280103, 0x00280100, 0x7FE00001, 0x7FE00002})
NUMBER_FORMATS = {"FL": "f", "FD": "d", "SL": "l", "SS": "h", "UL": "L", "US": "H", "SV": "q", "UV": "Q"}
VR_NAMES = {name.encode("ascii"): name for name in (
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF", "OL", "OV", "OW",
    "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV")}
# Word size of each binary VR, for byte-swapping big endian bulk values (PS3.5 7.3).
SWAP_SIZES = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


class Part10Error(ValueError):
    """The bytes are not a DICOM Part 10 object this reader can understand."""


@dataclass(frozen=True)
class ValueLocation:
    """Where one encoded value lies: `offset` into the dataset bytes (the file itself, or the
    inflated dataset of a deflated object), `length` in bytes."""

    offset: int
    length: int
    vr: str = "OB"
    big_endian: bool = False


@dataclass
class ParsedInstance:
    transfer_syntax: str
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    dataset_json: dict[str, Any]
    bulk: dict[str, ValueLocation] = field(default_factory=dict)
    frames: list[list[ValueLocation]] = field(default_factory=list)
    encapsulated: bool = False
    # Where the dataset starts in the file: right after the file meta information. In a deflated
    # object the offsets of `bulk` and `frames` are into the inflated dataset, not the file.
    dataset_offset: int = 0

    def first(self, keyword_tag: str, default: Any = None) -> Any:
        """The first value of a top-level attribute, by 8-hex-digit tag."""
        element = self.dataset_json.get(keyword_tag)
        if not element:
            return default
        values = element.get("Value")
        return values[0] if values else default


BulkUriFor = Callable[[str], str]


def read_part10(source: str | BinaryIO, bulk_threshold: int, bulk_uri: BulkUriFor) -> ParsedInstance:
    """Parse a Part 10 file. Values of binary VRs longer than `bulk_threshold` (and all pixel
    data) become `{"BulkDataURI": bulk_uri(path)}`, where `path` names the value as
    `7FE00010` or `00540016/0/00181078` (sequence tag / item index / tag).

    A large object is mapped, not read; one in a file that cannot be mapped (an encrypted
    blob) is read through a FileView, a few blocks at a time."""
    handle = open(source, "rb") if isinstance(source, str) else source
    try:
        size = handle.seek(0, 2)
        handle.seek(0)
        if size < READ_WHOLE_BYTES:
            data: Any = handle.read()
        elif _has_file_descriptor(handle):
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        else:
            data = FileView(handle, size)
        try:
            return _parse(data, bulk_threshold, bulk_uri)
        finally:
            if isinstance(data, mmap.mmap):
                data.close()
    finally:
        if isinstance(source, str):
            handle.close()


def _has_file_descriptor(handle: BinaryIO) -> bool:
    try:
        handle.fileno()
    except (OSError, io.UnsupportedOperation):
        return False
    return True


def _unpacker(layout: struct.Struct, data: Any) -> Callable[[Any, int], tuple]:
    """`layout.unpack_from` for a buffer; a FileView is none, so unpack a slice of it instead."""
    if not isinstance(data, FileView):
        return layout.unpack_from
    size = layout.size
    return lambda view, offset: layout.unpack(view[offset:offset + size])


def _unpack_from_view(fmt: str, view: FileView, offset: int) -> tuple:
    """`struct.unpack_from` for a FileView."""
    return struct.unpack(fmt, view[offset:offset + struct.calcsize(fmt)])


def _parse(data: Any, bulk_threshold: int, bulk_uri: BulkUriFor) -> ParsedInstance:
    if len(data) < PREAMBLE_LENGTH + 4 or data[PREAMBLE_LENGTH : PREAMBLE_LENGTH + 4] != b"DICM":
        raise Part10Error("not a DICOM Part 10 file (no 'DICM' prefix after the 128-byte preamble)")
    meta_reader = _Reader(data, PREAMBLE_LENGTH + 4, explicit=True, little=True, bulk_threshold=1 << 30,
                          bulk_uri=bulk_uri)
    meta = meta_reader.read_dataset(end=len(data), stop_group=0x0002)
    transfer_syntax = _first(meta, "00020010")
    if not transfer_syntax:
        raise Part10Error("the file meta information has no Transfer Syntax UID (0002,0010)")
    dataset_offset = offset = meta_reader.position
    dataset = data
    if transfer_syntax == DEFLATED_EXPLICIT_LITTLE:
        dataset = inflate_dataset(data, dataset_offset)
        offset = 0
    uid = UID(transfer_syntax)
    if not uid.is_transfer_syntax and transfer_syntax != DEFLATED_EXPLICIT_LITTLE:
        raise UnknownTransferSyntax(transfer_syntax)
    explicit = transfer_syntax != IMPLICIT_LITTLE
    little = transfer_syntax != EXPLICIT_BIG
    if explicit and len(dataset) >= offset + 6 and not bytes(dataset[offset + 4 : offset + 6]).isalpha():
        # Some writers label implicit VR data as explicit; read what is there (as pydicom does).
        explicit = False
    reader = _Reader(dataset, offset, explicit=explicit, little=little, bulk_threshold=bulk_threshold,
                     bulk_uri=bulk_uri)
    body = reader.read_dataset(end=len(dataset))
    parsed = ParsedInstance(
        transfer_syntax=transfer_syntax,
        sop_class_uid=_first(body, "00080016") or _first(meta, "00020002") or "",
        sop_instance_uid=_first(body, "00080018") or _first(meta, "00020003") or "",
        study_uid=_first(body, "0020000D") or "",
        series_uid=_first(body, "0020000E") or "",
        dataset_json=body,
        bulk=reader.bulk,
        encapsulated=reader.encapsulated_fragments is not None,
        dataset_offset=dataset_offset,
    )
    parsed.frames = _frame_locations(reader, body)
    return parsed


def inflate_dataset(data: Any, dataset_offset: int) -> bytes:
    """The dataset of a Deflated Explicit VR Little Endian object: raw DEFLATE after the file
    meta information (PS3.5 A.5)."""
    try:
        return zlib.decompress(bytes(data[dataset_offset:]), -zlib.MAX_WBITS)
    except zlib.error as exc:
        raise Part10Error(f"the deflated dataset does not inflate: {exc}") from exc


class UnknownTransferSyntax(Part10Error):
    def __init__(self, uid: str):
        super().__init__(f"transfer syntax {uid} is not a DICOM transfer syntax this server can read")
        self.uid = uid


def _first(dataset: dict[str, Any], tag: str) -> Any:
    element = dataset.get(tag)
    if element and element.get("Value"):
        return element["Value"][0]
    return None


class _Reader:
    """Walks one encoded dataset; collects bulk value locations and the pixel data layout."""

    def __init__(self, data: Any, position: int, *, explicit: bool, little: bool, bulk_threshold: int,
                 bulk_uri: BulkUriFor):
        self.data = data
        self.position = position
        self.explicit = explicit
        self.little = little
        self.prefix = "<" if little else ">"
        self.unpack_tag = _unpacker(struct.Struct(self.prefix + "HH"), data)
        # An explicit VR element header with a 2-byte length, read in one call (PS3.5 7.1.2).
        self.unpack_explicit = _unpacker(struct.Struct(self.prefix + "HH2sH"), data)
        self.unpack_u16 = _unpacker(struct.Struct(self.prefix + "H"), data)
        self.unpack_u32 = _unpacker(struct.Struct(self.prefix + "L"), data)
        self.unpack_from = _unpack_from_view if isinstance(data, FileView) else struct.unpack_from
        self.bulk_threshold = bulk_threshold
        self.bulk_uri = bulk_uri
        self.bulk: dict[str, ValueLocation] = {}
        self.encapsulated_fragments: list[ValueLocation] | None = None
        self.basic_offsets: list[int] = []
        self.native_pixels: ValueLocation | None = None
        self.extended_offsets: tuple[list[int], list[int]] | None = None

    # -- elements -------------------------------------------------------------------------

    def read_dataset(self, end: int, stop_group: int | None = None, path: str = "",
                     charsets: list[str] | None = None) -> dict[str, Any]:
        was_explicit = self.explicit
        start = self.position
        if path and self.explicit and start + 6 <= end and not bytes(self.data[start + 4 : start + 6]).isalpha():
            self.explicit = False  # an item written in implicit VR inside explicit VR data
        try:
            return self._read_elements(end, stop_group, path, charsets)
        finally:
            self.explicit = was_explicit

    def _read_elements(self, end: int, stop_group: int | None, path: str,
                       charsets: list[str] | None) -> dict[str, Any]:
        data = self.data
        data_length = len(data)
        unpack_tag = self.unpack_tag
        unpack_explicit = self.unpack_explicit
        unpack_u16 = self.unpack_u16
        unpack_u32 = self.unpack_u32
        explicit = self.explicit
        out: dict[str, Any] = {}
        encodings = charsets or DEFAULT_ENCODINGS
        private_creators: dict[tuple[int, int], str] = {}
        pixel_representation = 0
        bits_allocated = 16
        position = self.position
        while position < end:
            start = position
            if start + 8 > end:
                raise Part10Error(f"truncated element header at byte {start}")
            if explicit:
                group, element, vr_code, length = unpack_explicit(data, start)
            else:
                group, element = unpack_tag(data, start)
            tag = (group << 16) | element
            if stop_group is not None and group != stop_group:
                break
            if tag == ITEM_DELIMITATION:
                self.position = start + 8
                return out
            if explicit and group != 0xFFFE:
                vr = VR_NAMES.get(vr_code)
                if vr is None:
                    raise Part10Error(f"invalid VR {bytes(vr_code)!r} of element ({group:04X},{element:04X})")
                if vr in LONG_VRS:
                    (length,) = unpack_u32(data, start + 8)
                    value_start = start + 12
                else:
                    value_start = start + 8
                if vr == "UN":
                    if group & 1 and 0x0010 <= element <= 0x00FF:
                        vr = "LO"  # PS3.5 7.8.1: private creators are LO
                    elif group & 1:  # PS3.5 6.2.2: a private VR known from its creator's dictionary
                        vr = _known_private_vr(tag, private_creators.get((group, element >> 8)))
                    elif tag in DicomDictionary:
                        known = DicomDictionary[tag][0]
                        if known != "UN" and " " not in known:
                            vr = known
            else:
                (length,) = unpack_u32(data, start + 4)
                value_start = start + 8
                vr = self._implicit_vr(tag, group, element, private_creators, pixel_representation,
                                       bits_allocated)
            key = f"{tag:08X}"
            if vr == "SQ" or (length == UNDEFINED_LENGTH and tag not in PIXEL_DATA_TAGS):
                self.position = value_start
                # PS3.5 6.2.2: a UN value of undefined length is a sequence in implicit VR LE.
                if vr == "UN" and length == UNDEFINED_LENGTH:
                    self.explicit = False
                try:
                    items = self._read_sequence(length, f"{path}/{key}" if path else key, encodings)
                finally:
                    self.explicit = explicit
                out[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
                position = self.position
                continue
            if tag in PIXEL_DATA_TAGS and not path:
                out[key] = self._read_pixel_data(tag, vr, length, value_start, key)
                position = self.position
                continue
            if length == UNDEFINED_LENGTH:
                raise Part10Error(f"undefined length on a non-sequence element {key}")
            position = value_start + length
            if position > data_length:
                raise Part10Error(f"element ({group:04X},{element:04X}) runs past the end of the data")
            if element == 0x0000 and group != 0x0002:
                continue  # group lengths are retired (PS3.5 7.2) and not part of DICOM JSON
            if group & 1 and 0x0010 <= element <= 0x00FF:
                creator = bytes(data[value_start:position]).rstrip(b" \x00").decode("latin-1")
                private_creators[(group, element)] = creator
            if tag in CONTEXT_TAGS:
                if tag == SPECIFIC_CHARACTER_SET:
                    terms = bytes(data[value_start:position]).decode("latin-1").split("\\")
                    encodings = convert_encodings([t.strip() for t in terms] or [""])
                elif tag == 0x00280103 and length == 2:
                    (pixel_representation,) = unpack_u16(data, value_start)
                elif tag == 0x00280100 and length == 2:
                    (bits_allocated,) = unpack_u16(data, value_start)
                elif tag == 0x7FE00001:
                    self.extended_offsets = (self._uints(value_start, length, 8), [])
                elif tag == 0x7FE00002 and self.extended_offsets is not None:
                    self.extended_offsets = (self.extended_offsets[0], self._uints(value_start, length, 8))
            if length == 0:
                out[key] = {"vr": vr}
            elif vr in TEXT_VRS:
                raw = data[value_start:position]
                if vr in TEXT_VRS_WITH_CHARSET and encodings is not DEFAULT_ENCODINGS:
                    text = _decode_text(bytes(raw), encodings, vr)
                else:
                    text = raw.decode("latin-1")
                out[key] = _text_element(vr, text)
            else:
                out[key] = self._value(vr, value_start, length, path, key)
        self.position = position
        return out

    def _implicit_vr(self, tag: int, group: int, element: int, creators: dict[tuple[int, int], str],
                     pixel_representation: int, bits_allocated: int) -> str:
        if group == 0xFFFE:
            return "NONE"
        entry = DicomDictionary.get(tag)
        if entry is None:
            if group & 1:
                if element <= 0x00FF:
                    return "LO" if element >= 0x0010 else "UN"
                creator = creators.get((group, element >> 8))
                if creator:
                    try:
                        return _resolve_ambiguous(private_dictionary_VR(tag, creator),
                                                  pixel_representation, bits_allocated)
                    except KeyError:
                        return "UN"
            # Repeating groups (50xx, 60xx) and unknown public tags.
            from pydicom.datadict import dictionary_VR

            try:
                return _resolve_ambiguous(dictionary_VR(tag), pixel_representation, bits_allocated)
            except KeyError:
                return "UN"
        return _resolve_ambiguous(entry[0], pixel_representation, bits_allocated)

    def _uints(self, start: int, length: int, size: int) -> list[int]:
        count = length // size
        fmt = self.prefix + ("Q" if size == 8 else "L") * count
        return list(self.unpack_from(fmt, self.data, start))

    def _read_sequence(self, length: int, path: str, encodings: list[str]) -> list[dict[str, Any]]:
        data = self.data
        end = len(data) if length == UNDEFINED_LENGTH else self.position + length
        items: list[dict[str, Any]] = []
        while self.position < end:
            group, element = self.unpack_tag(data, self.position)
            tag = (group << 16) | element
            (item_length,) = self.unpack_u32(data, self.position + 4)
            self.position += 8
            if tag == SEQUENCE_DELIMITATION:
                return items
            if tag != ITEM:
                raise Part10Error(f"expected an item in sequence {path}, found ({group:04X},{element:04X})")
            item_end = len(data) if item_length == UNDEFINED_LENGTH else self.position + item_length
            item_path = f"{path}/{len(items)}"
            items.append(self.read_dataset(item_end, path=item_path, charsets=list(encodings)))
        if length == UNDEFINED_LENGTH:
            raise Part10Error(f"sequence {path} has no sequence delimitation item")
        return items

    def _read_pixel_data(self, tag: int, vr: str, length: int, value_start: int, path: str) -> dict[str, Any]:
        data = self.data
        if vr in ("NONE", "UN") or (tag == PIXEL_DATA and not self.explicit):
            vr = "OW"  # PS3.5 A.1: native Pixel Data in Implicit VR Little Endian is OW
        if length != UNDEFINED_LENGTH:
            self.position = value_start + length
            if self.position > len(data):
                raise Part10Error("pixel data runs past the end of the file")
            location = ValueLocation(value_start, length, vr, big_endian=not self.little)
            self.native_pixels = location
            self.bulk[path] = location
            return {"vr": vr, "BulkDataURI": self.bulk_uri(path)}
        # Encapsulated (PS3.5 A.4): a Basic Offset Table item, then one item per fragment.
        position = value_start
        fragments: list[ValueLocation] = []
        first = True
        while True:
            if position + 8 > len(data):
                raise Part10Error("encapsulated pixel data has no sequence delimitation item")
            group, element = self.unpack_tag(data, position)
            (item_length,) = self.unpack_u32(data, position + 4)
            item_tag = (group << 16) | element
            position += 8
            if item_tag == SEQUENCE_DELIMITATION:
                break
            if item_tag != ITEM or position + item_length > len(data):
                raise Part10Error("malformed item in encapsulated pixel data")
            if first:
                self.basic_offsets = self._uints(position, item_length, 4)
                first = False
            else:
                fragments.append(ValueLocation(position, item_length, "OB"))
            position += item_length
        self.position = position
        self.encapsulated_fragments = fragments
        self.bulk[path] = ValueLocation(value_start, position - value_start, "OB")
        return {"vr": "OB", "BulkDataURI": self.bulk_uri(path)}

    # -- values ---------------------------------------------------------------------------

    def _value(self, vr: str, start: int, length: int, parent: str, key: str) -> dict[str, Any]:
        data = self.data
        if vr in BINARY_VRS:
            if length > self.bulk_threshold:
                path = f"{parent}/{key}" if parent else key
                self.bulk[path] = ValueLocation(start, length, vr, big_endian=not self.little)
                return {"vr": vr, "BulkDataURI": self.bulk_uri(path)}
            raw = bytes(data[start : start + length])
            if not self.little and vr in SWAP_SIZES:
                raw = swap_bytes(raw, SWAP_SIZES[vr])
            return {"vr": vr, "InlineBinary": base64.b64encode(raw).decode("ascii")}
        fmt = NUMBER_FORMATS.get(vr)
        if fmt is not None:
            size = struct.calcsize("<" + fmt)
            count = length // size
            values = list(self.unpack_from(f"{self.prefix}{count}{fmt}", data, start))
            return {"vr": vr, "Value": values}
        if vr == "AT":
            count = length // 4
            words = self.unpack_from(f"{self.prefix}{count * 2}H", data, start)
            return {"vr": vr, "Value": [f"{words[i]:04X}{words[i + 1]:04X}" for i in range(0, len(words), 2)]}
        # Any other VR: keep the bytes rather than guess (only reachable with unknown VRs).
        return {"vr": vr, "InlineBinary": base64.b64encode(bytes(data[start : start + length])).decode("ascii")}


def _known_private_vr(tag: int, creator: str | None) -> str:
    try:
        known = private_dictionary_VR(tag, creator) if creator else "UN"
    except KeyError:
        return "UN"
    return known if " " not in known else "UN"


def _resolve_ambiguous(vr: str, pixel_representation: int, bits_allocated: int) -> str:
    """PS3.5 Annex A: the VR of 'US or SS' and 'OB or OW' elements in implicit VR data."""
    if " or " not in vr:
        return vr
    if vr.startswith("US or SS"):
        return "SS" if pixel_representation == 1 else "US"
    if vr == "OB or OW":
        return "OW" if bits_allocated > 8 else "OB"
    if vr == "US or OW":
        return "US"
    return vr.split(" or ")[0]


def _decode_text(raw: bytes, encodings: list[str], vr: str) -> str:
    if encodings == ["iso8859"] or encodings == ["iso_ir_100"]:
        return raw.decode("latin-1")
    if encodings == ["UTF8"] or encodings == ["utf_8"]:
        return raw.decode("utf-8", "replace")
    delimiters = {ord("^"), ord("=")} if vr == "PN" else set()
    if vr not in UNSPLIT_TEXT_VRS:
        delimiters.add(ord("\\"))
    return decode_bytes(raw, encodings, delimiters)


def _text_element(vr: str, text: str) -> dict[str, Any]:
    # PS3.5 6.2: trailing spaces (and a trailing NUL in UIDs) are padding, not content.
    if vr in PLAIN_TEXT_VRS and "\\" not in text:  # the usual case: one value kept as written
        text = text.strip(" \x00")
        return {"vr": vr, "Value": [text]} if text else {"vr": vr}
    if vr in UNSPLIT_TEXT_VRS:
        text = text.rstrip(" \x00") if vr != "UR" else text.strip(" \x00")
        return {"vr": vr, "Value": [text]} if text else {"vr": vr}
    parts = text.split("\\")
    if vr == "PN":
        values = [_person_name(part) for part in parts]
    elif vr == "DS":
        values = [_decimal(part) for part in parts]
    elif vr == "IS":
        values = [_integer(part) for part in parts]
    else:
        values = [part.strip(" \x00") or None for part in parts]
    if all(value is None for value in values):
        return {"vr": vr}
    return {"vr": vr, "Value": values}


def _person_name(text: str) -> dict[str, str] | None:
    # PS3.18 F.2.2: alphabetic, ideographic and phonetic component groups, '=' separated.
    groups = text.rstrip(" \x00").split("=")
    name = {
        label: group
        for label, group in zip(("Alphabetic", "Ideographic", "Phonetic"), groups)
        if group
    }
    return name or None


def _decimal(text: str) -> float | int | str | None:
    text = text.strip(" \x00")
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):
        return text
    if number.is_integer() and "." not in text and "e" not in text and "E" not in text:
        return int(number)
    return number


def _integer(text: str) -> int | float | str | None:
    text = text.strip(" \x00")
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def pixel_swap_size(vr: str, bits_allocated: int | None) -> int:
    """The word size that makes big endian native Pixel Data little endian: the sample size when
    samples are wider than a byte (as pydicom reads them), else OW's 16-bit words (PS3.5 7.3)."""
    if bits_allocated and bits_allocated > 8:
        return bits_allocated // 8
    return SWAP_SIZES.get(vr, 1)


def swap_bytes(raw: bytes, size: int) -> bytes:
    """Reverse the byte order of each `size`-byte word (big endian bulk values, PS3.5 7.3)."""
    import numpy as np

    usable = len(raw) - len(raw) % size
    words = np.frombuffer(raw[:usable], dtype=f">u{size}").astype(f"<u{size}")
    return words.tobytes() + raw[usable:]


# -- frames ---------------------------------------------------------------------------------

FRAME_START_MARKERS = (b"\xff\xd8", b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  ")


def _frame_locations(reader: _Reader, body: dict[str, Any]) -> list[list[ValueLocation]]:
    """Each frame as the list of value ranges that hold it (PS3.5 A.4 for encapsulated data)."""
    number_of_frames = _as_int(_first(body, "00280008"), 1) or 1
    if reader.native_pixels is not None:
        pixels = reader.native_pixels
        rows = _as_int(_first(body, "00280010"), 0)
        columns = _as_int(_first(body, "00280011"), 0)
        samples = _as_int(_first(body, "00280002"), 1)
        if _first(body, "00280004") == "YBR_FULL_422":
            samples = 2  # PS3.3 C.7.6.3.1.2: two pixels share one Cb and one Cr sample
        bits = _as_int(_first(body, "00280100"), 16)
        frame_bits = rows * columns * samples * bits
        if frame_bits == 0 or frame_bits % 8:
            return [[pixels]] if number_of_frames == 1 else []
        size = frame_bits // 8
        return [
            [ValueLocation(pixels.offset + index * size, size, pixels.vr, pixels.big_endian)]
            for index in range(number_of_frames)
            if (index + 1) * size <= pixels.length
        ]
    fragments = reader.encapsulated_fragments
    if not fragments:
        return []
    if number_of_frames == 1:
        return [fragments]
    if len(fragments) == number_of_frames:
        return [[fragment] for fragment in fragments]
    if reader.extended_offsets and reader.extended_offsets[1]:
        first_item = fragments[0].offset - 8
        offsets, lengths = reader.extended_offsets
        return [[ValueLocation(first_item + 8 + offset, length)] for offset, length in zip(offsets, lengths)]
    if len(reader.basic_offsets) == number_of_frames:
        first_item = fragments[0].offset - 8
        starts = [first_item + offset for offset in reader.basic_offsets]
        frames: list[list[ValueLocation]] = [[] for _ in starts]
        for fragment in fragments:
            item_start = fragment.offset - 8
            index = max(i for i, start in enumerate(starts) if start <= item_start)
            frames[index].append(fragment)
        return frames
    # No offset table: a new frame starts where a fragment opens with a codestream marker.
    frames = []
    for fragment in fragments:
        head = bytes(reader.data[fragment.offset : fragment.offset + 12])
        if not frames or any(head.startswith(marker) for marker in FRAME_START_MARKERS):
            frames.append([fragment])
        else:
            frames[-1].append(fragment)
    return frames if len(frames) == number_of_frames else []


def _as_int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
