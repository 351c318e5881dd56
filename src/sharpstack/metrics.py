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
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.ndimage as ndi
import scipy.sparse as sp

from ._axes import check_axes
from .errors import InputError

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
    "gradient_magnitude",
    "mean_abs_gradient",
    "gradient_histogram",
    "ssim_per_slice",
]

# voxels per slab when reducing over big volumes (about 128 MiB per float64 temporary)
_SLAB_VOXELS = 1 << 24


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def _to_numpy(x, name: str, axes: str | None = None) -> np.ndarray:
    """Return ``x`` as a numpy array; an ``xarray.DataArray`` must have dims matching ``axes``."""
    dims = getattr(x, "dims", None)
    if dims is not None and axes is not None and not isinstance(x, np.ndarray):
        dims_str = "".join(str(d) for d in dims).upper()
        if dims_str != axes.upper():
            raise InputError(
                f"{name} is a DataArray with dims {tuple(dims)} but axes={axes!r} was given; "
                f"pass axes={dims_str!r} or transpose the array")
    try:
        arr = np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise InputError(f"{name} cannot be converted to a numpy array: {exc}") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                   or arr.dtype == np.bool_):
        raise InputError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise InputError(f"{name} is complex; pass a real-valued image (e.g. np.abs(x))")
    return arr


def _pair(target, pred, axes: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    t = _to_numpy(target, "target", axes)
    p = _to_numpy(pred, "pred", axes)
    if t.shape != p.shape:
        raise InputError(
            f"target has shape {t.shape} but pred has shape {p.shape}; the metric compares "
            f"images voxel by voxel, so crop or resample them to the same shape")
    if t.size == 0:
        raise InputError("target and pred are empty; pass non-empty images")
    return t, p


def _check_finite(x: np.ndarray, name: str) -> None:
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        raise InputError(f"{name} contains NaN or infinite values; remove or replace them "
                         f"(e.g. np.nan_to_num) before computing metrics")


def _check_data_range(data_range) -> float:
    try:
        r = float(data_range)
    except (TypeError, ValueError):
        raise InputError(f"data_range must be a positive number, got {data_range!r}") from None
    if not np.isfinite(r) or r <= 0:
        raise InputError(
            f"data_range must be a positive finite number (e.g. 1.0 for [0, 1] data, or the "
            f"maximum minus the minimum of the target), got {data_range!r}")
    return r


def _slabs(n: int, plane_size: int) -> Iterator[slice]:
    step = max(1, _SLAB_VOXELS // max(1, plane_size))
    for s in range(0, n, step):
        yield slice(s, min(n, s + step))


def _flat_slabs(*arrays: np.ndarray) -> Iterator[tuple[np.ndarray, ...]]:
    """Yield aligned float64 chunks of the flattened arrays."""
    flats = [a.reshape(-1) for a in arrays]
    n = flats[0].size
    for s in range(0, n, _SLAB_VOXELS):
        yield tuple(f[s:s + _SLAB_VOXELS].astype(np.float64) for f in flats)


def _mse(t: np.ndarray, p: np.ndarray, scale: float = 1.0, offset: float = 0.0) -> float:
    """Mean of ``(t - (scale * p + offset))**2`` in float64, computed slab by slab."""
    total = 0.0
    for tc, pc in _flat_slabs(t, p):
        d = tc - (scale * pc + offset)
        total += float(np.dot(d, d))
    return total / t.size


def _psnr_from_mse(mse: float, data_range: float) -> float:
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(data_range * data_range / mse))


# --------------------------------------------------------------------------------------------
# PSNR and normalisation
# --------------------------------------------------------------------------------------------

def psnr(target, pred, *, data_range: float) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range**2 / MSE)`` in dB.

    Parameters
    ----------
    target, pred : array_like, same shape (any number of dimensions)
        Ground truth and prediction. Integer inputs are promoted to float64; nothing is
        rescaled.
    data_range : float
        The peak-to-peak range of the target's intensities, given explicitly (e.g. ``1.0``
        for data normalised to [0, 1]; ``target.max() - target.min()`` otherwise).

    Returns
    -------
    float
        PSNR in dB (float64 maths); ``inf`` for identical images.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros((4, 4))
    >>> round(psnr(x, x + 0.1, data_range=1.0), 6)
    20.0
    """
    t, p = _pair(target, pred)
    r = _check_data_range(data_range)
    _check_finite(t, "target")
    _check_finite(p, "pred")
    return _psnr_from_mse(_mse(t, p), r)


def normalize_percentile(x, pmin: float = 0.1, pmax: float = 99.9, *,
                         clip: bool = False) -> np.ndarray:
    """Map the ``pmin`` and ``pmax`` percentiles of ``x`` to 0 and 1.

    ``(x - P[pmin]) / (P[pmax] - P[pmin] + 1e-20)``, as csbdeep's ``normalize`` (CARE
    protocol); a constant image becomes all zeros.

    Parameters
    ----------
    x : array_like, any shape
        Image to normalise.
    pmin, pmax : float
        Percentiles in [0, 100] (not fractions: 99.9 means the 99.9th percentile),
        ``pmin < pmax``.
    clip : bool
        Clip the result to [0, 1].

    Returns
    -------
    numpy.ndarray, float32, same shape as ``x``
    """
    a = _to_numpy(x, "x")
    if a.size == 0:
        raise InputError("x is empty; pass a non-empty image")
    _check_finite(a, "x")
    if not (0.0 <= pmin < pmax <= 100.0):
        raise InputError(
            f"percentiles must satisfy 0 <= pmin < pmax <= 100 (e.g. pmin=0.1, pmax=99.9), "
            f"got pmin={pmin}, pmax={pmax}")
    lo, hi = np.percentile(a, [pmin, pmax])
    scale = 1.0 / (float(hi) - float(lo) + 1e-20)
    out = (a.astype(np.float32) - np.float32(lo)) * np.float32(scale)
    if clip:
        np.clip(out, 0.0, 1.0, out=out)
    return out


def fit_affine(target, pred) -> tuple[float, float]:
    """Least-squares affine map of ``pred`` onto ``target``.

    Solves ``min_{a,b} || target - (a * pred + b) ||^2`` in closed form (float64):
    ``a = cov(pred, target) / var(pred)``, ``b = mean(target) - a * mean(pred)``. For a
    constant ``pred`` the minimiser is ``a = 0``, ``b = mean(target)``.

    Parameters
    ----------
    target, pred : array_like, same shape

    Returns
    -------
    (scale, offset) : tuple of float
    """
    t, p = _pair(target, pred)
    _check_finite(t, "target")
    _check_finite(p, "pred")
    n = t.size
    st = sp_ = 0.0
    for tc, pc in _flat_slabs(t, p):
        st += float(tc.sum())
        sp_ += float(pc.sum())
    mt, mp = st / n, sp_ / n
    cov = var = 0.0
    for tc, pc in _flat_slabs(t, p):
        pc -= mp
        tc -= mt
        cov += float(np.dot(pc, tc))
        var += float(np.dot(pc, pc))
    if var == 0.0:
        return 0.0, mt
    scale = cov / var
    return scale, mt - scale * mp


def psnr_normalized(target, pred, *, pmin: float = 0.1, pmax: float = 99.9) -> float:
    """PSNR under the CARE restoration benchmark protocol.

    1. ``target`` is percentile-normalised (:func:`normalize_percentile`, no clipping), so
       its ``pmin``/``pmax`` percentiles become 0 and 1;
    2. ``pred`` is mapped onto the normalised target by the least-squares affine transform
       (:func:`fit_affine`), which removes any global scale/offset of the method's output;
    3. PSNR is computed with ``data_range=1``.

    Being invariant to affine intensity changes of ``pred``, this compares methods whose
    outputs live on different intensity scales (blurred input, Richardson-Lucy, networks).

    Parameters
    ----------
    target, pred : array_like, same shape
    pmin, pmax : float
        Percentiles used to normalise the target.

    Returns
    -------
    float
        PSNR in dB; ``inf`` when ``pred`` is an exact affine function of ``target``.
    """
    t, p = _pair(target, pred)
    tn = normalize_percentile(t, pmin, pmax)
    _check_finite(p, "pred")
    a, b = fit_affine(tn, p)
    return _psnr_from_mse(_mse(tn, p, a, b), 1.0)


# --------------------------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------------------------

def ssim(target, pred, *, data_range: float, sigma: float = 1.5, axes: str = "YX") -> float:
    """Mean structural similarity with a Gaussian window (Wang et al. 2004).

    Constants ``K1 = 0.01``, ``K2 = 0.03``, Gaussian window of standard deviation ``sigma``
    voxels along every axis (truncated at 3.5 sigma: the 11-tap window of the paper for
    ``sigma = 1.5``), population (not sample) covariances, ``reflect`` borders, and the mean
    taken over voxels at least one window radius from every border. This is exactly
    ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
    use_sample_covariance=False, sigma=sigma, data_range=data_range)``, computed in float64
    slab by slab so that large 3D volumes fit in memory.

    Parameters
    ----------
    target, pred : array_like, shape (Y, X) or (Z, Y, X)
    data_range : float
        Peak-to-peak intensity range of the data, given explicitly.
    sigma : float
        Standard deviation of the Gaussian window in voxels.
    axes : {"YX", "ZYX"}
        Axes of the images; 3D SSIM uses a 3D window (isotropic in voxels).

    Returns
    -------
    float
        Mean SSIM in [-1, 1]; 1 for identical images.
    """
    t, p = _pair(target, pred, axes)
    ax = check_axes(axes, t.ndim, allowed=("YX", "ZYX"))
    r = _check_data_range(data_range)
    _check_finite(t, "target")
    _check_finite(p, "pred")
    return _ssim(t, p, r, float(sigma), ax)


def _ssim(t: np.ndarray, p: np.ndarray, data_range: float, sigma: float, axes: str) -> float:
    if not (np.isfinite(sigma) and sigma > 0):
        raise InputError(f"sigma must be a positive number of voxels, got {sigma}")
    truncate = 3.5
    rad = int(truncate * sigma + 0.5)
    win = 2 * rad + 1
    if min(t.shape) < win:
        raise InputError(
            f"images of shape {t.shape} ({axes}) are smaller than the SSIM window "
            f"({win} voxels for sigma={sigma}); use larger images or a smaller sigma")
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    g = dict(sigma=sigma, truncate=truncate, mode="reflect")
    n0 = t.shape[0]
    plane = int(np.prod(t.shape[1:]))
    inner = tuple(slice(rad, s - rad) for s in t.shape[1:])
    total = 0.0
    count = 0
    for sl in _slabs(n0, plane):
        # only planes at least `rad` from the volume's first-axis borders enter the mean
        lo_keep, hi_keep = max(sl.start, rad), min(sl.stop, n0 - rad)
        if lo_keep >= hi_keep:
            continue
        lo, hi = max(0, lo_keep - rad), min(n0, hi_keep + rad)  # halo: exact filtering
        x = t[lo:hi].astype(np.float64)
        y = p[lo:hi].astype(np.float64)
        ux = ndi.gaussian_filter(x, **g)
        uy = ndi.gaussian_filter(y, **g)
        vx = ndi.gaussian_filter(x * x, **g) - ux * ux
        vy = ndi.gaussian_filter(y * y, **g) - uy * uy
        vxy = ndi.gaussian_filter(x * y, **g) - ux * uy
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
        keep = s[(slice(lo_keep - lo, hi_keep - lo),) + inner]
        total += float(keep.sum())
        count += keep.size
    return total / count


def ssim_normalized(target, pred, *, pmin: float = 0.1, pmax: float = 99.9,
                    sigma: float = 1.5, axes: str = "YX") -> float:
    """SSIM under the CARE protocol (see :func:`psnr_normalized`), with ``data_range=1``.

    The target is percentile-normalised, the prediction affinely fitted to it
    (:func:`fit_affine`), then :func:`ssim` is computed with ``data_range=1``.

    Parameters
    ----------
    target, pred : array_like, shape (Y, X) or (Z, Y, X)
    pmin, pmax : float
        Percentiles used to normalise the target.
    sigma : float
        Standard deviation of the Gaussian window in voxels.
    axes : {"YX", "ZYX"}

    Returns
    -------
    float
    """
    t, p = _pair(target, pred, axes)
    ax = check_axes(axes, t.ndim, allowed=("YX", "ZYX"))
    tn = normalize_percentile(t, pmin, pmax)
    _check_finite(p, "pred")
    a, b = fit_affine(tn, p)
    # float32 keeps the fitted copy small; _ssim promotes each slab to float64
    pf = p.astype(np.float32)
    pf *= np.float32(a)
    pf += np.float32(b)
    return _ssim(tn, pf, 1.0, float(sigma), ax)


# --------------------------------------------------------------------------------------------
# SEG
# --------------------------------------------------------------------------------------------

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
    g = _to_numpy(gt_labels, "gt_labels")
    q = _to_numpy(pred_labels, "pred_labels")
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


# --------------------------------------------------------------------------------------------
# FM: frequency-domain sharpness (De & Masilamani 2013)
# --------------------------------------------------------------------------------------------

def focus_measure(image, *, axes: str = "YX", threshold: float = 1e-3) -> float:
    """Image sharpness measure FM of De & Masilamani (Procedia Engineering 64, 2013).

    ``A = |fftshift(fft2(I))|``; ``FM = #(A > threshold * max(A)) / (rows * cols)`` with the
    paper's ``threshold = 1/1000``: the fraction of frequency components whose magnitude
    exceeds a thousandth of the largest one (usually the DC term). Sharper images carry more
    high-frequency energy and score higher; FM does not depend on the intensity scale (it is
    invariant to multiplying the image by a positive constant). The image is used as it is
    (no windowing, no mean removal), as in the paper.

    Parameters
    ----------
    image : array_like, shape (Y, X) (or (N, Y, X) with ``axes="ZYX"``: one FM per plane)
        A real 2D image (horizontal section or vertical section, any numeric dtype).
    axes : {"YX", "ZYX"}
        ``"ZYX"`` scores every plane of a stack and returns their mean.
    threshold : float
        Fraction of the maximum magnitude a component must exceed (paper: 1e-3).

    Returns
    -------
    float
        FM in (0, 1]; ``1 / (rows * cols)`` for a constant non-zero image, 1 for a single
        bright pixel (a flat spectrum).

    Examples
    --------
    >>> import numpy as np
    >>> focus_measure(np.ones((8, 8)))
    0.015625
    """
    a = _to_numpy(image, "image", axes)
    ax = check_axes(axes, a.ndim, allowed=("YX", "ZYX"))
    if a.size == 0:
        raise InputError("image is empty; pass a non-empty 2D image")
    _check_finite(a, "image")
    if not (np.isfinite(threshold) and 0.0 < threshold < 1.0):
        raise InputError(f"threshold must be in (0, 1) (the paper uses 0.001), got {threshold}")
    planes = a[None] if ax == "YX" else a
    vals = []
    for plane in planes:
        # fftshift does not change which magnitudes exceed the threshold; kept to mirror the
        # paper's formula
        mag = np.abs(np.fft.fftshift(np.fft.fft2(plane.astype(np.float64))))
        m = float(mag.max())
        if m == 0.0:
            raise InputError("image is all zeros; FM is undefined for an empty image")
        vals.append(float(np.count_nonzero(mag > threshold * m)) / plane.size)
    return float(np.mean(vals))


# --------------------------------------------------------------------------------------------
# disentanglement
# --------------------------------------------------------------------------------------------

def _softmax_regression_accuracy(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray,
                                 yte: np.ndarray, n_classes: int, epochs: int,
                                 lr: float, weight_decay: float) -> float:
    """Accuracy on (xte, yte) of a multinomial logistic regression fit on (xtr, ytr).

    Hand-written (a dozen lines of numpy) because scikit-image/scikit-learn classifiers are not
    dependencies of sharpstack. Features are standardised with the training statistics; weights
    start at zero (deterministic) and take ``epochs`` full-batch Adam steps on the mean
    cross-entropy plus ``weight_decay`` times the squared weights.
    """
    mu, sd = xtr.mean(axis=0), xtr.std(axis=0)
    sd[sd < 1e-12] = 1.0
    a, b = (xtr - mu) / sd, (xte - mu) / sd
    if a.shape[1] > a.shape[0]:
        # more features than training samples (identity maps): work in the span of the
        # training features (an orthonormal basis from the SVD), where every L2-penalised
        # linear classifier of them lies; the components of test codes outside it cannot
        # change any such classifier's output. Makes 16k-dimensional codes cheap. The basis
        # comes from the eigenvectors of the small Gram matrix a a^T (a = U S V^T: train
        # features U S, test features b V = b a^T U / S).
        lam, u = np.linalg.eigh(a @ a.T)
        keep = lam > 1e-9 * max(float(lam.max(initial=0.0)), 1e-300)
        sv, u = np.sqrt(lam[keep]), u[:, keep]
        a, b = u * sv, (b @ a.T) @ u / sv
    onehot = np.eye(n_classes)[ytr]
    w = np.zeros((a.shape[1], n_classes))
    c = np.zeros(n_classes)
    mw, vw, mc, vc = (np.zeros_like(w), np.zeros_like(w), np.zeros_like(c), np.zeros_like(c))
    b1, b2, eps = 0.9, 0.999, 1e-8
    for t in range(1, int(epochs) + 1):
        z = a @ w + c
        z -= z.max(axis=1, keepdims=True)
        pr = np.exp(z)
        pr /= pr.sum(axis=1, keepdims=True)
        g = (pr - onehot) / len(a)
        gw, gc = a.T @ g + 2.0 * weight_decay * w, g.sum(axis=0)
        for m_, v_, gr, par in ((mw, vw, gw, w), (mc, vc, gc, c)):
            m_ *= b1
            m_ += (1 - b1) * gr
            v_ *= b2
            v_ += (1 - b2) * gr * gr
            par -= lr * (m_ / (1 - b1 ** t)) / (np.sqrt(v_ / (1 - b2 ** t)) + eps)
    return float(np.mean(np.argmax(b @ w + c, axis=1) == yte))


def mlvae_score(identity_codes, blur_codes, identities, *, train=None, epochs: int = 300,
                lr: float = 0.01, weight_decay: float = 1e-4) -> dict[str, float]:
    """ML-VAE disentanglement score (Bouchacourt et al. 2018; Ritsema 2023, Eq. 4.10).

    Two classifiers learn to predict the identity of an image, one from its identity code and
    one from its blur code; the score is the first one's accuracy minus the second one's, on
    samples the classifiers did not see. Near 1: the identity code tells identities apart and
    the blur code carries nothing about them (disentangled); near 0: both or neither do.

    The classifiers are multinomial logistic regressions trained for ``epochs`` full-batch
    steps (the thesis trains its classifiers for 300 epochs).

    Parameters
    ----------
    identity_codes : array_like, shape (N, ...)
        One identity code per image (flattened here).
    blur_codes : array_like, shape (N, ...)
        One blur code per image (flattened here; a 1-D code is fine).
    identities : array_like of int, shape (N,)
        The identity label of every image.
    train : array_like of bool, shape (N,), optional
        Which samples fit the classifiers; the others score them. Default: of each identity's
        samples (in the given order), those at even positions train and those at odd positions
        test, so every identity is seen in both halves (for a defocus series ordered by plane:
        alternate focal planes).
    epochs, lr, weight_decay
        Optimisation of the classifiers (Adam step size ``lr``, L2 penalty ``weight_decay``).

    Returns
    -------
    dict
        ``identity_accuracy``, ``blur_accuracy``, ``score`` (their difference) and ``chance``
        (1 / number of identities).

    Examples
    --------
    >>> import numpy as np
    >>> ids = np.repeat(np.arange(4), 6)
    >>> idc = np.eye(4)[ids] + 0.01 * np.arange(24)[:, None]  # tells identities apart
    >>> blur = np.tile(np.arange(6.0), 4)[:, None]            # only the blur level
    >>> r = mlvae_score(idc, blur, ids)
    >>> r["identity_accuracy"], r["blur_accuracy"], r["chance"]  # blur code: chance level
    (1.0, 0.25, 0.25)
    """
    ic = _to_numpy(identity_codes, "identity_codes")
    bc = _to_numpy(blur_codes, "blur_codes")
    lab = _to_numpy(identities, "identities")
    n = len(lab)
    if lab.ndim != 1 or ic.shape[:1] != (n,) or bc.shape[:1] != (n,):
        raise InputError(f"identity_codes {ic.shape}, blur_codes {bc.shape} and identities "
                         f"{lab.shape} must share their first dimension (one row per image)")
    if not np.issubdtype(lab.dtype, np.integer):
        raise InputError(f"identities must be integer labels, got dtype {lab.dtype}")
    ic = ic.reshape(n, -1).astype(np.float64)
    bc = bc.reshape(n, -1).astype(np.float64)
    _check_finite(ic, "identity_codes")
    _check_finite(bc, "blur_codes")
    classes, y = np.unique(lab, return_inverse=True)
    if len(classes) < 2:
        raise InputError("mlvae_score needs images of at least 2 identities")
    if train is None:
        tr = np.zeros(n, dtype=bool)
        for k in range(len(classes)):
            idx = np.flatnonzero(y == k)
            tr[idx[::2]] = True
    else:
        tr = np.asarray(train, dtype=bool)
        if tr.shape != (n,):
            raise InputError(f"train must be a boolean mask of shape ({n},), got {tr.shape}")
    if tr.all() or not tr.any():
        raise InputError("train must leave samples on both sides (some train, some test); "
                         "give at least 2 images per identity")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise InputError(f"epochs must be a positive integer, got {epochs!r}")
    args = (len(classes), int(epochs), float(lr), float(weight_decay))
    acc_id = _softmax_regression_accuracy(ic[tr], y[tr], ic[~tr], y[~tr], *args)
    acc_bl = _softmax_regression_accuracy(bc[tr], y[tr], bc[~tr], y[~tr], *args)
    return {"identity_accuracy": acc_id, "blur_accuracy": acc_bl, "score": acc_id - acc_bl,
            "chance": 1.0 / len(classes)}


# --------------------------------------------------------------------------------------------
# PIQE, gradient statistics, per-slice SSIM (the ZSE-GAN paper's tables)
# --------------------------------------------------------------------------------------------

def _image2d(image, name: str) -> np.ndarray:
    a = _to_numpy(image, name, "YX")
    if a.ndim != 2:
        raise InputError(f"{name} must be a 2D image (Y, X), got shape {a.shape}; score a "
                         f"stack plane by plane (e.g. image[k] for plane k)")
    if a.size == 0:
        raise InputError(f"{name} is empty; pass a non-empty 2D image")
    _check_finite(a, name)
    return a


def _gauss7(sigma: float = 7.0 / 6.0) -> np.ndarray:
    x = np.arange(-3, 4, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def piqe(image, *, data_range: float) -> float:
    """PIQE no-reference quality score (Venkatanath et al., NCC 2015); lower is better.

    A line-by-line port of MATLAB's ``piqe`` (Image Processing Toolbox, 2018), which the
    method papers used; hand-written because no maintained Python library implements it
    (scikit-image has none; pyiqa pulls in a deep-learning stack):

    1. the image is padded to a multiple of 16 by replicating its last row/column (so a
       128x29 vertical section is not truncated), scaled to 0-255 by ``255 / data_range``
       and rounded (MATLAB: ``round(255 * im2double(I))``);
    2. MSCN coefficients ``(I - mu) / (sigma + 1)`` with a 7x7 Gaussian window
       (sigma 7/6, replicate borders);
    3. every 16x16 block with (sample) variance > 0.1 is active; an active block scores
       ``1 - var`` if one of the 11 six-pixel segments of one of its four edges has a
       (sample) standard deviation < 0.1 (noticeable artefact), plus ``var`` if
       ``sigma > 2 beta`` (noise criterion, ``beta`` from the ratio of the standard
       deviations of the two centre columns and the rest of the block; MATLAB removes
       columns 8 and 10 for "the rest", which is kept here);
    4. ``score = 100 (sum of block scores + 1) / (number of active blocks + 1)``.

    Parameters
    ----------
    image : array_like, shape (Y, X)
        A 2D grayscale image.
    data_range : float
        The intensity that maps to 255 (255 for 8-bit data, 1.0 for images in [0, 1]).

    Returns
    -------
    float
        PIQE in [0, 100] for ordinary images; 100 for a uniform image (no active block).
    """
    a = _image2d(image, "image").astype(np.float64)
    r = _check_data_range(data_range)
    bs = 16
    rows, cols = a.shape
    a = np.pad(a, ((0, (-rows) % bs), (0, (-cols) % bs)), mode="edge")
    img = np.round(255.0 * a / r)
    g = _gauss7()

    def blur(v):
        return ndi.correlate1d(ndi.correlate1d(v, g, axis=0, mode="nearest"), g, axis=1,
                               mode="nearest")

    mu = blur(img)
    sigma = np.sqrt(np.abs(blur(img * img) - mu * mu))
    imnorm = (img - mu) / (sigma + 1.0)
    dist, active = 0.0, 0
    seg_idx = np.arange(6)[None, :] + np.arange(bs - 6 + 1)[:, None]  # 11 segments of 6
    keep = np.ones(bs, dtype=bool)
    keep[[7, 9]] = False  # MATLAB deletes column 8, then column 9 of the shortened block
    for i in range(0, imnorm.shape[0], bs):
        for j in range(0, imnorm.shape[1], bs):
            block = imnorm[i:i + bs, j:j + bs]
            var = float(np.var(block, ddof=1))
            if not var > 0.1:
                continue
            active += 1
            edges = np.stack([block[0, :], block[:, bs - 1], block[bs - 1, :], block[:, 0]])
            impaired = bool((np.std(edges[:, seg_idx], axis=2, ddof=1) < 0.1).any())
            sig = float(np.sqrt(var))
            centre = np.concatenate([block[:, 7], block[:, 8]])
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = float(np.std(centre, ddof=1)) / float(np.std(block[:, keep], ddof=1))
                if np.isnan(ratio):
                    ratio = 0.0
                beta = abs(sig - ratio) / max(sig, ratio)
            noisy = bool(sig > 2.0 * beta)
            dist += (1.0 - var) * impaired + var * noisy
    return float((dist + 1.0) / (active + 1.0) * 100.0)


def gradient_magnitude(image, *, data_range: float) -> np.ndarray:
    """Gradient magnitude ``sqrt(gy**2 + gx**2)`` of ``image / data_range`` per pixel.

    Derivatives by ``numpy.gradient`` (central differences inside, one-sided at the
    borders), in intensity units of ``data_range`` per pixel: a ramp rising by ``data_range``
    over ``n`` pixels has magnitude ``1 / n`` everywhere.

    Parameters
    ----------
    image : array_like, shape (Y, X)
    data_range : float
        Intensity range of the image (1.0 for [0, 1] data, 255 for 8-bit data).

    Returns
    -------
    numpy.ndarray, float64, shape (Y, X)
    """
    a = _image2d(image, "image").astype(np.float64) / _check_data_range(data_range)
    if min(a.shape) < 2:
        raise InputError(f"image of shape {a.shape} is too small for a gradient; it needs at "
                         f"least 2 pixels along each axis")
    gy, gx = np.gradient(a)
    return np.hypot(gy, gx)


def mean_abs_gradient(image, *, data_range: float) -> float:
    """Mean of :func:`gradient_magnitude` over the image (the paper's "average gradient")."""
    return float(gradient_magnitude(image, data_range=data_range).mean())


def gradient_histogram(image, *, data_range: float, bins: int = 50,
                       max_gradient: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Normalised histogram of :func:`gradient_magnitude` (the paper's Fig. 6).

    Parameters
    ----------
    bins : int
        Number of equal bins on ``[0, max_gradient]``; larger magnitudes go into the last.
    max_gradient : float
        Upper end of the histogram (intensity units of ``data_range`` per pixel).

    Returns
    -------
    (frequency, edges) : ndarrays of shape (bins,) and (bins + 1,)
        Fraction of pixels per bin (sums to 1) and the bin edges.
    """
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise InputError(f"bins must be a positive integer, got {bins!r}")
    if not (np.isfinite(max_gradient) and max_gradient > 0):
        raise InputError(f"max_gradient must be a positive number, got {max_gradient!r}")
    mag = gradient_magnitude(image, data_range=data_range)
    counts, edges = np.histogram(np.minimum(mag, max_gradient), bins=int(bins),
                                 range=(0.0, float(max_gradient)))
    return counts / mag.size, edges


def ssim_per_slice(target, pred, *, data_range: float, sigma: float = 1.5,
                   axes: str = "ZYX") -> np.ndarray:
    """:func:`ssim` of every plane ``target[k]`` with ``pred[k]`` (2D windows).

    The paper's Table 1 compares the horizontal sections of a z-scan and of its
    restoration plane by plane: ``SSIM(x_k, y_k)`` for k = 1..Z.

    Parameters
    ----------
    target, pred : array_like, shape (Z, Y, X)
    data_range : float
        Peak-to-peak intensity range, given explicitly.

    Returns
    -------
    numpy.ndarray, float64, shape (Z,)
    """
    t, p = _pair(target, pred, axes)
    check_axes(axes, t.ndim, allowed=("ZYX",))
    r = _check_data_range(data_range)
    _check_finite(t, "target")
    _check_finite(p, "pred")
    return np.array([_ssim(t[k], p[k], r, float(sigma), "YX") for k in range(t.shape[0])])
