"""Metrics (PSNR, SSIM, SEG), on tiny synthetic data."""

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import xarray as xr
from skimage.metrics import structural_similarity

from sharpstack import metrics
from sharpstack.errors import InputError
from sharpstack.metrics import (fit_affine, normalize_percentile, psnr, psnr_normalized,
                                seg_score, ssim, ssim_normalized)

from ._physics import balls as _balls


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_public_names():
    assert set(metrics.__all__) == {"psnr", "normalize_percentile", "fit_affine",
                                    "psnr_normalized", "ssim", "ssim_normalized", "seg_score",
                                    "focus_measure", "piqe", "gradient_magnitude",
                                    "gradient_histogram", "mean_abs_gradient", "ssim_per_slice",
                                    "mlvae_score", "laplacian_difference", "texture_peak"}


# ---------------------------------------------------------------- PSNR

def test_psnr_identical_is_inf(rng):
    x = rng.random((16, 16))
    assert psnr(x, x.copy(), data_range=1.0) == math.inf


def test_psnr_constant_shift_exact(rng):
    x = rng.random((8, 20, 20)).astype(np.float32)
    shift = 0.05
    got = psnr(x.astype(np.float64), x.astype(np.float64) + shift, data_range=2.0)
    assert got == pytest.approx(10 * math.log10(2.0 ** 2 / shift ** 2), rel=1e-12)


def test_psnr_integers_not_rescaled():
    x = np.full((10, 10), 1000, np.uint16)
    # 12-bit data in uint16: a difference of 1 with range 4095, not 65535
    assert psnr(x, x + 1, data_range=4095) == pytest.approx(20 * math.log10(4095), rel=1e-12)


def test_psnr_bad_inputs(rng):
    x = rng.random((6, 6))
    with pytest.raises(TypeError):
        psnr(x, x)  # data_range is required
    with pytest.raises(InputError, match="data_range"):
        psnr(x, x, data_range=0)
    with pytest.raises(InputError, match="shape"):
        psnr(x, x[:5], data_range=1)
    y = x.copy()
    y[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        psnr(x, y, data_range=1)


def test_normalize_percentile_maps_percentiles(rng):
    x = rng.random((30, 30)) * 1000
    y = 5 + 3 * x
    n = normalize_percentile(y, 1, 99)
    assert n.dtype == np.float32
    assert np.percentile(n, 1) == pytest.approx(0, abs=1e-5)
    assert np.percentile(n, 99) == pytest.approx(1, abs=1e-5)
    # normalisation removes any affine change of the input
    np.testing.assert_allclose(n, normalize_percentile(x, 1, 99), atol=1e-5)
    c = normalize_percentile(y, 1, 99, clip=True)
    assert c.min() == 0 and c.max() == 1
    with pytest.raises(InputError, match="percentiles"):
        normalize_percentile(x, 0.99, 0.5)


def test_fit_affine_recovers_gain_offset(rng):
    x = rng.random((12, 13, 14))
    a, b = fit_affine(2.5 * x - 0.75, x)
    assert a == pytest.approx(2.5, rel=1e-12)
    assert b == pytest.approx(-0.75, rel=1e-12)
    # a constant prediction: best fit is the target mean
    t = rng.random((5, 5))
    assert fit_affine(t, np.ones((5, 5))) == pytest.approx((0.0, t.mean()))


def test_fit_affine_slabs_match_unsliced(rng, monkeypatch):
    t, p = rng.random((9, 7, 5)), rng.random((9, 7, 5))
    full = fit_affine(t, 3 * p + t)
    monkeypatch.setattr(metrics.arrays, "_SLAB_VOXELS", 17)
    assert fit_affine(t, 3 * p + t) == pytest.approx(full, rel=1e-12)


def test_psnr_normalized_undoes_affine(rng):
    x = rng.random((24, 24)) * 300 + 20
    assert psnr_normalized(x, 0.01 * x - 4) > 100
    noisy = x + rng.normal(0, 20, x.shape)
    base = psnr_normalized(x, noisy)
    assert base < 30
    # invariant to gain/offset of the prediction
    assert psnr_normalized(x, 7 * noisy + 1000) == pytest.approx(base, abs=1e-6)
    # and equal to plain PSNR of the normalised target vs the fitted prediction
    tn = normalize_percentile(x)
    a, b = fit_affine(tn, noisy)
    assert base == pytest.approx(psnr(tn, a * noisy + b, data_range=1.0), abs=1e-6)


# ---------------------------------------------------------------- SSIM

@pytest.mark.parametrize("shape,axes", [((40, 37), "YX"), ((14, 20, 23), "ZYX")])
def test_ssim_matches_skimage(rng, shape, axes):
    x = ndi.gaussian_filter(rng.random(shape), 1)
    y = x + 0.05 * rng.standard_normal(shape)
    ref = structural_similarity(x, y, data_range=1.0, gaussian_weights=True,
                                use_sample_covariance=False, sigma=1.5)
    assert ssim(x, y, data_range=1.0, axes=axes) == pytest.approx(ref, abs=1e-12)
    assert ssim(x, x, data_range=1.0, axes=axes) == pytest.approx(1.0, abs=1e-12)


def test_ssim_slabs_match_whole_volume(rng, monkeypatch):
    x = rng.random((30, 16, 18))
    y = x + 0.3 * rng.standard_normal(x.shape)
    whole = ssim(x, y, data_range=1.0, axes="ZYX")
    monkeypatch.setattr(metrics.arrays, "_SLAB_VOXELS", 16 * 18 * 3)  # 3 planes per slab
    assert ssim(x, y, data_range=1.0, axes="ZYX") == pytest.approx(whole, abs=1e-12)


def test_ssim_low_for_negative_and_noise(rng):
    x = ndi.gaussian_filter(rng.random((48, 48)), 2)
    x = (x - x.min()) / (x.max() - x.min())
    assert ssim(x, 1 - x, data_range=1.0) < 0
    assert ssim(x, rng.random(x.shape), data_range=1.0) < 0.3


def test_ssim_normalized_affine_is_one(rng):
    x = ndi.gaussian_filter(rng.random((16, 24, 24)), 1) * 500
    assert ssim_normalized(x, 3 * x + 10, axes="ZYX") == pytest.approx(1.0, abs=1e-5)
    assert ssim_normalized(x, x + rng.normal(0, 50, x.shape), axes="ZYX") < 0.9


def test_ssim_errors(rng):
    x = rng.random((8, 30))
    with pytest.raises(InputError, match="window"):
        ssim(x, x, data_range=1.0)
    with pytest.raises(InputError, match="dimensions"):
        ssim(rng.random((20, 20)), rng.random((20, 20)), data_range=1.0, axes="ZYX")
    da = xr.DataArray(rng.random((20, 20)), dims=("x", "y"))
    with pytest.raises(InputError, match="dims"):
        ssim(da, da, data_range=1.0, axes="YX")


# ---------------------------------------------------------------- SEG

def test_seg_identical_and_relabelled():
    gt = _balls((20, 30, 30), [(10, 8, 8, 5), (10, 20, 20, 6)])
    assert seg_score(gt, gt) == 1.0
    perm = np.array([0, 7, 3], np.int32)[gt]
    assert seg_score(gt, perm) == 1.0
    big = np.where(gt > 0, gt.astype(np.int64) * 10**12, 0)  # huge label values
    assert seg_score(gt, big) == 1.0


def test_seg_disjoint_is_zero():
    gt = np.zeros((10, 10), np.int32)
    pr = np.zeros((10, 10), np.int32)
    gt[:4] = 1
    pr[6:] = 1
    assert seg_score(gt, pr) == 0.0


def test_seg_partial_overlap_exact_iou():
    gt = np.zeros((1, 10, 10), np.int32)
    pr = np.zeros_like(gt)
    gt[0, 0:6, :] = 1            # 60 voxels
    pr[0, 2:8, :] = 4            # 60 voxels, overlap 40 (> 30)
    assert seg_score(gt, pr) == pytest.approx(40 / 80)


def test_seg_split_in_halves_scores_zero():
    gt = np.zeros((8, 8), np.int32)
    gt[2:6, :] = 1               # 32 voxels
    pr = np.zeros_like(gt)
    pr[2:6, :4] = 1              # exactly half: no match
    pr[2:6, 4:] = 2
    assert seg_score(gt, pr) == 0.0
    pr[2:6, 4] = 1               # now 20/32 > 50%
    assert seg_score(gt, pr) == pytest.approx(20 / 32)


def test_seg_mean_over_gt_and_extra_pred_ignored():
    gt = np.zeros((10, 20), np.int32)
    gt[:, :5] = 1
    gt[:, 10:15] = 2
    pr = np.zeros_like(gt)
    pr[:, :5] = 1                # perfect for object 1, object 2 missed
    pr[:, 17:] = 9               # a false positive: not penalised by SEG
    assert seg_score(gt, pr) == pytest.approx(0.5)


def test_seg_errors():
    gt = np.zeros((4, 4), np.int32)
    with pytest.raises(InputError, match="no objects"):
        seg_score(gt, gt)
    with pytest.raises(InputError, match="integer"):
        seg_score(gt.astype(float), gt)
    with pytest.raises(InputError, match="negative"):
        seg_score(gt - 1, gt)
    with pytest.raises(InputError, match="shape"):
        seg_score(gt, gt[:3])


def test_laplacian_difference_ignores_smooth_structure_and_scales_with_noise():
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float64)
    plane = 0.3 * xx + 0.2 * yy  # linear: the Laplacian difference is exactly zero
    r = metrics.laplacian_difference(plane)
    assert r.shape == (62, 62) and np.abs(r).max() < 1e-9
    noise = np.random.default_rng(0).normal(0, 0.5, (256, 256))
    sigma = np.sqrt(np.pi / 2) * np.abs(metrics.laplacian_difference(noise)).mean() / 6.0
    assert abs(sigma - 0.5) < 0.02
