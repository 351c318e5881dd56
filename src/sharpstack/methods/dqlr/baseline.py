"""DQLR's baseline: plane-by-plane Richardson-Lucy with the oracle iteration count.

The benchmark compares DQLR against Richardson-Lucy deconvolution of every plane with a
Gaussian PSF whose width follows depth
(:func:`sharpstack.baselines.richardson_lucy_slicewise`, shared with ZSE-GAN's benchmark),
with the one iteration count for the whole stack that scores best against the ground truth
(:func:`richardson_lucy_slicewise_best`).
"""

from __future__ import annotations

from collections.abc import Sequence

from ...baselines import RichardsonLucyResult, iteration_counts, slicewise_iterates
from ...errors import InputError
from ...metrics import psnr_normalized
from ...metrics.arrays import to_numpy

__all__ = ["richardson_lucy_slicewise_best"]


def richardson_lucy_slicewise_best(stack, sigmas, reference,
                                   iterations: Sequence[int] = (2, 5, 10, 20, 50), *,
                                   axes: str = "ZYX", border: str = "extend",
                                   pmin: float = 0.1, pmax: float = 99.9,
                                   planes: slice | None = None) -> RichardsonLucyResult:
    """:func:`sharpstack.baselines.richardson_lucy_slicewise` with the best iteration count.

    One count for the whole stack, chosen by :func:`sharpstack.metrics.psnr_normalized`
    against ``reference`` over ``planes`` (default all): an oracle, i.e. an upper bound on
    what the baseline achieves with these widths (see
    :func:`sharpstack.baselines.richardson_lucy_best`).
    """
    v, gens = slicewise_iterates(stack, sigmas, axes, border)
    ref = to_numpy(reference, "reference", axes)
    if ref.shape != v.shape:
        raise InputError(f"reference has shape {ref.shape} but stack has {v.shape}; "
                         f"they must be on the same grid")
    counts = iteration_counts(iterations)
    sel = planes if planes is not None else slice(None)
    est = v.copy()
    scores: dict[int, float] = {}
    best, best_n = None, counts[0]
    for i in range(1, counts[-1] + 1):
        for z, gen in enumerate(gens):
            if gen is not None:
                est[z] = next(gen)
        if i in counts:
            scores[i] = psnr_normalized(ref[sel], est[sel], pmin=pmin, pmax=pmax)
            if best is None or scores[i] > scores[best_n]:
                best, best_n = est.copy(), i
    return RichardsonLucyResult(volume=best, iterations=best_n, scores=scores)
