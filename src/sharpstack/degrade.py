"""Image formation: blur, noise, axial subsampling and linear upsampling (IsoNet).

The forward model of Weigert et al. (2017) is ``g = P[S_sigma(h * f)] + eta``. Following the
reference implementation (CSBDeep), the order is: convolution with the PSF (sum 1) ->
Poisson noise -> Gaussian read noise -> nearest-neighbour subsampling (keep every
``factor``-th slice) -> (for training pairs) linear upsampling back to the fine grid.

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

from .errors import InputError

__all__ = [
    "blur",
    "subsample",
    "upsample_linear",
    "add_noise",
    "form_image",
    "degrade_lateral",
    "depth_profile",
    "depth_blur",
]


def _as_float32(arr, name: str, min_ndim: int = 1) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype.kind not in "biuf":
        raise InputError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    a = a.astype(np.float32, copy=False)
    if a.ndim < min_ndim:
        raise InputError(
            f"{name} must have at least {min_ndim} dimensions, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InputError(
            f"{name} contains NaN or infinite values; clean it (e.g. np.nan_to_num) first")
    return a


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


def _rng(rng) -> np.random.Generator:
    try:
        return np.random.default_rng(rng)
    except TypeError:
        raise InputError(f"rng must be a numpy Generator, an int seed or None, "
                         f"got {type(rng).__name__}") from None


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
        :mod:`sharpstack.psf` does); a kernel that does not is refused rather than silently
        changing the intensity scale.
    mode : {"reflect", "constant"}
        Border handling, see above.

    Returns
    -------
    np.ndarray
        ``float32`` array of the same shape as ``volume``.
    """
    from scipy.signal import fftconvolve

    v = _as_float32(volume, "volume")
    k = _as_float32(psf, "psf")
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
    v = _as_float32(volume, "volume")
    f = _check_factor(factor)
    ax = _check_axis(axis, v.ndim)
    sl = [slice(None)] * v.ndim
    sl[ax] = slice(0, None, f)
    return np.ascontiguousarray(v[tuple(sl)])


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
    s = _as_float32(stack, "stack")
    f = _check_factor(factor)
    ax = _check_axis(axis, s.ndim)
    n = s.shape[ax]
    if n == 0:
        raise InputError("stack has no samples along the upsampling axis")
    i = np.arange(n * f)
    i0 = np.minimum(i // f, n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    w = ((i % f) / f).astype(np.float32)
    w[i // f >= n - 1] = 0.0  # clamp: at and beyond the last sample
    wshape = [1] * s.ndim
    wshape[ax] = n * f
    w = w.reshape(wshape)
    a = np.take(s, i0, axis=ax)
    b = np.take(s, i1, axis=ax)
    return np.ascontiguousarray(a * (np.float32(1) - w) + b * w, dtype=np.float32)


def add_noise(volume: np.ndarray, *, poisson_peak: float | None, gauss_sigma: float,
              rng: np.random.Generator | int | None) -> np.ndarray:
    """Poisson (shot) noise, then Gaussian read noise, in the volume's own intensity units.

    With ``poisson_peak`` set, the volume is scaled so that its maximum becomes
    ``poisson_peak`` expected photons, Poisson-sampled and scaled back; then Gaussian noise of
    standard deviation ``gauss_sigma`` (in the original intensity units, not photons) is added.

    Parameters
    ----------
    volume : np.ndarray
        Non-negative array of any shape (the noiseless image; tiny negative round-off from an
        FFT blur, below 1e-4 of the maximum, is clipped to 0).
    poisson_peak : float or None
        Expected photon count at the volume's maximum (> 0); ``None`` for no Poisson noise.
    gauss_sigma : float
        Standard deviation of the additive Gaussian noise (>= 0), in intensity units.
    rng : numpy Generator, int or None
        Random generator or seed.

    Returns
    -------
    np.ndarray
        ``float32`` array of the same shape (may be negative where Gaussian noise is added).
    """
    v = _as_float32(volume, "volume")
    gen = _rng(rng)
    sigma = float(gauss_sigma)
    if not np.isfinite(sigma) or sigma < 0:
        raise InputError(f"gauss_sigma must be a finite number >= 0, got {gauss_sigma!r}")
    out = v.copy()
    if poisson_peak is not None:
        peak = float(poisson_peak)
        if not np.isfinite(peak) or peak <= 0:
            raise InputError(
                f"poisson_peak must be a positive photon count or None, got {poisson_peak!r}")
        vmax = float(v.max()) if v.size else 0.0
        vmin = float(v.min()) if v.size else 0.0
        if vmin < -1e-4 * max(vmax, 0.0) or (vmax <= 0 and vmin < 0):
            raise InputError(f"Poisson noise needs a non-negative volume, min is {vmin:.4g}; "
                             f"subtract the background/offset or clip it before adding noise")
        if vmax > 0:
            scale = peak / vmax
            lam = np.clip(v.astype(np.float64) * scale, 0.0, None)
            out = (gen.poisson(lam) / scale).astype(np.float32)
        else:
            out = np.zeros_like(v)
    if sigma > 0:
        out = out + gen.normal(0.0, sigma, size=out.shape).astype(np.float32)
    return out.astype(np.float32, copy=False)


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
    g = _as_float32(gt, "gt")
    if g.ndim != 3:
        raise InputError(f"gt must be a 3D array with axes 'ZYX', got shape {g.shape}")
    k = _as_float32(psf, "psf")
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
        2D kernel (axes ``"YX"``, sum 1), e.g. :func:`sharpstack.psf.lateral_kernel`.
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
    img = _as_float32(image2d, "image2d", min_ndim=2)
    k = _as_float32(kernel2d, "kernel2d")
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


# --------------------------------------------------------------------------------------------
# depth-dependent image formation (DQLR: deeper slices lose sharpness and contrast)
# --------------------------------------------------------------------------------------------

def depth_profile(n: int, start: float, end: float, *, power: float = 1.0) -> np.ndarray:
    """A per-slice value going from ``start`` (slice 0) to ``end`` (slice ``n - 1``).

    ``start + (end - start) * (i / (n - 1)) ** power``; ``power`` > 1 keeps the shallow slices
    near ``start`` longer. Returns a ``float64`` array of length ``n``.

    >>> depth_profile(3, 1.0, 3.0).tolist()
    [1.0, 2.0, 3.0]
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"n must be a positive number of slices, got {n!r}")
    p = float(power)
    if not (np.isfinite(p) and p > 0):
        raise InputError(f"power must be a positive number, got {power!r}")
    t = np.linspace(0.0, 1.0, int(n)) if n > 1 else np.zeros(1)
    return float(start) + (float(end) - float(start)) * t ** p


def _per_slice(values, n: int, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 0:
        v = np.full(n, float(v))
    if v.shape != (n,):
        raise InputError(f"{name} must be one number or one value per slice ({n}), got "
                         f"shape {v.shape}")
    if not np.all(np.isfinite(v)) or np.any(v < 0):
        raise InputError(f"{name} must hold finite values >= 0, got min {v.min():g}")
    return v


def depth_blur(volume: np.ndarray, sigma_xy, sigma_z=0.0) -> np.ndarray:
    """Gaussian blur whose width follows depth (axes ``"ZYX"``, depth = slice index).

    Output slice ``z`` is the volume convolved with the 3D Gaussian PSF of that depth, of
    standard deviations ``sigma_z[z]`` (axial) and ``sigma_xy[z]`` (lateral), evaluated at
    ``z``: ``out[z] = G_xy(sigma_xy[z]) * sum_z' g(z' - z; sigma_z[z]) f[z']``. The axial sum
    is truncated at 4 sigma and normalised; borders are mirrored (``reflect``, as
    :func:`blur`). Lateral filtering is ``scipy.ndimage.gaussian_filter`` (truncate 4).

    Parameters
    ----------
    volume : np.ndarray, shape (Z, Y, X)
    sigma_xy, sigma_z : float or sequence of Z floats (>= 0; 0 = no blur along that axis)

    Returns
    -------
    np.ndarray
        ``float32`` ``(Z, Y, X)``.
    """
    from scipy.ndimage import gaussian_filter

    v = _as_float32(volume, "volume")
    if v.ndim != 3:
        raise InputError(f"volume must be a 3D array with axes 'ZYX', got shape {v.shape}")
    n = v.shape[0]
    sxy = _per_slice(sigma_xy, n, "sigma_xy")
    sz = _per_slice(sigma_z, n, "sigma_z")
    rad = int(np.ceil(4.0 * sz.max()))
    mixed = v
    if rad > 0:
        vp = np.pad(v, [(rad, rad), (0, 0), (0, 0)], mode="symmetric")
        mixed = np.empty_like(v)
        off = np.arange(-rad, rad + 1, dtype=np.float64)
        for z in range(n):
            if sz[z] > 0:
                w = np.exp(-0.5 * (off / sz[z]) ** 2)
                w[np.abs(off) > 4.0 * sz[z]] = 0.0
            else:
                w = (off == 0).astype(np.float64)
            w /= w.sum()
            mixed[z] = np.tensordot(w.astype(np.float32), vp[z:z + 2 * rad + 1], axes=1)
    out = np.empty_like(v)
    for z in range(n):
        out[z] = gaussian_filter(mixed[z], sxy[z], mode="reflect", truncate=4.0) \
            if sxy[z] > 0 else mixed[z]
    return out

