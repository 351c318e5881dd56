"""Quality of disentangled deblurring on the demo's synthetic field: PSNR and SSIM against
the in-focus plane (CARE protocol), for the model card, the demo's summary and its figure."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...normalize import PercentileNormalizer
from .._base import SynthResult, Trained
from .model import DisentangledModel, deblur

__all__ = ["score_pair", "evaluate", "score", "figure", "validation_gain", "gain_warning"]


def score_pair(target: np.ndarray, image: np.ndarray) -> tuple[float, float]:
    from ...metrics import psnr_normalized, ssim_normalized

    return psnr_normalized(target, image), ssim_normalized(target, image)


def evaluate(trained: Trained, synth: SynthResult) -> dict[str, Any]:
    model: DisentangledModel = trained.model
    stack = np.asarray(synth.references["sample_series"])
    f = int(synth.references["focus"])
    target = stack[f]
    pin, pout, sin, sout = [], [], [], []
    for q in range(len(stack)):
        if q == f:
            continue
        a = score_pair(target, stack[q])
        b = score_pair(target, deblur(model, stack[q]))
        pin.append(a[0]), sin.append(a[1]), pout.append(b[0]), sout.append(b[1])
    return {"PSNR vs in-focus plane, blurry planes (dB, mean)": float(np.mean(pin)),
            "PSNR vs in-focus plane, deblurred (dB, mean)": float(np.mean(pout)),
            "SSIM vs in-focus plane, blurry planes (mean)": float(np.mean(sin)),
            "SSIM vs in-focus plane, deblurred (mean)": float(np.mean(sout)),
            "data": f"every out-of-focus plane of a held-apart synthetic field "
                    f"({synth.info.get('source', '')})"}


def score(synth: SynthResult, restored) -> dict[str, float]:
    target = np.asarray(synth.references["sample_infocus"])
    blurry = np.asarray(synth.references["sample"])
    out = np.asarray(restored, dtype=np.float32)
    p_in, s_in = score_pair(target, blurry)
    p_out, s_out = score_pair(target, out)
    return {"psnr_input_db": p_in, "psnr_restored_db": p_out, "ssim_input": s_in,
            "ssim_restored": s_out}


def figure(synth: SynthResult, restored) -> list[tuple[str, Any]]:
    return [(f"input (dz {synth.info.get('sample_dz_um')} um)",
             PercentileNormalizer().before(np.asarray(synth.references["sample"]))),
            ("deblurred (package)", np.asarray(restored)),
            ("in-focus plane",
             PercentileNormalizer().before(np.asarray(synth.references["sample_infocus"])))]


def validation_gain(model: DisentangledModel, images: np.ndarray, focus: np.ndarray
                    ) -> dict[str, float]:
    """Mean PSNR and SSIM (CARE protocol) against the in-focus plane of every out-of-focus
    plane of held-apart fields ``images`` ``(N, L, Y, X)`` (in focus at ``focus``), for the
    blurry planes and for what the package computes from them: does the model beat its
    input?"""
    rows: dict[str, list[tuple[float, float]]] = {"in": [], "out": []}
    for stack, f in zip(images, focus):
        f = int(f)
        for q in range(len(stack)):
            if q != f:
                rows["in"].append(score_pair(stack[f], stack[q]))
                rows["out"].append(score_pair(stack[f], deblur(model, stack[q])))
    m = {k: (float(np.mean([v[0] for v in r])), float(np.mean([v[1] for v in r])))
         for k, r in rows.items()}
    return {"psnr_input_db": m["in"][0], "psnr_deblurred_db": m["out"][0],
            "ssim_input": m["in"][1], "ssim_deblurred": m["out"][1], "fields": len(images)}


def gain_warning(gain: dict[str, float] | None, where: str) -> str | None:
    """The warning to give when the model does not beat its blurry input (``None`` if it
    does, or if nothing was measured)."""
    if not gain or "psnr_input_db" not in gain:
        return None
    if gain["psnr_deblurred_db"] > gain["psnr_input_db"] and \
            gain["ssim_deblurred"] > gain["ssim_input"]:
        return None
    return (f"this disentangled model does not beat its blurry input on {where}: PSNR "
            f"{gain['psnr_deblurred_db']:.2f} dB against {gain['psnr_input_db']:.2f} dB of the "
            f"input, SSIM {gain['ssim_deblurred']:.3f} against {gain['ssim_input']:.3f}; its "
            f"output may be worse than the image it is given. Train longer (--epochs), on more "
            f"fields, or with a larger network (--channels, --skip-channels)")
