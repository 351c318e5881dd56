"""Helpers of the physics tests: moments and FWHM of kernels, label images of balls."""

from __future__ import annotations

import numpy as np


def moments(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre offsets (relative to shape // 2) and variances along every axis."""
    k = np.asarray(k, dtype=np.float64)
    k = k / k.sum()
    means, variances = [], []
    for ax in range(k.ndim):
        c = np.arange(k.shape[ax]) - k.shape[ax] // 2
        p = k.sum(axis=tuple(i for i in range(k.ndim) if i != ax))
        m = (p * c).sum()
        means.append(m)
        variances.append((p * (c - m) ** 2).sum())
    return np.array(means), np.array(variances)


def fwhm(profile: np.ndarray) -> float:
    """Full width at half maximum of a centred, single-peaked 1D profile (linear interp)."""
    p = np.asarray(profile, dtype=np.float64)
    c = int(np.argmax(p))
    half = p[c] / 2
    def side(direction):
        i = c
        while 0 <= i + direction < len(p) and p[i + direction] > half:
            i += direction
        j = i + direction
        if not 0 <= j < len(p):
            return float(abs(i - c))
        return abs(i - c) + (p[i] - half) / (p[i] - p[j])
    return side(1) + side(-1)


def balls(shape, specs):
    """Label image with balls (z, y, x, r), later balls not overwriting earlier ones."""
    zz, yy, xx = np.indices(shape)
    lab = np.zeros(shape, np.int32)
    for i, (z, y, x, r) in enumerate(specs, 1):
        ball = (zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 <= r * r
        lab[ball & (lab == 0)] = i
    return lab
