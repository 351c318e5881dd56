"""The disentangled deblurring method's defocus series: widefield defocus PSFs and imaging.

- :func:`defocus_psf_2d`: 2D widefield PSFs of a point seen at several defocus distances
  (psfmodels' vectorial model);
- :func:`defocus_series`: every in-focus field (:func:`sharpstack.phantoms.defocus_fields`)
  blurred with every kernel, then camera noise (:func:`sharpstack.degrade.add_noise`).

The synthetic protocol (``synth``) and the benchmark's synthetic data set (``bench``) are
built from them.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import InputError
from ...psf import check_optics, check_positive, half_size

__all__ = ["defocus_psf_2d", "defocus_series"]


def defocus_psf_2d(dz_um, *, pixel_size_um: float = 0.2, na: float = 1.0,
                   wavelength_um: float = 0.52, n_immersion: float = 1.515,
                   n_sample: float = 1.33, depth_um: float = 3.0,
                   size: int | None = None) -> np.ndarray:
    """2D widefield PSFs of a point imaged ``dz_um`` out of focus (one kernel per defocus).

    The vectorial widefield model of ``psfmodels`` (Aguet et al. 2009) for a point source
    ``depth_um`` above the coverslip in a sample of refractive index ``n_sample``, seen with an
    objective designed for ``n_immersion``; plane ``k`` is the lateral PSF with the focal plane
    moved by ``dz_um[k]`` (positive: focus above the point). With ``n_sample != n_immersion``
    the mismatch adds spherical aberration, so the PSFs above and below focus differ (as in a
    real defocus series); with equal indices they are mirror images (``dz`` and ``-dz`` give
    the same kernel).

    Parameters
    ----------
    dz_um : float or sequence of float
        Defocus distances in micrometres.
    pixel_size_um : float
        Lateral pixel size of the images the kernels blur.
    na, wavelength_um, n_immersion, n_sample, depth_um
        Objective NA (< both indices), emission wavelength, immersion and sample refractive
        indices, depth of the point above the coverslip (>= 0).
    size : int, optional
        Odd kernel size in pixels; default covers the geometric blur disc of the largest
        ``|dz|`` (``2 |dz| tan(asin(NA / n_sample))``) plus 4 Airy radii per side.

    Returns
    -------
    np.ndarray
        ``float32`` array ``(len(dz_um), size, size)`` (axes ``"ZYX"``: one 2D kernel per
        defocus), each kernel non-negative with sum 1, centre pixel at ``size // 2``.

    Examples
    --------
    >>> k = defocus_psf_2d([0.0, 2.0], size=31)
    >>> k.shape, bool(k[0].max() > k[1].max())   # the focused kernel is the sharper one
    ((2, 31, 31), True)
    """
    import psfmodels

    dz = np.atleast_1d(np.asarray(dz_um, dtype=np.float64))
    if dz.ndim != 1 or dz.size == 0 or not np.all(np.isfinite(dz)):
        raise InputError(f"dz_um must be a finite number or a non-empty list of numbers, "
                         f"got {dz_um!r}")
    pix = check_positive(pixel_size_um, "pixel_size_um")
    na = check_positive(na, "na")
    lam = check_positive(wavelength_um, "wavelength_um")
    ni = check_positive(n_immersion, "n_immersion")
    ns = check_positive(n_sample, "n_sample")
    depth = check_positive(depth_um, "depth_um", allow_zero=True)
    check_optics(na, ni)
    check_optics(na, ns, "na (against n_sample)")
    if size is None:
        disc = 2.0 * float(np.abs(dz).max()) * math.tan(math.asin(na / ns))
        half = half_size((disc / 2.0 + 4 * 0.61 * lam / na) / pix)
        size = 2 * max(half, 3) + 1
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 3 \
            or size % 2 == 0:
        raise InputError(f"size must be an odd integer >= 3 (pixels), got {size!r}")
    p = psfmodels.make_psf(list(depth + dz), int(size), dxy=pix, pz=depth, NA=na, wvl=lam,
                           ns=ns, ni=ni, ni0=ni, model="vectorial")
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, None)
    return (p / p.sum(axis=(1, 2), keepdims=True)).astype(np.float32)


def defocus_series(fields: np.ndarray, kernels: np.ndarray, *, poisson_peak: float | None = 200.0,
                   gauss_sigma: float = 0.01, seed: int = 0) -> np.ndarray:
    """Image every 2D field at every defocus: blur with each kernel, then camera noise.

    Parameters
    ----------
    fields : ndarray, shape (N, Y, X)
        Non-negative in-focus fluorophore densities (e.g.
        :func:`sharpstack.phantoms.defocus_fields`).
    kernels : ndarray, shape (L, ky, kx)
        One normalised 2D PSF per defocus level (e.g.
        :func:`defocus_psf_2d`), odd sizes.
    poisson_peak : float or None
        Expected photons at the brightest pixel of the in-focus field's series (the whole
        series of one field shares one photon scale, so defocused planes are dimmer at their
        peaks, as in a microscope); ``None`` for no shot noise.
    gauss_sigma : float
        Read noise standard deviation in the fields' intensity units.
    seed : int
        Seed of the noise.

    Returns
    -------
    np.ndarray
        ``float32`` ``(N, L, Y, X)``: field ``i`` seen at defocus level ``k``. Borders are
        blurred with mirrored (reflect) continuation of the field.
    """
    from scipy.signal import fftconvolve

    from ... import degrade

    f = np.asarray(fields, dtype=np.float32)
    k = np.asarray(kernels, dtype=np.float32)
    if f.ndim != 3:
        raise InputError(f"fields must be (N, Y, X), got shape {f.shape}")
    if k.ndim != 3 or k.shape[1] % 2 == 0 or k.shape[2] % 2 == 0:
        raise InputError(f"kernels must be (L, ky, kx) with odd ky and kx, got shape {k.shape}")
    if not (np.all(np.isfinite(f)) and np.all(np.isfinite(k))):
        raise InputError("fields and kernels must be finite (no NaN or inf)")
    if float(f.min(initial=0.0)) < 0:
        raise InputError("fields must be non-negative fluorophore densities")
    ry, rx = k.shape[1] // 2, k.shape[2] // 2
    if ry >= f.shape[1] or rx >= f.shape[2]:
        raise InputError(f"kernels {k.shape[1:]} are too large for fields {f.shape[1:]}; use "
                         f"smaller kernels or larger fields")
    rng = np.random.default_rng(seed)
    out = np.empty((f.shape[0], k.shape[0]) + f.shape[1:], dtype=np.float32)
    for i, field in enumerate(f):
        padded = np.pad(field, ((ry, ry), (rx, rx)), mode="reflect")
        clean = np.stack([fftconvolve(padded, kern, mode="valid") for kern in k])
        clean = np.clip(clean, 0.0, None).astype(np.float32)
        out[i] = degrade.add_noise(clean, poisson_peak=poisson_peak, gauss_sigma=gauss_sigma,
                                   rng=rng)
    return out
