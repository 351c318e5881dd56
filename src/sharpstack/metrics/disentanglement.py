"""Disentanglement: the ML-VAE score of identity and blur codes."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .arrays import check_finite, to_numpy

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
    ic = to_numpy(identity_codes, "identity_codes")
    bc = to_numpy(blur_codes, "blur_codes")
    lab = to_numpy(identities, "identities")
    n = len(lab)
    if lab.ndim != 1 or ic.shape[:1] != (n,) or bc.shape[:1] != (n,):
        raise InputError(f"identity_codes {ic.shape}, blur_codes {bc.shape} and identities "
                         f"{lab.shape} must share their first dimension (one row per image)")
    if not np.issubdtype(lab.dtype, np.integer):
        raise InputError(f"identities must be integer labels, got dtype {lab.dtype}")
    ic = ic.reshape(n, -1).astype(np.float64)
    bc = bc.reshape(n, -1).astype(np.float64)
    check_finite(ic, "identity_codes")
    check_finite(bc, "blur_codes")
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
