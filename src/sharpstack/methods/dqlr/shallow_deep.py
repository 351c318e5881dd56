"""DQLR's shallow-to-deep training pairs: the shallow part of a stack teaches what its deep
slices should look like.

The paper trains DQLR to reproduce the acquired slices (``pairs="self"``): the quantised
bottleneck removes noise, but nothing tells the network what a deep slice looks like when it
is sharp. Here (``pairs="shallow_to_deep"``, the idea of DeAbe, Guo et al., Nat Commun 2025)
the stack's own depth degradation is measured and applied to shallow clips:

1. :func:`estimate_depth_model` measures per slice, on the normalised stack ordered from
   shallow to deep,

   - the signal level ``a(z)``: mean intensity above the slice's background (the 5th
     percentile of the slice smoothed by 2 px; blur conserves the mean, so it measures
     attenuation only), smoothed by a log-linear fit over z;
   - the noise level ``n(z)``: standard deviation of the white noise floor of the slice's
     power spectrum (the power at radial frequencies above 0.4 cycles/px, where a confocal
     slice at Nyquist sampling has no signal left);
   - the extra lateral blur ``s(z)``: the Gaussian sigma that best turns the shallow slices'
     mean spectrum (noise floor removed) into slice ``z``'s: ``log(S_z / S_ref) = c -
     4 pi^2 s^2 f^2``, fitted over the frequencies where both spectra stand 3x above their
     noise floors, every frequency bin weighted alike; ``s^2`` smoothed by a running median
     and made non-decreasing with depth.

2. :class:`ShallowDeepClips` draws clips of consecutive slices from the shallow part of a
   stack (``shallow_fraction``), places them at a random deeper depth and degrades every
   slice to the look of its new depth: blur ``sqrt(s(z_deep)^2 - s(z_src)^2)`` laterally
   (and ``axial_ratio`` times that along z), intensity times ``a(z_deep) / a(z_src)``, and
   Gaussian noise that brings the clip's noise level to ``n(z_deep)``. The input is the
   degraded clip, the target the clip as acquired.

Everything is seeded: item ``i`` is the same pair every time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from ...errors import InputError
from .depth import depth_blur

__all__ = ["DepthModel", "estimate_depth_model", "radial_spectrum", "ShallowDeepClips",
           "NOISE_BAND"]

NOISE_BAND = 0.4  # radial frequencies (cycles/px) above this hold noise only


def radial_spectrum(img: np.ndarray, nbins: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of a 2D image (mean removed, Hann window).

    Returns ``(f, power)``: bin centres in cycles/px (0 .. 0.5) and the mean
    ``|FFT|^2 / sum(w^2)`` per bin, so that white noise of variance ``v`` gives ``v``
    everywhere."""
    a = np.asarray(img, dtype=np.float64)
    h, w = a.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    p = np.abs(np.fft.fft2((a - a.mean()) * win)) ** 2 / float((win ** 2).sum())
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    r = np.sqrt(fy ** 2 + fx ** 2)
    edges = np.linspace(0.0, 0.5, nbins + 1)
    idx = np.digitize(r.ravel(), edges) - 1
    ok = (idx >= 0) & (idx < nbins)
    s = np.bincount(idx[ok], weights=p.ravel()[ok], minlength=nbins)
    c = np.bincount(idx[ok], minlength=nbins)
    return 0.5 * (edges[1:] + edges[:-1]), s / np.maximum(c, 1)


def _noise_power(img: np.ndarray) -> float:
    a = np.asarray(img, dtype=np.float64)
    h, w = a.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    p = np.abs(np.fft.fft2((a - a.mean()) * win)) ** 2 / float((win ** 2).sum())
    r = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2)
    return float(np.median(p[r > NOISE_BAND]))


@dataclass
class DepthModel:
    """How one stack's quality changes with depth (slice index, shallow to deep).

    ``signal``: smoothed signal level ``a(z)`` (1 = mean of the shallow part); ``sigma``:
    extra lateral Gaussian blur (px) relative to the shallow part; ``noise``: noise standard
    deviation per slice (normalised units); ``n_shallow``: slices the clips are drawn from;
    ``raw_signal`` / ``raw_sigma``: the per-slice measurements before smoothing."""

    signal: np.ndarray
    sigma: np.ndarray
    noise: np.ndarray
    n_shallow: int
    raw_signal: np.ndarray
    raw_sigma: np.ndarray

    def summary(self) -> dict[str, float]:
        """Shallow and deep ends of the model, for the training record and the card."""
        return {"signal_deep": float(self.signal[-1] / self.signal[0]),
                "sigma_deep_px": float(self.sigma[-1]),
                "noise_shallow": float(np.median(self.noise[:self.n_shallow])),
                "noise_deep": float(np.median(self.noise[-max(1, len(self.noise) // 3):])),
                "n_shallow": int(self.n_shallow)}

    def to_dict(self) -> dict[str, list[float] | int]:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                for k, v in asdict(self).items()}


def _running_median(v: np.ndarray, k: int = 5) -> np.ndarray:
    r = k // 2
    p = np.pad(v, r, mode="edge")
    return np.array([np.median(p[i:i + k]) for i in range(len(v))])


def estimate_depth_model(stack: np.ndarray, *, shallow_fraction: float = 1 / 3,
                         min_shallow: int = 1) -> DepthModel:
    """Measure signal, blur and noise per slice of a normalised stack (ZYX, slice 0 the
    shallowest); see the module docstring. ``min_shallow``: at least this many slices form
    the shallow part (a clip's length)."""
    a = np.asarray(stack, dtype=np.float32)
    if a.ndim != 3 or a.shape[0] < 2:
        raise InputError(f"the depth model needs a z-stack of at least 2 slices, got shape "
                         f"{a.shape}")
    z = a.shape[0]
    n_sh = int(min(z, max(min_shallow, round(shallow_fraction * z), 1)))
    # signal above each slice's own background (5th percentile of the slice smoothed by
    # 2 px): out-of-focus haze that lifts the background of deep slices does not count
    from scipy.ndimage import gaussian_filter

    bg = np.array([np.percentile(gaussian_filter(a[k], 2.0), 5.0) for k in range(z)])
    raw_sig = np.maximum(a.reshape(z, -1).mean(1) - bg, 1e-6).astype(np.float64)
    noise_p = np.array([_noise_power(a[k]) for k in range(z)])
    specs = np.stack([radial_spectrum(a[k])[1] for k in range(z)])
    f = radial_spectrum(a[0])[0]
    sig = np.maximum(specs - noise_p[:, None], 0.0)
    # signal level: log-linear in depth (exponential attenuation), robust to content changes
    zz = np.arange(z, dtype=np.float64)
    slope, icpt = np.polyfit(zz, np.log(raw_sig), 1) if z > 2 else (0.0, np.log(raw_sig[0]))
    signal = np.exp(icpt + slope * zz)
    signal = signal / signal[:n_sh].mean()
    # extra blur: fit log(S_z / S_ref) = c - 4 pi^2 s^2 f^2 over the trusted band
    ref = sig[:n_sh].mean(0)
    ref_noise = noise_p[:n_sh].mean()
    raw_s2 = np.full(z, np.nan)
    for k in range(z):
        band = (f > 0.02) & (ref > 3 * ref_noise) & (sig[k] > 3 * noise_p[k])
        if band.sum() < 3:
            continue
        x = -4.0 * math.pi ** 2 * f[band] ** 2
        y = np.log(sig[k][band] / ref[band])
        # every bin counts the same: weighting by SNR trusted the lowest frequencies most,
        # where the content of the slice (which objects it cuts) changes the spectrum more
        # than the blur does (sparse nuclei: fitted 0.3 px where the truth is 2.5 px)
        coef = np.polyfit(x, y, 1)
        raw_s2[k] = coef[0]
    good = np.isfinite(raw_s2)
    if not good.any():
        s2 = np.zeros(z)
    else:
        s2 = np.interp(zz, zz[good], raw_s2[good])
        s2 = np.maximum.accumulate(np.maximum(_running_median(s2), 0.0))
        s2 = s2 - s2[:n_sh].mean() if n_sh < z else s2 * 0.0
        s2 = np.maximum(s2, 0.0)
    return DepthModel(signal=signal, sigma=np.sqrt(s2), noise=np.sqrt(noise_p), n_shallow=n_sh,
                      raw_signal=raw_sig / raw_sig[:n_sh].mean(),
                      raw_sigma=np.sqrt(np.maximum(np.nan_to_num(raw_s2, nan=0.0), 0.0)))


class ShallowDeepClips(Dataset):
    """Pairs ``(degraded, target)`` of clips ``(1, window + n_predict, P, P)``: a clip from
    the shallow part of a stack, as acquired (target), and the same clip degraded to the look
    of a random deeper depth (input), following each stack's :class:`DepthModel`.

    Item ``i`` is drawn from ``default_rng([seed, i])``: a stack (in proportion to its clip
    positions), a source start in ``[-(window - 1), n_shallow - T]`` (slices above the top
    are the first slice repeated), a virtual depth for the clip's first slice, uniform
    between the source depth and the last slice, a lateral position within ``rows``, and,
    with ``augment``, one of the 8 flips/rotations (the same for input and target).
    """

    def __init__(self, stacks: Sequence[np.ndarray], models: Sequence[DepthModel], *,
                 length: int, window: int, n_predict: int, patch: int,
                 rows: Sequence[tuple[int, int]], seed: int, augment: bool,
                 axial_ratio: float = 1.0) -> None:
        self.models = list(models)
        self.length, self.window, self.n_predict = int(length), int(window), int(n_predict)
        self.patch, self.rows = int(patch), list(rows)
        self.seed, self.augment = int(seed), bool(augment)
        self.axial_ratio = float(axial_ratio)
        smax = max(float(m.sigma.max()) for m in self.models)
        self.margin = int(math.ceil(4.0 * smax)) + 1
        self.zrad = int(math.ceil(4.0 * self.axial_ratio * smax))
        m = self.margin
        self.stacks = [np.pad(s, [(0, 0), (m, m), (m, m)], mode="reflect" if min(
            s.shape[1:]) > m else "edge") for s in stacks]
        t = self.window + self.n_predict
        counts = []
        for s, mod, (lo, hi) in zip(stacks, self.models, self.rows):
            nz = max(mod.n_shallow, t) - t + self.window
            counts.append(max(0, nz) * max(0, hi - lo - self.patch + 1)
                          * max(0, s.shape[2] - self.patch + 1))
        total = float(sum(counts))
        if total <= 0:
            raise InputError("no clip fits in the given stacks; use a smaller patch_size")
        self.weights = np.asarray(counts, dtype=np.float64) / total

    def __len__(self) -> int:
        return self.length

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """Item ``i`` as arrays ``(degraded, target)`` ``(T, P, P)`` and where it comes from:
        ``source`` (first slice, negative: repeated top slice), ``depth`` (the virtual depth
        of the first slice), ``y``, ``x`` (corner of the patch before augmentation)."""
        rng = np.random.default_rng([self.seed, int(i)])
        k = int(rng.choice(len(self.stacks), p=self.weights))
        s, mod = self.stacks[k], self.models[k]
        lo, hi = self.rows[k]
        nz, t, p, m, r = s.shape[0], self.window + self.n_predict, self.patch, self.margin, \
            self.zrad
        n_src = max(mod.n_shallow, t) if nz >= t else nz
        z0 = int(rng.integers(-(self.window - 1), max(n_src - t, -(self.window - 1)) + 1))
        zd0 = int(rng.integers(max(z0, 0), max(nz - 1, max(z0, 0)) + 1))
        y0 = int(rng.integers(lo, hi - p + 1))
        x0 = int(rng.integers(0, s.shape[2] - 2 * m - p + 1))  # original coordinates
        zs = np.clip(np.arange(z0 - r, z0 + t + r), 0, nz - 1)
        # padded coordinates: the block holds the patch plus a margin on every side
        block = s[zs, y0:y0 + p + 2 * m, x0:x0 + p + 2 * m].astype(np.float32)
        zd = np.clip(zd0 + np.arange(-r, t + r), 0, nz - 1)
        extra = np.sqrt(np.maximum(mod.sigma[zd] ** 2 - mod.sigma[zs] ** 2, 0.0))
        deg = depth_blur(block, extra, self.axial_ratio * extra)
        gain = mod.signal[zd] / mod.signal[zs]
        deg = deg * gain[:, None, None].astype(np.float32)
        # noise left after blur and scaling, then Gaussian noise up to the deep level
        left = gain * mod.noise[zs] / np.sqrt((1 + 4 * math.pi * extra ** 2)
                                              * (1 + 2 * math.sqrt(math.pi) * self.axial_ratio
                                                 * extra))
        add = np.sqrt(np.maximum(mod.noise[zd] ** 2 - left ** 2, 0.0))
        deg = deg + (add[:, None, None] * rng.standard_normal(deg.shape)).astype(np.float32)
        sl = (slice(r, r + t), slice(m, m + p), slice(m, m + p))
        inp, tgt = deg[sl], block[sl]
        if self.augment:
            rot = int(rng.integers(4))
            flip = rng.random() < 0.5
            inp, tgt = (np.rot90(a, rot, axes=(1, 2)) for a in (inp, tgt))
            if flip:
                inp, tgt = inp[:, :, ::-1], tgt[:, :, ::-1]
        return (np.ascontiguousarray(inp, dtype=np.float32),
                np.ascontiguousarray(tgt, dtype=np.float32),
                {"source": z0, "depth": zd0, "y": y0, "x": x0})

    def __getitem__(self, i: int):
        inp, tgt, _ = self.pair(i)
        return torch.from_numpy(inp[None]), torch.from_numpy(tgt[None])
