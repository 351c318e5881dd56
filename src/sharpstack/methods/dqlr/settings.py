"""DQLR's settings: everything that defines a training run (a zoo recipe's ``training:``
section loads into :class:`DQLRConfig`; unknown keys are rejected by name)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from ...training import (BatchSize, EarlyStopping, LearningRate, LoopSettings, LrSchedule,
                        Patience)

__all__ = ["DQLRConfig", "min_slices"]


class DQLRConfig(LoopSettings, LrSchedule, EarlyStopping):
    """Everything that defines a DQLR training run.

    Paper values where the paper gives them (k = 128 codewords, MSE + SSIM + VQ loss), the
    public code's where the paper is silent (EMA codebook decay 0.99 / eps 1e-5, commitment
    0.25, codeword dim 64, Adam 3e-4, batch 32, clips of 3 slices), the later variant's
    ConvLSTM 3x3 with 64 hidden channels. Unknown keys are rejected by name (a zoo recipe's
    ``training:`` section loads into this model). Sizes are fields, so a reduced CPU recipe
    and the paper-size GPU recipe are the same code. The loop's options (epochs, steps per
    epoch, lr schedule, seed, device) come from :class:`~sharpstack.training.LoopSettings`;
    DQLR's own defaults of three of them are set here.
    """

    model_config = ConfigDict(extra="forbid")

    batch_size: BatchSize = 32
    lr: LearningRate = 3e-4
    patience: Patience = 20

    window: int = Field(3, ge=1, le=16, description=(
        "Slices the recurrence sees for each output slice: the slice itself and window-1 "
        "shallower ones (the package's z halo is window-1)."))
    n_predict: int | None = Field(None, ge=0, le=8, description=(
        "Following slices the generator predicts from each clip (targets t+1..t+n). "
        "Default: 2 with pairs self (the paper's public code), 0 with shallow_to_deep "
        "(measured better: the whole training signal goes to restoring the slice)."))
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
    pairs: Literal["shallow_to_deep", "self"] = Field("shallow_to_deep", description=(
        "Training pairs: shallow_to_deep (default) degrades shallow clips to the measured "
        "look of deeper slices (blur, attenuation, noise) and learns to undo it; self is the "
        "paper's: the network reproduces the acquired slices."))
    shallow_fraction: float = Field(0.2, gt=0.0, le=1.0, description=(
        "shallow_to_deep: fraction of the stack (from the shallow end) the clean clips come "
        "from, and the reference of the depth model (the targets are as sharp as these "
        "slices: 0.2 measured better than 1/3)."))
    axial_ratio: float = Field(1.0, ge=0.0, le=10.0, description=(
        "shallow_to_deep: extra axial blur (slices) per px of extra lateral blur."))
    upsample: Literal["bilinear", "nearest"] = Field("bilinear", description=(
        "Generator resize: bilinear (default) or nearest (the first version, which leaves "
        "a texture on the latent grid)."))
    quantize: bool = Field(True, description=(
        "Vector-quantise the codes (DQLR); False is the paper's no-quantisation ablation."))
    decay: float = Field(0.99, gt=0.0, lt=1.0, description="EMA decay of the codebook.")
    eps: float = Field(1e-5, gt=0.0, le=1.0, description="Laplace smoothing of the EMA cluster sizes.")
    commitment: float = Field(0.25, ge=0.0, le=100.0, description="Commitment weight beta of the VQ loss.")
    restart_threshold: float = Field(1.0, ge=0.0, le=1e6, description=(
        "Codewords whose EMA usage (vectors per batch) falls below this are restarted at "
        "random code vectors of the batch (0: never)."))
    lambda_ssim: float | None = Field(None, ge=0.0, le=1000.0, description=(
        "Weight lambda_s of 1 - SSIM. Default: 1 with pairs self (the paper), 0.3 with "
        "shallow_to_deep (measured better: SSIM against a noisy target asks for its noise "
        "texture, MSE averages the noise away)."))
    lambda_vq: float = Field(1.0, ge=0.0, le=1000.0, description="Weight lambda_q of the VQ loss.")
    ssim_sigma: float = Field(1.5, gt=0.0, le=10.0, description="Gaussian window sigma of the SSIM loss (px).")
    patch_size: int = Field(64, ge=16, le=1024, description=(
        "Lateral size of the training clips (px, a multiple of 2**n_down)."))
    n_clips: int = Field(4096, ge=8, le=10_000_000, description=(
        "Distinct training clips (drawn with a fixed seed; an epoch visits them in a new order)."))
    val_clips: int = Field(64, ge=1, le=100_000, description="Validation clips.")
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description=(
        "Fraction of every stack's rows held out for validation (at least one patch)."))
    augment: bool = Field(True, description="Random lateral flips and 90-degree rotations of the clips.")
    pmin: float = Field(1.0, ge=0.0, lt=100.0, description="Lower percentile of the normalisation.")
    pmax: float = Field(99.8, gt=1.0, le=100.0, description="Upper percentile of the normalisation.")

    @model_validator(mode="after")
    def _check(self) -> DQLRConfig:
        if self.n_predict is None:
            self.n_predict = 2 if self.pairs == "self" else 0
        if self.lambda_ssim is None:
            self.lambda_ssim = 1.0 if self.pairs == "self" else 0.3
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
                "restart_threshold": self.restart_threshold, "upsample": self.upsample}


def min_slices(config: DQLRConfig) -> int:
    """Slices a training stack needs: one clip of ``window + n_predict`` consecutive slices."""
    return config.window + config.n_predict
