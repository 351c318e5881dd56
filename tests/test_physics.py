"""Shared physics: the Gaussian PSF, camera noise, phantoms (sharpstack.psf/degrade/phantoms).

The physics that is one method's own is tested beside that method (test_isonet_physics.py,
test_dqlr.py, test_disentangled.py, test_zsegan.py).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage

from sharpstack import degrade, phantoms, psf
from sharpstack.degrade import add_noise
from sharpstack.errors import InputError
from sharpstack.phantoms import membranes, nuclei, nuclei_membranes
from sharpstack.psf import gaussian_psf

from ._physics import moments


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


# ----------------------------------------------------------------------------- degrade
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
    assert set(psf.__all__) >= {"gaussian_psf"}
    assert set(degrade.__all__) == {"add_noise"}
    assert set(phantoms.__all__) == {"nuclei", "membranes", "nuclei_membranes", "defocus_fields"}
