"""The noise of a stack, estimated from the stack itself: a Poisson-Gaussian model
``var = a * mean + b`` (in the stack's own intensity units).

Camera noise is shot noise (variance proportional to the signal, ``a``) plus read noise
(``b``). :func:`estimate_noise` fits the model from the lateral slices alone, with no
calibration image:

1. the noise of every pixel is isolated by a high-pass filter normalised so that white noise
   keeps its variance (``[[0, -1, 0], [-1, 4, -1], [0, -1, 0]] / sqrt(20)``): smooth structure
   cancels, noise stays;
2. each slice is cut into blocks (8 x 8 px by default); a block gives its local mean (of the
   slice) and the mean square of its high-passed pixels (its noise variance, plus whatever
   structure the filter lets through);
3. blocks are binned by their mean (equal counts per bin); in each bin the lower-middle
   (``quantile``, default 0.4) of the block variances is taken, corrected for the chi-square
   spread of a block's estimate: blocks on edges (structure leaking into the high-pass) sit in
   the upper tail and do not pull it;
4. ``var = a * mean + b`` is fitted to the bins by least squares weighted by their counts,
   ``a`` clipped at 0.

Spatially correlated noise (a camera's fixed pattern, stacks already filtered or
interpolated) is underestimated: the model is for raw pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import InputError

__all__ = ["NoiseModel", "estimate_noise", "highpass"]

_HP = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], dtype=np.float32) / np.sqrt(20.0)


@dataclass(frozen=True)
class NoiseModel:
    """``var(mean) = a * mean + b``, in the units of the stack it was fitted on."""

    a: float
    b: float
    n_blocks: int = 0

    def variance(self, mean: np.ndarray) -> np.ndarray:
        """Noise variance at the (noise-free) intensities ``mean``, floored at 0."""
        return np.clip(self.a * np.asarray(mean, dtype=np.float32) + self.b, 0.0, None)

    def std_at(self, mean: float) -> float:
        return float(np.sqrt(max(self.a * float(mean) + self.b, 0.0)))

    def scaled(self, gain: float, offset: float = 0.0) -> NoiseModel:
        """The model of ``gain * stack + offset`` (e.g. after percentile normalisation)."""
        g = float(gain)
        return NoiseModel(a=self.a * g, b=self.b * g * g - self.a * g * float(offset),
                          n_blocks=self.n_blocks)

    def describe(self) -> str:
        return f"var = {self.a:.4g} * mean + {self.b:.4g} ({self.n_blocks} blocks)"


def highpass(slices: np.ndarray) -> np.ndarray:
    """The white-noise-preserving high-pass of every lateral slice ((..., Y, X), valid part:
    one pixel less on every side)."""
    s = np.asarray(slices, dtype=np.float32)
    c = s[..., 1:-1, 1:-1]
    return ((4.0 * c - s[..., :-2, 1:-1] - s[..., 2:, 1:-1] - s[..., 1:-1, :-2]
             - s[..., 1:-1, 2:]) / np.sqrt(20.0)).astype(np.float32)


def _chi2_quantile_factor(q: float, dof: int) -> float:
    """E[var] / quantile_q of the mean of ``dof`` squared unit normals (Wilson-Hilferty)."""
    from scipy.stats import norm

    z = float(norm.ppf(q))
    k = float(dof)
    return 1.0 / max((1.0 - 2.0 / (9.0 * k) + z * np.sqrt(2.0 / (9.0 * k))) ** 3, 1e-3)


def estimate_noise(stack: np.ndarray, *, block: int = 8, n_bins: int = 16,
                   quantile: float = 0.4) -> NoiseModel:
    """Fit ``var = a * mean + b`` to the lateral slices of ``stack`` (ZYX or YX).

    Parameters
    ----------
    stack : ndarray, shape (Z, Y, X) or (Y, X)
        Raw or affinely normalised intensities (float or integer; not rescaled).
    block : int
        Side of the square blocks (pixels).
    n_bins : int
        Intensity bins of equal block counts.
    quantile : float
        Which quantile of the block variances in a bin estimates its noise (0 < q <= 0.5).

    Returns
    -------
    NoiseModel

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> clean = np.tile(np.linspace(10, 200, 64, dtype=np.float32), (4, 64, 1))
    >>> m = estimate_noise(rng.poisson(clean).astype(np.float32) + rng.normal(0, 3, clean.shape))
    >>> bool(abs(m.a - 1) < 0.2 and abs(m.b - 9) < 4)
    True
    """
    a = np.asarray(stack, dtype=np.float32)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise InputError(f"noise estimation needs a ZYX or YX array, got shape {a.shape}")
    if not 0 < quantile <= 0.5:
        raise InputError(f"quantile must be in (0, 0.5], got {quantile}")
    b = int(block)
    hp = highpass(a)
    mid = a[:, 1:-1, 1:-1]
    z, h, w = hp.shape
    nh, nw = h // b, w // b
    if nh * nw == 0:
        raise InputError(f"slices of {a.shape[1]}x{a.shape[2]} px are too small for "
                         f"{b}x{b} noise blocks")
    hp = hp[:, :nh * b, :nw * b].reshape(z, nh, b, nw, b)
    mid = mid[:, :nh * b, :nw * b].reshape(z, nh, b, nw, b)
    var = (hp.astype(np.float64) ** 2).mean(axis=(2, 4)).ravel()
    mean = mid.astype(np.float64).mean(axis=(2, 4)).ravel()
    ok = np.isfinite(var) & np.isfinite(mean)
    var, mean = var[ok], mean[ok]
    if var.size < 8:
        raise InputError("too few blocks to estimate the noise; give a larger stack")
    order = np.argsort(mean)
    bins = [idx for idx in np.array_split(order, max(2, min(int(n_bins), var.size // 8)))
            if idx.size]
    corr = _chi2_quantile_factor(quantile, b * b)
    ms = np.array([np.median(mean[i]) for i in bins])
    vs = np.array([np.quantile(var[i], quantile) * corr for i in bins])
    ws = np.array([float(i.size) for i in bins])
    if np.ptp(ms) <= 0:
        return NoiseModel(a=0.0, b=float(np.average(vs, weights=ws)), n_blocks=int(var.size))
    A = np.stack([ms, np.ones_like(ms)], axis=1) * np.sqrt(ws)[:, None]
    slope, icpt = np.linalg.lstsq(A, vs * np.sqrt(ws), rcond=None)[0]
    if slope < 0:
        slope, icpt = 0.0, float(np.average(vs, weights=ws))
    return NoiseModel(a=float(slope), b=float(icpt), n_blocks=int(var.size))
