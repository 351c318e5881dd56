"""DQLR's measures on real stacks without ground truth, chosen so that noise cannot fool them,
and the grid-artefact measure.

- :func:`foreground_contrast`: per slice, the spread between the 99th and the 50th
  percentile of the slice after a Gaussian smoothing of 1 px (noise alone barely moves it);
- :func:`signal_band` / :func:`band_power`: the radial frequency band where the input's
  shallow slices hold signal well above their white-noise floor, and per slice the power in
  that band minus the slice's own noise floor (amplified noise raises the floor as much as
  the band, so it does not count as signal);
- :func:`grid_peak`: how far the mean power spectrum along x and y at 1/``period`` and
  2/``period`` cycles/px stands above its neighbours (a texture on the latent grid of a
  ``period``-px code shows as such a peak);
- :func:`neighbour_ssim`: per slice, the SSIM of the slice against the slice ``gap`` above
  it (shallower), both smoothed by 1 px, the shallower one percentile-normalised and the
  deeper one affinely fitted to it (attenuation does not count). Structures continue from
  slice to slice, so noise lowers it; blur raises it (neighbours blurred alike look alike),
  so it is read together with the contrast and band measures, never alone;
- :func:`depth_ratio`: deepest third over shallowest third.
"""

from __future__ import annotations

import numpy as np

from .evaluate import depth_bins
from .shallow_deep import NOISE_BAND, radial_spectrum

__all__ = ["foreground_contrast", "signal_band", "band_power", "grid_peak", "depth_ratio",
           "axis_spectrum", "neighbour_ssim"]


def foreground_contrast(stack: np.ndarray) -> np.ndarray:
    """Per-slice 99th minus 50th percentile after a 1-px Gaussian smoothing (ZYX)."""
    from scipy.ndimage import gaussian_filter

    a = np.asarray(stack, dtype=np.float32)
    out = []
    for z in range(a.shape[0]):
        s = gaussian_filter(a[z], 1.0)
        lo, hi = np.percentile(s, [50.0, 99.0])
        out.append(float(hi - lo))
    return np.asarray(out)


def _spectra(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.asarray(stack, dtype=np.float32)
    f = radial_spectrum(a[0])[0]
    specs = np.stack([radial_spectrum(a[z])[1] for z in range(a.shape[0])])
    floor = specs[:, f > NOISE_BAND].mean(1)
    return f, specs, floor


def signal_band(stack: np.ndarray, *, factor: float = 4.0) -> tuple[float, float]:
    """``(f_lo, f_hi)`` cycles/px: the frequencies above 0.03 where the shallowest third's
    mean spectrum exceeds ``factor`` times its noise floor."""
    f, specs, floor = _spectra(stack)
    sh = depth_bins(specs.shape[0])["shallow"]
    ok = (specs[sh].mean(0) > factor * floor[sh].mean()) & (f > 0.03)
    if not ok.any():
        return 0.03, 0.1
    return float(f[ok].min()), float(f[ok].max())


def band_power(stack: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    """Per slice: mean power in ``band`` minus the slice's noise floor (>= 0)."""
    f, specs, floor = _spectra(stack)
    sel = (f >= band[0]) & (f <= band[1])
    return np.maximum(specs[:, sel].mean(1) - floor, 0.0)


def axis_spectrum(stack: np.ndarray) -> np.ndarray:
    """Mean 1D power spectrum (rfft, mean removed per line) along x and y of a ZYX stack or
    YX image, on the frequencies ``rfftfreq(n)`` of the shorter side."""
    a = np.asarray(stack, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    n = min(a.shape[1], a.shape[2])
    a = a[:, :n, :n]
    px = np.abs(np.fft.rfft(a - a.mean(2, keepdims=True), axis=2)) ** 2
    py = np.abs(np.fft.rfft(a - a.mean(1, keepdims=True), axis=1)) ** 2
    return 0.5 * (px.mean((0, 1)) + py.mean((0, 2)))


def grid_peak(stack: np.ndarray, period: int) -> float:
    """Largest ratio, over the frequencies ``k / period`` (k = 1 .. period // 2) cycles/px,
    of the axis spectrum (:func:`axis_spectrum`) to the median of its 4 nearest
    neighbouring frequency bins (2 each side). About 1 without a grid texture."""
    p = axis_spectrum(stack)
    n = 2 * (len(p) - 1)
    ratios = []
    for k in range(1, int(period) // 2 + 1):
        i = int(round(k * n / period))
        nb = [j for j in (i - 2, i - 1, i + 1, i + 2) if 0 < j < len(p)]
        ratios.append(float(p[i] / (np.median(p[nb]) + 1e-30)))
    return max(ratios)


def neighbour_ssim(stack: np.ndarray, gap: int = 1) -> np.ndarray:
    """Per slice ``z``: SSIM (CARE protocol, :func:`sharpstack.metrics.ssim_normalized`) of
    slice ``z`` against slice ``z - gap``, both smoothed by 1 px; NaN for the first ``gap``
    slices."""
    from scipy.ndimage import gaussian_filter

    from ...metrics import ssim_normalized

    a = np.asarray(stack, dtype=np.float32)
    out = np.full(a.shape[0], np.nan)
    sm = [gaussian_filter(a[z], 1.0) for z in range(a.shape[0])]
    for z in range(int(gap), a.shape[0]):
        out[z] = ssim_normalized(sm[z - gap], sm[z])
    return out


def depth_ratio(values, n_slices: int | None = None) -> float:
    """Mean of the deepest third over mean of the shallowest third."""
    v = np.asarray(values, dtype=np.float64)
    b = depth_bins(n_slices or len(v))
    return float(v[b["deep"]].mean() / max(v[b["shallow"]].mean(), 1e-30))
