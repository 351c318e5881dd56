"""Classical baselines that the learned restorers are compared against.

:func:`richardson_lucy`
    Richardson-Lucy deconvolution with a known PSF, in 2D or 3D (the RL column of the
    IsoNet paper's Table 1).
:func:`richardson_lucy_best`
    The same, with the iteration count chosen by the best score against a reference.
:func:`richardson_lucy_slicewise`
    Plane-by-plane 2D Richardson-Lucy with a Gaussian PSF whose width varies per plane (the
    DQLR and ZSE-GAN benchmarks); DQLR's oracle variant lies in ``methods/dqlr/baseline.py``
    and builds on :func:`slicewise_iterates` and :func:`iteration_counts` (not in
    ``__all__``).

For IsoNet the input is the anisotropic stack upsampled along z to isotropic voxels (what
the network sees as well) and the PSF is the one that formed it, sampled on the same
isotropic grid.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.fft as sfft

from ._axes import check_axes
from .errors import InputError
from .metrics import psnr_normalized
from .metrics.arrays import check_finite, to_numpy

__all__ = ["RichardsonLucyResult", "richardson_lucy", "richardson_lucy_best",
           "richardson_lucy_slicewise"]


def _prepare(volume, psf, axes: str) -> tuple[np.ndarray, np.ndarray]:
    v = to_numpy(volume, "volume", axes)
    check_axes(axes, v.ndim, allowed=("ZYX", "YX"))
    check_finite(v, "volume")
    if v.size == 0:
        raise InputError("volume is empty; pass a non-empty image")
    if v.min() < 0:
        raise InputError(
            f"volume has negative values (min {float(v.min()):g}); Richardson-Lucy needs "
            f"non-negative intensities: subtract the camera offset and clip at 0 first")
    h = to_numpy(psf, "psf")
    if h.ndim != v.ndim:
        raise InputError(f"psf has {h.ndim} dimensions but the volume ({axes}) has {v.ndim}; "
                         f"pass a PSF sampled on the same grid and axes as the volume")
    check_finite(h, "psf")
    if h.min() < 0 or h.sum() <= 0:
        raise InputError("psf must be non-negative with a positive sum")
    if any(k > 2 * s + 1 for k, s in zip(h.shape, v.shape)):
        raise InputError(f"psf of shape {h.shape} is far larger than the volume {v.shape}; "
                         f"crop the PSF around its centre")
    h = h.astype(np.float64)
    h /= h.sum()  # RL conserves flux only for a PSF that sums to 1
    return v.astype(np.float32), h.astype(np.float32)


class _Convolver:
    """Linear ('same'-mode, zero-padded) convolution with a fixed kernel via cached rFFTs."""

    def __init__(self, shape: tuple[int, ...], kernel: np.ndarray):
        self.shape = shape
        self.fshape = tuple(sfft.next_fast_len(s + k - 1, real=True)
                            for s, k in zip(shape, kernel.shape))
        self.otf = sfft.rfftn(kernel, self.fshape)
        # same crop as scipy.signal.fftconvolve(mode="same")
        self.crop = tuple(slice((k - 1) // 2, (k - 1) // 2 + s)
                          for s, k in zip(shape, kernel.shape))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        full = sfft.irfftn(sfft.rfftn(x, self.fshape) * self.otf, self.fshape)
        return np.ascontiguousarray(full[self.crop], dtype=np.float32)


_BORDERS = ("extend", "zero")


def _rl_iterates(v: np.ndarray, h: np.ndarray, border: str) -> Iterator[np.ndarray]:
    """Yield the RL estimate on ``v``'s grid after 1, 2, 3, ... iterations.

    ``border="zero"``: plain RL with zero-padded convolutions (dark rim at the borders).
    ``border="extend"``: boundary-adapted RL (Bertero & Boccacci 2005): the object is
    estimated on a domain extended by half the PSF on every side, where nothing was
    observed; the data term uses the observed voxels only and the update is divided by
    ``W = h~ ⊛ mask`` so that objects next to the border are neither dimmed nor brightened.
    """
    if border not in _BORDERS:
        raise InputError(f"border must be one of {_BORDERS}, got {border!r}")
    vmax = float(v.max())
    if vmax == 0.0:
        while True:
            yield np.zeros_like(v)
    if border == "extend":
        ext = [k // 2 for k in h.shape]
        shape = tuple(s + 2 * e for s, e in zip(v.shape, ext))
        crop = tuple(slice(e, e + s) for e, s in zip(ext, v.shape))
        g = np.zeros(shape, np.float32)
        g[crop] = v
    else:
        shape, crop, g = v.shape, tuple(slice(None) for _ in v.shape), v
    conv = _Convolver(shape, h)
    corr = _Convolver(shape, np.ascontiguousarray(h[(slice(None, None, -1),) * h.ndim]))
    if border == "extend":
        mask = np.zeros(shape, np.float32)
        mask[crop] = 1.0
        w = corr(mask)
        inv_w = np.zeros(shape, np.float32)
        np.divide(1.0, w, out=inv_w, where=w > 1e-6)
    else:
        inv_w = None
    # denominators below this are FFT round-off, not signal
    eps = np.float32(1e-6 * vmax)
    est = np.full(shape, np.float32(v.mean()), dtype=np.float32)
    while True:
        blurred = conv(est)
        np.maximum(blurred, eps, out=blurred)
        np.divide(g, blurred, out=blurred)  # g is 0 outside the observed region
        est *= corr(blurred)
        if inv_w is not None:
            est *= inv_w
        np.maximum(est, 0.0, out=est)  # RL is non-negative; remove FFT round-off
        yield est[crop]


def _check_iterations(n, name: str = "iterations") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"{name} must be a positive integer, got {n!r}")
    return int(n)


def iteration_counts(iterations: Sequence[int]) -> list[int]:
    """The iteration counts to score, sorted and without repeats (at least one, all >= 1)."""
    try:
        counts = sorted({_check_iterations(n, "each entry of iterations") for n in iterations})
    except TypeError:
        raise InputError(f"iterations must be a sequence of positive integers, "
                         f"got {iterations!r}") from None
    if not counts:
        raise InputError("iterations is empty; give at least one iteration count")
    return counts


def richardson_lucy(volume, psf, *, iterations: int = 10, axes: str = "ZYX",
                    border: str = "extend") -> np.ndarray:
    """Richardson-Lucy deconvolution with a known PSF.

    ``f <- f * (h~ ⊛ (g / (h ⊛ f)))`` with ``h~`` the mirrored PSF, zero-padded linear
    convolutions (FFT, kernel transforms cached), float32 maths, a flat start at the mean of
    ``g``. With ``border="zero"`` this is
    ``skimage.restoration.richardson_lucy(g, h, iterations, clip=False)`` except for the
    start value (skimage starts at 0.5 whatever the intensity scale) and two safeguards:
    denominators are floored at ``1e-6 * max(g)`` and the estimate at 0. The default
    ``border="extend"`` is the boundary-adapted RL of Bertero & Boccacci (2005): the object
    is estimated on a domain extended by half the PSF on every side, where nothing was
    observed, which avoids the dark rim that zero padding causes. No clipping to
    [-1, 1] (skimage's default ``clip=True`` would destroy un-normalised data) and no
    rescaling: the output has the intensity scale of the input.

    Parameters
    ----------
    volume : array_like, shape (Z, Y, X) or (Y, X)
        Non-negative blurred image ``g`` (integers are promoted to float32, not rescaled).
    psf : array_like, same number of dimensions
        PSF ``h`` on the same voxel grid, centred in its array (odd sizes recommended);
        normalised here to sum 1.
    iterations : int
        Number of RL iterations.
    axes : {"ZYX", "YX"}
    border : {"extend", "zero"}
        Boundary-adapted RL (default) or plain RL with zeros beyond the borders.

    Returns
    -------
    numpy.ndarray, float32, same shape as ``volume``
    """
    v, h = _prepare(volume, psf, axes)
    n = _check_iterations(iterations)
    for i, est in enumerate(_rl_iterates(v, h, border), start=1):
        if i == n:
            return est.copy()
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass
class RichardsonLucyResult:
    """Outcome of :func:`richardson_lucy_best`.

    Attributes
    ----------
    volume : numpy.ndarray, float32
        The deconvolved image at the best iteration count.
    iterations : int
        The best iteration count.
    scores : dict of int -> float
        ``psnr_normalized`` (dB) against the reference for every iteration count tried.
    """

    volume: np.ndarray
    iterations: int
    scores: dict[int, float] = field(default_factory=dict)


def richardson_lucy_best(volume, psf, reference, iterations: Sequence[int] = (2, 5, 10, 20, 50),
                         *, axes: str = "ZYX", border: str = "extend", pmin: float = 0.1,
                         pmax: float = 99.9) -> RichardsonLucyResult:
    """Richardson-Lucy with the iteration count that scores best against a reference.

    One RL run to ``max(iterations)``; at each listed count the estimate is scored with
    :func:`sharpstack.metrics.psnr_normalized` against ``reference`` and the best kept.

    This is an oracle: it uses the ground truth to tune RL's only parameter, which a user
    could not do. It is therefore an upper bound on what RL achieves, and a comparison of a
    learned method against it favours the baseline, i.e. it is fair (conservative) for the
    learned method.

    Parameters
    ----------
    volume : array_like, shape (Z, Y, X) or (Y, X)
        Non-negative blurred image.
    psf : array_like, same number of dimensions
        PSF on the same grid.
    reference : array_like, same shape as ``volume``
        Ground truth to score against (IsoNet Table 1: GT convolved with the isotropic PSF).
    iterations : sequence of int
        Iteration counts to try.
    axes : {"ZYX", "YX"}
    border : {"extend", "zero"}
        Border handling, as in :func:`richardson_lucy`.
    pmin, pmax : float
        Percentiles of the reference normalisation in ``psnr_normalized``.

    Returns
    -------
    RichardsonLucyResult
    """
    v, h = _prepare(volume, psf, axes)
    ref = to_numpy(reference, "reference", axes)
    if ref.shape != v.shape:
        raise InputError(f"reference has shape {ref.shape} but volume has {v.shape}; "
                         f"they must be on the same grid")
    counts = iteration_counts(iterations)
    scores: dict[int, float] = {}
    best: np.ndarray | None = None
    best_n = counts[0]
    for i, est in enumerate(_rl_iterates(v, h, border), start=1):
        if i in counts:
            scores[i] = psnr_normalized(ref, est, pmin=pmin, pmax=pmax)
            if best is None or scores[i] > scores[best_n]:
                best, best_n = est.copy(), i
        if i >= counts[-1]:
            break
    return RichardsonLucyResult(volume=best, iterations=best_n, scores=scores)


def _gaussian_kernel_2d(sigma: float) -> np.ndarray:
    """Normalised 2D Gaussian sampled at pixel centres, ``2 ceil(4 sigma) + 1`` taps a side."""
    half = max(1, int(np.ceil(4.0 * sigma)))
    x = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    k = np.outer(g, g)
    return (k / k.sum()).astype(np.float32)


def _slice_sigmas(sigmas, n: int) -> np.ndarray:
    s = np.asarray(sigmas, dtype=np.float64)
    if s.ndim == 0:
        s = np.full(n, float(s))
    if s.shape != (n,):
        raise InputError(f"sigmas must hold one Gaussian width per plane ({n} planes), got "
                         f"shape {s.shape}; pass e.g. a list of {n} floats")
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise InputError("sigmas must be finite and >= 0 (0 leaves a plane as it is)")
    return s


def slicewise_iterates(stack, sigmas, axes: str, border: str):
    """Per-plane RL iterate generators (None for planes with sigma 0) and the checked stack."""
    v = to_numpy(stack, "stack", axes)
    check_axes(axes, v.ndim, allowed=("ZYX",))
    check_finite(v, "stack")
    if v.size == 0:
        raise InputError("stack is empty; pass a non-empty z-stack")
    if v.min() < 0:
        raise InputError(
            f"stack has negative values (min {float(v.min()):g}); Richardson-Lucy needs "
            f"non-negative intensities: subtract the camera offset and clip at 0 first")
    v = v.astype(np.float32)
    s = _slice_sigmas(sigmas, v.shape[0])
    gens = []
    for z in range(v.shape[0]):
        if s[z] <= 0:
            gens.append(None)
            continue
        k = _gaussian_kernel_2d(float(s[z]))
        if any(kk > 2 * n + 1 for kk, n in zip(k.shape, v.shape[1:])):
            raise InputError(f"sigma {s[z]:g} of plane {z} makes a PSF larger than the plane "
                             f"{v.shape[1:]}; use smaller widths")
        gens.append(_rl_iterates(v[z], k, border))
    return v, gens


def richardson_lucy_slicewise(stack, sigmas, *, iterations: int = 10, axes: str = "ZYX",
                              border: str = "extend") -> np.ndarray:
    """Plane-by-plane 2D Richardson-Lucy with a Gaussian PSF whose width varies per plane.

    Plane ``z`` is deconvolved with a normalised 2D Gaussian of standard deviation
    ``sigmas[z]`` pixels (as :func:`richardson_lucy` with ``axes="YX"``); a width of 0 leaves
    the plane unchanged. Useful wherever the blur changes along z: deeper slices of a
    confocal stack (blur growing with depth, DQLR's baseline, the paper's ImageJ Gaussian
    deconvolution done per slice) or the planes of a z-scan whose blur grows with their
    distance from the focal plane.

    Parameters
    ----------
    stack : array_like, shape (Z, Y, X)
        Non-negative image (integers promoted to float32, not rescaled).
    sigmas : float or sequence of Z floats
        Gaussian width (pixels) per plane.
    iterations : int
        RL iterations per plane.
    axes : {"ZYX"}
    border : {"extend", "zero"}
        As in :func:`richardson_lucy`.

    Returns
    -------
    numpy.ndarray, float32, same shape as ``stack``

    Examples
    --------
    >>> import numpy as np
    >>> richardson_lucy_slicewise(np.ones((2, 16, 16)), [0.0, 1.0], iterations=3).shape
    (2, 16, 16)
    """
    n = _check_iterations(iterations)
    v, gens = slicewise_iterates(stack, sigmas, axes, border)
    out = v.copy()
    for z, gen in enumerate(gens):
        if gen is None:
            continue
        for i, est in enumerate(gen, start=1):
            if i == n:
                out[z] = est
                break
    return out
