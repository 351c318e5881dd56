"""Richardson-Lucy baseline on tiny synthetic volumes with a Gaussian PSF."""

import numpy as np
import pytest
from scipy.signal import fftconvolve
from skimage.restoration import richardson_lucy as sk_richardson_lucy

from sharpstack import baselines
from sharpstack.baselines import RichardsonLucyResult, richardson_lucy, richardson_lucy_best
from sharpstack.errors import InputError
from sharpstack.metrics import psnr, psnr_normalized


def _gauss_psf(sz=(1.0, 1.0, 1.0), r=(6, 6, 6)):
    zz, yy, xx = np.mgrid[-r[0]:r[0] + 1, -r[1]:r[1] + 1, -r[2]:r[2] + 1]
    h = np.exp(-0.5 * ((zz / sz[0]) ** 2 + (yy / sz[1]) ** 2 + (xx / sz[2]) ** 2))
    return h / h.sum()


@pytest.fixture(scope="module")
def scene():
    """Sharp balls and points, blurred by an axially elongated Gaussian PSF."""
    rng = np.random.default_rng(1)
    shape = (32, 40, 40)
    zz, yy, xx = np.indices(shape)
    sharp = np.zeros(shape)
    for z, y, x, r in [(10, 12, 12, 4), (20, 28, 26, 5), (16, 10, 30, 3)]:
        sharp[(zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 <= r * r] = 100.0
    sharp[tuple(rng.integers(4, 28, (3, 6)))] = 200.0  # a few points
    psf = _gauss_psf((3.0, 1.2, 1.2))
    blurred = fftconvolve(sharp, psf, mode="same").clip(0) + 1.0
    return sharp + 1.0, blurred, psf


def test_public_names():
    assert set(baselines.__all__) == {"RichardsonLucyResult", "richardson_lucy",
                                      "richardson_lucy_best", "richardson_lucy_slicewise"}


def test_rl_improves_psnr_against_sharp(scene):
    sharp, blurred, psf = scene
    rng_ = sharp.max() - sharp.min()
    out = richardson_lucy(blurred, psf, iterations=30)
    assert out.dtype == np.float32 and out.shape == blurred.shape
    assert out.min() >= 0
    assert psnr(sharp, out, data_range=rng_) > psnr(sharp, blurred, data_range=rng_) + 1.5
    # flux is conserved
    assert out.sum() == pytest.approx(blurred.sum(), rel=0.02)


def test_rl_extended_border_has_no_dark_rim(scene):
    sharp, blurred, psf = scene
    # the background is 1 everywhere on the border
    zero = richardson_lucy(blurred, psf, iterations=30, border="zero")
    ext = richardson_lucy(blurred, psf, iterations=30)
    assert zero[0, 0, 0] < 0.1  # the zero-padding artefact
    assert ext[0, 0, 0] == pytest.approx(1.0, abs=0.02)
    with pytest.raises(InputError, match="border"):
        richardson_lucy(blurred, psf, border="wrap")


def test_rl_matches_skimage_from_same_start(scene):
    _, blurred, psf = scene
    g = (blurred / blurred.mean() * 0.5).astype(np.float32)  # skimage starts at 0.5
    ours = richardson_lucy(g, psf, iterations=7, border="zero")
    ref = sk_richardson_lucy(g, psf.astype(np.float32), num_iter=7, clip=False)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5 * ref.max())


def test_rl_scale_equivariant_no_clipping(scene):
    _, blurred, psf = scene
    a = richardson_lucy(blurred, psf, iterations=5)
    b = richardson_lucy(1000.0 * blurred, psf * 7.0, iterations=5)  # psf normalised inside
    assert b.max() > 1000  # not clipped to [-1, 1], not rescaled
    np.testing.assert_allclose(b, 1000.0 * a, rtol=1e-4, atol=1e-6 * b.max())


def test_rl_2d_and_integer_input():
    img = np.zeros((32, 32), np.uint16)
    img[16, 16] = 4000
    psf = _gauss_psf((1.0, 1.5, 1.5))[6]
    blurred = np.round(fftconvolve(img.astype(float), psf / psf.sum(), mode="same")
                       ).clip(0).astype(np.uint16)
    out = richardson_lucy(blurred, psf, iterations=20, axes="YX")
    assert out.dtype == np.float32
    assert np.unravel_index(out.argmax(), out.shape) == (16, 16)
    assert out.max() > 2 * blurred.max()  # sharper peak, on the input's intensity scale


def test_rl_errors(scene):
    _, blurred, psf = scene
    with pytest.raises(InputError, match="negative"):
        richardson_lucy(blurred - 10, psf)
    with pytest.raises(InputError, match="dimensions"):
        richardson_lucy(blurred, psf[6])
    with pytest.raises(InputError, match="iterations"):
        richardson_lucy(blurred, psf, iterations=0)
    with pytest.raises(InputError, match="axes"):
        richardson_lucy(blurred, psf, axes="YX")


def test_rl_best_picks_the_oracle_count(scene):
    sharp, blurred, psf = scene
    res = richardson_lucy_best(blurred, psf, sharp, iterations=(1, 3, 10, 30))
    assert isinstance(res, RichardsonLucyResult)
    assert sorted(res.scores) == [1, 3, 10, 30]
    assert res.scores[res.iterations] == max(res.scores.values())
    np.testing.assert_allclose(res.volume,
                               richardson_lucy(blurred, psf, iterations=res.iterations),
                               rtol=1e-6, atol=1e-6)
    assert psnr_normalized(sharp, res.volume) == pytest.approx(res.scores[res.iterations])
    assert res.scores[res.iterations] > psnr_normalized(sharp, blurred)
    with pytest.raises(InputError, match="shape"):
        richardson_lucy_best(blurred, psf, sharp[1:])
    with pytest.raises(InputError, match="iterations"):
        richardson_lucy_best(blurred, psf, sharp, iterations=(3, -1))
