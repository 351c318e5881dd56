"""Noise-aware IsoNet training pairs: inputs as noisy as the stack's axial planes, targets
whose noise the network cannot predict.

The paper's pairs take a noisy lateral slice as the target and its blurred, subsampled copy
as the input. Blurring averages the noise away, so the inputs are far cleaner than the real
axial planes the network meets at inference; and the input still carries a blurred copy of
the target's own noise, which the network learns to sharpen back: on noisy stacks it turns
noise into texture. Here, with the stack's own noise model ``var = a * mean + b``
(:mod:`.noise`, fitted from the stack itself):

- the source slice is degraded (blur with the lateral kernel, samples every ``factor`` rows),
  then noise of the stack's model is added to the coarse samples (Gaussian, variance
  ``a * mean + b`` at the blurred intensity; for a noisy source only the part its blur
  removed) and the samples are linearly upsampled back: the input looks like a real axial
  plane;
- the target is either

  - ``denoised``: the slice denoised by non-local means after a generalised Anscombe
    transform of the same noise model (skimage); the source of the input is that denoised
    slice too, so input noise and target are independent: the network learns to deblur
    and not to make noise; or
  - ``masked``: the noisy slice itself, with a blind spot as in Noise2Void (Krull et al.,
    CVPR 2019): on a stratified grid (one pixel in every ``mask_cell`` x ``mask_cell``
    cell) each pixel of the source is replaced by a random neighbour before the degradation,
    and the loss counts only those pixels, whose noise the input no longer holds.
"""

from __future__ import annotations

import numpy as np

from ...errors import InputError
from ...resample import subsample, upsample
from .acquisition import blur
from .noise import NoiseModel

__all__ = ["NOISE_TARGETS", "gat", "gat_inverse", "denoise_slices", "degrade_noisy",
           "blind_spot", "make_noise_aware_pairs"]

NOISE_TARGETS = ("denoised", "masked")


def gat(x: np.ndarray, noise: NoiseModel) -> np.ndarray:
    """Generalised Anscombe transform: noise of ``noise``'s model -> unit variance."""
    x = np.asarray(x, dtype=np.float32)
    if noise.a <= 1e-12:
        return x / np.float32(np.sqrt(max(noise.b, 1e-12)))
    a = np.float32(noise.a)
    return (2.0 / a) * np.sqrt(np.clip(a * x + 0.375 * a * a + noise.b, 0.0, None))


def gat_inverse(t: np.ndarray, noise: NoiseModel) -> np.ndarray:
    """Algebraic inverse of :func:`gat`."""
    t = np.asarray(t, dtype=np.float32)
    if noise.a <= 1e-12:
        return t * np.float32(np.sqrt(max(noise.b, 1e-12)))
    a = np.float32(noise.a)
    return (((a * t / 2.0) ** 2) - 0.375 * a * a - noise.b) / a


def denoise_slices(slices: np.ndarray, noise: NoiseModel, *, strength: float = 0.8
                   ) -> np.ndarray:
    """Non-local means of every lateral slice ((Z, Y, X) or (Y, X)) in the variance-
    stabilised domain (``h = strength`` noise standard deviations; skimage, fast mode)."""
    from skimage.restoration import denoise_nl_means

    s = np.asarray(slices, dtype=np.float32)
    two_d = s.ndim == 2
    s = s[None] if two_d else s
    out = np.empty_like(s)
    for i, img in enumerate(s):
        t = gat(img, noise)
        d = denoise_nl_means(t, patch_size=5, patch_distance=6, h=float(strength),
                             sigma=1.0, fast_mode=True, preserve_range=True)
        out[i] = gat_inverse(d.astype(np.float32), noise)
    return out[0] if two_d else out


def degrade_noisy(src: np.ndarray, kernel: np.ndarray, factor: float, noise: NoiseModel, *,
                  src_noisy: bool, rng: np.random.Generator) -> np.ndarray:
    """Blur ``src`` (Y, X) with ``kernel``, sample every ``factor`` rows, add noise of
    ``noise``'s model (all of it for a clean source; for a noisy one the variance its blur
    removed, ``1 - sum(kernel**2)`` of it) and upsample back to ``src``'s shape."""
    img = np.asarray(src, dtype=np.float32)
    k = np.asarray(kernel, dtype=np.float32)
    coarse = subsample(blur(img, k) if k.size > 1 else img, factor, axis=0)
    keep = float((k.astype(np.float64) ** 2).sum()) if src_noisy else 0.0
    var = noise.variance(coarse) * max(1.0 - keep, 0.0)
    coarse = coarse + rng.standard_normal(coarse.shape).astype(np.float32) * np.sqrt(var)
    up = upsample(coarse, factor, axis=0)[: img.shape[0]]
    if up.shape[0] < img.shape[0]:
        up = np.pad(up, ((0, img.shape[0] - up.shape[0]), (0, 0)), mode="edge")
    return np.ascontiguousarray(up, dtype=np.float32)


def blind_spot(img: np.ndarray, cell: int, rng: np.random.Generator,
               radius: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Noise2Void masking: one pixel per ``cell`` x ``cell`` cell replaced by a random other
    pixel within ``radius``; returns (masked image, mask of the replaced pixels)."""
    h, w = img.shape
    c = int(cell)
    rows = np.arange(0, h, c)[:, None] + rng.integers(0, c, size=(len(range(0, h, c)),
                                                                  len(range(0, w, c))))
    cols = np.arange(0, w, c)[None, :] + rng.integers(0, c, size=rows.shape)
    ok = (rows < h) & (cols < w)
    r, q = rows[ok], cols[ok]
    dr = rng.integers(-radius, radius + 1, size=r.size)
    dq = rng.integers(-radius, radius + 1, size=r.size)
    same = (dr == 0) & (dq == 0)
    dq[same] = 1  # never the pixel itself
    rr = np.clip(r + dr, 0, h - 1)
    qq = np.clip(q + dq, 0, w - 1)
    out = img.copy()
    out[r, q] = img[rr, qq]
    mask = np.zeros(img.shape, dtype=np.float32)
    mask[r, q] = 1.0
    return out, mask


def make_noise_aware_pairs(stack: np.ndarray, kernel: np.ndarray, factor: float,
                           noise: NoiseModel, *, target: str = "denoised",
                           patch_size: int = 64, n_patches: int = 2048, seed: int = 0,
                           mask_cell: int = 6, denoise_strength: float = 0.8
                           ) -> tuple[np.ndarray, ...]:
    """Noise-aware (input, target[, mask]) lateral patch pairs for IsoNet.

    Parameters
    ----------
    stack : ndarray, shape (Z, Y, X)
        The normalised anisotropic stack (float32).
    kernel : ndarray, shape (ky, kx)
        Lateral blur, rows = the axial direction (:func:`.data.lateral_kernel_for`).
    factor : float
        Axial subsampling factor.
    noise : NoiseModel
        The stack's noise, in the units of ``stack`` (:func:`.noise.estimate_noise`).
    target : {"denoised", "masked"}
        See the module docstring.

    Returns
    -------
    (X, Y) for ``denoised``, (X, Y, M) for ``masked``: ndarrays (N, 1, P, P), float32; M is
    1 at the blind-spot pixels (the only ones the loss counts).
    """
    if target not in NOISE_TARGETS:
        raise InputError(f"noise-aware target must be one of {NOISE_TARGETS}, got {target!r}")
    s = np.asarray(stack, dtype=np.float32)
    z, h, w = s.shape
    p = int(patch_size)
    if min(h, w) < p:
        raise InputError(f"lateral size {h}x{w} is smaller than patch_size {p}; use a smaller "
                         "--patch-size (a multiple of 16)")
    rng = np.random.default_rng(seed)
    clean = denoise_slices(s, noise, strength=denoise_strength) if target == "denoised" else s
    images, degraded, masks = [], [], []
    for zi in range(z):
        for t in (clean[zi], clean[zi].T):
            t = np.ascontiguousarray(t, dtype=np.float32)
            if target == "masked":
                src, m = blind_spot(t, mask_cell, rng)
                masks.append(m)
            else:
                src = t
            images.append(t)
            degraded.append(degrade_noisy(src, kernel, factor, noise,
                                          src_noisy=target == "masked", rng=rng))
    n_cand = int(n_patches) * 2
    which = rng.integers(0, len(images), size=n_cand)
    cand = []
    for i in which:
        r0 = int(rng.integers(0, images[i].shape[0] - p + 1))
        c0 = int(rng.integers(0, images[i].shape[1] - p + 1))
        score = float(images[i][r0:r0 + p, c0:c0 + p].std())
        cand.append((i, r0, c0, score))
    keep = np.sort(np.argsort([c[3] for c in cand])[::-1][: int(n_patches)])
    out_x, out_y, out_m = [], [], []
    for j in keep:
        i, r0, c0, _ = cand[j]
        sl = (slice(r0, r0 + p), slice(c0, c0 + p))
        out_x.append(degraded[i][sl])
        out_y.append(images[i][sl])
        if masks:
            out_m.append(masks[i][sl])
    X = np.stack(out_x)[:, None].astype(np.float32)
    Y = np.stack(out_y)[:, None].astype(np.float32)
    if masks:
        return X, Y, np.stack(out_m)[:, None].astype(np.float32)
    return X, Y
