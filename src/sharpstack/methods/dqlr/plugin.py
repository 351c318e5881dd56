"""DQLR: deep quantized latent representation for enhancing deep z-stack slices.

Gupta, Aich, Rodriguez, Reddy & Roy-Chowdhury, "Deep quantized representation for enhanced
reconstruction", ISBI 2020 (arXiv:2107.14368). Deeper slices of confocal z-stacks lose contrast
and sharpness. DQLR encodes every slice to a latent map (encoder ``E``), runs a convolutional
recurrent network ``R`` over consecutive slices from shallow to deep, replaces every code by
its nearest codeword of a learned dictionary of ``k = 128`` codewords (``Q``, VQ-VAE) and
decodes (generator ``G``) the current slice and the following ones. There is no clean ground
truth: the targets are the acquired slices themselves; the quantisation is what removes the
noise (and, the paper argues, the blur) component, because one dictionary learned over all
depths serves the deep slices too. Loss = MSE + λ_s (1 - SSIM, Gaussian window) + λ_q VQ
loss. The ablation is the same model with ``Q`` bypassed (``quantize=False``).

Training samples are clips of ``window + n_predict`` consecutive slices (random lateral
patches, any of the user's stacks, flips and 90° rotations): the recurrence runs over the
first ``window`` slices, the code of the last one reconstructs it and ``n_predict`` further
recurrent steps predict the next slices. The exported module
(:class:`~sharpstack.nn.dqlr_arch.DQLRDeploy`) restores every slice from the ``window``
slices ending at it (optionally averaged with the predictions of that slice from the
``ensemble_predictions`` preceding windows), so its z halo is ``window - 1`` (plus
``ensemble_predictions``).

This module makes data and trains; it never writes files other than through the training
loop's ``out_dir`` and never parses CLI arguments (DESIGN.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch.utils.data import Dataset

from .._axes import check_axes
from ..errors import InputError
from ..nn.dqlr_arch import DQLRDeploy, DQLRNet, halo_for, lateral_multiple, usage_stats
from ..nn.losses import ssim
from ..normalize import PercentileNormalizer
from ..training import TrainConfig, TrainData, TrainResult, TrainTask, fit

__all__ = ["DQLRConfig", "DQLRClips", "DQLRTask", "DQLRModel", "DepthStack", "dqlr_loss",
           "prepare_stacks", "make_datasets", "train_dqlr", "restore", "read_training_stacks",
           "synthetic_depth_stack", "min_slices", "DQLR", "DQLRSynth", "DEPTH_BINS",
           "depth_bins", "score_depth_bins", "mean_gradient"]


class DQLRConfig(BaseModel):
    """Everything that defines a DQLR training run.

    Paper values where the paper gives them (k = 128 codewords, MSE + SSIM + VQ loss), the
    public code's where the paper is silent (EMA codebook decay 0.99 / eps 1e-5, commitment
    0.25, codeword dim 64, Adam 3e-4, batch 32, clips of 3 slices), the later variant's
    ConvLSTM 3x3 with 64 hidden channels. Unknown keys are rejected by name (a zoo recipe's
    ``training:`` section loads into this model). Sizes are fields, so a reduced CPU recipe
    and the paper-size GPU recipe are the same code.
    """

    model_config = ConfigDict(extra="forbid")

    window: int = Field(3, ge=1, le=16, description=(
        "Slices the recurrence sees for each output slice: the slice itself and window-1 "
        "shallower ones (the package's z halo is window-1)."))
    n_predict: int = Field(2, ge=0, le=8, description=(
        "Following slices the generator predicts from each clip (targets t+1..t+n)."))
    ensemble_predictions: int = Field(0, ge=0, le=8, description=(
        "Output = mean of the reconstruction of each slice and its predictions from the "
        "windows ending 1..N slices before it (0: reconstruction only; at most n_predict; "
        "the package's z halo grows by N)."))
    depth_increases_with_z: bool = Field(True, description=(
        "True if slice 0 is the shallowest (depth grows with the z index); False if the last "
        "slice is. The recurrence runs from shallow to deep."))
    hidden: int = Field(128, ge=4, le=1024, description=(
        "Encoder/generator channels at the latent level (halved at every finer level)."))
    n_down: int = Field(2, ge=1, le=4, description=(
        "Stride-2 stages of the encoder: the latent has 1/2**n_down of the lateral "
        "resolution; lateral sizes must be multiples of 2**n_down."))
    res_blocks: int = Field(2, ge=0, le=16, description="Residual blocks in E and in G.")
    res_hidden: int = Field(32, ge=2, le=1024, description="Bottleneck channels of a residual block.")
    code_dim: int = Field(64, ge=2, le=1024, description="Dimension of a code vector / codeword.")
    num_codes: int = Field(128, ge=2, le=65536, description="Codebook size k (paper: 128).")
    rnn_cell: Literal["lstm", "gru"] = Field("lstm", description=(
        "Recurrent cell: ConvLSTM (the later variant) or ConvGRU, 3x3 convolutions."))
    rnn_hidden: int = Field(64, ge=2, le=1024, description="Hidden channels of the recurrent cell.")
    quantize: bool = Field(True, description=(
        "Vector-quantise the codes (DQLR); False is the paper's no-quantisation ablation."))
    decay: float = Field(0.99, gt=0.0, lt=1.0, description="EMA decay of the codebook.")
    eps: float = Field(1e-5, gt=0.0, le=1.0, description="Laplace smoothing of the EMA cluster sizes.")
    commitment: float = Field(0.25, ge=0.0, le=100.0, description="Commitment weight beta of the VQ loss.")
    restart_threshold: float = Field(1.0, ge=0.0, le=1e6, description=(
        "Codewords whose EMA usage (vectors per batch) falls below this are restarted at "
        "random code vectors of the batch (0: never)."))
    lambda_ssim: float = Field(1.0, ge=0.0, le=1000.0, description="Weight lambda_s of 1 - SSIM.")
    lambda_vq: float = Field(1.0, ge=0.0, le=1000.0, description="Weight lambda_q of the VQ loss.")
    ssim_sigma: float = Field(1.5, gt=0.0, le=10.0, description="Gaussian window sigma of the SSIM loss (px).")
    patch_size: int = Field(64, ge=16, le=1024, description=(
        "Lateral size of the training clips (px, a multiple of 2**n_down)."))
    n_clips: int = Field(4096, ge=8, le=10_000_000, description=(
        "Distinct training clips (drawn with a fixed seed; an epoch visits them in a new order)."))
    val_clips: int = Field(64, ge=1, le=100_000, description="Validation clips.")
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description=(
        "Fraction of every stack's rows held out for validation (at least one patch)."))
    epochs: int = Field(100, ge=1, le=100_000, description="Training epochs.")
    batch_size: int = Field(32, ge=1, le=4096, description="Clips per batch.")
    steps_per_epoch: int | None = Field(None, ge=1, le=1_000_000, description=(
        "Batches per epoch (default: one pass over the training clips)."))
    lr: float = Field(3e-4, gt=0.0, le=1.0, description="Adam learning rate.")
    lr_schedule: Literal["constant", "cosine"] = Field("constant", description=(
        "Constant learning rate, or cosine decay to 0 over the epochs."))
    patience: int | None = Field(20, ge=1, le=100_000, description=(
        "Stop after this many epochs without a better validation loss (None: never)."))
    augment: bool = Field(True, description="Random lateral flips and 90-degree rotations of the clips.")
    pmin: float = Field(1.0, ge=0.0, lt=100.0, description="Lower percentile of the normalisation.")
    pmax: float = Field(99.8, gt=1.0, le=100.0, description="Upper percentile of the normalisation.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of weights, clips and batches.")
    device: str | None = Field(None, description="torch device (default: CUDA if present, else CPU).")

    @model_validator(mode="after")
    def _check(self) -> DQLRConfig:
        m = 2 ** self.n_down
        if self.patch_size % m:
            raise ValueError(f"patch_size must be a multiple of 2**n_down = {m}, got "
                             f"{self.patch_size}")
        win = 2 * int(math.ceil(3.5 * self.ssim_sigma)) + 1
        if self.patch_size < win:
            raise ValueError(f"patch_size {self.patch_size} is smaller than the SSIM window "
                             f"({win} px for ssim_sigma {self.ssim_sigma})")
        if self.ensemble_predictions > self.n_predict:
            raise ValueError(f"ensemble_predictions ({self.ensemble_predictions}) cannot exceed "
                             f"n_predict ({self.n_predict}): only trained predictions exist")
        if self.pmin >= self.pmax:
            raise ValueError(f"pmin ({self.pmin}) must be below pmax ({self.pmax})")
        return self

    def net_kwargs(self) -> dict[str, Any]:
        """JSON-serialisable kwargs of :class:`~sharpstack.nn.dqlr_arch.DQLRNet`."""
        return {"hidden": self.hidden, "n_down": self.n_down, "res_blocks": self.res_blocks,
                "res_hidden": self.res_hidden, "code_dim": self.code_dim,
                "num_codes": self.num_codes, "rnn_cell": self.rnn_cell,
                "rnn_hidden": self.rnn_hidden, "quantize": self.quantize,
                "decay": self.decay, "eps": self.eps, "commitment": self.commitment,
                "restart_threshold": self.restart_threshold}

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size,
                           val_fraction=self.val_fraction, patience=self.patience,
                           seed=self.seed, device=self.device,
                           steps_per_epoch=self.steps_per_epoch,
                           lr_schedule=self.lr_schedule)


def min_slices(config: DQLRConfig) -> int:
    """Slices a training stack needs: one clip of ``window + n_predict`` consecutive slices."""
    return config.window + config.n_predict


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------

def _as_stack(stack: Any, axes: str, name: str) -> np.ndarray:
    arr = np.asarray(stack)
    if arr.ndim == 2:
        raise InputError(f"{name} is a 2D image of shape {arr.shape}; DQLR learns from "
                         f"consecutive slices: give a z-stack (axes ZYX)")
    check_axes(axes, arr.ndim, allowed=("ZYX",), name=f"axes of {name}")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name} has dtype {arr.dtype}; give a numeric image")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN or infinite values; remove or replace them "
                         f"(e.g. Fiji: Process > Math > Remove NaNs) and train again")
    return arr


def prepare_stacks(stacks: Sequence[Any] | np.ndarray, config: DQLRConfig, *,
                   axes: str = "ZYX", names: Sequence[str] | None = None
                   ) -> tuple[list[np.ndarray], list[tuple[float, float]]]:
    """Check and normalise the training stacks.

    Every stack (``ZYX``) is normalised by its own percentiles (as the package's
    ``scale_range`` does) and ordered from shallow to deep (flipped along z when
    ``depth_increases_with_z`` is False).

    Returns ``(stacks, percentiles)``: float32 arrays and each stack's ``(lo, hi)``.
    """
    if isinstance(stacks, np.ndarray) or hasattr(stacks, "dims"):
        stacks = [stacks]
    stacks = list(stacks)
    if not stacks:
        raise InputError("no training stacks given; pass a z-stack or a folder of z-stacks")
    names = list(names) if names is not None else [f"stack {i}" for i in range(len(stacks))]
    need = min_slices(config)
    norm = PercentileNormalizer(config.pmin, config.pmax)
    out, stats = [], []
    for s, name in zip(stacks, names):
        arr = _as_stack(s, axes, name)
        z, h, w = arr.shape
        if z < need:
            raise InputError(
                f"{name} has {z} slice(s) but DQLR needs at least {need} consecutive slices "
                f"(window {config.window} + n_predict {config.n_predict}); give a deeper "
                f"stack or lower --window / --n-predict")
        if min(h, w) < config.patch_size:
            raise InputError(f"{name} is {h}x{w} px laterally, smaller than patch_size "
                             f"{config.patch_size}; use a smaller --patch-size (a multiple of "
                             f"{2 ** config.n_down})")
        lo, hi = norm.stats(arr)
        if not hi > lo:
            raise InputError(f"{name} is constant (percentiles {lo:g} and {hi:g}); there is "
                             f"nothing to learn from it")
        x = norm.before(arr, lo, hi)
        if not config.depth_increases_with_z:
            x = np.ascontiguousarray(x[::-1])
        out.append(x)
        stats.append((lo, hi))
    return out, stats


class DQLRClips(Dataset):
    """Clips of consecutive slices ``(1, window + n_predict, P, P)`` from normalised stacks.

    Item ``i`` is the same clip every time (drawn from ``default_rng([seed, i])``): a stack
    (chosen in proportion to its number of clip positions), a first slice in
    ``[-(window - 1), Z - T]`` (slices above the top are the first slice repeated, as in the
    deploy module), a lateral position within ``rows`` of that stack, and, with ``augment``,
    one of the 8 lateral flips/rotations (the depth blur is laterally isotropic).

    Items are 1-tuples of a float32 tensor, as the training loop expects.
    """

    def __init__(self, stacks: Sequence[np.ndarray], *, length: int, window: int,
                 n_predict: int, patch: int, rows: Sequence[tuple[int, int]], seed: int,
                 augment: bool) -> None:
        self.stacks = list(stacks)
        self.length, self.window, self.n_predict = int(length), int(window), int(n_predict)
        self.patch, self.rows = int(patch), list(rows)
        self.seed, self.augment = int(seed), bool(augment)
        t = self.window + self.n_predict
        counts = []
        for s, (lo, hi) in zip(self.stacks, self.rows):
            nz = s.shape[0] - t + self.window
            counts.append(max(0, nz) * max(0, hi - lo - self.patch + 1)
                          * max(0, s.shape[2] - self.patch + 1))
        total = float(sum(counts))
        if total <= 0:
            raise InputError("no clip fits in the given stacks; use a smaller patch_size")
        self.weights = np.asarray(counts, dtype=np.float64) / total

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, int(i)])
        k = int(rng.choice(len(self.stacks), p=self.weights))
        s = self.stacks[k]
        lo, hi = self.rows[k]
        t = self.window + self.n_predict
        p = self.patch
        z0 = int(rng.integers(-(self.window - 1), s.shape[0] - t + 1))
        zi = np.clip(np.arange(z0, z0 + t), 0, s.shape[0] - 1)
        y0 = int(rng.integers(lo, hi - p + 1))
        x0 = int(rng.integers(0, s.shape[2] - p + 1))
        clip = s[zi, y0:y0 + p, x0:x0 + p]
        if self.augment:
            clip = np.rot90(clip, int(rng.integers(4)), axes=(1, 2))
            if rng.random() < 0.5:
                clip = clip[:, :, ::-1]
        return (torch.from_numpy(np.ascontiguousarray(clip, dtype=np.float32)[None]),)


def make_datasets(stacks: Sequence[np.ndarray], config: DQLRConfig) -> TrainData:
    """Training and validation clips from normalised stacks (:func:`prepare_stacks`).

    Validation uses the last rows of every stack (``max(patch, val_fraction * Y)`` rows) and
    training the rest, so no validation pixel is trained on. When a stack is too small for
    that split and several stacks are given, the last stack is the validation stack (as the
    paper holds out a plant).
    """
    p = config.patch_size
    strips = []
    for s in stacks:
        h = s.shape[1]
        hv = max(p, int(math.ceil(config.val_fraction * h)))
        strips.append((h, hv))
    common = dict(window=config.window, n_predict=config.n_predict, patch=p)
    if all(h - hv >= p for h, hv in strips):
        train_rows = [(0, h - hv) for h, hv in strips]
        val_rows = [(h - hv, h) for h, hv in strips]
        train_stacks = val_stacks = list(stacks)
    elif len(stacks) >= 2:
        train_stacks, val_stacks = list(stacks[:-1]), [stacks[-1]]
        train_rows = [(0, s.shape[1]) for s in train_stacks]
        val_rows = [(0, stacks[-1].shape[1])]
    else:
        h = stacks[0].shape[1]
        raise InputError(
            f"a {h}-row stack cannot hold both a training patch and a validation strip of "
            f"{p} px; use --patch-size {max(16, (h // 2) // 2 ** config.n_down * 2 ** config.n_down)} "
            f"or give several stacks (the last one then validates)")
    train = DQLRClips(train_stacks, length=config.n_clips, rows=train_rows, seed=config.seed,
                      augment=config.augment, **common)
    val = DQLRClips(val_stacks, length=config.val_clips, rows=val_rows,
                    seed=config.seed + 1_000_003, augment=False, **common)
    return TrainData(train=train, val=val)


def read_training_stacks(path: str | Path) -> tuple[list[Any], list[str]]:
    """Read one z-stack or every stack in a folder (TIFF, OME-Zarr, .npy) for training.

    Returns the stacks (``xarray.DataArray`` with dims ``z, y, x`` and their calibration)
    and their names. A 2D image, a multichannel stack or a folder without readable stacks is
    an :class:`~sharpstack.errors.InputError`.
    """
    from ..io import read_stack

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p} does not exist; give a z-stack file or a folder of z-stacks")
    if p.is_dir() and not (p / ".zattrs").exists() and not (p / "zarr.json").exists():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in (".tif", ".tiff", ".npy")
                       or f.name.lower().endswith((".ome.zarr", ".zarr")))
        if not files:
            raise InputError(f"folder {p} holds no .tif/.tiff/.npy/.zarr stacks")
    else:
        files = [p]
    arrays, names = [], []
    for f in files:
        da = read_stack(f)
        dims = "".join(str(d) for d in da.dims).upper()
        if "C" in dims and da.sizes.get("c", 1) > 1:
            raise InputError(f"{f} has {da.sizes['c']} channels; DQLR trains on one channel: "
                             f"split the channels (Fiji: Image > Color > Split Channels)")
        if "C" in dims:
            da = da.isel(c=0, drop=True)
            dims = dims.replace("C", "")
        if dims == "YX":
            raise InputError(f"{f} is a 2D image ({da.shape}); DQLR learns from consecutive "
                             f"slices: give a z-stack")
        if dims != "ZYX":
            raise InputError(f"{f} has axes {dims}; DQLR trains on z-stacks with axes ZYX: "
                             f"save one time point as its own file (Fiji: Image > Duplicate, "
                             f"one frame) and train on that")
        arrays.append(da)
        names.append(str(f))
    return arrays, names


# --------------------------------------------------------------------------------------------
# loss and task
# --------------------------------------------------------------------------------------------

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

    def _forward(self, clip: torch.Tensor):
        cfg = self.config
        net = self.models["net"]
        fwd = net.module.forward_clip if hasattr(net, "module") else net.forward_clip
        out, commit, codes = fwd(clip, cfg.window)
        target = clip[:, :, cfg.window - 1:]
        loss, logs = dqlr_loss(out, target, commit, lambda_ssim=cfg.lambda_ssim,
                               lambda_vq=cfg.lambda_vq, sigma=cfg.ssim_sigma)
        if codes is not None:
            perp, used = usage_stats(codes, cfg.num_codes)
            logs.update(perplexity=perp, codes_used=float(used))
        return loss, logs

    def _quantizer(self):
        net = self.models["net"]
        return (net.module if hasattr(net, "module") else net).quantizer

    def train_step(self, batch, optimizers):
        (clip,) = batch
        restarts0 = int(self._quantizer().restarts)
        opt = optimizers["adam"]
        opt.zero_grad(set_to_none=True)
        loss, logs = self._forward(clip)
        loss.backward()
        opt.step()
        if self.config.quantize:
            logs["restarts"] = float(int(self._quantizer().restarts) - restarts0)
        return {"loss": float(loss.detach()), **logs}

    @torch.no_grad()
    def val_step(self, batch):
        (clip,) = batch
        loss, logs = self._forward(clip)
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
    return DQLRModel(net=task.models["net"], config=config,
                     normalizer=PercentileNormalizer(config.pmin, config.pmax), result=result,
                     training_stacks=list(names or []))


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
    arr = _as_stack(stack, "ZYX", "the stack")
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


# --------------------------------------------------------------------------------------------
# the synthetic protocol
# --------------------------------------------------------------------------------------------

@dataclass
class DepthStack:
    """A synthetic z-stack whose deeper slices lose sharpness and contrast, with its GT.

    Attributes
    ----------
    degraded : float32 (Z, Y, X)
        What the microscope records: depth-dependent blur, attenuation, Poisson + Gaussian
        noise.
    gt : float32 (Z, Y, X)
        The undegraded shallow-quality stack: the phantom imaged everywhere with the PSF of
        the shallowest slice, no attenuation, no noise.
    sigma_xy, sigma_z, attenuation : float64 (Z,)
        The per-slice PSF widths and intensity factors used.
    deconv_sigma : float64 (Z,)
        The oracle lateral width that separates ``degraded`` from ``gt`` per slice,
        ``sqrt(sigma_xy**2 - sigma_xy[0]**2)`` (what a slice-wise deconvolution should use).
    labels : int32 (Z, Y, X) or None
        Cell or nucleus labels of the phantom.
    """

    degraded: np.ndarray
    gt: np.ndarray
    sigma_xy: np.ndarray
    sigma_z: np.ndarray
    attenuation: np.ndarray
    deconv_sigma: np.ndarray
    kind: str
    seed: int
    labels: np.ndarray | None = None


def synthetic_depth_stack(kind: Literal["membranes", "nuclei"] = "membranes",
                          shape: tuple[int, int, int] = (48, 128, 128), *, seed: int = 0,
                          sigma_xy: tuple[float, float] = (1.0, 3.0),
                          sigma_z: tuple[float, float] = (1.5, 4.0),
                          attenuation: float = 0.3, poisson_peak: float = 200.0,
                          read_noise: float = 2.0, power: float = 1.0) -> DepthStack:
    """The synthetic DQLR protocol: a phantom imaged with depth-dependent degradation.

    The phantom (:func:`sharpstack.phantoms.membranes`, cell diameter 24 voxels, membranes
    2 voxels thick; or :func:`sharpstack.phantoms.nuclei`, radius 6-10 voxels, about one
    nucleus per 25,000 voxels) is blurred with a Gaussian PSF whose widths grow from the
    first to the last slice (``sigma_xy``, ``sigma_z`` as ``(shallow, deep)``, following
    :func:`sharpstack.degrade.depth_profile` with ``power``), multiplied per slice by an
    exponential attenuation from 1 to ``attenuation``, then Poisson noise (``poisson_peak``
    photons at the brightest voxel, i.e. in the shallow slices) and Gaussian read noise of
    ``read_noise`` photons are added (:func:`sharpstack.degrade.depth_blur`,
    :func:`sharpstack.degrade.add_noise`).

    Parameters
    ----------
    kind : {"membranes", "nuclei"}
    shape : (Z, Y, X)
    seed : int
        Phantom and noise seed.
    sigma_xy, sigma_z : (float, float)
        PSF standard deviations (voxels) at the first and last slice.
    attenuation : float
        Intensity factor of the last slice (first: 1), exponential in between.
    poisson_peak, read_noise : float
        Photons at the brightest voxel; read noise standard deviation in photons.
    power : float
        Shape of the depth profiles (1 = linear in depth).
    """
    from .. import degrade, phantoms

    if kind == "membranes":
        phantom, labels = phantoms.membranes(shape, cell_diameter=24.0, thickness=2.0,
                                             seed=seed, return_labels=True)
    elif kind == "nuclei":
        phantom, labels = phantoms.nuclei(shape, density=4e-5, radius=(6.0, 10.0), seed=seed,
                                          return_labels=True)
    else:
        raise InputError(f"kind must be 'membranes' or 'nuclei', got {kind!r}")
    if not 0.0 < attenuation <= 1.0:
        raise InputError(f"attenuation must be in (0, 1] (deep/shallow intensity), got "
                         f"{attenuation}")
    n = phantom.shape[0]
    sxy = degrade.depth_profile(n, sigma_xy[0], sigma_xy[1], power=power)
    sz = degrade.depth_profile(n, sigma_z[0], sigma_z[1], power=power)
    att = np.exp(degrade.depth_profile(n, 0.0, math.log(attenuation), power=power))
    clean = degrade.depth_blur(phantom, sxy, sz) * att[:, None, None].astype(np.float32)
    peak = float(clean.max())
    rng = np.random.default_rng([int(seed), 7])
    degraded = degrade.add_noise(clean, poisson_peak=poisson_peak,
                                 gauss_sigma=read_noise * peak / poisson_peak, rng=rng)
    gt = degrade.depth_blur(phantom, sxy[0], sz[0])
    deconv = np.sqrt(np.maximum(sxy ** 2 - sxy[0] ** 2, 0.0))
    return DepthStack(degraded=degraded, gt=gt, sigma_xy=sxy, sigma_z=sz, attenuation=att,
                      deconv_sigma=deconv, kind=kind, seed=int(seed), labels=labels)


# ============================================================================================
# the plug-in: DQLR through the method interface (methods/_base.py)
# ============================================================================================

from collections.abc import Mapping  # noqa: E402

from ._base import Demo, Deployable, Input, Method, Option, SynthResult, Trained  # noqa: E402

#: depth bins of the synthetic protocol and of the real-stack measures: thirds of the stack
DEPTH_BINS = ("shallow", "middle", "deep")


def depth_bins(n: int, depth_increases_with_z: bool = True) -> dict[str, slice]:
    """Thirds of ``n`` slices, from the shallowest to the deepest."""
    edges = [round(i * n / 3) for i in range(4)]
    bins = {name: slice(edges[i], edges[i + 1]) for i, name in enumerate(DEPTH_BINS)}
    if not depth_increases_with_z:
        bins = {name: slice(n - s.stop, n - s.start) for name, s in bins.items()}
    return bins


class DQLRSynth(BaseModel):
    """DQLR's synthetic protocol (:func:`synthetic_depth_stack`): ``n_stacks`` seeded
    training stacks and one held-out test stack with its ground truth."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["membranes", "nuclei"] = Field("membranes", description="Phantom: membranes or nuclei.")
    shape: tuple[int, int, int] = Field((48, 128, 128), description="Stack size Z,Y,X (voxels).")
    n_stacks: int = Field(2, ge=1, le=64, description="Training stacks (seeds seed+1 ...).")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the test stack.")
    sigma_xy_shallow: float = Field(1.0, ge=0, le=32, description="Lateral PSF sigma at the top (px).")
    sigma_xy_deep: float = Field(3.0, ge=0, le=32, description="Lateral PSF sigma at the bottom (px).")
    sigma_z_shallow: float = Field(1.5, ge=0, le=64, description="Axial PSF sigma at the top (px).")
    sigma_z_deep: float = Field(4.0, ge=0, le=64, description="Axial PSF sigma at the bottom (px).")
    attenuation: float = Field(0.3, gt=0, le=1, description="Intensity of the last slice relative to the first.")
    photons: float = Field(50.0, gt=0, le=1e6, description="Photons at the brightest voxel (Poisson noise).")
    read_noise: float = Field(2.0, ge=0, le=1e4, description="Gaussian read noise (photons).")
    pixel_um: float = Field(0.2, gt=0, le=100, description="Lateral pixel size written as calibration (um).")
    z_um: float = Field(0.4, gt=0, le=100, description="z spacing written as calibration (um).")

    @model_validator(mode="after")
    def _check(self) -> DQLRSynth:
        if self.shape[0] < 8 or min(self.shape[1:]) < 32:
            raise ValueError(f"shape {self.shape} is too small; use at least 8 slices of 32x32")
        return self

    def stack(self, seed: int) -> DepthStack:
        return synthetic_depth_stack(
            self.kind, self.shape, seed=seed,
            sigma_xy=(self.sigma_xy_shallow, self.sigma_xy_deep),
            sigma_z=(self.sigma_z_shallow, self.sigma_z_deep), attenuation=self.attenuation,
            poisson_peak=self.photons, read_noise=self.read_noise)

    def describe(self) -> str:
        return (f"synthetic {self.kind} {tuple(self.shape)}: Gaussian PSF sigma_xy "
                f"{self.sigma_xy_shallow:g} -> {self.sigma_xy_deep:g} px, sigma_z "
                f"{self.sigma_z_shallow:g} -> {self.sigma_z_deep:g} px from the first to the "
                f"last slice, attenuation to {self.attenuation:g}, Poisson noise "
                f"({self.photons:g} photons at the brightest voxel) + {self.read_noise:g} "
                f"photons read noise")


def _parse_shape(text: str) -> tuple[int, int, int]:
    try:
        vals = tuple(int(v) for v in str(text).replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise InputError(f"--shape must be integers like 48,128,128; got {text!r}") from None
    if len(vals) != 3:
        raise InputError(f"--shape needs 3 integers (Z,Y,X), got {text!r}")
    return vals  # type: ignore[return-value]


def score_depth_bins(gt: np.ndarray, images: Mapping[str, np.ndarray], *,
                     depth_increases_with_z: bool = True) -> dict[str, dict[str, float]]:
    """PSNR and SSIM (CARE protocol, :func:`sharpstack.metrics.psnr_normalized` /
    :func:`~sharpstack.metrics.ssim_normalized`, 2D per slice averaged) of every image
    against ``gt`` per depth bin, plus the mean gradient magnitude and FM of each bin
    (``metrics.focus_measure``), both on the image as given."""
    from .. import metrics

    out: dict[str, dict[str, float]] = {}
    bins = depth_bins(gt.shape[0], depth_increases_with_z)
    for name, img in images.items():
        img = np.asarray(img, dtype=np.float32)
        row: dict[str, float] = {}
        for b, sl in bins.items():
            row[f"psnr_{b}"] = metrics.psnr_normalized(gt[sl], img[sl])
            row[f"ssim_{b}"] = float(np.mean([metrics.ssim_normalized(gt[z], img[z])
                                              for z in range(sl.start, sl.stop)]))
            row[f"grad_{b}"] = mean_gradient(img[sl])
            row[f"fm_{b}"] = metrics.focus_measure(img[sl], axes="ZYX")
        out[name] = row
    return out


def mean_gradient(stack: np.ndarray) -> float:
    """Mean lateral gradient magnitude ``|(d/dy, d/dx)|`` over the planes of ``stack``
    (central differences, ``numpy.gradient``)."""
    a = np.asarray(stack, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    gy, gx = np.gradient(a, axis=(1, 2))
    return float(np.mean(np.hypot(gy, gx)))


class DQLR(Method):
    """DQLR behind the method interface."""

    name = "dqlr"
    title = "DQLR (Gupta et al., ISBI 2020)"
    summary = ("enhancement of the deeper slices of z-stacks (contrast and sharpness lost with "
               "depth) through quantised latent codes of consecutive slices; no ground truth")
    citations = ({"text": "Gupta, Aich, Rodriguez, Reddy & Roy-Chowdhury. Deep quantized "
                          "representation for enhanced reconstruction. IEEE ISBI 2020.",
                  "doi": "10.48550/arXiv.2107.14368"},
                 {"text": "van den Oord, Vinyals & Kavukcuoglu. Neural discrete representation "
                          "learning. NeurIPS 2017.", "doi": "10.48550/arXiv.1711.00937"})
    settings_model = DQLRConfig
    export_module = "sharpstack.export.dqlr"
    inputs = (Input("stacks", "One z-stack (TIFF, OME-Zarr, .npy; axes ZYX) or a folder of "
                    "z-stacks of the same kind.", kind="file_or_folder"),)
    options = (
        Option("window", "window", int, "Slices the recurrence sees per output slice (z halo "
               "= window - 1)."),
        Option("n-predict", "n_predict", int, "Following slices predicted from each clip."),
        Option("ensemble", "ensemble_predictions", int, "Average each slice's reconstruction "
               "with its N predictions from shallower windows (0: reconstruction only)."),
        Option("deep-first", "depth_increases_with_z", bool, "The LAST slice is the "
               "shallowest (depth grows towards slice 0); without it slice 0 is the shallowest "
               "(depth_increases_with_z).", parse=lambda v: not v),
        Option("no-quantize", "quantize", bool, "Train the paper's ablation without "
               "quantisation (sets quantize to false).", parse=lambda v: not v),
        Option("codes", "num_codes", int, "Codebook size k (the paper: 128)."),
        Option("code-dim", "code_dim", int, "Codeword dimension (the public code: 64)."),
        Option("hidden", "hidden", int, "Encoder/generator channels at the latent level."),
        Option("down", "n_down", int, "Stride-2 stages: the latent has 1/2**DOWN of the "
               "lateral resolution."),
        Option("res-blocks", "res_blocks", int, "Residual blocks in the encoder and in the "
               "generator."),
        Option("res-hidden", "res_hidden", int, "Bottleneck channels of a residual block."),
        Option("rnn", "rnn_cell", str, "lstm (ConvLSTM) or gru (ConvGRU)."),
        Option("rnn-hidden", "rnn_hidden", int, "Hidden channels of the recurrent cell."),
        Option("lambda-ssim", "lambda_ssim", float, "Weight of 1 - SSIM."),
        Option("lambda-vq", "lambda_vq", float, "Weight of the VQ loss."),
        Option("epochs", "epochs", int, "Epochs."),
        Option("steps-per-epoch", "steps_per_epoch", int, "Batches per epoch (default: every "
               "clip once)."),
        Option("clips", "n_clips", int, "Distinct training clips."),
        Option("patch-size", "patch_size", int, "Lateral clip size (multiple of 2**n_down)."),
        Option("batch-size", "batch_size", int, "Clips per batch."),
        Option("lr", "lr", float, "Adam learning rate (the public code: 3e-4)."),
        Option("lr-schedule", "lr_schedule", str, "constant or cosine."),
        Option("patience", "patience", int, "Stop after this many epochs without validation "
               "improvement."),
        Option("seed", "seed", int, "Random seed."),
        Option("device", "device", str, "cpu, cuda, cuda:1 ...; default: GPU if present."),
    )
    deployables = (
        Deployable("stack", "z-stack in, restored z-stack of the same shape out "
                   "(bioimageio.core, sharpstack predict, Fiji/deepImageJ, ilastik)",
                   ("bioimageio", "deepimagej", "ilastik")),
    )
    synth_model = DQLRSynth
    synth_options = (
        Option("kind", "kind", str, "membranes or nuclei."),
        Option("shape", "shape", str, "Stack size Z,Y,X (voxels).", parse=_parse_shape),
        Option("stacks", "n_stacks", int, "Training stacks."),
        Option("sigma-xy", "sigma_xy_deep", float, "Lateral PSF sigma of the deepest slice (px)."),
        Option("sigma-z", "sigma_z_deep", float, "Axial PSF sigma of the deepest slice (px)."),
        Option("attenuation", "attenuation", float, "Deepest/shallowest intensity."),
        Option("photons", "photons", float, "Photons at the brightest voxel."),
        Option("seed", "seed", int, "Seed of the test stack."),
    )
    demo = Demo(
        synth={"kind": "membranes", "shape": (48, 128, 128), "n_stacks": 2, "seed": 0},
        settings={"hidden": 32, "rnn_hidden": 32, "res_hidden": 16, "patch_size": 48,
                  "batch_size": 16, "epochs": 20, "steps_per_epoch": 50, "n_clips": 4096,
                  "val_clips": 32, "lr": 1e-3, "lr_schedule": "cosine", "patience": None,
                  "seed": 0},
        predict_with="stack",
        about=("Membrane phantoms 48x128x128 imaged with blur growing with depth (sigma_xy "
               "1 -> 3 px, sigma_z 1.5 -> 4 px), attenuation to 0.3 and Poisson (50 photons) + "
               "Gaussian noise; DQLR (ConvLSTM window 3, k = 128 codewords of dim 64) trained "
               "on two stacks for 20 epochs x 50 batches of 16 clips (48 px, Adam 1e-3 "
               "cosine), restoring a third; PSNR/SSIM against the shallow-quality ground truth per depth third."),
    )
    bench_options = (
        Option("steps", "steps", int, "Training steps per model."),
        Option("stacks", "n_stacks", int, "Synthetic training stacks per phantom kind."),
        Option("kind", "kinds", list[str], "membranes, nuclei (repeat; default both).",
               parse=tuple),
        Option("epochs", "epochs", int, "Epochs per model (steps are split over them)."),
        Option("no-real", "real", bool, "Skip the two real confocal stacks (../shared/data).",
               parse=lambda v: not v),
        Option("jobs", "jobs", int, "Trainings at once in worker processes (2 with "
               "--threads 1 uses a 2-core CPU best; results do not depend on it)."),
        Option("device", "device", str, "cpu or cuda; default GPU if present."),
        Option("seed", "seed", int, "Random seed."),
    )

    # ------------------------------------------------------------------ training
    def train(self, inputs: Sequence[Path], settings: DQLRConfig, *, out_dir: Path,
              resume: bool = False, progress: bool = False,
              voxel_size: Mapping[str, float] | None = None) -> Trained:
        from ..io import describe_voxel_size, with_voxel_size

        (path,) = inputs
        stacks, names = read_training_stacks(path)
        stacks = [with_voxel_size(s, voxel_size) for s in stacks]  # refuses broken sizes
        short = [Path(n).name for n in names]
        model = train_dqlr([np.asarray(s.values) for s in stacks], settings, names=short,
                           out_dir=out_dir, resume=resume, progress=progress,
                           record={"dqlr": settings.model_dump(mode="json"),
                                   "data": {"names": short,
                                            "shapes": [list(s.shape) for s in stacks]}})
        desc = "; ".join(f"{n}, shape {tuple(s.shape)}, voxel size {describe_voxel_size(s)}"
                         for n, s in zip(short, stacks))
        record = {
            "normalizer": {"pmin": model.normalizer.pmin, "pmax": model.normalizer.pmax,
                           "eps": model.normalizer.eps},
            "training_data": f"{len(stacks)} stack(s): {desc}",
            "voxel_size": dict(stacks[0].attrs.get("voxel_size") or {}),
            "codebook": model.codebook_usage(),
        }
        return Trained(settings=settings, model=model, result=model.result, record=record,
                       tensors={"net": model.net.state_dict()})

    def load(self, settings: DQLRConfig, record, tensors, result) -> Trained:
        net = DQLRNet(**settings.net_kwargs())
        try:
            net.load_state_dict(tensors["net"])
        except (KeyError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"the run's weights do not fit its DQLR settings ({first}); the "
                             "run folder is damaged: train again") from None
        net.eval()
        model = DQLRModel(net=net, config=settings,
                          normalizer=PercentileNormalizer(**record["normalizer"]), result=result)
        return Trained(settings=settings, model=model, result=result, record=record,
                       tensors=tensors)

    # ------------------------------------------------------------------ synthetic data, demo
    def synthesize(self, options: DQLRSynth) -> SynthResult:
        from ..io import as_dataarray

        vs = {"z": options.z_um, "y": options.pixel_um, "x": options.pixel_um}
        train = [options.stack(options.seed + 1 + i) for i in range(options.n_stacks)]
        test = options.stack(options.seed)
        arrays = {
            "stacks": [as_dataarray(d.degraded, "ZYX", vs) for d in train],
            "test": as_dataarray(test.degraded, "ZYX", vs),
            "ground_truth": as_dataarray(test.gt, "ZYX", vs),
        }
        return SynthResult(
            arrays=arrays, inputs=("stacks",), sample="test",
            info={"protocol": options.describe(), "kind": options.kind,
                  "shape": list(options.shape), "n_stacks": options.n_stacks},
            references={"gt": test.gt, "test": test.degraded,
                        "deconv_sigma": test.deconv_sigma})

    def evaluate(self, trained: Trained, synth: SynthResult) -> dict[str, Any]:
        gt, test = synth.references["gt"], synth.references["test"]
        out = restore(trained.model, test)
        norm = trained.model.normalizer.before(test)
        res = score_depth_bins(gt, {"input": norm, "dqlr": out})
        q: dict[str, Any] = {}
        for b in DEPTH_BINS:
            q[f"PSNR {b} third, input (dB)"] = res["input"][f"psnr_{b}"]
            q[f"PSNR {b} third, DQLR (dB)"] = res["dqlr"][f"psnr_{b}"]
        q["data"] = synth.info.get("protocol", "")
        for k, v in trained.model.codebook_usage().items():
            q[f"codebook {k.replace('_', ' ')}"] = v
        return q

    def score(self, synth: SynthResult, restored) -> dict[str, float]:
        gt, test = synth.references["gt"], synth.references["test"]
        res = score_depth_bins(gt, {"input": test, "restored": np.asarray(restored)})
        out = {}
        for b in DEPTH_BINS:
            for name in ("input", "restored"):
                out[f"psnr_{name}_{b}_db"] = res[name][f"psnr_{b}"]
                out[f"ssim_{name}_{b}"] = res[name][f"ssim_{b}"]
        return out

    def figure(self, synth: SynthResult, restored) -> list[tuple[str, Any]]:
        gt, test = synth.references["gt"], synth.references["test"]
        z = gt.shape[0] - 1 - gt.shape[0] // 12  # a deep slice
        return [("input (deep slice)", test[z]), ("DQLR (package)", np.asarray(restored)[z]),
                ("shallow-quality GT", gt[z])]

    # ------------------------------------------------------------------ benchmark
    def bench(self, out_dir: Path, *, progress: bool = False, **options: Any) -> dict[str, Any]:
        from ..bench.dqlr import run_dqlr_bench

        return run_dqlr_bench(out_dir, progress=progress, **options)
