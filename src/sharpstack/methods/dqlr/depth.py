"""DQLR's depth-dependent image formation: deeper slices lose sharpness (and contrast).

:func:`depth_profile` gives a per-slice value growing with depth; :func:`depth_blur` blurs
every slice with the 3D Gaussian PSF of its own depth. The synthetic protocol (``synth``)
multiplies by an attenuation profile and adds camera noise with the shared
:func:`sharpstack.degrade.add_noise`.

All functions take and return ``float32`` numpy arrays (axes ``"ZYX"``, depth = slice
index); integer inputs are converted to ``float32`` without any rescaling.
"""

from __future__ import annotations

import numpy as np

from ...degrade import as_float32
from ...errors import InputError

__all__ = ["depth_profile", "depth_blur"]


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
    is truncated at 4 sigma and normalised; borders are mirrored (``reflect``, numpy's
    ``"symmetric"`` padding). Lateral filtering is ``scipy.ndimage.gaussian_filter``
    (truncate 4).

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

    v = as_float32(volume, "volume")
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

