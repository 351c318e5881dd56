"""Percentile normalisation that maps 1:1 onto bioimage.io's ``scale_range``.

bioimage.io's ``scale_range`` computes ``(x - p_lo) / (p_hi - p_lo + eps)`` with the
percentiles taken per sample over the given axes. :class:`PercentileNormalizer` does the same
(``before``), can undo it (``after``) and writes its own processing step for a model package,
so what a network saw in training is exactly what it sees in Fiji.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

__all__ = ["PercentileNormalizer"]


@dataclass(frozen=True)
class PercentileNormalizer:
    """Normalise by the ``pmin``-th and ``pmax``-th percentiles (in percent, 0-100).

    Examples
    --------
    >>> import numpy as np
    >>> n = PercentileNormalizer(0.0, 100.0, eps=0.0)
    >>> x = np.array([5.0, 8.0, 11.0])
    >>> n.before(x).tolist()
    [0.0, 0.5, 1.0]
    >>> n.after(n.before(x), *n.stats(x)).tolist()
    [5.0, 8.0, 11.0]
    """

    pmin: float = 1.0
    pmax: float = 99.8
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if not 0.0 <= self.pmin < self.pmax <= 100.0:
            raise InputError(
                f"percentiles must satisfy 0 <= pmin < pmax <= 100 (in percent), got "
                f"pmin={self.pmin}, pmax={self.pmax}")

    def stats(self, x: np.ndarray) -> tuple[float, float]:
        """The two percentiles of ``x`` (float64 maths)."""
        lo, hi = np.percentile(np.asarray(x, dtype=np.float64), [self.pmin, self.pmax])
        return float(lo), float(hi)

    def before(self, x: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
        """``(x - lo) / (hi - lo + eps)`` as float32; percentiles of ``x`` unless given."""
        if lo is None or hi is None:
            lo, hi = self.stats(x)
        return ((np.asarray(x, dtype=np.float32) - np.float32(lo))
                / np.float32(hi - lo + self.eps)).astype(np.float32)

    def after(self, y: np.ndarray, lo: float, hi: float) -> np.ndarray:
        """Undo :meth:`before` for given percentiles."""
        return (np.asarray(y, dtype=np.float32) * np.float32(hi - lo + self.eps)
                + np.float32(lo)).astype(np.float32)

    def to_bioimageio(self, axes: tuple[str, ...]):
        """The equivalent ``ScaleRangeDescr`` (spec 0.5), both percentiles written."""
        from bioimageio.spec.model.v0_5 import AxisId, ScaleRangeDescr, ScaleRangeKwargs

        return ScaleRangeDescr(kwargs=ScaleRangeKwargs(
            axes=[AxisId(a) for a in axes], min_percentile=self.pmin,
            max_percentile=self.pmax, eps=self.eps))
