"""Restoration quality: PSNR and SSIM with an explicit data range, and the CARE protocol
(percentile-normalised target, affine fit of the prediction) behind :func:`psnr_normalized`
and :func:`ssim_normalized`; SSIM plane by plane."""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi

from .._axes import check_axes
from ..errors import InputError
from .arrays import (check_data_range, check_finite, check_pair, flat_slabs, mse, psnr_from_mse,
                     slabs, to_numpy)

def psnr(target, pred, *, data_range: float) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range**2 / MSE)`` in dB.

    Parameters
    ----------
    target, pred : array_like, same shape (any number of dimensions)
        Ground truth and prediction. Integer inputs are promoted to float64; nothing is
        rescaled.
    data_range : float
        The peak-to-peak range of the target's intensities, given explicitly (e.g. ``1.0``
        for data normalised to [0, 1]; ``target.max() - target.min()`` otherwise).

    Returns
    -------
    float
        PSNR in dB (float64 maths); ``inf`` for identical images.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros((4, 4))
    >>> round(psnr(x, x + 0.1, data_range=1.0), 6)
    20.0
    """
    t, p = check_pair(target, pred)
    r = check_data_range(data_range)
    check_finite(t, "target")
    check_finite(p, "pred")
    return psnr_from_mse(mse(t, p), r)


def normalize_percentile(x, pmin: float = 0.1, pmax: float = 99.9, *,
                         clip: bool = False) -> np.ndarray:
    """Map the ``pmin`` and ``pmax`` percentiles of ``x`` to 0 and 1.

    ``(x - P[pmin]) / (P[pmax] - P[pmin] + 1e-20)``, as csbdeep's ``normalize`` (CARE
    protocol); a constant image becomes all zeros.

    Parameters
    ----------
    x : array_like, any shape
        Image to normalise.
    pmin, pmax : float
        Percentiles in [0, 100] (not fractions: 99.9 means the 99.9th percentile),
        ``pmin < pmax``.
    clip : bool
        Clip the result to [0, 1].

    Returns
    -------
    numpy.ndarray, float32, same shape as ``x``
    """
    a = to_numpy(x, "x")
    if a.size == 0:
        raise InputError("x is empty; pass a non-empty image")
    check_finite(a, "x")
    if not (0.0 <= pmin < pmax <= 100.0):
        raise InputError(
            f"percentiles must satisfy 0 <= pmin < pmax <= 100 (e.g. pmin=0.1, pmax=99.9), "
            f"got pmin={pmin}, pmax={pmax}")
    lo, hi = np.percentile(a, [pmin, pmax])
    scale = 1.0 / (float(hi) - float(lo) + 1e-20)
    out = (a.astype(np.float32) - np.float32(lo)) * np.float32(scale)
    if clip:
        np.clip(out, 0.0, 1.0, out=out)
    return out


def fit_affine(target, pred) -> tuple[float, float]:
    """Least-squares affine map of ``pred`` onto ``target``.

    Solves ``min_{a,b} || target - (a * pred + b) ||^2`` in closed form (float64):
    ``a = cov(pred, target) / var(pred)``, ``b = mean(target) - a * mean(pred)``. For a
    constant ``pred`` the minimiser is ``a = 0``, ``b = mean(target)``.

    Parameters
    ----------
    target, pred : array_like, same shape

    Returns
    -------
    (scale, offset) : tuple of float
    """
    t, p = check_pair(target, pred)
    check_finite(t, "target")
    check_finite(p, "pred")
    n = t.size
    st = sp_ = 0.0
    for tc, pc in flat_slabs(t, p):
        st += float(tc.sum())
        sp_ += float(pc.sum())
    mt, mp = st / n, sp_ / n
    cov = var = 0.0
    for tc, pc in flat_slabs(t, p):
        pc -= mp
        tc -= mt
        cov += float(np.dot(pc, tc))
        var += float(np.dot(pc, pc))
    if var == 0.0:
        return 0.0, mt
    scale = cov / var
    return scale, mt - scale * mp


def psnr_normalized(target, pred, *, pmin: float = 0.1, pmax: float = 99.9) -> float:
    """PSNR under the CARE restoration benchmark protocol.

    1. ``target`` is percentile-normalised (:func:`normalize_percentile`, no clipping), so
       its ``pmin``/``pmax`` percentiles become 0 and 1;
    2. ``pred`` is mapped onto the normalised target by the least-squares affine transform
       (:func:`fit_affine`), which removes any global scale/offset of the method's output;
    3. PSNR is computed with ``data_range=1``.

    Being invariant to affine intensity changes of ``pred``, this compares methods whose
    outputs live on different intensity scales (blurred input, Richardson-Lucy, networks).

    Parameters
    ----------
    target, pred : array_like, same shape
    pmin, pmax : float
        Percentiles used to normalise the target.

    Returns
    -------
    float
        PSNR in dB; ``inf`` when ``pred`` is an exact affine function of ``target``.
    """
    t, p = check_pair(target, pred)
    tn = normalize_percentile(t, pmin, pmax)
    check_finite(p, "pred")
    a, b = fit_affine(tn, p)
    return psnr_from_mse(mse(tn, p, a, b), 1.0)


# --------------------------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------------------------

def ssim(target, pred, *, data_range: float, sigma: float = 1.5, axes: str = "YX") -> float:
    """Mean structural similarity with a Gaussian window (Wang et al. 2004).

    Constants ``K1 = 0.01``, ``K2 = 0.03``, Gaussian window of standard deviation ``sigma``
    voxels along every axis (truncated at 3.5 sigma: the 11-tap window of the paper for
    ``sigma = 1.5``), population (not sample) covariances, ``reflect`` borders, and the mean
    taken over voxels at least one window radius from every border. This is exactly
    ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
    use_sample_covariance=False, sigma=sigma, data_range=data_range)``, computed in float64
    slab by slab so that large 3D volumes fit in memory.

    Parameters
    ----------
    target, pred : array_like, shape (Y, X) or (Z, Y, X)
    data_range : float
        Peak-to-peak intensity range of the data, given explicitly.
    sigma : float
        Standard deviation of the Gaussian window in voxels.
    axes : {"YX", "ZYX"}
        Axes of the images; 3D SSIM uses a 3D window (isotropic in voxels).

    Returns
    -------
    float
        Mean SSIM in [-1, 1]; 1 for identical images.
    """
    t, p = check_pair(target, pred, axes)
    ax = check_axes(axes, t.ndim, allowed=("YX", "ZYX"))
    r = check_data_range(data_range)
    check_finite(t, "target")
    check_finite(p, "pred")
    return _ssim(t, p, r, float(sigma), ax)


def _ssim(t: np.ndarray, p: np.ndarray, data_range: float, sigma: float, axes: str) -> float:
    if not (np.isfinite(sigma) and sigma > 0):
        raise InputError(f"sigma must be a positive number of voxels, got {sigma}")
    truncate = 3.5
    rad = int(truncate * sigma + 0.5)
    win = 2 * rad + 1
    if min(t.shape) < win:
        raise InputError(
            f"images of shape {t.shape} ({axes}) are smaller than the SSIM window "
            f"({win} voxels for sigma={sigma}); use larger images or a smaller sigma")
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    g = dict(sigma=sigma, truncate=truncate, mode="reflect")
    n0 = t.shape[0]
    plane = int(np.prod(t.shape[1:]))
    inner = tuple(slice(rad, s - rad) for s in t.shape[1:])
    total = 0.0
    count = 0
    for sl in slabs(n0, plane):
        # only planes at least `rad` from the volume's first-axis borders enter the mean
        lo_keep, hi_keep = max(sl.start, rad), min(sl.stop, n0 - rad)
        if lo_keep >= hi_keep:
            continue
        lo, hi = max(0, lo_keep - rad), min(n0, hi_keep + rad)  # halo: exact filtering
        x = t[lo:hi].astype(np.float64)
        y = p[lo:hi].astype(np.float64)
        ux = ndi.gaussian_filter(x, **g)
        uy = ndi.gaussian_filter(y, **g)
        vx = ndi.gaussian_filter(x * x, **g) - ux * ux
        vy = ndi.gaussian_filter(y * y, **g) - uy * uy
        vxy = ndi.gaussian_filter(x * y, **g) - ux * uy
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
        keep = s[(slice(lo_keep - lo, hi_keep - lo),) + inner]
        total += float(keep.sum())
        count += keep.size
    return total / count


def ssim_normalized(target, pred, *, pmin: float = 0.1, pmax: float = 99.9,
                    sigma: float = 1.5, axes: str = "YX") -> float:
    """SSIM under the CARE protocol (see :func:`psnr_normalized`), with ``data_range=1``.

    The target is percentile-normalised, the prediction affinely fitted to it
    (:func:`fit_affine`), then :func:`ssim` is computed with ``data_range=1``.

    Parameters
    ----------
    target, pred : array_like, shape (Y, X) or (Z, Y, X)
    pmin, pmax : float
        Percentiles used to normalise the target.
    sigma : float
        Standard deviation of the Gaussian window in voxels.
    axes : {"YX", "ZYX"}

    Returns
    -------
    float
    """
    t, p = check_pair(target, pred, axes)
    ax = check_axes(axes, t.ndim, allowed=("YX", "ZYX"))
    tn = normalize_percentile(t, pmin, pmax)
    check_finite(p, "pred")
    a, b = fit_affine(tn, p)
    # float32 keeps the fitted copy small; _ssim promotes each slab to float64
    pf = p.astype(np.float32)
    pf *= np.float32(a)
    pf += np.float32(b)
    return _ssim(tn, pf, 1.0, float(sigma), ax)


def ssim_per_slice(target, pred, *, data_range: float, sigma: float = 1.5,
                   axes: str = "ZYX") -> np.ndarray:
    """:func:`ssim` of every plane ``target[k]`` with ``pred[k]`` (2D windows).

    The paper's Table 1 compares the horizontal sections of a z-scan and of its
    restoration plane by plane: ``SSIM(x_k, y_k)`` for k = 1..Z.

    Parameters
    ----------
    target, pred : array_like, shape (Z, Y, X)
    data_range : float
        Peak-to-peak intensity range, given explicitly.

    Returns
    -------
    numpy.ndarray, float64, shape (Z,)
    """
    t, p = check_pair(target, pred, axes)
    check_axes(axes, t.ndim, allowed=("ZYX",))
    r = check_data_range(data_range)
    check_finite(t, "target")
    check_finite(p, "pred")
    return np.array([_ssim(t[k], p[k], r, float(sigma), "YX") for k in range(t.shape[0])])
