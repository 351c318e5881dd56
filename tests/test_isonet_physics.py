"""IsoNet's physics: confocal and light-sheet PSFs, lateral kernels, blur, axial subsampling
and upsampling, training inputs (sharpstack.methods.isonet.optics/acquisition)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import fftconvolve

from sharpstack.degrade import add_noise
from sharpstack.errors import InputError
from sharpstack.methods.isonet import acquisition, optics
from sharpstack.methods.isonet.acquisition import (blur, degrade_lateral, form_image, subsample,
                                                   upsample_linear)
from sharpstack.methods.isonet.optics import (confocal_psf, isotropic_psf, lateral_kernel,
                                              lightsheet_psf, rotate_to_lateral)
from sharpstack.phantoms import nuclei
from sharpstack.psf import gaussian_psf

from ._physics import fwhm, moments


@pytest.fixture(scope="module")
def conf():
    return confocal_psf()


@pytest.fixture(scope="module")
def sheet():
    return lightsheet_psf()


# ----------------------------------------------------------------------------- PSFs
@pytest.mark.parametrize("name", ["conf", "sheet"])
def test_optical_psfs_normalised_symmetric_elongated(name, request):
    h = request.getfixturevalue(name)
    assert h.dtype == np.float32 and h.ndim == 3 and all(s % 2 == 1 for s in h.shape)
    assert abs(float(h.sum()) - 1) < 1e-5 and h.min() >= 0
    cz, cy, cx = (s // 2 for s in h.shape)
    assert np.unravel_index(np.argmax(h), h.shape) == (cz, cy, cx)
    # index-matched, point source in focus: symmetric in z, y, x
    np.testing.assert_allclose(h, h[::-1], atol=1e-4 * h.max())
    np.testing.assert_allclose(h, h[:, ::-1], atol=1e-4 * h.max())
    ax_fwhm = fwhm(h[:, cy, cx])
    lat_fwhm = fwhm(h[cz, cy, :])
    assert ax_fwhm > 2 * lat_fwhm
    var = moments(h)[1]
    assert var[0] > 2 * var[1] and var[0] > 2 * var[2]


def test_confocal_narrower_than_its_widefield_factor(conf):
    # the product ex*em is narrower laterally than a widefield PSF of the same NA
    lat = fwhm(conf[conf.shape[0] // 2, conf.shape[1] // 2, :]) * 0.1  # um
    wide_lat = 0.51 * 0.52 / 1.1  # Airy-disc FWHM of the emission PSF
    assert 0.5 * wide_lat < lat < wide_lat


def test_lightsheet_sheet_narrows_axial_profile():
    wide = lightsheet_psf(na_illum=0.01)   # sheet much thicker than the detection PSF
    thin = lightsheet_psf(na_illum=0.3, shape=wide.shape)
    c = [s // 2 for s in wide.shape]
    assert fwhm(thin[:, c[1], c[2]]) < 0.8 * fwhm(wide[:, c[1], c[2]])


def test_optics_errors():
    with pytest.raises(InputError, match="n_immersion"):
        confocal_psf(na=1.4, n_immersion=1.33)


def test_isotropic_psf_of_gaussian_is_lateral_gaussian():
    h = gaussian_psf(2.0, 8.0)
    iso = isotropic_psf(h)
    assert iso.shape == (17, 17, 17) and iso.dtype == np.float32
    np.testing.assert_allclose(iso, gaussian_psf(2.0, 2.0), atol=1e-6)


def test_isotropic_psf_optical_matches_lateral_width(conf):
    iso = isotropic_psf(conf)
    var = moments(iso)[1]
    np.testing.assert_allclose(var, var[0], rtol=1e-3)  # isotropic
    c = conf.shape[0] // 2
    lat = fwhm(conf[c, conf.shape[1] // 2, :])
    for ax_prof in (iso[:, 6, 6], iso[6, :, 6], iso[6, 6, :]):
        assert abs(fwhm(ax_prof) - lat) < 0.05 * lat


def test_rotate_to_lateral_moves_long_axis():
    h = gaussian_psf(1.0, 4.0, shape=(33, 9, 11))
    hy = rotate_to_lateral(h, "y")
    assert hy.shape == (9, 33, 11)
    assert np.argmax(moments(hy)[1]) == 1
    np.testing.assert_array_equal(hy[:, :, 5], h[:, :, 5].T)
    hx = rotate_to_lateral(h, "x")
    assert hx.shape == (11, 9, 33)
    assert np.argmax(moments(hx)[1]) == 2
    # no flip: an asymmetric (in z) PSF keeps the sign of its z offset along y
    a = np.zeros((5, 3, 3), np.float32)
    a[4, 1, 1] = 1  # at z offset +2
    assert np.unravel_index(np.argmax(rotate_to_lateral(a, "y")), (3, 5, 3)) == (1, 4, 1)
    with pytest.raises(InputError, match="axis"):
        rotate_to_lateral(h, "z")


def test_lateral_kernel_full_gaussian():
    h = gaussian_psf(2.0, 8.0)
    k = lateral_kernel(h, "full")
    assert k.shape == (65, 17) and abs(float(k.sum()) - 1) < 1e-5
    np.testing.assert_allclose(moments(k)[1], [64, 4], rtol=0.01)
    kx = lateral_kernel(h, "full", axis="x")
    assert kx.shape == (17, 65)
    np.testing.assert_allclose(kx, k.T, atol=1e-7)


def test_lateral_kernel_split_gaussian_moments():
    h = gaussian_psf(2.0, 8.0)
    k = lateral_kernel(h, "split")
    assert k.dtype == np.float32 and k.min() >= 0 and abs(float(k.sum()) - 1) < 1e-5
    means, var = moments(k)
    np.testing.assert_allclose(means, 0, atol=1e-4)
    assert abs(var[0] - 60) < 0.02 * 60      # sqrt(8^2 - 2^2)^2 along y
    assert var[1] < 0.1                      # ~ delta across (x)
    # h_split (x) h_iso reproduces the axial (zx) slice of h
    iso2d = isotropic_psf(h).sum(axis=0)
    rec = fftconvolve(k, iso2d, mode="same")
    zx = h[:, h.shape[1] // 2, :]
    zx = zx / zx.sum()
    assert np.abs(rec - zx).max() < 0.02 * zx.max()


def test_lateral_kernel_gaussian_shortcut():
    split = lateral_kernel((2.0, 8.0), "split")
    assert split.shape[1] == 1
    np.testing.assert_allclose(moments(split)[1], [60, 0], atol=0.1)
    full = lateral_kernel((2.0, 8.0), "full", axis="x")
    np.testing.assert_allclose(moments(full)[1], [4, 64], rtol=0.01)
    # closed form agrees with the numerical split of the sampled PSF (y profiles)
    num = lateral_kernel(gaussian_psf(2.0, 8.0), "split").sum(axis=1)
    cf = split[:, 0]
    off = (len(num) - len(cf)) // 2
    np.testing.assert_allclose(num[off:off + len(cf)], cf, atol=0.003 * cf.max())
    with pytest.raises(InputError, match="sigma_z >= sigma_xy"):
        lateral_kernel((3.0, 2.0), "split")
    with pytest.raises(InputError, match="mode"):
        lateral_kernel((2.0, 8.0), "half")


@pytest.mark.parametrize("name", ["conf", "sheet"])
def test_lateral_kernel_split_optical_is_narrower_than_full(name, request):
    h = request.getfixturevalue(name)
    full, split = lateral_kernel(h, "full"), lateral_kernel(h, "split", n_iter=200)
    assert split.min() >= 0 and abs(float(split.sum()) - 1) < 1e-5
    vf, vs = moments(full)[1], moments(split)[1]
    assert vs[0] < vf[0] and vs[1] < vf[1]
    assert vs[0] > 2 * vs[1]   # still elongated along y (the rotated optical axis)


# ----------------------------------------------------------------------------- acquisition
def test_upsample_linear_exact_convention():
    f = 4
    x = np.arange(7, dtype=np.float32)
    y = 5 + 3 * x
    up = upsample_linear(y, f)
    assert up.dtype == np.float32 and up.shape == (7 * f,)
    np.testing.assert_array_equal(up[::f], y)                 # output[k f] == input[k]
    i = np.arange(7 * f)
    expected = 5 + 3 * np.minimum(i / f, 6)                   # linear, then clamped
    np.testing.assert_allclose(up, expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(up[-f:], np.full(f, y[-1]))


def test_upsample_linear_along_axis_nd():
    rng = np.random.default_rng(0)
    a = rng.random((3, 5, 4)).astype(np.float32)
    up = upsample_linear(a, 3, axis=1)
    assert up.shape == (3, 15, 4)
    np.testing.assert_array_equal(up[:, ::3], a)
    np.testing.assert_allclose(up[:, 1], a[:, 0] * 2 / 3 + a[:, 1] / 3, atol=1e-6)
    np.testing.assert_array_equal(up[:, 13], a[:, 4])
    np.testing.assert_array_equal(upsample_linear(a, 1, axis=2), a)
    with pytest.raises(InputError, match="factor"):
        upsample_linear(a, 0)


def test_subsample_upsample_shapes():
    v = np.arange(10 * 3 * 2, dtype=np.float32).reshape(10, 3, 2)
    s = subsample(v, 4)
    assert s.shape == (3, 3, 2)
    np.testing.assert_array_equal(s, v[[0, 4, 8]])
    assert subsample(v, 2, axis=1).shape == (10, 2, 2)
    assert upsample_linear(s, 4).shape == (12, 3, 2)


def test_blur_delta_gives_psf_and_keeps_constants():
    h = gaussian_psf(1.0, 2.0)
    v = np.zeros((21, 15, 15), np.float32)
    v[10, 7, 7] = 1
    out = blur(v, h)
    assert out.shape == v.shape and out.dtype == np.float32
    kz, ky, kx = (s // 2 for s in h.shape)
    np.testing.assert_allclose(out[10 - kz:10 + kz + 1, 7 - ky:7 + ky + 1, 7 - kx:7 + kx + 1], h,
                               atol=1e-6)
    const = np.full((8, 9, 10), 3.0, np.float32)
    np.testing.assert_allclose(blur(const, h), 3.0, rtol=1e-5)            # reflect borders
    assert blur(const, h, mode="constant")[0, 0, 0] < 2.0                # zero borders darken
    # 2D kernel on a stack of 2D slices
    k2 = lateral_kernel((1.0, 3.0), "full")
    stack = np.random.default_rng(1).random((2, 20, 20)).astype(np.float32)
    np.testing.assert_allclose(blur(stack, k2)[1], blur(stack[1], k2), atol=1e-5)
    with pytest.raises(InputError, match="sums to"):
        blur(v, h * 2)


def test_form_image_order_and_shape():
    gt = nuclei((33, 40, 40), density=3e-4, radius=(3, 5), seed=2)
    h = gaussian_psf(1.0, 3.0)
    img = form_image(gt, h, 4)
    assert img.shape == (9, 40, 40) and img.dtype == np.float32
    np.testing.assert_allclose(img, blur(gt, h)[::4], atol=1e-6)
    noisy = form_image(gt, h, 4, poisson_peak=50, gauss_sigma=0.01, seed=5)
    np.testing.assert_array_equal(noisy, form_image(gt, h, 4, poisson_peak=50, gauss_sigma=0.01,
                                                    seed=5))
    expected = subsample(add_noise(blur(gt, h), poisson_peak=50, gauss_sigma=0.01, rng=5), 4)
    np.testing.assert_array_equal(noisy, expected)


def test_degrade_lateral_linear_ramp_is_exact():
    # a ramp along y survives delta-blur + subsampling + linear upsampling exactly (until the
    # clamped tail), and the output is aligned with the input
    y = np.arange(30, dtype=np.float32)
    img = np.repeat((5 + 3 * y)[:, None], 8, axis=1)
    delta = np.ones((1, 1), np.float32)
    out = degrade_lateral(img, delta, 4, axis=0)
    assert out.shape == img.shape and out.dtype == np.float32
    np.testing.assert_allclose(out[:29], img[:29], atol=1e-5)   # last sample kept: index 28
    np.testing.assert_array_equal(out[29], img[28])             # clamped tail
    out_x = degrade_lateral(img.T, delta, 4, axis=1)
    np.testing.assert_allclose(out_x, out.T, atol=1e-6)


def test_degrade_lateral_blurs_along_axis_only():
    rng = np.random.default_rng(0)
    k = lateral_kernel((1.0, 4.0), "split")
    # structure that varies only across the axis (x) is untouched apart from the noise
    cols = np.repeat(rng.random((1, 64)).astype(np.float32), 64, axis=0)
    out = degrade_lateral(cols, k, 4, axis=0, poisson_peak=1e4, gauss_sigma=0.001, rng=1)
    assert out.shape == cols.shape
    np.testing.assert_allclose(out, cols, atol=0.05)
    # structure that varies only along the axis (y) is smoothed
    rows = np.ascontiguousarray(cols.T)
    out = degrade_lateral(rows, k, 4, axis=0)
    assert np.abs(np.diff(out, axis=0)).mean() < 0.3 * np.abs(np.diff(rows, axis=0)).mean()
    img = rng.random((64, 64)).astype(np.float32)
    batch = degrade_lateral(np.stack([img, img]), k, 4, axis=0)
    np.testing.assert_allclose(batch[0], degrade_lateral(img, k, 4, axis=0), atol=1e-6)
    with pytest.raises(InputError, match="axis"):
        degrade_lateral(img, k, 4, axis=2)


def test_public_names():
    for mod in (optics, acquisition):
        for name in mod.__all__:
            assert callable(getattr(mod, name)), name
    assert set(optics.__all__) >= {"confocal_psf", "lightsheet_psf", "isotropic_psf",
                                   "rotate_to_lateral", "lateral_kernel"}
    assert set(acquisition.__all__) == {"blur", "subsample", "upsample_linear", "form_image",
                                        "degrade_lateral"}
