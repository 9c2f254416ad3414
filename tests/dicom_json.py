"""DICOM JSON (PS3.18 Annex F) as pydicom writes it, and the comparison of the server's JSON
with it. The server differs from pydicom's `to_json_dict` on purpose in these ways only, and
the comparison allows exactly these:

1. Group length elements (gggg,0000) are omitted: retired (PS3.5 7.2), not part of DICOM JSON.
2. An empty component of a multi-valued string is null, not "" (PS3.18 F.2.5), and padding
   spaces around each component are dropped (PS3.5 6.2: they are not significant).
3. Word-valued binary values (OW, OF, OL, OD, OV) of big endian objects are sent little endian,
   as InlineBinary and BulkData always are (PS3.18 F.2.7, 8.7.3.3.2); native Pixel Data by its
   sample size when wider than a byte (as pydicom decodes it).
4. An empty sequence has no "Value" (PS3.18 F.2.5: absent values are omitted).
5. Encapsulated Pixel Data is OB whatever VR the file wrote (PS3.5 A.4).
6. Binary values are inline or bulk by the server's own threshold; the bytes are compared.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import numpy as np
import pydicom

BIG_ENDIAN = "1.2.840.10008.1.2.2"
SWAP_SIZES = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
UNSPLIT_TEXT_VRS = {"ST", "LT", "UT", "UR"}
PIXEL_DATA = "7FE00010"
BITS_ALLOCATED = "00280100"
AVAILABLE_TRANSFER_SYNTAX = "00083002"  # added by the server (PS3.18 Table 10.4.1-1 metadata)

# Reads the bytes of one of the server's BulkDataURIs: (uri, element path) -> bytes.
BulkReader = Callable[[str, str], bytes]


def pydicom_json(dataset: pydicom.Dataset) -> dict[str, Any]:
    """pydicom's DICOM JSON of `dataset` with every binary value inline."""
    return dataset.to_json_dict(bulk_data_threshold=1 << 62, bulk_data_element_handler=None)


def swap(raw: bytes, size: int) -> bytes:
    usable = len(raw) - len(raw) % size
    return np.frombuffer(raw[:usable], dtype=f">u{size}").astype(f"<u{size}").tobytes() + raw[usable:]


def differences(ours: dict[str, Any], theirs: dict[str, Any], *, transfer_syntax: str, read_bulk: BulkReader,
                encapsulated: bool, path: str = "") -> list[str]:
    """Where the server's JSON `ours` differs from pydicom's `theirs`, beyond the allowed ways."""
    found = []
    theirs = {tag: element for tag, element in theirs.items() if not tag.endswith("0000")}  # 1.
    ours = {tag: element for tag, element in ours.items() if path or tag != AVAILABLE_TRANSFER_SYNTAX}
    for tag in sorted(set(ours) | set(theirs)):
        where = f"{path}{tag}"
        if tag not in ours or tag not in theirs:
            found.append(f"{where}: only in {'ours' if tag in ours else 'pydicom'}")
            continue
        mine, other = ours[tag], theirs[tag]
        vr, other_vr = mine["vr"], other["vr"]
        if tag == PIXEL_DATA and not path and encapsulated:
            if vr != "OB":  # 5.
                found.append(f"{where}: encapsulated Pixel Data has VR {vr}")
            continue
        if vr != other_vr:
            found.append(f"{where}: VR {vr} != {other_vr}")
            continue
        if vr == "SQ":
            items, other_items = mine.get("Value"), other.get("Value")
            if items == []:
                found.append(f"{where}: an empty sequence with an empty Value")  # 4.
            items, other_items = items or [], other_items or []
            if len(items) != len(other_items):
                found.append(f"{where}: {len(items)} items != {len(other_items)}")
                continue
            for index, (item, other_item) in enumerate(zip(items, other_items)):
                found += differences(item, other_item, transfer_syntax=transfer_syntax, read_bulk=read_bulk,
                                     encapsulated=encapsulated, path=f"{where}/{index}/")
            continue
        if vr in BINARY_VRS:
            size = SWAP_SIZES.get(vr, 1)
            if tag == PIXEL_DATA and not path:
                size = pixel_swap_size(vr, _first(theirs.get(BITS_ALLOCATED)))
            found += _binary_differences(where, mine, other, transfer_syntax, read_bulk, size)
            continue
        if _values(mine, vr) != _values(other, vr):
            found.append(f"{where}: {str(mine.get('Value'))[:120]} != {str(other.get('Value'))[:120]}")
    return found


def pixel_swap_size(vr: str, bits_allocated: int | None) -> int:
    """Word size of big endian native Pixel Data: the sample size if wider than a byte, else
    16-bit words for OW (PS3.5 7.3, 8-bit OW) and none for OB."""
    if bits_allocated and bits_allocated > 8:
        return bits_allocated // 8
    return SWAP_SIZES.get(vr, 1)


def _first(element: dict | None):
    values = (element or {}).get("Value") or [None]
    return values[0]


def _binary_differences(where: str, mine: dict, other: dict, transfer_syntax: str, read_bulk: BulkReader,
                        size: int) -> list[str]:
    if "BulkDataURI" in mine:
        data = read_bulk(mine["BulkDataURI"], where)
    else:
        data = base64.b64decode(mine.get("InlineBinary", ""))
    expected = base64.b64decode(other.get("InlineBinary", ""))
    if transfer_syntax == BIG_ENDIAN and size > 1:
        expected = swap(expected, size)  # 3.
    if data != expected:
        return [f"{where}: {len(data)} bytes differ from pydicom's {len(expected)}"]
    return []


def _values(element: dict, vr: str) -> list:
    values = element.get("Value") or []
    if vr in UNSPLIT_TEXT_VRS or vr == "PN":
        return values
    normalised = []
    for value in values:
        if isinstance(value, str):
            value = value.strip(" ") or None  # 2.
        normalised.append(value)
    if all(value is None for value in normalised):
        return []
    return normalised
