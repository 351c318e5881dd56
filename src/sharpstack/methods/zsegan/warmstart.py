"""ZSE-GAN's physics warm start: a defocus model fitted per plane on the training z-scans,
synthetic z-scans made from in-focus images with it, and the supervised loss that pretrains
both generators on these pairs before the paper's adversarial + cycle training.

A z-scan of the paper's data is a defocus series of an (almost) flat object, a ~1 µm
section: plane k is, up to noise and an affine change of intensity, the focal plane blurred
by the defocus PSF of plane k. :func:`fit_defocus_model` measures that PSF per plane as a
member of a two-parameter family, a uniform disk of radius r (geometric defocus, whose
transfer function has the negative lobes of real defocus) convolved with a Gaussian of
width s (aberrations, partial coherence, pixel size), fitted in Fourier space on
mirror-extended planes (reflecting boundaries); s alone (r = 0) is the Gaussian model that
the benchmark's Richardson-Lucy baseline uses. It also measures each plane's gain and
offset against the focal plane and the noise that the defocused planes carry beyond the
blurred focal plane's (Immerkær's estimator). :func:`synthesize_zscans` then turns a batch
of in-focus crops y into z-scans x = gain_k (h_k * y) + offset_k + noise_k, the physically
faithful pairs (x, y repeated over the planes) that the warm start trains G_S (x -> y) and
G_B (y -> x) on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["DefocusModel", "defocus_kernel", "fit_defocus_model", "synthesize_zscans",
           "noise_std", "model_residuals"]

_RADII = np.round(np.arange(0.0, 8.01, 0.5), 2)
_SIGMAS = np.round(np.arange(0.0, 5.01, 0.25), 2)


def defocus_kernel(radius: float, sigma: float, size: int | None = None) -> np.ndarray:
    """A disk of ``radius`` px (pixel-area anti-aliased, 8x supersampled) convolved with a
    Gaussian of ``sigma`` px, odd ``size`` (default: large enough), sum 1. ``(0, 0)`` is
    the identity (a single 1).

    >>> k = defocus_kernel(2.0, 1.0)
    >>> k.shape[0] % 2 == 1 and abs(float(k.sum()) - 1) < 1e-9
    True
    """
    r, s = float(radius), float(sigma)
    half = int(np.ceil(r + 3.5 * s)) + 1 if size is None else int(size) // 2
    n = 2 * half + 1
    sub = 8
    g = (np.arange(n * sub) + 0.5) / sub - half - 0.5
    yy, xx = np.meshgrid(g, g, indexing="ij")
    if r > 0:
        disk = (xx * xx + yy * yy <= r * r).astype(np.float64)
        disk = disk.reshape(n, sub, n, sub).mean(axis=(1, 3))
        if disk.sum() == 0:  # radius below the pixel: a point
            disk[half, half] = 1.0
    else:
        disk = np.zeros((n, n))
        disk[half, half] = 1.0
    if s > 0:
        x = np.arange(n) - half
        g1 = np.exp(-x * x / (2 * s * s))
        g1 /= g1.sum()
        from scipy.signal import fftconvolve

        disk = fftconvolve(fftconvolve(disk, g1[:, None], mode="same"), g1[None, :],
                           mode="same")
    return disk / disk.sum()


def noise_std(img: np.ndarray) -> float:
    """Gaussian noise std of a 2D image (Immerkær 1996: the Laplacian-difference mask, whose
    response to smooth structure is zero)."""
    from ...metrics import laplacian_difference

    return float(np.sqrt(np.pi / 2) * np.abs(laplacian_difference(img)).mean() / 6.0)


@dataclass
class DefocusModel:
    """Per-plane defocus of a z-scan, relative to its focal plane (intensities in [0, 1]).

    ``radius`` and ``sigma`` (px) define each plane's PSF (:func:`defocus_kernel`); ``gain``
    and ``offset`` its intensity map; ``noise`` the std of the Gaussian noise added to the
    blurred focal plane. ``explained_*``: the fraction of each plane's variance explained by
    the fitted model and by the best Gaussian alone (fit quality, for the record).
    """

    focal: int
    radius: np.ndarray
    sigma: np.ndarray
    gain: np.ndarray
    offset: np.ndarray
    noise: np.ndarray
    explained: np.ndarray
    explained_gaussian: np.ndarray
    gaussian_sigma: np.ndarray

    @property
    def n_planes(self) -> int:
        return len(self.radius)

    def kernels(self) -> np.ndarray:
        """``(Z, K, K)`` PSFs of all planes on one odd size K (identity at the focal plane)."""
        size = max(defocus_kernel(r, s).shape[0] for r, s in zip(self.radius, self.sigma))
        return np.stack([defocus_kernel(r, s, size) for r, s in zip(self.radius, self.sigma)])

    def to_record(self) -> dict[str, Any]:
        """JSON-serialisable (rounded) fields, for the run record and the model card."""
        out: dict[str, Any] = {"focal": int(self.focal)}
        for k in ("radius", "sigma", "gain", "offset", "noise", "explained",
                  "explained_gaussian", "gaussian_sigma"):
            out[k] = [round(float(v), 4) for v in getattr(self, k)]
        return out

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "DefocusModel":
        return cls(focal=int(rec["focal"]),
                   **{k: np.asarray(rec[k], dtype=np.float64) for k in (
                       "radius", "sigma", "gain", "offset", "noise", "explained",
                       "explained_gaussian", "gaussian_sigma")})

    def summary(self) -> str:
        """One paragraph: the fitted PSFs of the outer and near-focus planes and fit quality."""
        z = self.n_planes
        picks = sorted({0, 3, max(self.focal - 3, 0), self.focal + 3 if self.focal + 3 < z
                        else z - 1, z - 4, z - 1})
        parts = [f"plane {k + 1}: disk r {self.radius[k]:g} px * Gaussian {self.sigma[k]:g} "
                 f"px, gain {self.gain[k]:.2f}, noise {self.noise[k]:.3f}" for k in picks]
        off = [k for k in range(z) if k != self.focal]
        return ("; ".join(parts) + f". Variance explained away from focus: "
                f"{np.mean(self.explained[off]):.3f} (best Gaussian alone "
                f"{np.mean(self.explained_gaussian[off]):.3f}).")


def _radial_index(n: int, bins_per_unit: int = 2) -> tuple[np.ndarray, int]:
    f = np.fft.fftfreq(n) * n
    fy, fx = np.meshgrid(f, f, indexing="ij")
    rad = np.sqrt(fy * fy + fx * fx)
    idx = np.round(rad * bins_per_unit).astype(np.int64)
    return idx, int(idx.max()) + 1


def _mirror(img: np.ndarray) -> np.ndarray:
    """Even (mirror) extension to twice the size: circular convolution of it equals
    convolution with reflecting boundaries."""
    top = np.concatenate([img, img[:, ::-1]], axis=1)
    return np.concatenate([top, top[::-1]], axis=0)


def _blur(img: np.ndarray, ker: np.ndarray) -> np.ndarray:
    """``img`` convolved with ``ker`` (odd, square), reflecting boundaries (FFT)."""
    from scipy.signal import fftconvolve

    h = ker.shape[0] // 2
    mode = "reflect" if h < min(img.shape) else "edge"
    return fftconvolve(np.pad(img, h, mode=mode), ker, mode="valid")


def fit_defocus_model(stacks: Sequence[np.ndarray], focal: int, *,
                      radii: Sequence[float] | None = None,
                      sigmas: Sequence[float] | None = None) -> DefocusModel:
    """Fit the per-plane defocus model on z-scans ``stacks`` (each ``(Z, Y, X)`` in [0, 1]).

    For every plane k and every (r, s) on a grid, the squared error of the best affine map
    of the focal plane blurred by :func:`defocus_kernel` ``(r, s)``, summed over the stacks
    (computed in Fourier space on the mirror-extended square planes, radially binned); the
    (r, s) with the smallest error wins. Gains are pooled least squares, offsets the mean
    residual, noise the median over stacks of the std missing from the blurred focal plane.
    """
    radii = _RADII if radii is None else np.asarray(radii, dtype=np.float64)
    sigmas = _SIGMAS if sigmas is None else np.asarray(sigmas, dtype=np.float64)
    st = [np.asarray(s, dtype=np.float64) for s in stacks]
    z, h, w = st[0].shape
    n = 2 * max(h, w)
    idx, nb = _radial_index(n)
    idx = idx.ravel()
    cand = [(r, s) for r in radii for s in sigmas]
    size = 2 * int(np.ceil(max(radii) + 3.5 * max(sigmas))) + 3
    size = min(size, n - 1 - (n % 2 == 0))
    otf = np.empty((len(cand), nb))
    cnt = np.bincount(idx, minlength=nb).astype(np.float64)
    for j, (r, s) in enumerate(cand):
        k = defocus_kernel(r, s, size)
        pad = np.zeros((n, n))
        c = k.shape[0] // 2
        pad[:k.shape[0], :k.shape[1]] = k
        pad = np.roll(pad, (-c, -c), axis=(0, 1))
        hk = np.fft.fft2(pad).real.ravel()
        otf[j] = np.bincount(idx, weights=hk, minlength=nb) / np.maximum(cnt, 1)
    # per stack: power of the focal plane and cross spectra with every plane, binned
    ps, cs, es, means = [], [], [], []
    for s_ in st:
        fpl = _mirror(np.pad(s_[focal], ((0, n // 2 - h), (0, n // 2 - w)), mode="edge"))
        ff = np.fft.fft2(fpl - fpl.mean()).ravel()
        ps.append(np.bincount(idx, weights=np.abs(ff) ** 2, minlength=nb))
        crow, erow = [], []
        for k in range(z):
            t = _mirror(np.pad(s_[k], ((0, n // 2 - h), (0, n // 2 - w)), mode="edge"))
            tf = np.fft.fft2(t - t.mean()).ravel()
            crow.append(np.bincount(idx, weights=(np.conj(ff) * tf).real, minlength=nb))
            erow.append(float((np.abs(tf) ** 2).sum()))
        cs.append(crow)
        es.append(erow)
        means.append([float(p.mean()) for p in s_])
    P = np.array(ps)                      # (S, nb)
    C = np.array(cs)                      # (S, Z, nb)
    E = np.array(es)                      # (S, Z)
    num = np.einsum("jb,szb->jsz", otf, C)          # (cand, S, Z)
    den = np.einsum("jb,sb->js", otf ** 2, P)[:, :, None]
    res = (E[None] - num ** 2 / np.maximum(den, 1e-30)).sum(axis=1)  # (cand, Z)
    best = res.argmin(axis=0)
    gauss = np.array([i for i, (r, _) in enumerate(cand) if r == 0])
    best_g = gauss[res[gauss].argmin(axis=0)]
    e_tot = E.sum(axis=0)
    radius = np.array([cand[j][0] for j in best])
    sigma = np.array([cand[j][1] for j in best])
    gain = np.array([num[j, :, k].sum() / den[j, :, 0].sum() for k, j in enumerate(best)])
    mean = np.array(means)                # (S, Z)
    offset = (mean - gain[None] * mean[:, [focal]]).mean(axis=0)
    explained = 1 - res[best, np.arange(z)] / np.maximum(e_tot, 1e-30)
    explained_g = 1 - res[best_g, np.arange(z)] / np.maximum(e_tot, 1e-30)
    noise = np.zeros(z)
    for k in range(z):
        if k == focal:
            continue
        ker = defocus_kernel(radius[k], sigma[k])
        vals = []
        for s_ in st:
            blurred = gain[k] * _blur(s_[focal], ker)
            vals.append(max(noise_std(s_[k]) ** 2 - noise_std(blurred) ** 2, 0.0))
        noise[k] = float(np.sqrt(np.median(vals)))
    radius[focal], sigma[focal], gain[focal], offset[focal] = 0.0, 0.0, 1.0, 0.0
    explained[focal] = explained_g[focal] = 1.0
    return DefocusModel(focal=int(focal), radius=radius, sigma=sigma, gain=gain,
                        offset=offset, noise=noise, explained=explained,
                        explained_gaussian=explained_g,
                        gaussian_sigma=np.array([cand[j][1] for j in best_g]))


def model_residuals(stacks: Sequence[np.ndarray], model: DefocusModel) -> np.ndarray:
    """What the defocus model does not explain: ``x_k - (gain_k (h_k * x_focal) + offset_k)``
    for every plane of every z-scan in ``stacks`` (``(S, Z, Y, X)``, 0 at the focal plane).

    On the paper's scans this residual, not white noise, dominates the far planes between
    0.1 and 0.3 cycles/px (50x the fitted white-noise power at plane 1), where the inverse of
    a 4.5 px Gaussian has its largest gain: a generator trained on white noise amplifies it.
    """
    kers = [defocus_kernel(r, s) for r, s in zip(model.radius, model.sigma)]
    out = np.zeros((len(stacks), *np.shape(stacks[0])), dtype=np.float32)
    for i, s_ in enumerate(stacks):
        s_ = np.asarray(s_, dtype=np.float64)
        for k in range(model.n_planes):
            if k != model.focal:
                out[i, k] = s_[k] - (model.gain[k] * _blur(s_[model.focal], kers[k])
                                     + model.offset[k])
    return out


class ZScanSynthesizer:
    """Torch side of the model: in-focus crops -> synthetic z-scans, on the device of the
    inputs; random noise from torch's global generator (checkpointed by the loop).

    With ``residuals`` (:func:`model_residuals` of training z-scans), each synthetic z-scan
    carries a random lateral crop (same position in every plane, random flip / rotation) of
    one real z-scan's residual instead of white noise of the fitted std."""

    def __init__(self, model: DefocusModel, residuals: np.ndarray | None = None) -> None:
        k = torch.from_numpy(model.kernels()).float()
        self.weight = k[:, None]                               # (Z, 1, K, K)
        self.gain = torch.tensor(model.gain, dtype=torch.float32)
        self.offset = torch.tensor(model.offset, dtype=torch.float32)
        self.noise = torch.tensor(model.noise, dtype=torch.float32)
        self.focal = model.focal
        self.residuals = (None if residuals is None
                          else torch.from_numpy(np.asarray(residuals, dtype=np.float32)))

    def residual_crops(self, n: int, c: int, device) -> torch.Tensor:
        """``n`` random ``(Z, c, c)`` crops of the residual bank, flipped / rotated."""
        bank = self.residuals
        s, _, h, w = bank.shape
        if min(h, w) < c:
            raise ValueError(f"residual bank {h}x{w} smaller than the crop {c}")
        out = []
        for _ in range(n):
            i = int(torch.randint(0, s, ()))
            a, b = int(torch.randint(0, h - c + 1, ())), int(torch.randint(0, w - c + 1, ()))
            r = bank[i, :, a:a + c, b:b + c]
            r = torch.rot90(r, int(torch.randint(0, 4, ())), dims=(1, 2))
            if bool(torch.randint(0, 2, ())):
                r = torch.flip(r, dims=(2,))
            out.append(r)
        return torch.stack(out).to(device)

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return synthesize_zscans(y, self)


def _blur_planes(y01: torch.Tensor, syn: ZScanSynthesizer) -> torch.Tensor:
    """The fitted forward model without noise: ``gain_k (h_k * plane) + offset_k`` for every
    plane k, from ``y01`` ``(N, 1, c, c)`` (one image for all planes) or ``(N, Z, c, c)``
    (plane k from image k), in [0, 1]. Returns ``(N, Z, c, c)``."""
    dev = y01.device
    kk = syn.weight.shape[-1] // 2
    mode = "reflect" if kk < min(y01.shape[-2:]) else "replicate"
    x = F.conv2d(F.pad(y01, (kk, kk, kk, kk), mode=mode), syn.weight.to(dev),
                 groups=y01.shape[1])
    g, o = (t.to(dev)[None, :, None, None] for t in (syn.gain, syn.offset))
    return g * x + o


def reblur_zscans(y: torch.Tensor, syn: ZScanSynthesizer) -> torch.Tensor:
    """The fitted forward model applied plane by plane to restored z-scans ``y``
    ``(N, 1, Z, c, c)`` in [-1, 1]: plane k blurred by plane k's PSF, with its gain and
    offset, no noise (what the microscope would have recorded at plane k had the sample
    been ``y``'s plane k). Same shape and range as ``y``; the focal plane is unchanged."""
    y01 = (y.float()[:, 0] + 1.0) * 0.5                       # (N, Z, c, c)
    x = _blur_planes(y01, syn)
    x[:, syn.focal] = y01[:, syn.focal]
    return (2.0 * x - 1.0)[:, None]


def synthesize_zscans(y: torch.Tensor, syn: ZScanSynthesizer) -> torch.Tensor:
    """Synthetic z-scans ``(N, 1, Z, c, c)`` in [-1, 1] from in-focus crops ``y``
    ``(N, c, c)`` in [-1, 1]: per plane ``gain (h * y01) + offset + noise`` (white noise of
    the fitted std, or real residual crops when ``syn`` has a residual bank); the focal
    plane is ``y`` itself."""
    dev = y.device
    y01 = (y.float() + 1.0) * 0.5
    x = _blur_planes(y01[:, None], syn)                        # (N, Z, c, c)
    if syn.residuals is not None:
        x = x + syn.residual_crops(x.shape[0], x.shape[-1], dev).to(x.dtype)
    else:
        x = x + syn.noise.to(dev)[None, :, None, None] * torch.randn_like(x)
    x[:, syn.focal] = y01
    return (2.0 * x - 1.0)[:, None]
