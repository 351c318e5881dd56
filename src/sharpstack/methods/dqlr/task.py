"""DQLR's loss, training task, trained model and in-process restoration.

The recurrence runs over the first ``window`` slices of a clip, the code of the last one
reconstructs it and ``n_predict`` further recurrent steps predict the next slices; loss = MSE
+ λ_s (1 - SSIM) + λ_q VQ loss (eq. 3 of the paper). The exported module
(:class:`~.dqlr_arch.DQLRDeploy`) restores every slice from the ``window`` slices ending at it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...nn.losses import ssim
from ...normalize import PercentileNormalizer
from ...training import TrainResult, TrainTask, fit
from .data import check_stack, make_datasets, prepare_stacks
from .dqlr_arch import DQLRDeploy, DQLRNet, halo_for, lateral_multiple, usage_stats
from .settings import DQLRConfig

__all__ = ["dqlr_loss", "DQLRTask", "DQLRModel", "train_dqlr", "restore"]


def dqlr_loss(pred: torch.Tensor, target: torch.Tensor, commit: torch.Tensor, *,
              lambda_ssim: float = 1.0, lambda_vq: float = 1.0, sigma: float = 1.5
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """``MSE + lambda_s (1 - SSIM) + lambda_q L_VQ`` (eq. 3 of the paper).

    ``pred`` and ``target`` are ``(B, 1, T, H, W)`` (reconstructed and predicted slices); MSE
    and SSIM (Gaussian window ``sigma``, 2D per slice, data range 1 on normalised data) are
    averaged over all of them. ``commit`` is the quantiser's commitment loss (the codebook
    itself follows the EMA, so it has no loss term).
    """
    b, c, t, h, w = pred.shape
    p2 = pred.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    t2 = target.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    mse = torch.mean((p2 - t2) ** 2)
    s = ssim(p2, t2, data_range=1.0, sigma=sigma)
    loss = mse + lambda_ssim * (1.0 - s) + lambda_vq * commit
    return loss, {"mse": float(mse.detach()), "ssim": float(s.detach()),
                  "vq": float(commit.detach())}


class DQLRTask(TrainTask):
    """The training step of DQLR for the generic loop (one Adam optimiser).

    Logs per step (averaged per epoch in the history): the loss and its terms, and, with
    quantisation, the codebook perplexity, the number of codewords used in the batch and the
    number of dead codewords restarted.
    """

    def __init__(self, net: DQLRNet, config: DQLRConfig) -> None:
        self.models = {"net": net}
        self.config = config

    def make_optimizers(self):
        return {"adam": torch.optim.Adam(self.models["net"].parameters(), lr=self.config.lr)}

    def _forward(self, batch):
        """``batch``: ``(clip,)`` (the paper: the clip is its own target) or ``(degraded,
        target)`` (shallow-to-deep pairs)."""
        cfg = self.config
        net = self.models["net"]
        fwd = net.module.forward_clip if hasattr(net, "module") else net.forward_clip
        clip, target = (batch[0], batch[0]) if len(batch) == 1 else (batch[0], batch[1])
        out, commit, codes = fwd(clip, cfg.window)
        target = target[:, :, cfg.window - 1:]
        loss, logs = dqlr_loss(out, target, commit, lambda_ssim=cfg.lambda_ssim,
                               lambda_vq=cfg.lambda_vq, sigma=cfg.ssim_sigma)
        if codes is not None:
            perp, used = usage_stats(codes, cfg.num_codes)
            logs.update(perplexity=perp, codes_used=float(used))
        return loss, logs

    def _quantizer(self):
        net = self.models["net"]
        return (net.module if hasattr(net, "module") else net).quantizer

    def fp32_modules(self):
        """The VQ codebook (nearest-code search and EMA update) stays float32: bf16 distances
        pick wrong codes and bf16 running averages stall."""
        return [self._quantizer()] if self.config.quantize else []

    def train_step(self, batch, optimizers):
        restarts0 = int(self._quantizer().restarts)
        opt = optimizers["adam"]
        opt.zero_grad(set_to_none=True)
        loss, logs = self._forward(batch)
        self.backward(loss)
        self.optimizer_step(opt)
        if self.config.quantize:
            logs["restarts"] = float(int(self._quantizer().restarts) - restarts0)
        return {"loss": float(loss.detach()), **logs}

    @torch.no_grad()
    def val_step(self, batch):
        loss, logs = self._forward(batch)
        return {"loss": float(loss), **logs}


# --------------------------------------------------------------------------------------------
# the trained model
# --------------------------------------------------------------------------------------------

@dataclass
class DQLRModel:
    """A trained DQLR: the network plus what is needed to deploy it."""

    net: DQLRNet
    config: DQLRConfig
    normalizer: PercentileNormalizer
    result: TrainResult
    training_stacks: list[str] = field(default_factory=list)
    depth_models: list[dict[str, float]] = field(default_factory=list)

    def deploy_kwargs(self) -> dict[str, Any]:
        return {"net_kwargs": self.config.net_kwargs(), "window": self.config.window,
                "depth_increases_with_z": self.config.depth_increases_with_z,
                "ensemble_predictions": self.config.ensemble_predictions}

    def deploy(self) -> DQLRDeploy:
        """The exported 3D module (same shape in and out)."""
        mod = DQLRDeploy(**self.deploy_kwargs())
        mod.net.load_state_dict(self.net.state_dict())
        return mod.eval()

    def halo(self) -> tuple[int, int]:
        """``(lateral px, z slices)`` halo of the deploy module."""
        return halo_for(self.config.net_kwargs(), self.config.window,
                        self.config.ensemble_predictions)

    def lateral_multiple(self) -> int:
        return lateral_multiple(self.config.n_down)

    def codebook_usage(self) -> dict[str, float]:
        """Perplexity and codewords in use at the end of training, from the last epoch."""
        last = self.result.history[-1] if self.result.history else {}
        return {k: float(last[k]) for k in ("train_perplexity", "train_codes_used",
                                            "val_perplexity", "val_codes_used") if k in last}


def train_dqlr(stacks: Sequence[Any] | np.ndarray, config: DQLRConfig, *, axes: str = "ZYX",
               names: Sequence[str] | None = None, out_dir: str | Path | None = None,
               resume: bool = False, progress: bool = False,
               record: dict[str, Any] | None = None) -> DQLRModel:
    """Train DQLR on one z-stack or several.

    Parameters
    ----------
    stacks : array (Z, Y, X) or sequence of arrays
        Raw z-stacks (any numeric dtype; each normalised here by its own percentiles).
    config : DQLRConfig
    axes : str
        Axes of every stack (``"ZYX"``).
    names : sequence of str, optional
        Names used in error messages and recorded with the run.
    out_dir, resume, progress
        Passed to :func:`sharpstack.training.fit`.
    record : dict, optional
        Settings record for the training log and the resume check (default: the config).
    """
    norm_stacks, _ = prepare_stacks(stacks, config, axes=axes, names=names)
    data = make_datasets(norm_stacks, config)
    torch.manual_seed(config.seed)
    net = DQLRNet(**config.net_kwargs())
    task = DQLRTask(net, config)
    result = fit(task, data, config.train_config(), out_dir=out_dir, resume=resume,
                 progress=progress, config_record=record or {"dqlr": config.model_dump()})
    depth = []
    if config.pairs == "shallow_to_deep":
        from .shallow_deep import estimate_depth_model

        t = config.window + config.n_predict
        depth = [estimate_depth_model(s, shallow_fraction=config.shallow_fraction,
                                      min_shallow=t).summary() for s in norm_stacks]
    return DQLRModel(net=task.models["net"], config=config,
                     normalizer=PercentileNormalizer(config.pmin, config.pmax), result=result,
                     training_stacks=list(names or []), depth_models=depth)


def restore(model: DQLRModel | DQLRDeploy, stack: np.ndarray, *,
            normalizer: PercentileNormalizer | None = None, chunk: int = 16,
            device: str | torch.device | None = None) -> np.ndarray:
    """Restore a whole stack in-process (benchmarks; users run the package instead).

    Normalises ``stack`` (ZYX) by its own percentiles, runs the deploy module ``chunk`` output
    slices at a time with the ``window - 1 + ensemble_predictions`` slices of context each
    needs (so the result
    equals one pass over the whole stack), pads the lateral size to a multiple of
    ``2**n_down`` by reflection and crops it back. Returns float32 ZYX, normalised units.
    """
    if isinstance(model, DQLRModel):
        normalizer = normalizer or model.normalizer
        mod = model.deploy()
    else:
        mod = model.eval()
    normalizer = normalizer or PercentileNormalizer()
    arr = check_stack(stack, "ZYX", "the stack")
    x = normalizer.before(arr)
    z, h, w = x.shape
    m = 2 ** mod.net.n_down
    pad = [(0, 0), (0, (-h) % m), (0, (-w) % m)]
    if pad[1][1] or pad[2][1]:
        x = np.pad(x, pad, mode="reflect" if min(h, w) > m else "edge")
    ctx = mod.z_halo
    dev = torch.device(device) if device is not None else next(mod.parameters()).device
    mod = mod.to(dev)
    out = np.empty((z,) + x.shape[1:], dtype=np.float32)
    with torch.no_grad():
        for a in range(0, z, int(chunk)):
            b = min(z, a + int(chunk))
            lo, hi = (max(0, a - ctx), b) if mod.down else (a, min(z, b + ctx))
            t = torch.from_numpy(np.ascontiguousarray(x[lo:hi]))[None, None].to(dev)
            y = mod(t)[0, 0].cpu().numpy()
            out[a:b] = y[a - lo:a - lo + (b - a)]
    return out[:, :h, :w]
