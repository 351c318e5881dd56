"""IsoNet's training-pair degradation for any z/xy factor, integer or not.

An integer factor goes through :func:`.acquisition.degrade_lateral` unchanged (the
Table 1 protocol). A non-integer factor ``f`` (2.5 for 0.2 um z over 0.08 um pixels) samples
what the microscope samples: the blurred slice at positions ``0, f, 2f, ...`` along the axial
direction (linear interpolation of the blurred, hence band-limited, slice), noise added to
those samples, then linear upsampling back to the fine grid with the convention of
:func:`sharpstack.resample.upsample` (the one the deployed modules use).
"""

from __future__ import annotations

import numpy as np

from ... import degrade
from .acquisition import blur, degrade_lateral
from ...resample import exact_factor, subsample, upsample

__all__ = ["degrade_lateral_any"]


def degrade_lateral_any(image2d: np.ndarray, kernel2d: np.ndarray, factor: float, *,
                        axis: int = 0, poisson_peak: float | None = None,
                        gauss_sigma: float = 0.0,
                        rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Blur, sample every ``factor`` pixels along ``axis`` (0 = rows), add noise, upsample
    back; the result has the shape of ``image2d`` (``(Y, X)`` or ``(..., Y, X)``), float32.
    """
    f = exact_factor(factor)
    if isinstance(f, int):
        return degrade_lateral(image2d, kernel2d, f, axis=axis,
                                       poisson_peak=poisson_peak, gauss_sigma=gauss_sigma,
                                       rng=rng)
    img = np.asarray(image2d, dtype=np.float32)
    ax = img.ndim - 2 + (int(axis) % 2)
    blurred = blur(img, np.asarray(kernel2d, dtype=np.float32))
    coarse = degrade.add_noise(subsample(blurred, f, axis=ax), poisson_peak=poisson_peak,
                               gauss_sigma=gauss_sigma, rng=rng)
    up = upsample(coarse, f, axis=ax)
    sl = [slice(None)] * img.ndim
    sl[ax] = slice(0, img.shape[ax])
    out = up[tuple(sl)]
    if out.shape[ax] < img.shape[ax]:  # ceil(ceil(n / f) * f) >= n always; kept for safety
        pad = [(0, 0)] * img.ndim
        pad[ax] = (0, img.shape[ax] - out.shape[ax])
        out = np.pad(out, pad, mode="edge")
    return np.ascontiguousarray(out, dtype=np.float32)
