"""Does a trained DQLR beat its input? Measured on the user's own training stack(s) at the end
of training, without ground truth (the house rule: a method that does not beat its input on a
stack must say so).

A central crop of every training stack (at most ``CROP`` x ``CROP`` px laterally, all slices;
at most ``MAX_STACKS`` stacks) is restored as the package would (:func:`.task.restore`: the
crop normalised by its own percentiles, the deploy module) and the input (normalised the
same way) and the restoration are compared with the measures of :mod:`.realmeasures` that
noise cannot fool, both ordered from shallow to deep:

- **band power**: deep/shallow ratio (deepest third over shallowest third) of the power in
  the band where the input's shallow slices hold signal, minus each slice's own noise floor;
- **foreground contrast**: deep/shallow ratio of the 99th minus the 50th percentile of each
  slice smoothed by 1 px;
- **shallow correlation**: the correlation of the restoration with the input over the
  shallowest third (both smoothed by 2 px): those slices are what DQLR learns to return, and
  a network that returns something else fools the ratios (all slices equally wrong);
- **grid peak**: the power at the frequencies of the ``2**n_down``-px latent grid over its
  neighbours (about 1 without a texture).

DQLR exists to raise the deep slices towards the shallow ones, so the model does not beat
its input when either ratio falls below the input's by more than ``MAX_RATIO_LOSS``
(relative), the shallow correlation is below ``MIN_SHALLOW_CORRELATION``, or a grid texture
appears (peak above ``MAX_GRID_PEAK`` x the input's). It also says so when the stack shows no
measurable depth degradation (the depth model of :mod:`.shallow_deep`: extra lateral blur at
the deepest slice below ``NO_BLUR_PX`` and the deep signal at least ``MIN_DEEP_SIGNAL`` x the
shallow one): then DQLR has nothing to restore there, whatever the ratios do. The same
measures apply to the paper's pairs (``--pairs self``).

:func:`input_gain` measures, :func:`compare` holds the measures of one stack (input and
restoration given as arrays), :func:`gain_warning` words the warning (``None`` when the model
beats its input), :func:`gain_text` the sentence of the model card.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...metrics.arrays import central_crop
from .realmeasures import band_power, depth_ratio, foreground_contrast, grid_peak, signal_band
from .shallow_deep import estimate_depth_model
from .task import DQLRModel, restore

__all__ = ["MAX_RATIO_LOSS", "MAX_GRID_PEAK", "NO_BLUR_PX", "MIN_DEEP_SIGNAL",
           "MIN_SHALLOW_CORRELATION", "CROP", "MAX_STACKS", "compare",
           "input_gain", "gain_warning", "gain_text"]

MAX_RATIO_LOSS = 0.02
"""Largest accepted relative fall of a deep/shallow ratio (band power, foreground contrast)
below the input's. The ratios are means over a third of the slices; the classical
slice-wise deconvolution moves them by at most 0.6 % on the real stack without depth
degradation (README, DQLR real stacks: 0.990 -> 0.991, 0.770 -> 0.765), a model that
restores raises them by several per cent (1135: band power 0.642 -> 0.72-0.82)."""
MAX_GRID_PEAK = 1.1
"""Largest accepted grid peak of the restoration, relative to the input's (at least 1): the
nearest-neighbour generator's texture measured 1.3-2 (README), a clean output 1.00-1.01."""
NO_BLUR_PX = 0.5
"""Extra lateral blur sigma (px) at the deepest slice below which a stack counts as not
blurred with depth (the nearly noise-free ovule stack: 0.24 px; the noisy 1135 stack: 2.2-2.7 px;
synthetic stacks without depth blur: 0-0.4 px)."""
MIN_DEEP_SIGNAL = 0.95
"""Deep signal (relative to the shallow one) from which a stack counts as not attenuated
with depth: the estimate scatters by about 5 % on stacks without attenuation (synthetic
membranes: 0.96-1.12); the ovule stack measured 1.33, the 1135 stack 0.58."""
MIN_SHALLOW_CORRELATION = 0.93
"""Least accepted correlation of the restoration with the input on the shallowest third
(both smoothed by 2 px): the shallow slices are what DQLR is trained to return as acquired.
Measured on the noisy 1135 stack: a 2-px smoothing keeps 0.988 and slice-wise
Richardson-Lucy 0.995 (noise left after the 2-px smoothing cannot lower it below about 0.99
there); the model of the README's real bench (both real stacks, 240 steps), visibly
faithful, 0.957; the same training on that stack alone, which turns the noise into a ring
and worm texture and loses a bright membrane, 0.797 (its deep/shallow ratios rise all the
same: 0.847 and 0.974), and with the paper's pairs 0.907; an untrained network 0.07."""
CROP = 128
"""Lateral size of the central crop measured (all slices): seconds on one thread."""
MAX_STACKS = 4
"""Training stacks measured at most (the first ones)."""


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation; ``None`` where either image is flat (nothing to compare)."""
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 1e-12 * a.size else None


def compare(inp: np.ndarray, out: np.ndarray, *, period: int,
            depth: dict[str, float] | None = None, shallow_fraction: float = 0.2,
            min_shallow: int = 3) -> dict[str, float]:
    """The measures of one stack: ``inp`` (normalised input) and ``out`` (its restoration),
    both ZYX ordered from shallow to deep; ``period`` the latent grid in px; ``depth`` the
    stack's depth-model summary (``signal_deep``, ``sigma_deep_px``), estimated from ``inp``
    when not given."""
    x = np.asarray(inp, dtype=np.float32)
    y = np.asarray(out, dtype=np.float32)
    if depth is None:
        depth = estimate_depth_model(x, shallow_fraction=shallow_fraction,
                                     min_shallow=min_shallow).summary()
    from scipy.ndimage import gaussian_filter

    from .evaluate import depth_bins

    band = signal_band(x)
    sh = depth_bins(x.shape[0])["shallow"]
    corr = _correlation(gaussian_filter(x[sh], (0, 2, 2)), gaussian_filter(y[sh], (0, 2, 2)))
    return {**({"shallow_correlation": corr} if corr is not None else {}),
            "band_input": depth_ratio(band_power(x, band)),
            "band_restored": depth_ratio(band_power(y, band)),
            "contrast_input": depth_ratio(foreground_contrast(x)),
            "contrast_restored": depth_ratio(foreground_contrast(y)),
            "grid_input": grid_peak(x, period), "grid_restored": grid_peak(y, period),
            "signal_deep": float(depth["signal_deep"]),
            "sigma_deep_px": float(depth["sigma_deep_px"])}


def input_gain(model: DQLRModel, stacks: Sequence[np.ndarray] | np.ndarray,
               names: Sequence[str] | None = None, *, crop: int = CROP,
               max_stacks: int = MAX_STACKS) -> dict[str, Any]:
    """Measure whether ``model`` (just trained on the raw ``stacks``, ZYX) beats its input on
    them (see the module docstring): a JSON-able dict, one entry per measured stack."""
    t0 = time.perf_counter()
    if isinstance(stacks, np.ndarray):
        stacks = [stacks]
    cfg = model.config
    names = list(names) if names is not None else [f"stack {i}" for i in range(len(stacks))]
    rows = []
    for i, (s, name) in enumerate(list(zip(stacks, names))[:max_stacks]):
        a = np.asarray(s, dtype=np.float32)
        raw = central_crop(a, crop)
        inp, out = model.normalizer.before(raw), restore(model, raw)
        if not cfg.depth_increases_with_z:  # shallow to deep
            inp, out = inp[::-1], out[::-1]
        # the depth model fitted for training where there is one (the whole stack)
        depth = model.depth_models[i] if i < len(model.depth_models) else None
        rows.append({"name": str(name), "crop": [int(d) for d in raw.shape],
                     **compare(inp, out, period=2 ** int(cfg.n_down), depth=depth,
                               shallow_fraction=cfg.shallow_fraction,
                               min_shallow=cfg.window + cfg.n_predict)})
    return {"stacks": rows, "measured": len(rows), "of": len(stacks),
            "seconds": round(time.perf_counter() - t0, 2)}


def _failures(row: dict[str, Any]) -> list[tuple[str, str]]:
    """Each failed measure of one stack: what failed, and what the user can do about it."""
    bad = []
    flat = row["sigma_deep_px"] < NO_BLUR_PX and row["signal_deep"] >= MIN_DEEP_SIGNAL
    if flat:
        bad.append((f"the stack shows no measurable depth degradation (extra blur at the "
                    f"deepest slice {row['sigma_deep_px']:.2f} px, below {NO_BLUR_PX:g}; deep "
                    f"signal {row['signal_deep']:.2f} x the shallow one, at least "
                    f"{MIN_DEEP_SIGNAL:g})",
                    "DQLR has nothing to restore on this stack: use the raw stack (or, if "
                    "slice 0 is the deepest, train with --deep-first)"))
    # without depth degradation, training otherwise cannot help: the hint above is the one
    ratio_hint = ("" if flat else
                  "on a noisy stack train with `--n-predict 2` (README: it raised the noisy "
                  "1135 stack's deep/shallow band power 0.72 -> 0.82), or train longer "
                  "(--epochs, --steps-per-epoch); compare with the raw stack before using it")
    if row.get("shallow_correlation", 1.0) < MIN_SHALLOW_CORRELATION:
        bad.append((f"its shallowest slices, which it is trained to return as acquired, no "
                    f"longer resemble the input: correlation {row['shallow_correlation']:.2f} "
                    f"(2-px smoothing; at least {MIN_SHALLOW_CORRELATION:g} expected)",
                    "it may be turning noise into texture: train on several stacks of the kind "
                    "(give a folder; on the noisy 1135 stack adding the second real stack "
                    "raised this correlation 0.80 -> 0.96) or longer (--epochs, "
                    "--steps-per-epoch)"))
    for key, what in (("band", "band power above noise"),
                      ("contrast", "foreground contrast")):
        a, b = row[f"{key}_input"], row[f"{key}_restored"]
        if b < a * (1.0 - MAX_RATIO_LOSS):
            bad.append((f"its deep slices lose {what} against the shallow ones: deep/shallow "
                        f"ratio {a:.3f} (input) -> {b:.3f} (this model), {b / a - 1:+.1%} "
                        f"(at most {-MAX_RATIO_LOSS:.0%} accepted)", ratio_hint))
    if row["grid_restored"] > MAX_GRID_PEAK * max(row["grid_input"], 1.0):
        bad.append((f"it adds a texture on its latent grid: grid peak {row['grid_input']:.2f} "
                    f"(input) -> {row['grid_restored']:.2f} (at most {MAX_GRID_PEAK:g} x "
                    f"the input's accepted)",
                    "keep the default generator (--upsample bilinear) and train longer"))
    return bad


def gain_warning(gain: dict[str, Any] | None) -> str | None:
    """The warning to give when the model does not beat its input on one of its measured
    training stacks (``None`` if it does, or if nothing was measured)."""
    rows = (gain or {}).get("stacks") or []
    failed = [(r, _failures(r)) for r in rows]
    failed = [(r, bad) for r, bad in failed if bad]
    if not failed:
        return None
    several = len(rows) > 1
    what = "; ".join((f"on {r['name']}: " if several else "") + "; ".join(b for b, _ in bad)
                     for r, bad in failed)
    hints = list(dict.fromkeys(h for _, bad in failed for _, h in bad if h))
    return (f"this DQLR model does not beat its input on its training "
            f"stack{'s' if several else ''}: {what}. Its output may be worse than the stack "
            f"it is given: " + "; ".join(hints))


def gain_text(gain: dict[str, Any] | None) -> str:
    """One sentence for the model card."""
    rows = (gain or {}).get("stacks") or []
    if not rows:
        return "not measured (a run trained before sharpstack measured it)."
    parts = []
    for r in rows:
        z, h, w = r["crop"]
        parts.append(f"{r['name']} ({z}x{h}x{w} px, central crop): deep/shallow band power "
                     f"above noise {r['band_input']:.3f} (input) -> {r['band_restored']:.3f} "
                     f"(this model), foreground contrast {r['contrast_input']:.3f} -> "
                     f"{r['contrast_restored']:.3f}, "
                     + (f"correlation with the input over the shallowest third "
                        f"{r['shallow_correlation']:.2f}, " if "shallow_correlation" in r
                        else "")
                     + f"grid peak {r['grid_input']:.2f} -> "
                     f"{r['grid_restored']:.2f}; depth model: extra blur at the deepest "
                     f"slice {r['sigma_deep_px']:.2f} px, deep signal {r['signal_deep']:.2f} "
                     f"x the shallow one")
    notice = gain_warning(gain)
    verdict = (f"**it does not beat its input there: {notice.split(': ', 1)[1]}**" if notice
               else "it beats its input there")
    return "; ".join(parts) + f"; {verdict}."
