"""Differentiable image losses shared by the methods (torch only, no downloads).

- :func:`ssim` / :func:`ssim_loss`: structural similarity with a Gaussian window (Wang et al.
  2004; window sigma 1.5, K1 0.01, K2 0.03 as in scikit-image's ``gaussian_weights=True``),
  for ``(B, C, H, W)`` or ``(B, C, D, H, W)`` tensors.
- :func:`ssim_l1_loss`: ``alpha (1 - SSIM) + (1 - alpha) L1``, the perceptual-loss substitute
  of Zhao et al. 2017 (used where a paper asks for a VGG loss whose weights cannot be
  downloaded here).

Hand-written because torch has no SSIM and the field's libraries (kornia, pytorch-msssim) are
not dependencies of sharpstack; this is a dozen lines of separable convolutions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["gaussian_window", "ssim", "ssim_loss", "ssim_l1_loss"]


def gaussian_window(sigma: float = 1.5, radius: int | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """1D normalised Gaussian of ``2 * radius + 1`` taps (radius default ``ceil(3.5 sigma)``,
    scikit-image's truncate)."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    r = int(radius if radius is not None else -(-3.5 * sigma // 1))
    x = torch.arange(-r, r + 1, dtype=dtype)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filter over every space axis, channels independent."""
    c = x.shape[1]
    nd = x.ndim - 2
    conv = F.conv2d if nd == 2 else F.conv3d
    for axis in range(nd):
        shape = [1] * nd
        shape[axis] = g.numel()
        k = g.to(x).reshape(1, 1, *shape).repeat(c, 1, *([1] * nd))
        x = conv(x, k, groups=c)
    return x


def ssim(pred: torch.Tensor, target: torch.Tensor, *, data_range: float = 1.0,
         sigma: float = 1.5, reduction: str = "mean") -> torch.Tensor:
    """SSIM between ``pred`` and ``target`` (same shape ``(B, C, H, W)`` or ``(B, C, D, H, W)``).

    Statistics are taken over a Gaussian window without padding (the map is smaller than the
    input by the window), as in the reference implementation. ``reduction``: ``"mean"``
    (a scalar), ``"batch"`` (one value per sample, shape ``(B,)``) or ``"none"`` (the map).

    >>> x = torch.rand(2, 1, 32, 32)
    >>> float(ssim(x, x))
    1.0
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if pred.ndim not in (4, 5):
        raise ValueError(f"expected (B, C, H, W) or (B, C, D, H, W), got {pred.ndim} dims")
    g = gaussian_window(sigma)
    if min(pred.shape[2:]) < g.numel():
        raise ValueError(f"images of {tuple(pred.shape[2:])} are smaller than the SSIM window "
                         f"({g.numel()} px)")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    # float32 with autocast off: E[x^2] - E[x]^2 cancels catastrophically in bf16/fp16
    pred, target = pred.float(), target.float()
    with torch.autocast(pred.device.type, enabled=False):
        mu_x, mu_y = _blur(pred, g), _blur(target, g)
        sxx = _blur(pred * pred, g) - mu_x ** 2
        syy = _blur(target * target, g) - mu_y ** 2
        sxy = _blur(pred * target, g) - mu_x * mu_y
    # the unbiased covariance of scikit-image differs by n/(n-1) ~ 1.0 for these windows
    smap = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1)
                                                        * (sxx + syy + c2))
    if reduction == "none":
        return smap
    if reduction == "batch":
        return smap.flatten(1).mean(dim=1)
    if reduction == "mean":
        return smap.mean()
    raise ValueError(f"reduction must be 'mean', 'batch' or 'none', got {reduction!r}")


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, *, data_range: float = 1.0,
              sigma: float = 1.5) -> torch.Tensor:
    """``1 - SSIM`` (a scalar), the structural term of DQLR's loss."""
    return 1.0 - ssim(pred, target, data_range=data_range, sigma=sigma)


def ssim_l1_loss(pred: torch.Tensor, target: torch.Tensor, *, alpha: float = 0.84,
                 data_range: float = 1.0, sigma: float = 1.5) -> torch.Tensor:
    """``alpha (1 - SSIM) + (1 - alpha) mean|pred - target|`` (Zhao et al. 2017: alpha 0.84)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return alpha * ssim_loss(pred, target, data_range=data_range, sigma=sigma) \
        + (1.0 - alpha) * torch.mean(torch.abs(pred - target))
