"""IsoNet's training data: degraded/original patch pairs cut from the lateral slices of the
anisotropic stack itself (each slice blurred with the lateral kernel, subsampled along one
lateral axis by the axial factor and linearly upsampled back)."""

from __future__ import annotations

import numpy as np

from ...errors import InputError
from .fractional import degrade_lateral_any
from .optics import lateral_kernel

__all__ = ["lateral_kernel_for", "make_training_pairs"]


def lateral_kernel_for(psf: np.ndarray | None, mode: str) -> np.ndarray:
    """2D kernel (rows = the axial direction) that degrades lateral slices for training."""
    if mode == "none" or psf is None:
        return np.ones((1, 1), dtype=np.float32)
    return lateral_kernel(np.asarray(psf, dtype=np.float32), mode=mode, axis="y")


def make_training_pairs(stack: np.ndarray, kernel: np.ndarray, factor: float, *,
                        patch_size: int = 64, n_patches: int = 2048, seed: int = 0,
                        poisson_peak: float | None = None, gauss_sigma: float = 0.0,
                        axes: str = "ZYX") -> tuple[np.ndarray, np.ndarray]:
    """Degraded/original lateral patch pairs for IsoNet.

    Every lateral slice is used twice: as it is (degraded along y) and transposed (degraded
    along x), so the network always sees the axial direction as rows.

    Parameters
    ----------
    stack : ndarray, shape (Z, Y, X)
        The anisotropic stack, already normalised (float32).
    kernel : ndarray, shape (ky, kx)
        Lateral blur; rows are the axial direction (see :func:`lateral_kernel_for`).
    factor : float
        Axial subsampling factor, integer or not (:mod:`.fractional`).

    Returns
    -------
    (X, Y) : ndarrays, shape (N, 1, P, P), float32
        Degraded inputs and original targets.
    """
    from ..._axes import check_axes

    check_axes(axes, np.ndim(stack), allowed=("ZYX",))
    z, h, w = stack.shape
    p = int(patch_size)
    if min(h, w) < p:
        raise InputError(
            f"lateral size {h}x{w} is smaller than patch_size {p}; use a smaller --patch-size "
            f"(a multiple of 16)")
    rng = np.random.default_rng(seed)
    images, degraded = [], []
    for zi in range(z):
        for img in (stack[zi], stack[zi].T):
            img = np.ascontiguousarray(img, dtype=np.float32)
            images.append(img)
            degraded.append(degrade_lateral_any(
                img, kernel, factor, axis=0, poisson_peak=poisson_peak,
                gauss_sigma=gauss_sigma, rng=rng).astype(np.float32))
    # draw candidates uniformly, keep the ones with the most structure (CSBDeep filters empty
    # patches by their maximum; here by the target's std, which also drops flat bright ones)
    n_cand = int(n_patches) * 2
    which = rng.integers(0, len(images), size=n_cand)
    xs, ys, scores = [], [], []
    for i in which:
        img, deg = images[i], degraded[i]
        r0 = int(rng.integers(0, img.shape[0] - p + 1))
        c0 = int(rng.integers(0, img.shape[1] - p + 1))
        t = img[r0:r0 + p, c0:c0 + p]
        xs.append(deg[r0:r0 + p, c0:c0 + p])
        ys.append(t)
        scores.append(float(t.std()))
    keep = np.argsort(scores)[::-1][: int(n_patches)]
    keep = np.sort(keep)
    X = np.stack([xs[i] for i in keep])[:, None].astype(np.float32)
    Y = np.stack([ys[i] for i in keep])[:, None].astype(np.float32)
    return X, Y
