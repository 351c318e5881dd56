"""Focus and quality metrics of the ZSE-GAN paper, on cases with known answers."""

import numpy as np
import pytest
import scipy.ndimage as ndi

from sharpstack.errors import InputError
from sharpstack.metrics import (focus_measure, gradient_histogram, gradient_magnitude,
                                mean_abs_gradient, piqe, ssim, ssim_per_slice)


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


# ---------------------------------------------------------------- PIQE (Venkatanath et al. 2015)

def _piqe_matlab_literal(img255):
    """A literal transcription of MATLAB's piqe.m loops (1-based indices kept), as a check."""
    I = np.asarray(img255, dtype=np.float64)
    bs = 16
    r, c = I.shape
    I = np.pad(I, ((0, (bs - r % bs) % bs), (0, (bs - c % bs) % bs)), mode="edge")
    I = np.round(I)
    x = np.arange(-3, 4)
    g = np.exp(-x ** 2 / (2 * (7 / 6) ** 2))
    g2 = np.outer(g, g) / np.outer(g, g).sum()
    mu = ndi.correlate(I, g2, mode="nearest")
    sigma = np.sqrt(np.abs(ndi.correlate(I * I, g2, mode="nearest") - mu * mu))
    imnorm = (I - mu) / (sigma + 1)
    dist, nhsa = 0.0, 0
    for i in range(1, imnorm.shape[0] + 1, bs):
        for j in range(1, imnorm.shape[1] + 1, bs):
            B = imnorm[i - 1:i + bs - 1, j - 1:j + bs - 1]
            v = B.ravel().var(ddof=1)
            if v > 0.1:
                nhsa += 1
                impaired = 0
                edges = [B[0, :], B[:, bs - 1], B[bs - 1, :], B[:, 0]]
                for s in range(1, 12):
                    if any(e[s - 1:s + 5].std(ddof=1) < 0.1 for e in edges):
                        impaired = 1
                        break
                sig = np.sqrt(v)
                centre = np.concatenate([B[:, 7], B[:, 8]])
                rest = np.delete(np.delete(B, 7, axis=1), 8, axis=1)  # MATLAB's two deletions
                ratio = centre.std(ddof=1) / rest.ravel().std(ddof=1)
                beta = abs(sig - ratio) / max(sig, ratio)
                dist += impaired * (1 - v) + (sig > 2 * beta) * v
    return (dist + 1) / (nhsa + 1) * 100


def _texture(shape, seed=0, smooth=1.0):
    rng = np.random.default_rng(seed)
    t = ndi.gaussian_filter(rng.random(shape), smooth)
    return (t - t.min()) / (t.max() - t.min())


def test_piqe_uniform_image_scores_100():
    assert piqe(np.full((32, 32), 100.0), data_range=255) == 100.0


def test_piqe_matches_literal_transcription_of_the_reference():
    for seed, shape, smooth in ((0, (64, 64), 1.0), (1, (48, 80), 0.7), (2, (128, 29), 1.5)):
        img = 255 * _texture(shape, seed, smooth)
        assert piqe(img, data_range=255) == pytest.approx(_piqe_matlab_literal(img), abs=1e-9)


def test_piqe_pads_by_replicating_the_border():
    img = 255 * _texture((128, 29), 3)
    padded = np.pad(img, ((0, 0), (0, 3)), mode="edge")
    assert piqe(img, data_range=255) == pytest.approx(piqe(padded, data_range=255))
    # truncating to 16 columns instead would score something else
    assert piqe(img, data_range=255) != pytest.approx(piqe(img[:, :16], data_range=255))


def test_piqe_data_range_and_blur():
    img = _texture((96, 96), 4, 0.8)
    assert piqe(img, data_range=1.0) == pytest.approx(piqe(np.round(255 * img), data_range=255))
    sharp = piqe(img, data_range=1.0)
    blurred = piqe(ndi.gaussian_filter(img, 3.0), data_range=1.0)
    assert blurred > sharp


def test_piqe_bad_input():
    with pytest.raises(InputError, match="2D"):
        piqe(np.ones((2, 16, 16)), data_range=1.0)
    with pytest.raises(InputError, match="data_range"):
        piqe(np.ones((16, 16)), data_range=0)


# ---------------------------------------------------------------- gradients, per-slice SSIM

def test_gradient_of_a_ramp():
    ramp = np.tile(np.arange(20.0), (10, 1)) * 2.0  # rises by 2 per pixel along x
    mag = gradient_magnitude(ramp, data_range=40.0)
    np.testing.assert_allclose(mag, 2.0 / 40.0)
    assert mean_abs_gradient(ramp, data_range=40.0) == pytest.approx(0.05)
    diag = np.add.outer(np.arange(10.0) * 3, np.arange(10.0) * 4)  # 3 per row, 4 per column
    np.testing.assert_allclose(gradient_magnitude(diag, data_range=1.0), 5.0)
    assert mean_abs_gradient(np.full((8, 8), 3.0), data_range=1.0) == 0.0


def test_gradient_histogram():
    ramp = np.tile(np.arange(20.0), (10, 1)) * 0.015
    freq, edges = gradient_histogram(ramp, data_range=1.0, bins=10, max_gradient=0.1)
    assert freq.sum() == pytest.approx(1.0) and len(edges) == 11
    assert freq[1] == pytest.approx(1.0)  # 0.015 lies in [0.01, 0.02)
    steep = gradient_histogram(ramp * 100, data_range=1.0, bins=10, max_gradient=0.1)[0]
    assert steep[-1] == pytest.approx(1.0)  # magnitudes above the range go to the last bin


def test_ssim_per_slice():
    rng = np.random.default_rng(0)
    x = rng.random((3, 24, 24))
    y = x.copy()
    y[1] = ndi.gaussian_filter(x[1], 2)
    got = ssim_per_slice(x, y, data_range=1.0)
    assert got.shape == (3,)
    assert got[0] == pytest.approx(1.0) and got[2] == pytest.approx(1.0)
    assert got[1] == pytest.approx(ssim(x[1], y[1], data_range=1.0)) and got[1] < 0.9
    with pytest.raises(InputError):
        ssim_per_slice(x[0], y[0], data_range=1.0)


def test_public_names_of_the_zsegan_metrics():
    from sharpstack import metrics

    assert {"focus_measure", "piqe", "gradient_magnitude", "mean_abs_gradient",
            "gradient_histogram", "ssim_per_slice"} <= set(metrics.__all__)


def test_texture_peak_finds_an_oblique_texture_that_axis_spectra_miss():
    from scipy.ndimage import gaussian_filter

    from sharpstack.metrics import texture_peak

    rng = np.random.default_rng(0)
    scene = np.stack([gaussian_filter(rng.normal(size=(128, 128)), 3) for _ in range(4)])
    scene += 0.02 * rng.normal(size=scene.shape)  # a little pixel noise
    yy, xx = np.mgrid[:128, :128]
    fx, fy = 0.375, 0.109  # oblique, a 2.6-px period: what a GAN drew (README)
    stripes = 0.02 * np.cos(2 * np.pi * (fx * xx + fy * yy))
    clean, _, _ = texture_peak(scene)
    peak, px, py = texture_peak(scene + stripes)
    assert clean < 15 and peak > 20 * clean
    assert abs(abs(px) - fx) <= 1 / 128 and abs(abs(py) - fy) <= 1 / 128
    # the spectra along the axes alone (the mean over rows / columns) do not see it
    from sharpstack.methods.dqlr.realmeasures import grid_peak

    assert grid_peak(scene + stripes, 4) < 1.5
    with pytest.raises(ValueError, match="16x16"):
        texture_peak(np.zeros((8, 8)))
