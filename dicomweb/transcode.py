"""Transcoding on retrieve (PS3.18 8.7.3): an instance or a frame in a transfer syntax other
than the stored one. Decoding uses pydicom with the pylibjpeg plugins; one object at a time,
so memory follows the largest object, not the study."""

from __future__ import annotations

import io
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomweb.part10 import SWAP_SIZES, pixel_swap_size, swap_bytes

# What this server can produce from any stored syntax it can decode.
TARGET_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


class CannotTranscode(Exception):
    pass


def can_produce(stored: str, requested: str) -> bool:
    return requested == stored or requested in TARGET_SYNTAXES


def transcode(source: BinaryIO, target: str) -> bytes:
    """The object read from `source`, re-encoded in `target` (an uncompressed syntax)."""
    if target not in TARGET_SYNTAXES:
        raise CannotTranscode(f"this server cannot encode transfer syntax {target}")
    try:
        dataset = pydicom.dcmread(source)
        for _element in dataset.iterall():
            pass  # converts every raw element: implicit VR data labelled explicit gets its VRs here
        stored = UID(dataset.file_meta.TransferSyntaxUID)
        if stored.is_compressed:
            # The same instance in another transfer syntax keeps its SOP Instance UID (PS3.18 8.7.3.5).
            dataset.decompress(generate_instance_uid=False)
        elif not stored.is_little_endian:
            _to_little_endian(dataset)
        dataset.file_meta.TransferSyntaxUID = UID(target)
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True, implicit_vr=target == ImplicitVRLittleEndian,
                        little_endian=True)
    except CannotTranscode:
        raise
    except Exception as exc:  # the codecs raise whatever they like on data they cannot decode
        raise CannotTranscode(f"the stored object cannot be decoded for transcoding: {exc}") from exc
    return buffer.getvalue()


def _to_little_endian(dataset: Dataset) -> None:
    """Re-encode the word-valued binary elements of a big endian dataset (PS3.5 7.3)."""
    for element in dataset.iterall():
        size = SWAP_SIZES.get(element.VR)
        if element.tag == 0x7FE00010:
            size = pixel_swap_size(element.VR, dataset.get("BitsAllocated"))
        if size and isinstance(element.value, bytes):
            element.value = swap_bytes(element.value, size)
    dataset.set_original_encoding(False, True, dataset.original_character_set)


def decode_frame(source: BinaryIO, index: int, deflated: bool = False) -> bytes:
    """Frame `index` (0-based) decoded to native little endian pixel bytes (PS3.5 8.2)."""
    try:
        # pixel_array reads files itself but does not inflate a deflated dataset (PS3.5 A.5).
        frame = pixel_array(pydicom.dcmread(source) if deflated else source, index=index)
    except Exception as exc:
        raise CannotTranscode(f"frame {index + 1} cannot be decoded: {exc}") from exc
    return np.ascontiguousarray(frame).astype(frame.dtype.newbyteorder("<"), copy=False).tobytes()
