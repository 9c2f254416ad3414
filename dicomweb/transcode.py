"""Transcoding on retrieve (PS3.18 8.7.3): an instance or a frame in a transfer syntax other
than the stored one. pydicom decodes (with the pylibjpeg and pyjpegls plugins) and encodes;
one object at a time, so memory follows the largest object, not the study."""

from __future__ import annotations

import copy
import functools
import io
import math
import os
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar

import anyio
import anyio.to_thread

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder, get_encoder
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import (
    JPEG2000,
    UID,
    AllTransferSyntaxes,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from dicomweb.part10 import SWAP_SIZES, pixel_swap_size, swap_bytes

# The lossy syntaxes keep the peak signal-to-noise ratio over the range of values an image
# uses (not the range Bits Stored allows, which may be far wider) at 45 dB or more. JPEG-LS
# Near-Lossless bounds each sample's error (its NEAR parameter) to range / 10^(45/20), so
# the bound is certain; OpenJPEG's rate allocation for JPEG 2000 is aimed at 50 dB, which
# leaves it above 45 dB on every image of the corpora (tests/dicomweb/test_transcoding.py).
LOSSY_PSNR_DB = 45.0
# What one request may decode (a few KB of JPEG 2000 can claim 65535 x 65535 x 3 x 16 bits):
# a frame up to 8192 x 8192 samples x 3 (beyond any CT, MR, CR or DX image; whole-slide images
# are tiled), a whole object up to 1 GiB decoded. Past that, the stored bytes are what is served.
MAX_DECODED_FRAME_BYTES = 8192 * 8192 * 3 * 2
MAX_DECODED_OBJECT_BYTES = 1 << 30
# Decoding and encoding hold a core each (OpenJPEG keeps the GIL): at most one per core at once,
# so they queue here instead of taking every thread of the pool that file reads and the index use.
DECODING = anyio.CapacityLimiter(max(2, os.cpu_count() or 2))
T = TypeVar("T")


async def decoding(function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` in a worker thread, one of at most DECODING's at once."""
    return await anyio.to_thread.run_sync(functools.partial(function, *args), limiter=DECODING)


class TooLargeToDecode(Exception):
    pass


def require_decodable(dataset: Dataset, whole_object: bool) -> None:
    """Refuse, before decoding, pixel data larger decoded than MAX_DECODED_*_BYTES (PS3.3
    C.7.6.3: Rows x Columns x Samples per Pixel x Bits Allocated, times Number of Frames)."""
    try:
        frame = (int(dataset.get("Rows") or 0) * int(dataset.get("Columns") or 0)
                 * int(dataset.get("SamplesPerPixel") or 1) * math.ceil(int(dataset.get("BitsAllocated") or 8) / 8))
        frames = int(dataset.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return  # the decoder reports malformed pixel module values itself
    if frame > MAX_DECODED_FRAME_BYTES:
        raise TooLargeToDecode(f"a frame is {frame} bytes decoded, more than the {MAX_DECODED_FRAME_BYTES} this "
                               "server decodes")
    if whole_object and frame * frames > MAX_DECODED_OBJECT_BYTES:
        raise TooLargeToDecode(f"the object is {frame * frames} bytes decoded, more than the "
                               f"{MAX_DECODED_OBJECT_BYTES} this server decodes at once; ask for its frames")
JPEG2000_PSNR_DB = 50.0


@dataclass(frozen=True)
class Encoding:
    """How this server writes one transfer syntax. A lossy one records itself in the
    instance, PS3.3 C.7.6.1.1.5: `method` is the Lossy Image Compression Method (0028,2114)."""

    syntax: UID
    library: str  # the encoder, as the conformance statement names it
    method: str = ""
    plugin: str = ""  # pydicom's encoding plugin to use; "" tries each installed one
    # The fewest rows and columns the encoder takes. OpenJPEG, as pylibjpeg-openjpeg runs it,
    # makes 6 wavelet resolutions, which need 2^5 = 32 pixels a side: smaller images are refused
    # with that reason before it runs, instead of with OpenJPEG's own error.
    min_side: int = 0
    # A lock the encoder runs under where its library is not safe on two threads at once.
    one_at_a_time: threading.Lock | None = None

    def running(self) -> AbstractContextManager:
        """Held while the encoder runs."""
        return self.one_at_a_time or nullcontext()

    @property
    def lossless(self) -> bool:
        return not self.method

    @property
    def native(self) -> bool:
        return not self.syntax.is_encapsulated

    def require_fits(self, described: dict) -> None:
        """Refuse, before the encoder runs, pixel data it is known not to take."""
        if min(int(described["rows"]), int(described["columns"])) < self.min_side:
            raise CannotEncode(_refusal(self.syntax, described, f"the encoder ({self.library}) needs at least "
                                                                f"{self.min_side} pixels a side"))

    def options_for(self, pixels: np.ndarray, bits_stored: int) -> tuple[dict[str, Any], bool]:
        """The encoder's options for `pixels`, and whether they lose information."""
        used = max(float(pixels.max()) - float(pixels.min()), 1.0)
        if self.syntax == JPEGLSNearLossless:
            near = min(int(used / 10 ** (LOSSY_PSNR_DB / 20)), 255)  # CharLS takes NEAR up to 255
            return {"jls_error": near}, near > 0
        if self.syntax == JPEG2000:
            # OpenJPEG measures PSNR over the full Bits Stored range: move the target by the difference.
            return {"j2k_psnr": [JPEG2000_PSNR_DB + 20 * math.log10((2 ** bits_stored - 1) / used)]}, True
        return {}, False


# pylibjpeg-openjpeg's encoder is not safe on two threads at once: concurrent encodes corrupt
# the heap and the server dies of a segmentation fault (reproduced in one process, 4 threads
# transcoding the corpora to JPEG 2000: a crash in every run; none with one thread). It holds
# the GIL while it runs, so encoding one at a time costs no parallelism.
OPENJPEG_ENCODER = threading.Lock()

ENCODINGS = {encoding.syntax: encoding for encoding in (
    Encoding(ExplicitVRLittleEndian, "pydicom"),
    Encoding(ImplicitVRLittleEndian, "pydicom"),
    Encoding(DeflatedExplicitVRLittleEndian, "pydicom (zlib)"),
    # pylibjpeg-rle: the same bytes as pydicom's own RLE encoder, an order of magnitude faster.
    Encoding(RLELossless, "pylibjpeg-rle", plugin="pylibjpeg"),
    Encoding(JPEG2000Lossless, "pylibjpeg-openjpeg (OpenJPEG)", min_side=32, one_at_a_time=OPENJPEG_ENCODER),
    Encoding(JPEGLSLossless, "pyjpegls (CharLS)"),
    Encoding(JPEG2000, "pylibjpeg-openjpeg (OpenJPEG)", "ISO_15444_1", min_side=32,
             one_at_a_time=OPENJPEG_ENCODER),
    Encoding(JPEGLSNearLossless, "pyjpegls (CharLS)", "ISO_14495_1"),
)}


def decodable_syntaxes() -> list[UID]:
    """The transfer syntaxes whose pixel data an installed pydicom decoder reads."""
    found = []
    for uid in AllTransferSyntaxes:
        try:
            if get_decoder(uid).is_available:
                found.append(UID(uid))
        except NotImplementedError:
            continue
    return found


# What this server can produce from any stored syntax it can decode.
TARGET_SYNTAXES = tuple(ENCODINGS)


class CannotTranscode(Exception):
    """The stored object cannot be decoded, or not written in any of the syntaxes asked for."""


class CannotEncode(CannotTranscode):
    """The object decodes, but none of the syntaxes asked for can hold it (or is encoded here)."""


def can_encode(syntax: str) -> bool:
    return syntax in ENCODINGS


def transcode(source: BinaryIO, targets: Sequence[str]) -> tuple[str, bytes]:
    """The object read from `source` in the first of `targets` it can be written in, and
    that syntax. The SOP Instance UID stays (PS3.18 8.7.3.5)."""
    try:
        dataset = pydicom.dcmread(source)
        require_decodable(dataset, whole_object=True)
        for _element in dataset.iterall():
            pass  # converts every raw element: implicit VR data labelled explicit gets its VRs here
        _decode(dataset)
    except Exception as exc:  # the codecs raise whatever they like on data they cannot decode
        raise CannotTranscode(f"the stored object cannot be decoded for transcoding: {exc}") from exc
    decoded = _Decoded(dataset)
    refusals = []
    for target in targets:
        if target not in ENCODINGS:
            refusals.append(f"this server cannot encode {_name(target)}")
            continue
        try:
            return target, _written(decoded, ENCODINGS[target])
        except CannotEncode as exc:
            refusals.append(str(exc))
    raise CannotEncode("; ".join(refusals))


class _Decoded:
    """A decoded dataset (native, little endian) and, once an encoder needs them, its pixels
    as an array: pydicom checks an array against what the target syntax can hold."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self._pixels: tuple[np.ndarray, dict] | None = None

    def pixels(self) -> tuple[np.ndarray, dict]:
        if self._pixels is None:
            try:
                self._pixels = get_decoder(ExplicitVRLittleEndian).as_array(self.dataset)
            except Exception as exc:  # badly formed pixel module values (PS3.3 C.7.6.3)
                raise CannotTranscode(f"the stored pixel data cannot be decoded: {exc}") from exc
        return self._pixels


# Stored syntaxes that are lossy whatever their parameters (PS3.5 A.4: JPEG baseline and
# extended, JPEG-LS near-lossless; JPEG 2000 and HTJ2K may be either, so they are not named),
# and the PS3.3 C.7.6.1.1.5.1 method of each: decoded, the object still says it was lossy.
LOSSY_METHODS = {"1.2.840.10008.1.2.4.50": "ISO_10918_1", "1.2.840.10008.1.2.4.51": "ISO_10918_1",
                 "1.2.840.10008.1.2.4.81": "ISO_14495_1"}


def _decode(dataset: Dataset) -> None:
    """Pixel Data decoded in place, native Explicit VR Little Endian (PS3.5 8.1)."""
    stored = UID(dataset.file_meta.TransferSyntaxUID)
    method = LOSSY_METHODS.get(stored)
    if method and not dataset.get("LossyImageCompression") and "PixelData" in dataset:
        # Many lossy objects do not say they are: once decoded, nothing else would tell (PS3.3
        # C.7.6.1.1.5). The ratio is the decoded size to the stored bytes.
        stored_bytes = len(dataset.PixelData) or 1
        decoded_bytes = get_expected_length(dataset, "bytes")
        _record_lossy(dataset, method, decoded_bytes / stored_bytes)
    if stored.is_compressed:
        # The same instance in another transfer syntax keeps its SOP Instance UID (PS3.18 8.7.3.5).
        dataset.decompress(generate_instance_uid=False)
    elif not stored.is_little_endian:
        _to_little_endian(dataset)
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def _written(decoded: _Decoded, encoding: Encoding) -> bytes:
    """The decoded object as a Part 10 file in `encoding`'s syntax."""
    dataset = decoded.dataset
    if not encoding.native and "PixelData" in dataset:
        dataset = _compressed(decoded, encoding)
    # Without Pixel Data an encapsulated syntax leaves the dataset as Explicit VR Little Endian (PS3.5 A.4).
    dataset.file_meta.TransferSyntaxUID = encoding.syntax
    buffer = io.BytesIO()
    try:
        dataset.save_as(buffer, enforce_file_format=True, implicit_vr=encoding.syntax == ImplicitVRLittleEndian,
                        little_endian=True)
    except Exception as exc:
        raise CannotEncode(f"{_name(encoding.syntax)} cannot be written: {exc}") from exc
    finally:
        decoded.dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return buffer.getvalue()


def _compressed(decoded: _Decoded, encoding: Encoding) -> Dataset:
    """A copy of the decoded dataset whose Pixel Data is encoded in `encoding` (PS3.5 8.2, A.4)."""
    pixels, described = decoded.pixels()
    # A dataset of its own with copies of the elements (only the pixel module and Pixel Data
    # change), so the decoded one stays as it is for the next syntax tried.
    dataset = Dataset({element.tag: copy.copy(element) for element in decoded.dataset})
    dataset.file_meta = copy.deepcopy(decoded.dataset.file_meta)
    # What the array holds: colour-by-pixel, in the colour space pydicom decoded it to.
    dataset.PhotometricInterpretation = str(described["photometric_interpretation"])
    if int(described["samples_per_pixel"]) > 1:
        dataset.PlanarConfiguration = 0
    encoding.require_fits(described)
    uncompressed = get_expected_length(dataset, unit="bytes")
    options, lossy = encoding.options_for(pixels, int(described["bits_stored"]))
    try:
        with encoding.running():
            dataset.compress(encoding.syntax, pixels, encoding_plugin=encoding.plugin, generate_instance_uid=False,
                             **options)
    except Exception as exc:  # pydicom refuses what PS3.5 8.2 does not allow, with the reason
        raise CannotEncode(_refusal(encoding.syntax, described, exc)) from exc
    if lossy:
        _record_lossy(dataset, encoding.method, uncompressed / len(dataset.PixelData))
    return dataset


def _record_lossy(dataset: Dataset, method: str, ratio: float) -> None:
    """PS3.3 C.7.6.1.1.5: a lossy compression is recorded, after any earlier one."""
    dataset.LossyImageCompression = "01"
    dataset.LossyImageCompressionRatio = [*_values(dataset, "LossyImageCompressionRatio"), f"{ratio:.2f}"]
    dataset.LossyImageCompressionMethod = [*_values(dataset, "LossyImageCompressionMethod"), method]


def _values(dataset: Dataset, keyword: str) -> list:
    value = dataset.get(keyword)
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, MultiValue) else [value]


def _refusal(syntax: str, pixels: dict, exc: Exception | str) -> str:
    reason = " ".join(line.strip() for line in str(exc).splitlines())
    return (f"{_name(syntax)} cannot hold this object's pixel data ({pixels.get('rows')}x{pixels.get('columns')}, "
            f"{pixels.get('samples_per_pixel')} sample(s) per pixel, {pixels.get('photometric_interpretation')}, "
            f"{pixels.get('bits_allocated')} bits allocated, {pixels.get('bits_stored')} stored): {reason}")


def _name(syntax: str) -> str:
    uid = UID(syntax)
    return f"{uid.name} ({uid})" if uid.is_transfer_syntax else syntax


def _to_little_endian(dataset: Dataset) -> None:
    """Re-encode the word-valued binary elements of a big endian dataset (PS3.5 7.3)."""
    for element in dataset.iterall():
        size = SWAP_SIZES.get(element.VR)
        if element.tag == 0x7FE00010:
            size = pixel_swap_size(element.VR, dataset.get("BitsAllocated"))
        if size and isinstance(element.value, bytes):
            element.value = swap_bytes(element.value, size)
    dataset.set_original_encoding(False, True, dataset.original_character_set)


def transcoded_frames(source: BinaryIO, indices: list[int], target: str) -> list[bytes]:
    """Frames `indices` (0-based) in `target`: native little endian pixel bytes for Explicit VR
    Little Endian (PS3.18 8.7.3.3.1), else that syntax's bitstream (PS3.18 8.7.3.3.2)."""
    encoding = ENCODINGS.get(UID(target))
    if target != ExplicitVRLittleEndian and (encoding is None or encoding.native):
        raise CannotEncode(f"this server cannot encode frames in {_name(target)}")
    try:
        # A Dataset, not the file: pydicom's frame reader does not inflate a deflated dataset (PS3.5 A.5).
        dataset = pydicom.dcmread(source)
        require_decodable(dataset, whole_object=False)
        decoder = get_decoder(dataset.file_meta.TransferSyntaxUID)
    except Exception as exc:
        raise CannotTranscode(f"the stored object cannot be decoded: {exc}") from exc
    found = []
    for index in indices:
        try:
            pixels, described = decoder.as_array(dataset, index=index)
        except Exception as exc:
            raise CannotTranscode(f"frame {index + 1} cannot be decoded: {exc}") from exc
        if encoding is None or encoding.native:
            found.append(np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes())
        else:
            found.append(_encoded_frame(pixels, described, encoding))
    return found


def _encoded_frame(pixels: np.ndarray, described: dict, encoding: Encoding) -> bytes:
    described = {**described, "number_of_frames": 1}
    if int(described["samples_per_pixel"]) > 1:
        described["planar_configuration"] = 0  # decoded arrays are colour-by-pixel
    encoding.require_fits(described)
    options, _lossy = encoding.options_for(pixels, int(described["bits_stored"]))
    try:
        with encoding.running():
            return get_encoder(encoding.syntax).encode(pixels, encoding_plugin=encoding.plugin, **described,
                                                       **options)
    except Exception as exc:
        raise CannotEncode(_refusal(encoding.syntax, described, exc)) from exc
