"""The real paired benchmark of disentangled deblurring: one real defocus series with its
in-focus plane (``../shared/data/defocus_pairs``: mitochondria, 15 planes at -0.7 ... +0.7 um,
in focus at plane 8), trained on one part of the field and scored on another.

:func:`run_pairs_bench`:

1. reads the series and splits the field by rows: the scored region (``test_rows`` rows at
   the top) and, ``gap`` rows further, the training region (the rest);
2. cuts the training region into ``tile`` x ``tile`` tiles, one identity each (a defocus
   series of 15 planes, in focus at plane 8), and trains every model of ``models`` on them
   (:func:`.task.train_disentangled`; identities split into training and validation);
3. scores, on the scored region, every out-of-focus plane against the in-focus plane (PSNR
   and SSIM with the CARE protocol, per |dz|, ``+dz`` and ``-dz`` together): the blurry input,
   Richardson-Lucy with a Gaussian PSF whose width per plane is fitted on the training region
   (:func:`sharpstack.psf.fit_defocus_sigmas`; oracle iteration count, an upper bound on RL),
   the least-squares linear filter learned from the training region's pairs
   (:func:`.linear_filter.fit_linear_filters`: one filter for every plane, which like
   the models does not know which plane it restores, and one filter per plane, which does)
   and each model as its package deblurs (the whole region at once, the stored in-focus code;
   a model of :data:`PLANE_CALIBRATED` is trained on, and deblurs, every plane after its
   plane's linear filter: it knows the plane, as RL and the per-plane filter do);
4. per model: reconstruction ``D(E(x))`` of every plane of the scored region against itself,
   and the ML-VAE disentanglement score (:func:`sharpstack.metrics.mlvae_score`) on the codes
   of ``tile`` px tiles of the scored region (identities never trained on);
5. writes ``pairs.md`` (the table), ``pairs.json`` and ``pairs_<dz>.png`` (input / models /
   RL / in-focus crops).

Nothing here prints.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError

__all__ = ["PAIRS_MODELS", "PAIRS_FILE", "load_pairs", "run_pairs_bench"]

PAIRS_FILE = "mitochondria_defocus_series.tif"
PAIRS_MODELS: dict[str, dict[str, Any]] = {
    "manifold1d": {"variant": "manifold1d"},
    "manifold1d_plane": {"variant": "manifold1d"},
    "thesis_losses": {"variant": "manifold1d", "supervised": 0.0, "batch_norm": True},
    "thesis_manifold1d": {"variant": "manifold1d", "architecture": "thesis",
                          "residual": False, "w_deblur": 0.0, "supervised": 0.0,
                          "batch_norm": True},
    "mlvae": {"variant": "mlvae"},
    "manifold": {"variant": "manifold"},
}
#: models told which plane they restore: they train on and deblur every plane after its own
#: least-squares linear filter (fitted on the training region, like RL's PSF width)
PLANE_CALIBRATED = frozenset({"manifold1d_plane"})
LABELS = {"manifold1d": "1-D manifold (default: skips, supervised)",
          "manifold1d_plane": "1-D manifold on the planes' linear filters (knows the plane)",
          "thesis_losses": "1-D manifold (skips, thesis's losses + deblurring term)",
          "thesis_manifold1d": "1-D manifold (thesis network)",
          "mlvae": "ML-VAE (skips)", "manifold": "manifold (skips)"}


def load_pairs(path: str | Path | None = None) -> np.ndarray:
    """The real defocus series ``(15, Y, X)`` float32 (default: the shared data's)."""
    from ...io import read_stack
    from ...shared_data import shared_dataset

    p = Path(path) if path else shared_dataset("defocus_pairs") / PAIRS_FILE
    if not p.exists():
        raise InputError(f"{p} does not exist; give the defocus series (a ZYX stack)")
    da = read_stack(p)
    arr = np.asarray(da.values, dtype=np.float32)
    if arr.ndim != 3:
        raise InputError(f"{p.name} must be a z-stack (ZYX), got shape {arr.shape}")
    return arr


def _tiles(region: np.ndarray, tile: int) -> list[np.ndarray]:
    ny, nx = region.shape[1:]
    return [region[:, y:y + tile, x:x + tile] for y in range(0, ny - tile + 1, tile)
            for x in range(0, nx - tile + 1, tile)]


def _score(target: np.ndarray, image: np.ndarray) -> tuple[float, float]:
    from ...metrics import psnr_normalized, ssim_normalized

    return psnr_normalized(target, image), ssim_normalized(target, image)


def _per_dz(rows: dict[int, tuple[float, float]]) -> dict[int, tuple[float, float]]:
    out: dict[int, list] = {}
    for dz, v in rows.items():
        out.setdefault(abs(dz), []).append(v)
    return {d: (float(np.mean([v[0] for v in vs])), float(np.mean([v[1] for v in vs])))
            for d, vs in sorted(out.items())}


def run_pairs_bench(out_dir: str | Path, *, data: str | Path | None = None,
                    focus_plane: int = 8, test_rows: int = 384, gap: int = 16, tile: int = 96,
                    models: Sequence[str] = ("manifold1d", "thesis_manifold1d"),
                    config: dict[str, Any] | None = None, train_norm: str = "region",
                    rl_iterations: Sequence[int] = (1, 2, 3, 5, 8, 12, 20, 30, 50),
                    linear_size: int = 15,
                    on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train on one part of a real defocus series, score deblurring on another.

    Parameters
    ----------
    out_dir : path
        Output folder (``pairs.md``, ``pairs.json``, figures).
    data : path, optional
        The series (default ``defocus_pairs/mitochondria_defocus_series.tif`` of the shared
        data); ``focus_plane`` its 1-based in-focus plane.
    test_rows, gap, tile
        Rows of the scored region (top of the field, a multiple of 8), rows left out between
        it and the training region, size of a training identity (tile).
    models : names
        Keys of :data:`PAIRS_MODELS`.
    config : dict
        :class:`~.settings.DisentangledConfig` fields for every model (sizes, epochs, seed).
    train_norm : ``"region"`` or ``"tile"``
        How the training tiles are normalised: ``"region"`` (default), every plane of the
        training region by its own percentiles over the whole region before it is cut, as the
        scored region is normalised plane by plane as a whole when it is deblurred; ``"tile"``
        (the bench before), every plane of every tile by its own percentiles (a background
        tile's 99.8th percentile is then its noise).
    linear_size : int
        Width of the least-squares linear filters (odd, pixels).
    """
    from ...baselines import richardson_lucy_best
    from ...metrics import mlvae_score
    from ...normalize import PercentileNormalizer
    from ...psf import fit_defocus_sigmas
    from .bench_report import gauss2d
    from .data import series_from_stacks
    from .linear_filter import apply_linear_filter, fit_linear_filters
    from .model import deblur, encode_images, reconstruct
    from .settings import DisentangledConfig
    from .task import train_disentangled

    say = on_step or (lambda msg: None)
    if train_norm not in ("region", "tile"):
        raise InputError(f"train_norm must be region or tile, got {train_norm!r}")
    for m in models:
        if m not in PAIRS_MODELS:
            raise InputError(f"unknown model {m!r} for the paired benchmark; use "
                             f"{', '.join(PAIRS_MODELS)}")
    if train_norm == "tile" and PLANE_CALIBRATED & set(models):
        raise InputError("the plane-calibrated models train on the region normalised as a "
                         "whole; use train_norm='region'")
    stack = load_pairs(data)
    f = int(focus_plane) - 1
    if not 0 < f < len(stack) - 1:
        raise InputError(f"focus_plane {focus_plane} must be inside the series "
                         f"(2..{len(stack) - 1})")
    if test_rows % 8 or test_rows + gap + tile > stack.shape[1]:
        raise InputError(f"test_rows {test_rows} must be a multiple of 8 that leaves at least "
                         f"one {tile} px tile to train on ({stack.shape[1]} rows)")
    nx = stack.shape[2] - stack.shape[2] % 8
    test = stack[:, :test_rows, :nx]
    train_region = stack[:, test_rows + gap:]
    stacks = _tiles(train_region, tile)
    # every plane of each region normalised as a whole, with the model's default percentiles
    # (1, 99.8): the training tiles (train_norm "region"), the linear filters and the codes
    pn = PercentileNormalizer()
    train_n = np.stack([pn.before(p) for p in train_region])
    test_n = np.stack([pn.before(p) for p in test])
    pre = train_n if train_norm == "region" else None
    series = series_from_stacks(_tiles(pre, tile) if pre is not None else stacks,
                                names=[f"tile {i + 1}" for i in range(len(stacks))],
                                focus=f, plane_spacing=0.1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res: dict[str, Any] = {
        "data": f"{Path(data).name if data else PAIRS_FILE}: {stack.shape[0]} planes of "
                f"{stack.shape[1]}x{stack.shape[2]} px, in focus at plane {focus_plane}",
        "split": f"trained on rows {test_rows + gap}..{stack.shape[1]} "
                 f"({len(stacks)} tiles of {tile} px), scored on rows 0..{test_rows} x "
                 f"columns 0..{nx}; training tiles normalised per "
                 f"{'plane over the whole training region' if train_norm == 'region' else 'tile'}",
        "baselines": {}, "models": {}}
    target = test[f]
    planes = [q for q in range(len(test)) if q != f]
    res["baselines"]["blurry"] = _per_dz({q - f: _score(target, test[q]) for q in planes})
    norm = PercentileNormalizer()
    sig = fit_defocus_sigmas([norm.before(s) for s in stacks], f)
    rl_rows, rl_images = {}, {}
    for q in planes:
        if sig[q] <= 0:
            rl_rows[q - f], rl_images[q] = _score(target, test[q]), test[q]
            continue
        r = richardson_lucy_best(np.clip(test[q], 0, None), gauss2d(float(sig[q])), target,
                                 iterations=tuple(rl_iterations), axes="YX")
        rl_rows[q - f], rl_images[q] = _score(target, r.volume), r.volume
    res["baselines"]["rl"] = _per_dz(rl_rows)
    res["rl_sigmas"] = [float(s) for s in sig]
    # least-squares linear filters from the training region's (plane, in-focus) pairs, every
    # plane normalised over the region as the models see it
    plane_coef, shared = fit_linear_filters({q: [(train_n[q], train_n[f])] for q in planes},
                                            linear_size)
    lin_rows: dict[str, dict[int, tuple[float, float]]] = {"linear_shared": {},
                                                           "linear_plane": {}}
    lin_images: dict[int, np.ndarray] = {}
    for q in planes:
        lin_rows["linear_shared"][q - f] = _score(target,
                                                  apply_linear_filter(test_n[q], shared))
        lin_images[q] = apply_linear_filter(test_n[q], plane_coef[q])
        lin_rows["linear_plane"][q - f] = _score(target, lin_images[q])
    for key, rows in lin_rows.items():
        res["baselines"][key] = _per_dz(rows)
    say(f"[pairs] baselines in {time.perf_counter() - t0:.0f} s")
    outputs: dict[str, dict[int, np.ndarray]] = {}
    # the codes of the scored region's tiles, normalised as the training tiles were
    code_tiles = _tiles(test_n if pre is not None else test, min(64, tile))
    cal: dict[str, Any] = {}
    if PLANE_CALIBRATED & set(models):
        # every plane but the in-focus one after its own filter (region-normalised intensities)
        def calibrate(stack_n: np.ndarray) -> np.ndarray:
            return np.stack([p if q == f else apply_linear_filter(p, plane_coef[q])
                             for q, p in enumerate(stack_n)]).astype(np.float32)

        pre_cal = calibrate(train_n)
        test_cal = calibrate(test_n)
        cal = {"series": series_from_stacks(_tiles(pre_cal, tile), names=series.names,
                                            focus=f, plane_spacing=0.1),
               "test": test_cal, "code_tiles": _tiles(test_cal, min(64, tile))}
    for m in models:
        t1 = time.perf_counter()
        cfg = DisentangledConfig(**{"channels": [16, 32, 64], "id_channels": 64,
                                    "patch_size": 64, "p_focus": 0.5, "val_fraction": 0.15,
                                    **(config or {}), **PAIRS_MODELS[m]})
        on_cal = m in PLANE_CALIBRATED
        model = train_disentangled(cal["series"] if on_cal else series, cfg,
                                   normalized=pre is not None)
        secs = time.perf_counter() - t1
        src = cal["test"] if on_cal else test
        outs = {q: deblur(model, src[q]) for q in planes}
        rows = {q - f: _score(target, outs[q]) for q in planes}
        rec = reconstruct(model, src)
        rec_rows = [_score(src[q], rec[q]) for q in range(len(src))]
        idc, blur, lab = [], [], []
        for k, t in enumerate(cal["code_tiles"] if on_cal else code_tiles):
            i, b = encode_images(model, t, normalized=pre is not None)
            idc.append(i.reshape(len(t), -1))
            blur.append(b)
            lab += [k] * len(t)
        score = mlvae_score(np.concatenate(idc), np.concatenate(blur), np.array(lab))
        all_rows = list(rows.values())
        res["models"][m] = {
            "label": LABELS[m], "config": cfg.model_dump(), "train_seconds": secs,
            "best_epoch": model.result.best_epoch,
            "deblurring": (float(np.mean([v[0] for v in all_rows])),
                           float(np.mean([v[1] for v in all_rows]))),
            "per_dz": _per_dz(rows),
            "reconstruction": (float(np.mean([v[0] for v in rec_rows])),
                               float(np.mean([v[1] for v in rec_rows]))),
            "mlvae_score": score}
        outputs[m] = outs
        say(f"[pairs] {m} trained in {secs:.0f} s, deblurring PSNR "
            f"{res['models'][m]['deblurring'][0]:.2f} dB, reconstruction "
            f"{res['models'][m]['reconstruction'][0]:.2f} dB")
    for key, rows in (("blurry", {q - f: _score(target, test[q]) for q in planes}),
                      ("rl", rl_rows), *lin_rows.items()):
        vals = list(rows.values())
        res["baselines"][key + "_mean"] = (float(np.mean([v[0] for v in vals])),
                                           float(np.mean([v[1] for v in vals])))
    res["seconds"] = time.perf_counter() - t0
    _figures(out, test, f, rl_images, outputs, models, lin_images)
    (out / "pairs.json").write_text(json.dumps(res, indent=2, default=str))
    (out / "pairs.md").write_text(_table(res, models))
    return res


def _table(res: dict[str, Any], models: Sequence[str]) -> str:
    cols = ["blurry input", "RL (fitted Gaussian PSF, oracle iterations)",
            "linear filter, one for all planes", "linear filter per plane (knows the plane)"
            ] + [LABELS[m] for m in models]
    base = ["blurry", "rl", "linear_shared", "linear_plane"]
    lines = ["## Real paired defocus series: deblurring PSNR (dB) / SSIM vs the in-focus "
             "plane", "", res["data"] + "; " + res["split"] + ".", "",
             "| \\|dz\\| (um) | " + " | ".join(cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    dzs = sorted(res["baselines"]["blurry"])
    for d in dzs:
        vals = [res["baselines"][b][d] for b in base] + [
            res["models"][m]["per_dz"][d] for m in models]
        lines.append(f"| {d * 0.1:.1f} | " + " | ".join(f"{p:.2f} / {s:.3f}" for p, s in vals)
                     + " |")
    vals = [res["baselines"][b + "_mean"] for b in base] + [
        res["models"][m]["deblurring"] for m in models]
    lines.append("| **all** | " + " | ".join(f"**{p:.2f} / {s:.3f}**" for p, s in vals) + " |")
    lines += ["", "| model | reconstruction PSNR / SSIM (scored region) | ML-VAE score "
              "(id acc / blur acc) | training (s) |", "|---|---|---|---|"]
    for m in models:
        r = res["models"][m]
        sc = r["mlvae_score"]
        lines.append(f"| {LABELS[m]} | {r['reconstruction'][0]:.2f} / "
                     f"{r['reconstruction'][1]:.3f} | {sc['score']:.3f} "
                     f"({sc['identity_accuracy']:.2f} / {sc['blur_accuracy']:.2f}) | "
                     f"{r['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def _figures(out: Path, test: np.ndarray, f: int, rl: dict[int, np.ndarray],
             outputs: dict[str, dict[int, np.ndarray]], models: Sequence[str],
             linear: dict[int, np.ndarray]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...normalize import PercentileNormalizer

    norm = PercentileNormalizer()
    ny, nx = test.shape[1:]
    ys, xs = slice(max(0, ny // 2 - 96), ny // 2 + 96), slice(max(0, nx // 2 - 96), nx // 2 + 96)
    for q in (0, f - 3, f + 3, len(test) - 1):
        if q == f or not 0 <= q < len(test):
            continue
        panels = [(f"input dz {(q - f) * 0.1:+.1f} um", norm.before(test[q])),
                  ("Richardson-Lucy", norm.before(rl[q])),
                  ("linear filter per plane", linear[q])]
        panels += [(LABELS[m], outputs[m][q]) for m in models]
        panels.append(("in focus", norm.before(test[f])))
        fig, ax = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.3))
        for a, (title, img) in zip(ax, panels):
            a.imshow(np.asarray(img)[ys, xs], cmap="gray", vmin=0, vmax=1)
            a.set_title(title, fontsize=8)
            a.axis("off")
        fig.tight_layout()
        fig.savefig(out / f"pairs_dz{q - f:+d}.png", dpi=80)
        plt.close(fig)
