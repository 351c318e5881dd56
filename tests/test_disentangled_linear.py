"""The least-squares linear filter baseline of the disentangled benchmarks."""

import numpy as np
import pytest
from scipy import ndimage

from sharpstack.errors import InputError
from sharpstack.methods.disentangled.linear_filter import (apply_linear_filter, fit_linear_filter,
                                                           fit_linear_filters)


def test_linear_filter_learns_identity_shift_and_deblurring():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 72))
    # the identity pair gives the delta filter, no offset
    c = fit_linear_filter([(x, x)], 5)
    k = c[:-1].reshape(5, 5)
    assert k[2, 2] == pytest.approx(1.0, abs=1e-3) and abs(c[-1]) < 1e-3
    assert np.abs(np.delete(k.ravel(), 12)).max() < 1e-3
    # a blurry image displaced by one pixel along x: the tap one pixel to the right undoes it
    k = fit_linear_filter([(np.roll(x, 1, axis=1), x)], 5)[:-1].reshape(5, 5)
    assert k[2, 3] == pytest.approx(1.0, abs=0.05) and k[2, 2] < 0.05

    # learned on one noisy blurred pair, the filter restores another image of the same kind
    def pair(seed):
        r = np.random.default_rng(seed)
        sharp = ndimage.gaussian_filter(r.random((96, 96)), 1.0)
        blurry = ndimage.gaussian_filter(sharp, 1.5) + 0.002 * r.normal(size=sharp.shape)
        return blurry, sharp

    coef = fit_linear_filter([pair(1)], 9)
    blurry, sharp = pair(2)
    mse_in = np.mean((blurry - sharp) ** 2)
    mse_out = np.mean((apply_linear_filter(blurry, coef) - sharp) ** 2)
    assert mse_out < 0.5 * mse_in
    assert apply_linear_filter(blurry, coef).dtype == np.float32
    # per group and all together from one pass: the same as fitting each on its own
    per, both = fit_linear_filters({"a": [pair(1)], "b": [pair(3)]}, 5)
    np.testing.assert_allclose(per["a"], fit_linear_filter([pair(1)], 5), atol=1e-8)
    np.testing.assert_allclose(both, fit_linear_filter([pair(1), pair(3)], 5), atol=1e-8)


def test_linear_filter_errors():
    x = np.zeros((20, 20))
    with pytest.raises(InputError, match="odd"):
        fit_linear_filter([(x, x)], 4)
    with pytest.raises(InputError, match="one shape"):
        fit_linear_filter([(x, x[:10])], 3)
    with pytest.raises(InputError, match="no image pairs"):
        fit_linear_filter([], 3)
    with pytest.raises(InputError, match="no image pairs"):
        fit_linear_filters({}, 3)
    with pytest.raises(InputError, match="taps and an offset"):
        apply_linear_filter(x, np.zeros(9))
