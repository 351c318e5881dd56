"""The least-squares linear restoration filter learned from (blurry, sharp) image pairs: a
Wiener filter estimated from data, the disentangled benchmarks' classical baseline beside
Richardson-Lucy (:func:`fit_linear_filter`, :func:`fit_linear_filters`,
:func:`apply_linear_filter`)."""

from __future__ import annotations

import numpy as np

from ...errors import InputError

__all__ = ["apply_linear_filter", "fit_linear_filter", "fit_linear_filters"]


def fit_linear_filter(pairs, size: int = 15, *, ridge: float = 1e-6,
                      chunk: int = 64) -> np.ndarray:
    """The ``size`` x ``size`` linear filter (plus an offset) that maps blurry images onto their
    sharp counterparts with the least squared error: a Wiener filter estimated from pairs.

    It needs no PSF and no noise model: whatever is linear and shift-invariant in the mapping
    from the blurry to the sharp image (blur, a sub-pixel displacement between the two
    exposures, the best noise trade-off of the pairs) is learned, and nothing else. Written
    here because no field library fits a restoration filter from image pairs
    (``skimage.restoration.wiener`` needs a known PSF and a balance constant).

    Parameters
    ----------
    pairs : iterable of (blurry, sharp)
        2D arrays of equal shape per pair (any number of pairs, sizes may differ). The
        borders are mirrored as :func:`apply_linear_filter` mirrors them.
    size : int
        Odd filter width in pixels.
    ridge : float
        Tikhonov weight relative to the mean diagonal of the normal matrix (numerical safety
        only; the fit is over every pixel of the pairs).
    chunk : int
        Rows per block of the normal equations (bounds the memory to ``chunk`` x width x
        size**2 values).

    Returns
    -------
    numpy.ndarray, float64, shape ``(size * size + 1,)``
        The filter taps row by row, then the offset; use :func:`apply_linear_filter`.
    """
    return _solve_normal(*_normal_equations(pairs, size, chunk), ridge)


def fit_linear_filters(groups, size: int = 15, *, ridge: float = 1e-6,
                       chunk: int = 64) -> tuple[dict, np.ndarray]:
    """:func:`fit_linear_filter` per group of pairs and over all groups together, from one
    pass over the data: ``({key: filter}, filter of all pairs)``.

    ``groups`` maps a key (e.g. a plane's defocus) to an iterable of (blurry, sharp) pairs.
    """
    per, tot = {}, None
    for key, pairs in groups.items():
        ata, atb = _normal_equations(pairs, size, chunk)
        per[key] = _solve_normal(ata, atb, ridge)
        tot = (ata.copy(), atb.copy()) if tot is None else (tot[0] + ata, tot[1] + atb)
    if tot is None:
        raise InputError("no image pairs to fit the filter on")
    return per, _solve_normal(*tot, ridge)


def _normal_equations(pairs, size: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    from numpy.lib.stride_tricks import sliding_window_view

    if size < 1 or size % 2 == 0:
        raise InputError(f"size must be a positive odd number of pixels, got {size}")
    r, k = size // 2, size * size
    ata = np.zeros((k + 1, k + 1))
    atb = np.zeros(k + 1)
    for blurry, sharp in pairs:
        x = np.asarray(blurry, dtype=np.float64)
        y = np.asarray(sharp, dtype=np.float64)
        if x.ndim != 2 or x.shape != y.shape:
            raise InputError(f"every pair must be two 2D images of one shape, got {x.shape} "
                             f"and {y.shape}")
        if min(x.shape) <= r:
            raise InputError(f"images of {x.shape} are too small for a {size} px filter; "
                             f"use a smaller size")
        win = sliding_window_view(np.pad(x, r, mode="symmetric"), (size, size))
        for y0 in range(0, x.shape[0], chunk):
            a = win[y0:y0 + chunk].reshape(-1, k)
            b = y[y0:y0 + chunk].ravel()
            ata[:k, :k] += a.T @ a
            s = a.sum(axis=0)
            ata[:k, k] += s
            ata[k, :k] += s
            ata[k, k] += len(b)
            atb[:k] += a.T @ b
            atb[k] += b.sum()
    return ata, atb


def _solve_normal(ata: np.ndarray, atb: np.ndarray, ridge: float) -> np.ndarray:
    if ata[-1, -1] == 0:  # the offset's entry counts the pixels
        raise InputError("no image pairs to fit the filter on")
    a = ata.copy()
    a[np.diag_indices(len(a))] += ridge * np.trace(ata) / len(a)
    return np.linalg.solve(a, atb)


def apply_linear_filter(image, coef: np.ndarray) -> np.ndarray:
    """Apply a filter of :func:`fit_linear_filter` to a 2D image (mirrored borders); float32."""
    from scipy import ndimage

    c = np.asarray(coef, dtype=np.float64)
    size = int(round(np.sqrt(c.size - 1)))
    if size * size + 1 != c.size:
        raise InputError(f"coef must hold size**2 taps and an offset, got {c.size} values")
    x = np.asarray(image, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"image must be 2D, got shape {x.shape}")
    # ndimage's "reflect" is numpy's "symmetric" padding, the one the fit used
    out = ndimage.correlate(x, c[:-1].reshape(size, size), mode="reflect") + c[-1]
    return out.astype(np.float32)
