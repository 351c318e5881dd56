"""IsoNet's acquisition model: blur, axial subsampling, linear upsampling, training inputs.

The forward model of Weigert et al. (2017) is ``g = P[S_sigma(h * f)] + eta``. Following the
reference implementation (CSBDeep), the order is: convolution with the PSF (sum 1) ->
Poisson noise -> Gaussian read noise -> nearest-neighbour subsampling (keep every
``factor``-th slice) -> (for training pairs) linear upsampling back to the fine grid. The
noise is the shared :func:`sharpstack.degrade.add_noise`; the blur, the subsampling, the
upsampling and their compositions (:func:`form_image`, :func:`degrade_lateral`) are
IsoNet's own.

All functions take and return ``float32`` numpy arrays; integer inputs are converted to
``float32`` without any rescaling. Volumes have axes ``"ZYX"``, lateral slices ``"YX"``.

Examples
--------
>>> import numpy as np
>>> from sharpstack.psf import gaussian_psf
>>> gt = np.zeros((32, 16, 16), np.float32); gt[16, 8, 8] = 1
>>> form_image(gt, gaussian_psf(1, 2), 4).shape
(8, 16, 16)
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ... import resample
from ...degrade import add_noise, as_float32
from ...errors import InputError

__all__ = ["blur", "subsample", "upsample_linear", "form_image", "degrade_lateral"]


def _check_factor(factor) -> int:
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise InputError(
            f"factor must be a positive int (e.g. 4 for every 4th slice), got {factor!r}")
    return int(factor)


def _check_axis(axis, ndim: int) -> int:
    if (isinstance(axis, bool) or not isinstance(axis, (int, np.integer))
            or not -ndim <= axis < ndim):
        raise InputError(
            f"axis must be an int in [{-ndim}, {ndim - 1}] for a {ndim}D array, got {axis!r}")
    return int(axis) % ndim


def blur(volume: np.ndarray, psf: np.ndarray,
         mode: Literal["reflect", "constant"] = "reflect") -> np.ndarray:
    """Convolve with a PSF by FFT, output the same size as the input.

    The PSF acts on the trailing ``psf.ndim`` axes of ``volume`` (a 2D kernel on a stack of
    2D images, a 3D PSF on a ZYX volume). The volume is padded by the PSF half-size before
    the convolution: ``"reflect"`` (default) mirrors it at the border including the edge
    voxel (scipy.ndimage's ``"reflect"``, numpy's ``"symmetric"``), so borders are not
    darkened; ``"constant"`` pads with zeros (plain linear convolution, as
    ``scipy.signal.fftconvolve(..., mode="same")``). The PSF centre is ``psf.shape // 2``.

    Parameters
    ----------
    volume : np.ndarray
        Array of shape ``(..., *S)`` where ``S`` has ``psf.ndim`` axes (e.g. ``(Z, Y, X)``).
    psf : np.ndarray
        Kernel of shape ``K`` (e.g. ``(kz, ky, kx)``) that sums to 1 (every PSF of
        :mod:`sharpstack.psf` and :mod:`.optics` does); a kernel that does not is refused
        rather than silently changing the intensity scale.
    mode : {"reflect", "constant"}
        Border handling, see above.

    Returns
    -------
    np.ndarray
        ``float32`` array of the same shape as ``volume``.
    """
    from scipy.signal import fftconvolve

    v = as_float32(volume, "volume")
    k = as_float32(psf, "psf")
    if k.ndim > v.ndim:
        raise InputError(f"psf has {k.ndim} dims but volume only {v.ndim}; give a psf with at most "
                         f"as many axes as the volume (e.g. a 2D kernel for YX slices)")
    total = float(k.sum(dtype=np.float64))
    if not abs(total - 1.0) <= 1e-3:
        raise InputError(f"psf sums to {total:.6g}, not 1; normalise it first (psf / psf.sum()) "
                         f"so the blur keeps the intensity scale")
    if mode not in ("reflect", "constant"):
        raise InputError(f"mode must be 'reflect' or 'constant', got {mode!r}")
    lead = v.ndim - k.ndim
    kk = k.reshape((1,) * lead + k.shape)
    pads = [(0, 0)] * lead + [(n // 2, n - 1 - n // 2) for n in k.shape]
    vp = np.pad(v, pads, mode="symmetric" if mode == "reflect" else "constant")
    out = fftconvolve(vp, kk, mode="valid")
    return np.ascontiguousarray(out, dtype=np.float32)


def subsample(volume: np.ndarray, factor: int, axis: int = 0) -> np.ndarray:
    """Keep slices ``0, factor, 2 factor, ...`` along ``axis`` (nearest-neighbour slicing).

    Parameters
    ----------
    volume : np.ndarray
        Any array, e.g. ``(Z, Y, X)``.
    factor : int
        Subsampling factor (>= 1).
    axis : int
        Axis to subsample (0 = z for a ZYX volume).

    Returns
    -------
    np.ndarray
        ``float32`` copy with ``ceil(n / factor)`` slices along ``axis``.
    """
    v = as_float32(volume, "volume")
    return resample.subsample(v, _check_factor(factor), _check_axis(axis, v.ndim))


def upsample_linear(stack: np.ndarray, factor: int, axis: int = 0) -> np.ndarray:
    """Linear interpolation back to the fine grid, with an exact, shared convention.

    Output index ``i`` sits at input coordinate ``i / factor``, so ``output[k * factor] ==
    input[k]`` exactly; the output has ``n * factor`` samples along ``axis``; positions past
    the last input sample (the last ``factor - 1`` outputs) repeat the last sample. The torch
    upsampling used by the deployed IsoNet models follows the same convention.

    Parameters
    ----------
    stack : np.ndarray
        Array with ``n`` samples along ``axis``, e.g. ``(Z, Y, X)``.
    factor : int
        Upsampling factor (>= 1).
    axis : int
        Axis to upsample.

    Returns
    -------
    np.ndarray
        ``float32`` array with ``n * factor`` samples along ``axis``.

    Examples
    --------
    >>> upsample_linear(np.array([0., 4., 8.]), 4)
    array([0., 1., 2., 3., 4., 5., 6., 7., 8., 8., 8., 8.], dtype=float32)
    """
    s = as_float32(stack, "stack")
    f = _check_factor(factor)
    ax = _check_axis(axis, s.ndim)
    if s.shape[ax] == 0:
        raise InputError("stack has no samples along the upsampling axis")
    # one implementation of the convention for integer and fractional factors
    return resample.upsample(s, f, ax)


def form_image(gt: np.ndarray, psf: np.ndarray, factor: int, *, poisson_peak: float | None = None,
               gauss_sigma: float = 0.0, seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """Simulate an anisotropic acquisition of an isotropic ground truth (axes ``"ZYX"``).

    ``subsample(add_noise(blur(gt, psf)), factor, axis=0)``: blur (reflect borders) ->
    Poisson -> Gaussian -> keep every ``factor``-th z slice, as CSBDeep does.

    Parameters
    ----------
    gt : np.ndarray
        Ground truth ``(Z, Y, X)`` on an isotropic grid, non-negative when Poisson noise is on.
    psf : np.ndarray
        ``(kz, ky, kx)`` PSF on the same grid, sum 1.
    factor : int
        Axial subsampling factor.
    poisson_peak : float or None
        Photons at the blurred image's maximum (None: no Poisson noise).
    gauss_sigma : float
        Gaussian read noise standard deviation, in intensity units.
    seed : int, numpy Generator or None
        Noise seed.

    Returns
    -------
    np.ndarray
        ``float32`` array ``(ceil(Z / factor), Y, X)``.
    """
    g = as_float32(gt, "gt")
    if g.ndim != 3:
        raise InputError(f"gt must be a 3D array with axes 'ZYX', got shape {g.shape}")
    k = as_float32(psf, "psf")
    if k.ndim != 3:
        raise InputError(f"psf must be a 3D array with axes 'ZYX', got shape {k.shape}")
    f = _check_factor(factor)
    noisy = add_noise(blur(g, k), poisson_peak=poisson_peak, gauss_sigma=gauss_sigma, rng=seed)
    return subsample(noisy, f, axis=0)


def degrade_lateral(image2d: np.ndarray, kernel2d: np.ndarray, factor: int, *, axis: int = 0,
                    poisson_peak: float | None = None, gauss_sigma: float = 0.0,
                    rng: np.random.Generator | int | None = None) -> np.ndarray:
    """IsoNet training input from a lateral slice: blur, noise, subsample, upsample back.

    ``upsample_linear(subsample(add_noise(blur(img, kernel)), factor, axis), factor, axis)``
    cropped to the input size, so the result is aligned with the input pixel for pixel
    (sample ``k * factor`` of the result is the degraded input's sample ``k * factor``).

    Parameters
    ----------
    image2d : np.ndarray
        Lateral slice ``(Y, X)``, or a batch ``(..., Y, X)`` of slices.
    kernel2d : np.ndarray
        2D kernel (axes ``"YX"``, sum 1), e.g. :func:`.optics.lateral_kernel`.
    factor : int
        Subsampling factor along ``axis``.
    axis : int
        Axis of the 2D plane that plays the role of z: 0 = Y (rows), 1 = X (columns);
        ``-2``/``-1`` are accepted as synonyms. Must match the kernel's ``axis``
        (``"y"`` -> 0, ``"x"`` -> 1).
    poisson_peak : float or None
        Photons at the blurred slice's maximum (None: no Poisson noise). With a batch, the
        maximum is taken over the whole batch.
    gauss_sigma : float
        Gaussian read noise standard deviation, in intensity units.
    rng : numpy Generator, int or None
        Noise generator or seed.

    Returns
    -------
    np.ndarray
        ``float32`` array with the shape of ``image2d``.
    """
    img = as_float32(image2d, "image2d", min_ndim=2)
    k = as_float32(kernel2d, "kernel2d")
    if k.ndim != 2:
        raise InputError(f"kernel2d must be a 2D kernel with axes 'YX', got shape {k.shape}")
    f = _check_factor(factor)
    if isinstance(axis, bool) or axis not in (0, 1, -2, -1):
        raise InputError(
            f"axis must be 0 (Y, rows) or 1 (X, columns) of the 2D plane, got {axis!r}")
    ax = img.ndim - 2 + (int(axis) % 2)
    noisy = add_noise(blur(img, k), poisson_peak=poisson_peak, gauss_sigma=gauss_sigma, rng=rng)
    up = upsample_linear(subsample(noisy, f, axis=ax), f, axis=ax)
    sl = [slice(None)] * img.ndim
    sl[ax] = slice(0, img.shape[ax])
    return np.ascontiguousarray(up[tuple(sl)])
