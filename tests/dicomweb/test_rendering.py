"""The pixel pipeline's pure functions (dicomweb.rendering) on values whose display PS3.3
C.11.2.1.2-3 fixes exactly; test_rendered.py checks the whole pipeline on the real corpora."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from dicomweb.rendering import (
    Region,
    RegionOutsideImage,
    Viewport,
    Window,
    WindowFunction,
    fitted,
    grey_levels,
    stored_window,
    windowed,
)

LINEAR, LINEAR_EXACT, SIGMOID = WindowFunction.LINEAR, WindowFunction.LINEAR_EXACT, WindowFunction.SIGMOID


def test_linear_window_is_ps3_3_c_11_2_1_2_1():
    """c=40, w=400: 0 at or below c-0.5-(w-1)/2 = -160, 255 above c-0.5+(w-1)/2 = 239,
    ((x-(c-0.5))/(w-1)+0.5)*255 between."""
    x = np.array([-1000.0, -160.0, -159.0, 39.5, 239.0, 240.0])
    expected = [0, 0, ((-159 - 39.5) / 399 + 0.5) * 255, 127.5, 255, 255]
    assert np.allclose(windowed(x, Window(40, 400, LINEAR)), expected)


def test_linear_exact_window_is_ps3_3_c_11_2_1_3_2():
    x = np.array([-160.0, -159.0, 40.0, 240.0, 241.0])
    expected = [0, ((-159 - 40) / 400 + 0.5) * 255, 127.5, 255, 255]
    assert np.allclose(windowed(x, Window(40, 400, LINEAR_EXACT)), expected)


def test_sigmoid_window_is_ps3_3_c_11_2_1_3_1():
    x = np.array([-1e6, 40.0, 140.0])
    assert np.allclose(windowed(x, Window(40, 400, SIGMOID)), [0, 127.5, 255 / (1 + np.exp(-1))])


def test_a_linear_window_of_width_one_is_a_threshold():
    assert windowed(np.array([9.0, 9.5, 9.6, 10.0]), Window(10, 1, LINEAR)).tolist() == [0, 0, 255, 255]


@pytest.mark.parametrize(("width", "function"), [(0.5, LINEAR), (0, LINEAR_EXACT), (0, SIGMOID), (-1, SIGMOID)])
def test_a_window_too_narrow_for_its_function_is_refused(width, function):
    with pytest.raises(ValueError, match="width"):
        Window(0, width, function)


def image_attributes(photometric: str = "MONOCHROME2", **more) -> Dataset:
    dataset = Dataset()
    dataset.PhotometricInterpretation = photometric
    dataset.BitsStored, dataset.PixelRepresentation = 16, 1
    for keyword, value in more.items():
        setattr(dataset, keyword, value)
    return dataset


def test_rescale_then_stored_window_then_monochrome1_inversion():
    """PS3.4 N.2.1: modality LUT (-1000 + 2x), the object's window, MONOCHROME1 inverted."""
    attributes = image_attributes("MONOCHROME1", RescaleSlope=2, RescaleIntercept=-1000,
                                  WindowCenter=[0, 500], WindowWidth=[2001, 10], VOILUTFunction="LINEAR_EXACT")
    levels = grey_levels(attributes, np.array([[0, 500, 1000]]), None)  # -1000, 0, 1000 after rescale
    assert np.allclose(levels, [[255 - (x / 2001 + 0.5) * 255 for x in (-1000, 0, 1000)]])


def test_without_window_or_voi_lut_the_frame_range_is_stretched():
    assert grey_levels(image_attributes(), np.array([[10, 20, 30]]), None).tolist() == [[0, 127.5, 255]]
    assert grey_levels(image_attributes(), np.array([[7, 7]]), None).tolist() == [[0, 0]]


def test_an_unusable_stored_window_is_passed_over():
    assert stored_window(image_attributes(WindowCenter=40, WindowWidth=0)) is None
    assert stored_window(image_attributes(WindowCenter=40, WindowWidth=80, VOILUTFunction="CUBIC")) is None
    assert stored_window(image_attributes(WindowCenter=[40, 50], WindowWidth=[80, 90])) == Window(40, 80)


def test_viewport_fits_and_a_thumbnail_is_never_enlarged():
    image = Image.new("L", (200, 100))
    assert fitted(image, Viewport(50, 50)).size == (50, 25)
    assert fitted(image, Viewport(800, 800)).size == (800, 400)
    assert fitted(image, Viewport(800, 800, enlarge=False)).size == (200, 100)


def test_viewport_region_is_cropped_flipped_and_must_overlap_the_image():
    image = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4))
    region = fitted(image, Viewport(2, 2, Region(1, 1, -2, 2)))
    assert np.asarray(region).tolist() == [[6, 5], [10, 9]]
    with pytest.raises(RegionOutsideImage):
        fitted(image, Viewport(2, 2, Region(4, 0, 2, 2)))
    with pytest.raises(ValueError):
        Viewport(0, 10)
