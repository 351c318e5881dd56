"""Image-quality and segmentation metrics used to reproduce the method papers' tables.

Everything here takes an explicit data range or normalises explicitly: no metric guesses a
range from a dtype (``uint16`` data holding 12-bit values would otherwise be scored against
65535). Sums run in float64 and over slabs of the first axis, so 512^3 volumes do not need
whole-volume float64 copies.

Restoration metrics
-------------------
:func:`psnr`, :func:`ssim`
    Plain PSNR / Gaussian-window SSIM with an explicit ``data_range``.
:func:`psnr_normalized`, :func:`ssim_normalized`
    The CARE restoration benchmark protocol (Weigert et al. 2018, csbdeep's
    ``normalize`` + ``normalize_minmse``): the target is percentile-normalised
    (:func:`normalize_percentile`), the prediction is mapped onto it by the affine transform
    that minimises the squared error (:func:`fit_affine`), and the metric is computed with
    ``data_range=1``. Scores therefore do not depend on the intensity scale or offset of a
    method's output, only on its structure.

Segmentation metric
-------------------
:func:`seg_score`
    SEG of the ISBI Cell Tracking Challenge (mean Jaccard index of matched objects).

Sharpness without a reference
-----------------------------
:func:`focus_measure` (FM), :func:`piqe`, :func:`gradient_magnitude`,
:func:`mean_abs_gradient`, :func:`gradient_histogram`; a texture detector that sharpness
measures reward: :func:`texture_peak`.

Disentanglement
---------------
:func:`mlvae_score`.

Modules: :mod:`.quality` (PSNR, SSIM, the CARE protocol), :mod:`.focus`, :mod:`.seg`,
:mod:`.disentanglement`, and :mod:`.arrays` (input checks and float64 sums shared by all).
"""

from __future__ import annotations

from .disentanglement import mlvae_score
from .focus import (focus_measure, gradient_histogram, gradient_magnitude, laplacian_difference,
                    mean_abs_gradient, piqe, texture_peak)
from .quality import (fit_affine, normalize_percentile, psnr, psnr_normalized, ssim,
                      ssim_normalized, ssim_per_slice)
from .seg import seg_score

__all__ = [
    "fit_affine",
    "normalize_percentile",
    "psnr",
    "psnr_normalized",
    "seg_score",
    "ssim",
    "ssim_normalized",
    "focus_measure",
    "mlvae_score",
    "piqe",
    "texture_peak",
    "gradient_magnitude",
    "mean_abs_gradient",
    "gradient_histogram",
    "ssim_per_slice",
    "laplacian_difference",
]
