"""DQLR's measures on synthetic and real stacks: depth bins (thirds of the stack), PSNR/SSIM
per bin against a ground truth, and the mean lateral gradient."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["DEPTH_BINS", "depth_bins", "score_depth_bins", "mean_gradient"]

#: depth bins of the synthetic protocol and of the real-stack measures: thirds of the stack
DEPTH_BINS = ("shallow", "middle", "deep")


def depth_bins(n: int, depth_increases_with_z: bool = True) -> dict[str, slice]:
    """Thirds of ``n`` slices, from the shallowest to the deepest."""
    edges = [round(i * n / 3) for i in range(4)]
    bins = {name: slice(edges[i], edges[i + 1]) for i, name in enumerate(DEPTH_BINS)}
    if not depth_increases_with_z:
        bins = {name: slice(n - s.stop, n - s.start) for name, s in bins.items()}
    return bins


def score_depth_bins(gt: np.ndarray, images: Mapping[str, np.ndarray], *,
                     depth_increases_with_z: bool = True) -> dict[str, dict[str, float]]:
    """PSNR and SSIM (CARE protocol, :func:`sharpstack.metrics.psnr_normalized` /
    :func:`~sharpstack.metrics.ssim_normalized`, 2D per slice averaged) of every image
    against ``gt`` per depth bin, plus the mean gradient magnitude and FM of each bin
    (``metrics.focus_measure``), both on the image as given."""
    from ... import metrics

    out: dict[str, dict[str, float]] = {}
    bins = depth_bins(gt.shape[0], depth_increases_with_z)
    for name, img in images.items():
        img = np.asarray(img, dtype=np.float32)
        row: dict[str, float] = {}
        for b, sl in bins.items():
            row[f"psnr_{b}"] = metrics.psnr_normalized(gt[sl], img[sl])
            row[f"ssim_{b}"] = float(np.mean([metrics.ssim_normalized(gt[z], img[z])
                                              for z in range(sl.start, sl.stop)]))
            row[f"grad_{b}"] = mean_gradient(img[sl])
            row[f"fm_{b}"] = metrics.focus_measure(img[sl], axes="ZYX")
        out[name] = row
    return out


def mean_gradient(stack: np.ndarray) -> float:
    """Mean lateral gradient magnitude ``|(d/dy, d/dx)|`` over the planes of ``stack``
    (central differences, ``numpy.gradient``)."""
    a = np.asarray(stack, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    gy, gx = np.gradient(a, axis=(1, 2))
    return float(np.mean(np.hypot(gy, gx)))
