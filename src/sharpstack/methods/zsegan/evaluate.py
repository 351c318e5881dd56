"""ZSE-GAN's quality without ground truth (the paper's no-reference scores: FM flatness over
the planes, PIQE of the outer planes, FM of vertical sections, SSIM at the focal plane), for
the model card, the demo's summary and its figure."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...normalize import PercentileNormalizer
from .._base import SynthResult, Trained
from .model import ZSEGANModel, restore

__all__ = ["zscan_scores", "sample_array", "evaluate", "score", "figure", "warn_if_no_gain"]


def zscan_scores(x01: np.ndarray, y01: np.ndarray, focal: int) -> dict[str, float]:
    """No-reference scores of one restoration (both in [0, 1], ZYX)."""
    from ...metrics import focus_measure, piqe, ssim

    fx = [focus_measure(p) for p in x01]
    fy = [focus_measure(p) for p in y01]
    outer = [0, 1, 2, 3, len(x01) - 4, len(x01) - 3, len(x01) - 2, len(x01) - 1]
    h = x01.shape[1]
    rows = sorted({h // 5, h // 2, 4 * h // 5})
    return {
        "fm_max_min_input": max(fx) / min(fx), "fm_max_min_restored": max(fy) / min(fy),
        "piqe_outer_input": float(np.mean([piqe(x01[k], data_range=1.0) for k in outer])),
        "piqe_outer_restored": float(np.mean([piqe(y01[k], data_range=1.0) for k in outer])),
        "fm_vertical_input": float(np.mean([focus_measure(x01[:, r, :]) for r in rows])),
        "fm_vertical_restored": float(np.mean([focus_measure(y01[:, r, :]) for r in rows])),
        "ssim_focal_plane": ssim(x01[focal], y01[focal], data_range=1.0),
    }


def sample_array(synth: SynthResult) -> np.ndarray:
    """The demo's sample z-scan (raw, ZYX): in memory when synthetic, else read."""
    from ...io import read_stack

    if "sample" in synth.references:
        return np.asarray(synth.references["sample"])
    return np.asarray(read_stack(synth.arrays["sample"]).values)


def evaluate(trained: Trained, synth: SynthResult) -> dict[str, Any]:
    """In-process quality of a trained run on the sample, for the model card."""
    model: ZSEGANModel = trained.model
    x = sample_array(synth)
    y = restore(model, x)
    x01 = np.clip(model.normalizer.before(x), 0, 1)
    s = zscan_scores(x01, y, model.config.focal_index)
    out: dict[str, Any] = {
        "FM max/min over planes, input": s["fm_max_min_input"],
        "FM max/min over planes, ZSE-GAN": s["fm_max_min_restored"],
        "PIQE of planes 1-4, 26-29, input": s["piqe_outer_input"],
        "PIQE of planes 1-4, 26-29, ZSE-GAN": s["piqe_outer_restored"],
        "FM of vertical sections, input": s["fm_vertical_input"],
        "FM of vertical sections, ZSE-GAN": s["fm_vertical_restored"],
        "SSIM(x, y) at the focal plane": s["ssim_focal_plane"],
        "data": f"held-apart z-scan {synth.info.get('sample_name', 'sample')} "
                f"({synth.info.get('source', '')})"}
    if "sample_infocus" in synth.references:
        from ...metrics import ssim_normalized

        f = synth.references["sample_infocus"]
        out["SSIM vs true in-focus field, input (mean over planes)"] = float(
            np.mean([ssim_normalized(f, p) for p in x01]))
        out["SSIM vs true in-focus field, ZSE-GAN (mean over planes)"] = float(
            np.mean([ssim_normalized(f, p) for p in y]))
    return out


def score(synth: SynthResult, restored) -> dict[str, float]:
    """Scores of the package's restoration ``restored`` of the sample."""
    x = sample_array(synth)
    norm = PercentileNormalizer()
    x01 = np.clip(norm.before(x), 0, 1)
    y = np.asarray(restored, dtype=np.float32)
    s = zscan_scores(x01, y, (x.shape[0] - 1) // 2)
    warn_if_no_gain(s)
    return s


def warn_if_no_gain(s: dict[str, float]) -> list[str]:
    """Warn (and return the reasons) when a restoration is not better than its input: FM
    no flatter over the planes or the focal plane changed (SSIM below 0.85); a separate
    warning when only the outer planes' PIQE got worse (texture partly synthetic)."""
    import warnings

    why = []
    if s["fm_max_min_restored"] >= s["fm_max_min_input"]:
        why.append(f"FM max/min over the planes {s['fm_max_min_input']:.2f} -> "
                   f"{s['fm_max_min_restored']:.2f} (not flatter)")
    if s["ssim_focal_plane"] < 0.85:
        why.append(f"SSIM to the input at the focal plane {s['ssim_focal_plane']:.2f} < 0.85 "
                   "(the in-focus plane was changed)")
    if why:
        warnings.warn("the ZSE-GAN model does not beat its input on this z-scan: "
                      + "; ".join(why) + ". Train longer (more --epochs / --steps) or keep "
                      "the physics warm start on (--warm-start-steps); do not use this "
                      "output in place of the input", stacklevel=2)
    if s["piqe_outer_restored"] >= s["piqe_outer_input"]:
        note = (f"PIQE of the outer planes {s['piqe_outer_input']:.1f} -> "
                f"{s['piqe_outer_restored']:.1f} (not lower)")
        why.append(note)
        warnings.warn(f"ZSE-GAN: {note}: far from focus the output's texture is partly "
                      "synthetic; compare with the input before measuring", stacklevel=2)
    return why


def figure(synth: SynthResult, restored) -> list[tuple[str, Any]]:
    """Panels of the demo figure: planes and a vertical section, before and after."""
    x = np.clip(PercentileNormalizer().before(sample_array(synth)), 0, 1)
    y = np.asarray(restored, dtype=np.float32)
    r = x.shape[1] // 2
    return [("input, plane 1", x[0]), ("ZSE-GAN, plane 1", y[0]),
            ("input, focal plane", x[(len(x) - 1) // 2]),
            ("ZSE-GAN, focal plane", y[(len(y) - 1) // 2]),
            ("input, vertical section (x, z)", x[:, r, :].T),
            ("ZSE-GAN, vertical section", y[:, r, :].T)]
