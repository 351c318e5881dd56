"""Image formation shared by several methods: camera noise.

:func:`add_noise` adds Poisson (shot) noise, then Gaussian read noise, in the image's own
intensity units. Every method's synthetic data passes through it: IsoNet's anisotropic
acquisition (``methods/isonet/acquisition.py``: blur, axial subsampling, linear
upsampling), DQLR's depth-dependent degradation (``methods/dqlr/depth.py``), the
disentangled deblurring defocus series (``methods/disentangled/defocus.py``) and ZSE-GAN's
synthetic z-scans (``methods/zsegan/phantom.py``).

All functions take and return ``float32`` numpy arrays; integer inputs are converted to
``float32`` without any rescaling (:func:`as_float32`, the check shared with those method
modules; not part of ``__all__``).

Examples
--------
>>> import numpy as np
>>> add_noise(np.full((2, 3), 5.0), poisson_peak=None, gauss_sigma=0.0, rng=0)
array([[5., 5., 5.],
       [5., 5., 5.]], dtype=float32)
"""

from __future__ import annotations

import numpy as np

from .errors import InputError

__all__ = ["add_noise"]


def as_float32(arr, name: str, min_ndim: int = 1) -> np.ndarray:
    """``arr`` as ``float32`` (no rescaling), refusing non-numeric, too few dims, NaN or inf."""
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


def _rng(rng) -> np.random.Generator:
    try:
        return np.random.default_rng(rng)
    except TypeError:
        raise InputError(f"rng must be a numpy Generator, an int seed or None, "
                         f"got {type(rng).__name__}") from None


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
    v = as_float32(volume, "volume")
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
