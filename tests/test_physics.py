"""Physics of IsoNet: PSFs, phantoms and image formation (sharpstack.psf/phantoms/degrade)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage
from scipy.signal import fftconvolve

from sharpstack import degrade, phantoms, psf
from sharpstack.degrade import (add_noise, blur, degrade_lateral, form_image, subsample,
                                upsample_linear)
from sharpstack.errors import InputError
from sharpstack.phantoms import membranes, nuclei, nuclei_membranes
from sharpstack.psf import (confocal_psf, gaussian_psf, isotropic_psf, lateral_kernel,
                            lightsheet_psf, rotate_to_lateral)


# ----------------------------------------------------------------------------- helpers
def moments(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre offsets (relative to shape // 2) and variances along every axis."""
    k = np.asarray(k, dtype=np.float64)
    k = k / k.sum()
    means, variances = [], []
    for ax in range(k.ndim):
        c = np.arange(k.shape[ax]) - k.shape[ax] // 2
        p = k.sum(axis=tuple(i for i in range(k.ndim) if i != ax))
        m = (p * c).sum()
        means.append(m)
        variances.append((p * (c - m) ** 2).sum())
    return np.array(means), np.array(variances)


def fwhm(profile: np.ndarray) -> float:
    """Full width at half maximum of a centred, single-peaked 1D profile (linear interp)."""
    p = np.asarray(profile, dtype=np.float64)
    c = int(np.argmax(p))
    half = p[c] / 2
    def side(direction):
        i = c
        while 0 <= i + direction < len(p) and p[i + direction] > half:
            i += direction
        j = i + direction
        if not 0 <= j < len(p):
            return float(abs(i - c))
        return abs(i - c) + (p[i] - half) / (p[i] - p[j])
    return side(1) + side(-1)


@pytest.fixture(scope="module")
def conf():
    return confocal_psf()


@pytest.fixture(scope="module")
def sheet():
    return lightsheet_psf()


# ----------------------------------------------------------------------------- PSFs
def test_gaussian_psf_sum_symmetry_moments():
    h = gaussian_psf(2.0, 8.0)
    assert h.dtype == np.float32 and h.shape == (65, 17, 17)
    assert all(s % 2 == 1 for s in h.shape)
    assert abs(float(h.sum()) - 1) < 1e-5
    assert np.unravel_index(np.argmax(h), h.shape) == (32, 8, 8)
    for ax in range(3):
        np.testing.assert_allclose(h, np.flip(h, ax), atol=1e-9)
    means, var = moments(h)
    np.testing.assert_allclose(means, 0, atol=1e-6)
    np.testing.assert_allclose(var, [64, 4, 4], rtol=0.01)


def test_gaussian_psf_custom_shape_and_errors():
    h = gaussian_psf(1.5, 3.0, shape=(31, 21, 21))
    assert h.shape == (31, 21, 21)
    np.testing.assert_allclose(moments(h)[1], [9, 2.25, 2.25], rtol=0.01)
    with pytest.raises(InputError, match="odd"):
        gaussian_psf(1, 2, shape=(10, 11, 11))
    with pytest.raises(InputError, match="sigma_z"):
        gaussian_psf(1, -2)


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


# ----------------------------------------------------------------------------- degrade
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


def test_poisson_noise_statistics():
    rng = np.random.default_rng(0)
    vol = np.full((40, 50, 50), 2.0, np.float32)
    vol[0, 0, 0] = 4.0   # maximum -> 100 photons, so the bulk is at 50 photons
    out = add_noise(vol, poisson_peak=100, gauss_sigma=0.0, rng=rng)
    photons = out[1:] * (100 / 4.0)
    np.testing.assert_allclose(photons, np.round(photons), atol=1e-3)    # integer counts
    assert abs(photons.mean() - 50) < 0.5
    assert abs(photons.var() / photons.mean() - 1) < 0.05                # var == mean
    again = add_noise(vol, poisson_peak=100, gauss_sigma=0.0, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(out, again)


def test_gaussian_noise_in_intensity_units():
    vol = np.full((20, 50, 50), 7.0, np.float32)
    out = add_noise(vol, poisson_peak=None, gauss_sigma=0.5, rng=3)
    assert abs(out.mean() - 7.0) < 0.01 and abs(out.std() - 0.5) < 0.01
    np.testing.assert_array_equal(add_noise(vol, poisson_peak=None, gauss_sigma=0.0, rng=0), vol)
    with pytest.raises(InputError, match="non-negative"):
        add_noise(vol - 10, poisson_peak=10, gauss_sigma=0, rng=0)


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


# ----------------------------------------------------------------------------- phantoms
def test_nuclei_reproducible_range_count_labels():
    shape, density = (48, 96, 96), 2e-4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img, lab = nuclei(shape, density=density, radius=(4, 7), seed=3, return_labels=True)
    assert img.dtype == np.float32 and img.shape == shape and lab.dtype == np.int32
    assert img.min() >= 0 and img.max() <= 1 and img.max() > 0.3
    np.testing.assert_array_equal(img, nuclei(shape, density=density, radius=(4, 7), seed=3))
    assert not np.array_equal(img, nuclei(shape, density=density, radius=(4, 7), seed=4))
    expected = density * np.prod(shape)
    ids = np.unique(lab[lab > 0])
    assert abs(len(ids) - expected) <= 0.2 * expected
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
    np.testing.assert_array_equal(img > 0, lab > 0)            # labels match the image
    # every label is one solid, connected object of plausible size
    sizes = np.bincount(lab.ravel())[1:]
    assert sizes.min() > 0 and np.median(sizes) > 4 / 3 * np.pi * (4 * 0.7) ** 3 * 0.5
    objects = ndimage.find_objects(lab)
    for i in (0, len(ids) // 2, len(ids) - 1):
        region = lab[objects[i]] == i + 1
        assert ndimage.label(region)[1] == 1
    # nuclei do not touch: background between different labels
    assert ndimage.label(lab > 0)[1] == len(ids)


def test_nuclei_default_density_and_flat():
    img, lab = nuclei((64, 128, 128), seed=0, texture=False, return_labels=True)
    n = round(1500 / 512 ** 3 * 64 * 128 * 128)
    assert lab.max() == n
    # without texture each nucleus is flat
    for i in range(1, n + 1):
        vals = img[lab == i]
        assert vals.min() == vals.max() and 0.6 <= vals[0] <= 1


def test_membranes_form_closed_cells():
    shape = (48, 64, 64)
    img, cells = membranes(shape, cell_diameter=16, thickness=2, seed=1, return_labels=True)
    assert img.dtype == np.float32 and img.min() >= 0 and img.max() <= 1
    np.testing.assert_array_equal(img, membranes(shape, cell_diameter=16, thickness=2, seed=1))
    n_cells = int(cells.max())
    assert n_cells > 20
    background = img < 0.25
    comp, n_comp = ndimage.label(background)   # 6-connected
    assert abs(n_comp - n_cells) <= 0.15 * n_cells
    # no leaks: every sizeable dark region lies inside a single cell
    sizes = np.bincount(comp.ravel())
    for c in np.flatnonzero(sizes[1:] >= 20) + 1:
        assert len(np.unique(cells[comp == c])) == 1
    # membranes lie on cell borders: voxels where the cell label changes are bright
    border = cells[:, :, 1:] != cells[:, :, :-1]
    assert np.minimum(img[:, :, 1:], img[:, :, :-1])[border].mean() < \
        np.maximum(img[:, :, 1:], img[:, :, :-1])[border].mean()
    assert np.maximum(img[:, :, 1:], img[:, :, :-1])[border].min() >= 0.25
    # thin sheets: most of the volume is dark cell interior
    assert np.mean(img > 0.5) < 0.35


def test_nuclei_membranes_nuclei_inside_cells():
    shape = (40, 64, 64)
    img, lab = nuclei_membranes(shape, seed=2, cell_diameter=20, return_labels=True)
    assert img.dtype == np.float32 and img.min() >= 0 and img.max() <= 1
    np.testing.assert_array_equal(img, nuclei_membranes(shape, seed=2, cell_diameter=20))
    memb = membranes(shape, cell_diameter=20, seed=2)
    assert lab.max() > 10
    # nuclei and membranes do not overlap: inside nuclei the membrane signal is ~0
    assert memb[lab > 0].max() < 0.05
    assert (img[lab > 0] > 0.2).all()
    assert ndimage.label(lab > 0)[1] == lab.max()


def test_public_names():
    for mod in (psf, phantoms, degrade):
        for name in mod.__all__:
            assert callable(getattr(mod, name)), name
    assert set(psf.__all__) >= {"gaussian_psf", "confocal_psf", "lightsheet_psf", "isotropic_psf",
                                "rotate_to_lateral", "lateral_kernel"}
    assert set(degrade.__all__) == {"blur", "subsample", "upsample_linear", "add_noise",
                                    "form_image", "degrade_lateral", "depth_blur",
                                    "depth_profile"}
    assert set(phantoms.__all__) == {"nuclei", "membranes", "nuclei_membranes",
                                     "defocus_fields", "defocus_series", "zscan"}
