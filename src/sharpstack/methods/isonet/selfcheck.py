"""Does a trained IsoNet beat its input? Measured on the user's own stack at the end of
training, without ground truth (the house rule: a method that does not beat its input on a
stack must say so).

Two measures, both on the training stack itself:

- **pairs**: fresh lateral pairs made exactly like the training pairs (same degradation, same
  noise model and target; a new seed, so new noise and new patch positions; on a subset of the
  slices), scored against their targets: PSNR of the degraded input and of the restoration
  (the masked target: on its blind spots only). A network that restores no better than its
  input has not learnt the degradation. It beats its input here when it gains at least
  ``MIN_GAIN_DB``.
- **background noise**: a central crop of the stack is restored as the package would; the
  noise standard deviation of the background (the white-noise-preserving Laplacian
  high-pass of :func:`.noise.highpass`, so that the removal of out-of-focus glow does not
  count, on the voxels whose smoothed input lies below its 30th percentile) on the acquired
  planes (where the z-interpolated input holds its raw samples) of the restoration against
  that of the input, both in the normalised units. A restoration that raises it by more than ``MAX_NOISE_GROWTH`` turns
  noise into structure (what the paper's pairs do on noisy stacks).
- **spots** (where the stack holds spot-like objects and the PSF is known): the mean FWHM
  of the brightest isolated maxima of the input, along z and laterally, in the input and
  the restoration of the same crop. A restoration that broadens them laterally by more than
  ``MAX_LATERAL_GROWTH`` loses lateral resolution (IsoNet's failure on sparse spots,
  README).

:func:`input_gain` measures, :func:`gain_warning` words the warning (``None`` when the model
beats its input), :func:`gain_text` the sentence of the model card.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ...metrics.arrays import central_crop
from ...resample import upsample
from .data import lateral_kernel_for, make_training_pairs
from .noise import highpass
from .noise_pairs import make_noise_aware_pairs
from .task import IsoNetModel, negative_psnr_loss, restore

__all__ = ["MIN_GAIN_DB", "MAX_NOISE_GROWTH", "MAX_LATERAL_GROWTH", "input_gain", "spot_widths",
           "gain_warning", "gain_text"]

MIN_GAIN_DB = 0.1
"""PSNR the restoration must gain over its degraded input on the check pairs (dB)."""
MAX_NOISE_GROWTH = 0.10
"""Largest accepted growth of the background noise std (the issue's +10 %)."""
MAX_LATERAL_GROWTH = 0.10
"""Largest accepted growth of the lateral FWHM of spot-like objects (the issue's +10 %)."""
NOISE_FLOOR = 0.01
"""Noise std (normalised units: 1 = the stack's bright structures) below which a stack
counts as noise-free: growth is measured against at least this much, so a clean stack's
negligible noise does not turn a tiny change into a large ratio."""


def _pair_psnr(model: IsoNetModel, norm: np.ndarray, kernel: np.ndarray, *, n_slices: int,
               n_patches: int, seed: int) -> dict[str, float]:
    cfg = model.config
    z, h, w = norm.shape
    p = min(int(cfg.patch_size), 16 * (min(h, w) // 16))
    if p < 16:
        return {}
    idx = np.unique(np.linspace(0, z - 1, min(z, n_slices)).round().astype(int))
    sub = central_crop(norm[idx], max(2 * p, 128))
    if cfg.pairs == "noise-aware" and model.noise is not None:
        pairs = make_noise_aware_pairs(sub, kernel, cfg.factor, model.noise,
                                       target=cfg.noise_target, patch_size=p,
                                       n_patches=n_patches, seed=seed)
    else:
        pairs = make_training_pairs(sub, kernel, cfg.factor, patch_size=p, n_patches=n_patches,
                                    seed=seed, poisson_peak=cfg.poisson_peak,
                                    gauss_sigma=cfg.gauss_sigma)
    x, y, *m = (torch.from_numpy(a) for a in pairs)
    mask = m[0] if m else None
    net = model.net.eval()
    dev = next(net.parameters()).device
    with torch.no_grad():
        out = torch.cat([net(x[i:i + 32].to(dev)).cpu() for i in range(0, len(x), 32)])
    return {"psnr_input_db": -float(negative_psnr_loss(x, y, mask=mask)),
            "psnr_restored_db": -float(negative_psnr_loss(out, y, mask=mask)),
            "patches": int(len(x)), "slices": int(len(idx)), "patch_size": p}


def spot_widths(up: np.ndarray, out: np.ndarray, psf: np.ndarray | None, *,
                 max_spots: int = 40) -> dict[str, Any]:
    """Mean-spot FWHM (z, lateral = mean of y and x) of the input and the restoration at the
    brightest isolated local maxima of the input: only where the stack holds spot-like
    objects (at least 5 maxima whose mean profile falls to half within 1.5 PSF FWHM)."""
    from scipy import ndimage as ndi

    from ...beads import fwhm_1d
    from .realbench import spot_fwhm

    if psf is None:
        return {}
    h = np.asarray(psf, dtype=np.float32)
    c = np.unravel_index(int(np.argmax(h)), h.shape)
    pz, pxy = fwhm_1d(h[:, c[1], c[2]]), fwhm_1d(h[c[0], c[1], :])
    if not (np.isfinite(pz) and np.isfinite(pxy)):
        return {}
    radius = (int(np.ceil(1.5 * pz)), int(np.ceil(1.5 * pxy)))
    sm = ndi.gaussian_filter(up, (pz / 4.0, pxy / 4.0, pxy / 4.0))
    peaks = (sm == ndi.maximum_filter(sm, size=(2 * radius[0] + 1, 2 * radius[1] + 1,
                                               2 * radius[1] + 1)))
    peaks &= sm > np.percentile(sm, 99.0)
    idx = np.argwhere(peaks)
    if len(idx) < 5:
        return {}
    idx = idx[np.argsort(sm[tuple(idx.T)])[::-1][:max_spots]]
    f_in, f_out = spot_fwhm(up, idx, radius=radius), spot_fwhm(out, idx, radius=radius)
    vals = [f_in[k] for k in "zyx"] + [f_out[k] for k in "zyx"]
    if f_in["n"] < 5 or not all(np.isfinite(v) and v > 0 for v in vals):
        return {}
    lat_in, lat_out = (f_in["y"] + f_in["x"]) / 2, (f_out["y"] + f_out["x"]) / 2
    return {"spots": int(f_in["n"]), "spot_fwhm_z_input": f_in["z"],
            "spot_fwhm_z_restored": f_out["z"], "spot_fwhm_lateral_input": lat_in,
            "spot_fwhm_lateral_restored": lat_out,
            "spot_lateral_growth": lat_out / lat_in - 1.0}


def _background_noise(model: IsoNetModel, stack: np.ndarray, *, crop: int,
                      psf: np.ndarray | None = None) -> dict[str, float]:
    from scipy import ndimage as ndi

    f = model.config.factor
    z = stack.shape[0]
    raw = central_crop(stack, crop).astype(np.float32, copy=False)
    lo, hi = model.normalizer.stats(raw)
    up = upsample(model.normalizer.before(raw, lo, hi), f, axis=0)
    out = restore(model, raw, factor=f)[: up.shape[0]]
    planes = sorted({int(round(k * f)) for k in range(z)} & set(range(up.shape[0])))
    vals: dict[str, list[np.ndarray]] = {"in": [], "out": []}
    for zi in planes:
        smooth = ndi.gaussian_filter(up[zi], 2.0)[1:-1, 1:-1]
        bg = smooth <= np.percentile(smooth, 30)
        for k, v in (("in", up[zi]), ("out", out[zi])):
            vals[k].append(highpass(v)[bg].astype(np.float64))
    std_in = float(np.sqrt(np.mean(np.concatenate(vals["in"]) ** 2)))
    std_out = float(np.sqrt(np.mean(np.concatenate(vals["out"]) ** 2)))
    return {"background_std_input": std_in, "background_std_restored": std_out,
            "background_std_growth": (std_out - std_in) / max(std_in, NOISE_FLOOR),
            "crop": [int(d) for d in raw.shape],
            **spot_widths(up, out, psf)}


def input_gain(model: IsoNetModel, stack: np.ndarray, psf: np.ndarray | None, *,
               n_slices: int = 8, n_patches: int = 64, crop: int = 128, seed: int | None = None
               ) -> dict[str, Any]:
    """Measure whether ``model`` (just trained on the raw anisotropic ``stack``, ZYX, with
    ``psf``) beats its input on that stack (see the module docstring): a JSON-able dict."""
    arr = np.asarray(stack, dtype=np.float32)
    cfg = model.config
    kernel = lateral_kernel_for(psf, cfg.psf_mode)
    norm = model.normalizer.before(arr)
    s = (cfg.seed if seed is None else seed) + 7919
    gain: dict[str, Any] = _pair_psnr(model, norm, kernel, n_slices=n_slices,
                                      n_patches=n_patches, seed=s)
    gain.update(_background_noise(model, arr, crop=crop, psf=psf))
    return gain


def _failures(gain: dict[str, Any]) -> list[tuple[str, str]]:
    """Each failed measure: what failed, and what the user can do about it."""
    bad = []
    if "psnr_input_db" in gain and \
            gain["psnr_restored_db"] < gain["psnr_input_db"] + MIN_GAIN_DB:
        bad.append((f"on fresh lateral pairs degraded like its training inputs it restores "
                    f"{gain['psnr_restored_db']:.2f} dB against {gain['psnr_input_db']:.2f} "
                    f"dB of the degraded input (it must gain at least {MIN_GAIN_DB:g} dB)",
                    "train longer (--epochs, --steps-per-epoch) and check the PSF "
                    "(`sharpstack psf`) and the factor"))
    if gain.get("background_std_growth", 0.0) > MAX_NOISE_GROWTH:
        bad.append((f"it raises the background noise std of the stack by "
                    f"{gain['background_std_growth']:+.0%} (at most {MAX_NOISE_GROWTH:+.0%} "
                    f"accepted): it turns noise into structure",
                    "keep the default noise-aware pairs (--pairs noise-aware) on noisy "
                    "stacks"))
    if gain.get("spot_lateral_growth", 0.0) > MAX_LATERAL_GROWTH:
        bad.append((f"it broadens the {gain['spots']} brightest spot-like objects of the "
                    f"stack laterally: mean FWHM {gain['spot_fwhm_lateral_input']:.2f} -> "
                    f"{gain['spot_fwhm_lateral_restored']:.2f} px "
                    f"({gain['spot_lateral_growth']:+.0%}, at most "
                    f"{MAX_LATERAL_GROWTH:+.0%} accepted)",
                    "on sparse sub-resolution spots IsoNet trades lateral for axial "
                    "resolution (README, 'IsoNet on spot stacks'): measure lateral sizes on "
                    "the raw stack, and compare with a deconvolution"))
    return bad


def gain_warning(gain: dict[str, Any] | None) -> str | None:
    """The warning to give when the model does not beat its input (``None`` if it does, or
    if nothing was measured)."""
    bad = _failures(gain) if gain else []
    if not bad:
        return None
    return ("this IsoNet model does not beat its input on its training stack: "
            + "; ".join(b for b, _ in bad) + ". Its output may be worse than the stack it is "
            "given: " + "; ".join(h for _, h in bad))


def gain_text(gain: dict[str, Any] | None) -> str:
    """One sentence for the model card."""
    if not gain:
        return "not measured (a run trained before sharpstack measured it)."
    parts = []
    if "psnr_input_db" in gain:
        parts.append(f"on {gain['patches']} fresh lateral pairs from {gain['slices']} of its "
                     f"slices, degraded like its training inputs, PSNR against their targets "
                     f"{gain['psnr_input_db']:.2f} dB (degraded input) -> "
                     f"{gain['psnr_restored_db']:.2f} dB (this model)")
    parts.append(f"background noise std on the acquired planes "
                 f"{gain['background_std_input']:.4f} (z-interpolated input) -> "
                 f"{gain['background_std_restored']:.4f} (this model; normalised units, "
                 f"{gain['background_std_growth']:+.0%})")
    if "spot_lateral_growth" in gain:
        parts.append(f"the mean of its {gain['spots']} brightest spot-like objects: FWHM z "
                     f"{gain['spot_fwhm_z_input']:.2f} -> {gain['spot_fwhm_z_restored']:.2f} "
                     f"px, lateral {gain['spot_fwhm_lateral_input']:.2f} -> "
                     f"{gain['spot_fwhm_lateral_restored']:.2f} px "
                     f"({gain['spot_lateral_growth']:+.0%})")
    verdict = ("**it does not beat its input there: its output may be worse than the stack "
               "it is given**" if gain_warning(gain) else "it beats its input there")
    return "; ".join(parts) + f"; {verdict}."
