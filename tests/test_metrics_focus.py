"""Focus and quality metrics of the ZSE-GAN paper, on cases with known answers."""

import numpy as np
import pytest
import scipy.ndimage as ndi

from sharpstack.errors import InputError
from sharpstack.metrics import focus_measure


# ---------------------------------------------------------------- FM (De & Masilamani 2013)

def test_fm_constant_image_is_one_component():
    # only the DC term is non-zero
    assert focus_measure(np.full((16, 32), 7.0)) == pytest.approx(1 / (16 * 32))


def test_fm_single_pixel_has_flat_spectrum():
    img = np.zeros((16, 16))
    img[3, 5] = 1.0
    assert focus_measure(img) == 1.0


def test_fm_cosine_has_three_components():
    # 1 + 0.5 cos: DC and the two conjugate peaks; every other bin is round-off
    x = np.arange(32)
    img = np.tile(1.0 + 0.5 * np.cos(2 * np.pi * 3 * x / 32), (16, 1))
    assert focus_measure(img) == pytest.approx(3 / (16 * 32))
    # a cosine of a thousandth of the DC's magnitude falls under the threshold
    weak = np.tile(1.0 + 1e-4 * np.cos(2 * np.pi * 3 * x / 32), (16, 1))
    assert focus_measure(weak) == pytest.approx(1 / (16 * 32))


def test_fm_scale_invariant_and_drops_with_blur():
    rng = np.random.default_rng(0)
    img = rng.random((64, 64)) + 1.0
    fm = focus_measure(img)
    assert focus_measure(img * 37.0) == pytest.approx(fm)
    blurred = [focus_measure(ndi.gaussian_filter(img, s, mode="wrap")) for s in (0.5, 1, 2, 4)]
    assert fm > blurred[0] > blurred[1] > blurred[2] > blurred[3]


def test_fm_stack_is_mean_of_planes():
    rng = np.random.default_rng(1)
    st = rng.random((3, 16, 16))
    assert focus_measure(st, axes="ZYX") == pytest.approx(
        np.mean([focus_measure(p) for p in st]))


def test_fm_bad_input():
    with pytest.raises(InputError, match="all zeros"):
        focus_measure(np.zeros((8, 8)))
    with pytest.raises(InputError, match="NaN"):
        focus_measure(np.full((8, 8), np.nan))
    with pytest.raises(InputError, match="dimensions"):
        focus_measure(np.ones((2, 8, 8)))
    with pytest.raises(InputError, match="threshold"):
        focus_measure(np.ones((8, 8)), threshold=2.0)
