"""A trained ZSE-GAN: :class:`ZSEGANModel` (both generators, the deploy module),
:func:`train_zsegan` (unpaired z-scans and in-focus images -> a trained model through the
generic loop) and :func:`restore` (a whole z-scan in-process, what the package computes)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..._axes import check_axes
from ...errors import InputError
from ...normalize import PercentileNormalizer
from ...training import TrainData, TrainResult, fit
from .data import (ZScanTrainSet, ZScanValSet, as_unit_tensors, match_histogram,
                   split_zscans)
from .settings import ZSEGANConfig
from .task import ZSEGANTask
from .zsegan_arch import ResnetGenerator3D, ZSEGANDeploy, receptive_radius

__all__ = ["ZSEGANModel", "train_zsegan", "restore"]


# ------------------------------------------------------------------------------------- model
@dataclass
class ZSEGANModel:
    """A trained ZSE-GAN: both generators (eval mode, stored normalisation), the settings,
    the percentile normaliser and the split of the z-scans."""

    G_S: ResnetGenerator3D
    G_B: ResnetGenerator3D
    config: ZSEGANConfig
    normalizer: PercentileNormalizer
    result: TrainResult
    split: dict[str, list[str]] = field(default_factory=dict)
    defocus: dict[str, Any] | None = None
    """The per-plane defocus model of the physics warm start
    (:meth:`.warmstart.DefocusModel.to_record`), or None (the paper's recipe)."""

    def deploy(self) -> ZSEGANDeploy:
        """The exported module: G_S alone, [0, 1] in and out, same shape (DESIGN.md)."""
        mod = ZSEGANDeploy(**self.deploy_kwargs())
        mod.net.load_state_dict(self.G_S.state_dict())
        return mod.eval()

    def deploy_kwargs(self) -> dict[str, Any]:
        return {"generator": self.config.generator_kwargs(),
                "self_ensemble": bool(self.config.self_ensemble)}

    def receptive_radius(self) -> int:
        return receptive_radius(**self.config.generator_kwargs())



def _check_arrays(zscans, infocus, vertical, cfg: ZSEGANConfig) -> None:
    if len(zscans) == 0:
        raise InputError("no z-scans given; ZSE-GAN trains on z-scan stacks (ZYX)")
    shapes = {tuple(np.shape(a)) for a in zscans}
    for a in zscans:
        if np.ndim(a) != 3:
            raise InputError(f"a z-scan has shape {np.shape(a)}; z-scans are ZYX stacks of "
                             f"{cfg.n_planes} planes")
        if np.shape(a)[0] != cfg.n_planes:
            raise InputError(f"a z-scan has {np.shape(a)[0]} planes, but n_planes is "
                             f"{cfg.n_planes}; give {cfg.n_planes}-plane z-scans or set "
                             f"--planes {np.shape(a)[0]}")
        if min(np.shape(a)[1:]) < cfg.crop:
            raise InputError(f"a z-scan of lateral size {np.shape(a)[1:]} is smaller than the "
                             f"training crop {cfg.crop}; use a smaller --crop (multiple of 4)")
    if len(shapes) != 1:
        raise InputError(f"the z-scans have different shapes {sorted(shapes)}; crop them to one "
                         f"lateral size")
    if len(infocus) == 0:
        raise InputError("no in-focus images given; ZSE-GAN needs sharp 2D images (YX)")
    for a in infocus:
        if np.ndim(a) != 2:
            raise InputError(f"an in-focus image has shape {np.shape(a)}; in-focus images are "
                             f"2D (YX)")
        if min(np.shape(a)) < max(cfg.crop, cfg.n_planes):
            raise InputError(f"an in-focus image of size {np.shape(a)} is smaller than the crop "
                             f"{cfg.crop}; use a smaller --crop or larger images")
    for a in vertical or []:
        if np.ndim(a) != 2 or np.shape(a)[1] != cfg.n_planes or np.shape(a)[0] < cfg.crop:
            raise InputError(f"a vertical section has shape {np.shape(a)}; vertical sections "
                             f"are 2D images of (lateral >= {cfg.crop}) x {cfg.n_planes} "
                             f"planes (rows lateral, columns z)")


def train_zsegan(zscans: Sequence[np.ndarray], infocus: Sequence[np.ndarray],
                 config: ZSEGANConfig, *, vertical: Sequence[np.ndarray] | None = None,
                 names: Sequence[str] | None = None, out_dir: str | Path | None = None,
                 resume: bool = False, progress: bool = False) -> ZSEGANModel:
    """Train ZSE-GAN on unpaired z-scans and in-focus 2D images.

    Parameters
    ----------
    zscans : sequence of ndarray, each (Z, Y, X)
        z-scan stacks (any dtype), all of ``config.n_planes`` planes and one lateral size;
        ``config.val_count`` of them (seeded) are held apart for validation.
    infocus : sequence of ndarray, each (Y, X)
        Sharp 2D images from the focal plane (y*).
    config : ZSEGANConfig
    vertical : sequence of ndarray, each (L, Z), optional
        Sharp vertical sections for D_S (the notebook's ``trainA29``); by default windows of
        the in-focus images are used.
    names : sequence of str, optional
        Names of the z-scans (recorded with the split).
    out_dir, resume, progress
        Passed to :func:`sharpstack.training.fit`.

    Every array is percentile-normalised on its own (``pmin``, ``pmax``) to [0, 1] and
    mapped to [-1, 1], the range of the generators' tanh.
    """
    cfg = config
    _check_arrays(zscans, infocus, vertical, cfg)
    names = list(names) if names is not None else [f"zscan_{i:04d}" for i in range(len(zscans))]
    train_idx, val_idx = split_zscans(len(zscans), cfg.val_count, cfg.seed)
    norm = PercentileNormalizer(cfg.pmin, cfg.pmax)
    xs = torch.stack(as_unit_tensors(zscans, norm))[:, None]
    x_train, x_val = xs[train_idx], xs[val_idx]
    torch.manual_seed(cfg.seed)
    ys = as_unit_tensors(infocus, norm)
    vs = as_unit_tensors(vertical, norm) if vertical else None
    if cfg.infocus_match == "focal":
        ref = x_train[:, 0, cfg.focal_index]
        ys = match_histogram(ys, ref)
        vs = match_histogram(vs, ref) if vs else None
    # calibration crops: fixed positions from a local generator (no draw from the global one)
    rng = np.random.default_rng(cfg.seed + 7)
    c = cfg.crop
    calib = []
    for _ in range(cfg.calib_crops):
        i = int(rng.integers(0, len(x_train)))
        a = int(rng.integers(0, x_train.shape[-2] - c + 1))
        b = int(rng.integers(0, x_train.shape[-1] - c + 1))
        calib.append(x_train[i, :, :, a:a + c, b:b + c])
    defocus = residuals = None
    if cfg.warm_start_steps > 0 or cfg.synthetic_weight > 0 or cfg.fidelity_weight > 0:
        from .warmstart import fit_defocus_model

        fit_on = [((x_train[i, 0] + 1) / 2).clamp(0, 1).numpy()
                  for i in range(min(cfg.warm_start_scans, len(x_train)))]
        defocus = fit_defocus_model(fit_on, cfg.focal_index)
        if cfg.warm_start_noise == "residual":
            from .warmstart import model_residuals

            residuals = model_residuals(fit_on, defocus)
    task = ZSEGANTask(cfg, torch.stack(calib), defocus, residuals)
    data = TrainData(ZScanTrainSet(x_train, ys, vs, crop=c, sections=cfg.sections,
                                   augment=cfg.augment), ZScanValSet(x_val[:cfg.val_monitor]))
    split = {"train": [names[i] for i in train_idx], "held_apart": [names[i] for i in val_idx]}
    record = {"zsegan": cfg.model_dump(), "split": split,
              "vertical_source": "vertical set" if vs else "in-focus windows",
              "n_infocus": len(ys),
              "defocus": defocus.to_record() if defocus is not None else None}
    result = fit(task, data, cfg.train_config(), out_dir=out_dir, resume=resume,
                 progress=progress, config_record=record)
    if cfg.select == "last":
        state = task.final_state
        if state is None and out_dir is not None and (Path(out_dir) / "last.pt").exists():
            from ...training import load_checkpoint

            state = load_checkpoint(Path(out_dir) / "last.pt")["models"]
        if state is not None:
            for k, m in task.models.items():
                m.load_state_dict(state[k])
    models = {k: copy.deepcopy(m).to(memory_format=torch.contiguous_format).eval()
              for k, m in task.models.items()}
    return ZSEGANModel(G_S=models["G_S"], G_B=models["G_B"], config=cfg, normalizer=norm,
                       result=result, split=split,
                       defocus=defocus.to_record() if defocus is not None else None)


# ----------------------------------------------------------------------------------- restore
def restore(model: ZSEGANModel | torch.nn.Module, stack: np.ndarray, *, axes: str = "ZYX",
            normalizer: PercentileNormalizer | None = None,
            n_planes: int | None = None) -> np.ndarray:
    """Sharpen a whole z-scan in-process (benchmarks; users run the package instead).

    ``stack`` is a raw z-scan (ZYX); it is normalised with the percentiles of the whole
    stack, laterally reflect-padded to multiples of 4, run through the deploy module (G_S)
    and cropped back. Returns the restoration in [0, 1] (float32, ZYX), what the exported
    package computes untiled.
    """
    check_axes(axes, np.ndim(stack), allowed=("ZYX",))
    arr = np.asarray(stack)
    if not np.all(np.isfinite(arr)):
        raise InputError("the z-scan contains NaN or infinite values; remove them first")
    if isinstance(model, ZSEGANModel):
        mod, normalizer = model.deploy(), normalizer or model.normalizer
        n_planes = model.config.n_planes
    else:
        mod = model.eval()
        normalizer = normalizer or PercentileNormalizer()
        n_planes = n_planes or getattr(getattr(mod, "net", mod), "n_planes", arr.shape[0])
    if arr.shape[0] != n_planes:
        raise InputError(f"the z-scan has {arr.shape[0]} focal planes, but the model takes "
                         f"{n_planes}; give a {n_planes}-plane z-scan")
    x = normalizer.before(arr)
    h, w = x.shape[1:]
    pad = ((0, 0), (0, (-h) % 4), (0, (-w) % 4))
    xp = np.pad(x, pad, mode="reflect") if any(p[1] for p in pad) else x
    dev = next(mod.parameters()).device
    with torch.no_grad():
        out = mod(torch.from_numpy(np.ascontiguousarray(xp))[None, None].to(dev))
    return out[0, 0, :, :h, :w].cpu().numpy().astype(np.float32)
