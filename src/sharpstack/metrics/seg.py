"""SEG of the ISBI Cell Tracking Challenge: mean Jaccard index of matched objects."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import InputError
from .arrays import to_numpy

def _compact_labels(lab: np.ndarray, name: str) -> tuple[np.ndarray, int]:
    """Labels as a non-negative integer array with a small maximum (relabelled if needed)."""
    if lab.dtype == np.bool_:
        return lab.astype(np.int64), 1
    if not np.issubdtype(lab.dtype, np.integer):
        raise InputError(f"{name} must be an integer label image (0 = background), got dtype "
                         f"{lab.dtype}; convert with skimage.measure.label or .astype(int)")
    if lab.size and lab.min() < 0:
        raise InputError(f"{name} has negative labels; labels must be >= 0 (0 = background)")
    mx = int(lab.max()) if lab.size else 0
    if mx <= max(4 * lab.size, 1 << 20):
        return lab, mx
    uniq, inv = np.unique(lab, return_inverse=True)  # huge label values: make them compact
    if uniq[0] != 0:
        inv = inv + 1
    return inv.reshape(lab.shape), int(inv.max())


def seg_score(gt_labels, pred_labels) -> float:
    """SEG score of the ISBI Cell Tracking Challenge (Maška et al. 2014).

    For every ground-truth object ``R`` the predicted object ``S`` with
    ``|R ∩ S| > 0.5 |R|`` is its match (at most one can exist) and scores the Jaccard index
    ``|R ∩ S| / |R ∪ S|``; a GT object without such a match (including one covered by exactly
    half) scores 0. SEG is the mean over all GT objects. Label 0 is background; predicted
    objects that match nothing are not penalised (as in the challenge).

    The overlaps come from one sparse contingency table of (GT label, predicted label) pairs,
    so the cost is linear in the number of voxels, independent of the number of objects.

    Parameters
    ----------
    gt_labels, pred_labels : array_like of int, same shape (2D or 3D)
        Label images, 0 = background.

    Returns
    -------
    float
        SEG in [0, 1].
    """
    g = to_numpy(gt_labels, "gt_labels")
    q = to_numpy(pred_labels, "pred_labels")
    if g.shape != q.shape:
        raise InputError(f"gt_labels has shape {g.shape} but pred_labels has shape {q.shape}; "
                         f"label images must have the same shape")
    g, ng = _compact_labels(g, "gt_labels")
    q, nq = _compact_labels(q, "pred_labels")
    g = g.reshape(-1)
    q = q.reshape(-1)
    gt_size = np.bincount(g, minlength=ng + 1).astype(np.int64)
    pred_size = np.bincount(q, minlength=nq + 1).astype(np.int64)
    gt_ids = np.flatnonzero(gt_size[1:]) + 1
    if gt_ids.size == 0:
        raise InputError("gt_labels contains no objects (only background 0); SEG is undefined")
    both = (g > 0) & (q > 0)
    gi, qi = g[both], q[both]
    table = sp.coo_matrix((np.ones(gi.size, dtype=np.int64), (gi, qi)),
                          shape=(ng + 1, nq + 1)).tocsr()
    table.sum_duplicates()
    best = np.asarray(table.max(axis=1).toarray()).ravel()
    arg = np.asarray(table.argmax(axis=1)).ravel()
    inter = best[gt_ids]
    matched = 2 * inter > gt_size[gt_ids]
    union = gt_size[gt_ids] + pred_size[arg[gt_ids]] - inter
    jac = np.where(matched, inter / np.maximum(union, 1), 0.0)
    return float(jac.mean())
