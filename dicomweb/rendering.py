"""Rendering one frame for display (PS3.18 8.3.5, PS3.4 N.2 Pixel Transformation Sequence): the
stored values through the modality LUT, the window or VOI LUT and the polarity to 8-bit grey, or
colour to 8-bit RGB; then the viewport, and the encoding as JPEG, PNG or GIF."""

from __future__ import annotations

import io
from dataclasses import dataclass
from enum import Enum
from typing import BinaryIO

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, pixel_array

from dicomweb.transcode import TooLargeToDecode, require_decodable

# PS3.18 8.7.4: the rendered media types served, with Pillow's name for each format.
MEDIA_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}
DEFAULT_MEDIA_TYPE = "image/jpeg"  # PS3.18 8.7.4: the default rendered media type for images
DEFAULT_QUALITY = 90  # JPEG quality when the request names none (PS3.18 8.3.5.1.2 leaves it to us)
MAX_VIEWPORT = 4096  # pixels either way: one rendered image stays within ~50 MB of memory
GREY_LEVELS = 255.0  # the largest value of the 8-bit output

# Beyond group 0028 (the Image Pixel, Modality LUT, VOI LUT and Palette Color modules), an
# enhanced multi-frame object keeps a frame's rescale and window in its functional groups.
SHARED_FUNCTIONAL_GROUPS = 0x52009229
PER_FRAME_FUNCTIONAL_GROUPS = 0x52009230
# PS3.3 C.7.6.16.2.9 Pixel Value Transformation, C.7.6.16.2.10 Frame VOI LUT.
FRAME_MACROS = ("PixelValueTransformationSequence", "FrameVOILUTSequence")


class CannotRender(Exception):
    """The object has no frame this pipeline can turn into an image (no pixel data, a
    photometric interpretation it does not know, or data the decoders cannot read)."""


class RegionOutsideImage(ValueError):
    """A viewport's source region that has no pixel in common with the image."""


class WindowFunction(str, Enum):
    """PS3.3 C.11.2.1.3 VOI LUT Function."""

    LINEAR = "LINEAR"
    LINEAR_EXACT = "LINEAR_EXACT"
    SIGMOID = "SIGMOID"


@dataclass(frozen=True)
class Window:
    """A window (PS3.3 C.11.2.1.2): center and width in the modality LUT's output units."""

    center: float
    width: float
    function: WindowFunction = WindowFunction.LINEAR

    def __post_init__(self) -> None:
        # PS3.3 C.11.2.1.2.1: a LINEAR width is at least 1; C.11.2.1.3: the others above 0.
        linear = self.function is WindowFunction.LINEAR
        if not (np.isfinite(self.center) and np.isfinite(self.width)) \
                or (self.width < 1 if linear else self.width <= 0):
            raise ValueError(f"a {self.function.value} window needs a finite center and a width "
                             f"{'of at least 1' if linear else 'above 0'}")


@dataclass(frozen=True)
class Region:
    """The source region of a viewport (PS3.18 8.3.5.1.3): top-left corner and size in image
    pixels; a negative width or height flips the region; None runs to the image's edge."""

    x: int = 0
    y: int = 0
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class Viewport:
    """The size to scale the (region of the) image to, keeping its aspect ratio."""

    width: int
    height: int
    region: Region | None = None
    enlarge: bool = True  # False: a thumbnail's default size never scales a small image up

    def __post_init__(self) -> None:
        if not (0 < self.width <= MAX_VIEWPORT and 0 < self.height <= MAX_VIEWPORT):
            raise ValueError(f"a viewport is 1 to {MAX_VIEWPORT} pixels wide and high")


@dataclass(frozen=True)
class Rendering:
    """What a request asks for; hashable, so a rendered image can be cached under it."""

    media_type: str = DEFAULT_MEDIA_TYPE
    quality: int = DEFAULT_QUALITY
    window: Window | None = None
    viewport: Viewport | None = None


def render(source: BinaryIO, index: int, rendering: Rendering, deflated: bool = False) -> bytes:
    """Frame `index` (0-based) of the object in `source`, rendered and encoded."""
    dataset, frame = decode(source, index, deflated)
    image = Image.fromarray(display_values(dataset, frame, index, rendering.window))
    if rendering.viewport is not None:
        image = fitted(image, rendering.viewport)
    return encoded(image, rendering.media_type, rendering.quality)


def decode(source: BinaryIO, index: int, deflated: bool = False) -> tuple[Dataset, np.ndarray]:
    """The attributes rendering needs and frame `index`, decoded; YBR colour comes as RGB.
    Only the frame's bytes are read where pydicom can, so memory follows one frame."""
    try:
        require_decodable(pydicom.dcmread(source, stop_before_pixels=True), whole_object=False)
    except TooLargeToDecode as exc:
        raise CannotRender(str(exc)) from exc
    except Exception:
        pass  # what cannot be read here is reported by the decoding below
    source.seek(0)
    if not deflated:  # pixel_array reads files itself but does not inflate (PS3.5 A.5)
        try:
            dataset = Dataset()
            frame = pixel_array(source, index=index, ds_out=dataset,
                                specific_tags=[SHARED_FUNCTIONAL_GROUPS, PER_FRAME_FUNCTIONAL_GROUPS])
            return dataset, frame
        except Exception:
            # Reading the frame alone trips over some encodings (implicit VR labelled explicit,
            # for one): the whole object read as pydicom reads any file follows.
            source.seek(0)
    try:
        dataset = pydicom.dcmread(source)
        return dataset, pixel_array(dataset, index=index)
    except Exception as exc:  # the codecs raise whatever they like on data they cannot decode
        raise CannotRender(f"frame {index + 1} cannot be decoded: {exc}") from exc


def display_values(dataset: Dataset, frame: np.ndarray, index: int = 0, window: Window | None = None) -> np.ndarray:
    """8-bit display values of a decoded frame: grey (rows, columns) or RGB (rows, columns, 3)."""
    photometric = str(dataset.get("PhotometricInterpretation", "")).strip()
    try:
        if photometric in ("MONOCHROME1", "MONOCHROME2") and frame.ndim == 2:
            levels = grey_levels(frame_attributes(dataset, index), frame, window)
        elif photometric == "PALETTE COLOR":
            # PS3.3 C.7.6.3.1.5: the stored values index the palette, whose entries have the
            # third LUT Descriptor value's bits.
            levels = _scaled(apply_color_lut(frame, dataset),
                             int(dataset.RedPaletteColorLookupTableDescriptor[2]))
        elif frame.ndim == 3 and frame.shape[2] == 3:
            # RGB, or YBR_FULL / YBR_FULL_422 / YBR_ICT / YBR_RCT that decoding made RGB (PS3.3
            # C.7.6.3.1.2); planar configuration is undone by decoding too. No window applies.
            levels = _scaled(frame, int(dataset.get("BitsStored") or frame.dtype.itemsize * 8))
        else:
            raise CannotRender(f"photometric interpretation '{photometric}' is not rendered")
    except CannotRender:
        raise
    except Exception as exc:  # malformed LUTs and descriptors
        raise CannotRender(f"the frame's pixel transformation cannot be applied: {exc}") from exc
    return np.rint(np.clip(levels, 0.0, GREY_LEVELS)).astype(np.uint8)


def frame_attributes(dataset: Dataset, index: int) -> Dataset:
    """The dataset as one frame sees it: in an enhanced multi-frame object the frame's Pixel
    Value Transformation and Frame VOI LUT (per-frame first, else shared) stand at the top
    level, where the modality and VOI LUT functions look for them."""
    items = [_functional_group(dataset, macro, index) for macro in FRAME_MACROS]
    if not any(items):
        return dataset
    view = Dataset({element.tag: element for element in dataset})  # Dataset(dataset) would share its dict
    if hasattr(dataset, "file_meta"):
        view.file_meta = dataset.file_meta
    for item in filter(None, items):
        for element in item:
            view[element.tag] = element
    return view


def _functional_group(dataset: Dataset, macro: str, index: int) -> Dataset | None:
    """The item of `macro` that applies to frame `index` (PS3.3 C.7.6.16.1), if any."""
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence") or []
    shared = dataset.get("SharedFunctionalGroupsSequence") or []
    candidates = ([per_frame[index]] if index < len(per_frame) else []) + list(shared[:1])
    return next((groups[macro][0] for groups in candidates if groups.get(macro)), None)


def grey_levels(attributes: Dataset, frame: np.ndarray, window: Window | None) -> np.ndarray:
    """PS3.4 N.2.1: modality LUT, then the requested window, else the object's first window,
    else its VOI LUT, else the frame's own range; MONOCHROME1 is inverted (PS3.3 C.7.6.3.1.2)."""
    values = apply_modality_lut(frame, attributes)
    window = window or stored_window(attributes)
    if window is not None:
        levels = windowed(values, window)
    elif attributes.get("VOILUTSequence"):
        levels = _voi_lut_levels(values, attributes)
    else:
        levels = _stretched(values)
    if str(attributes.PhotometricInterpretation).strip() == "MONOCHROME1":
        levels = GREY_LEVELS - levels
    return levels


def stored_window(attributes: Dataset) -> Window | None:
    """The object's first Window Center and Width with its VOI LUT Function, if valid."""
    center, width = attributes.get("WindowCenter"), attributes.get("WindowWidth")
    if center in (None, "") or width in (None, ""):
        return None
    function = str(attributes.get("VOILUTFunction") or "LINEAR").strip().upper()
    try:
        return Window(float(_first(center)), float(_first(width)), WindowFunction(function))
    except (ValueError, TypeError):
        return None  # an unusable stored window: the VOI LUT or the frame's range follows


def windowed(values: np.ndarray, window: Window) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 (LINEAR), C.11.2.1.3.1 (SIGMOID), C.11.2.1.3.2 (LINEAR_EXACT), with
    output range 0 to 255."""
    x = values.astype(np.float64, copy=False)
    if window.function is WindowFunction.SIGMOID:
        with np.errstate(over="ignore"):
            return GREY_LEVELS / (1.0 + np.exp(-4.0 * (x - window.center) / window.width))
    if window.function is WindowFunction.LINEAR:
        center, width = window.center - 0.5, window.width - 1.0
    else:
        center, width = window.center, window.width
    if width == 0.0:  # LINEAR with width 1: a threshold at the center
        return np.where(x <= center, 0.0, GREY_LEVELS)
    # Clipping the line gives the piecewise definition: 0 at or below c - w/2, 255 above c + w/2.
    return np.clip(((x - center) / width + 0.5) * GREY_LEVELS, 0.0, GREY_LEVELS)


def _voi_lut_levels(values: np.ndarray, attributes: Dataset) -> np.ndarray:
    """PS3.3 C.11.2.1.1: the first VOI LUT, whose output spans the descriptor's bits."""
    if not np.issubdtype(values.dtype, np.integer):
        values = np.rint(values).astype(np.int64)  # a LUT is indexed by whole values
    bits = int(attributes.VOILUTSequence[0].LUTDescriptor[2])
    return _scaled(apply_voi(values, attributes, 0), bits)


def _stretched(values: np.ndarray) -> np.ndarray:
    """No window and no VOI LUT: the frame's own range spans the grey levels."""
    low, high = float(values.min()), float(values.max())
    if high == low:
        return np.zeros(values.shape)
    return (values.astype(np.float64) - low) * (GREY_LEVELS / (high - low))


def _scaled(values: np.ndarray, bits: int) -> np.ndarray:
    if bits == 8:
        return values
    return values.astype(np.float64) * (GREY_LEVELS / (2.0 ** bits - 1.0))


def _first(value):
    return value[0] if isinstance(value, (MultiValue, list, tuple)) else value


def fitted(image: Image.Image, viewport: Viewport) -> Image.Image:
    """PS3.18 8.3.5.1.3: the source region (flipped where its width or height is negative),
    scaled to fit the viewport with its aspect ratio kept; no padding is added."""
    region = viewport.region
    if region is not None:
        image = _cropped(image, region)
    scale = min(viewport.width / image.width, viewport.height / image.height)
    if not viewport.enlarge:
        scale = min(scale, 1.0)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if size == image.size:
        return image
    # reducing_gap: a large image is first reduced by whole factors, which costs little.
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _cropped(image: Image.Image, region: Region) -> Image.Image:
    width = image.width - region.x if region.width is None else abs(region.width)
    height = image.height - region.y if region.height is None else abs(region.height)
    left, top = max(region.x, 0), max(region.y, 0)
    right, bottom = min(region.x + width, image.width), min(region.y + height, image.height)
    if right <= left or bottom <= top:
        raise RegionOutsideImage(f"the viewport's source region lies outside the {image.width}x{image.height} image")
    image = image.crop((left, top, right, bottom))
    if region.width is not None and region.width < 0:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if region.height is not None and region.height < 0:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return image


def encoded(image: Image.Image, media_type: str, quality: int = DEFAULT_QUALITY) -> bytes:
    buffer = io.BytesIO()
    if MEDIA_TYPES[media_type] == "JPEG":
        image.save(buffer, "JPEG", quality=quality)
    elif MEDIA_TYPES[media_type] == "PNG":
        image.save(buffer, "PNG", compress_level=1)  # lossless either way; speed over size
    else:
        image.save(buffer, "GIF")  # RGB is reduced to an adaptive 256-colour palette
    return buffer.getvalue()
