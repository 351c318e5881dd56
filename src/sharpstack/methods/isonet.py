"""IsoNet: self-supervised isotropic reconstruction (Weigert et al., MICCAI 2017).

Training pairs come from the lateral (xy) slices of the anisotropic stack itself: each slice is
blurred with a 2D kernel that makes it look like an axial slice (the PSF rotated into the
lateral plane, ``full``, or only its anisotropic part, ``split``), subsampled along one lateral
axis by the axial factor and linearly upsampled back. A 2D network learns degraded -> original.
At inference it is applied to every xz and yz plane of the z-upsampled stack and the two views
are fused (inside :class:`~sharpstack.nn.isonet_arch.IsoNetDeploy`, the exported module).

This module makes data and trains; it never writes files other than through the training
loop's ``out_dir`` and never parses CLI arguments (DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import degrade
from .. import psf as psfmod
from ..errors import InputError
from ..nn.isonet_arch import IsoNetDeploy, build_network, receptive_radius
from ..normalize import PercentileNormalizer
from ..training import TrainConfig, TrainResult, TrainTask, fit

__all__ = ["IsoNetConfig", "IsoNetTask", "IsoNetModel", "make_training_pairs", "train_isonet",
           "negative_psnr_loss", "lateral_kernel_for", "restore"]


class IsoNetConfig(BaseModel):
    """Everything that defines an IsoNet training run (paper defaults where the paper says).

    Unknown keys are rejected by name (a zoo recipe loads into this model).
    """

    model_config = ConfigDict(extra="forbid")

    arch: Literal["unet", "srcnn"] = "unet"
    """``unet`` = IsoNet-2 (U-Net, residual), ``srcnn`` = IsoNet-1."""
    psf_mode: Literal["full", "split", "none"] = "split"
    """Lateral blur for the training pairs: rotated PSF (``full``), its anisotropic part
    (``split``), or no blur at all (``none``: the SRCNN baseline that ignores the PSF)."""
    factor: int = Field(ge=1, le=32)
    """Axial subsampling factor: z spacing / lateral pixel size."""
    patch_size: int = Field(64, ge=16, le=512)
    n_patches: int = Field(2048, ge=8)
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(16, ge=1)
    steps_per_epoch: int | None = Field(None, ge=1)
    lr: float = Field(5e-3, gt=0, le=1)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """The paper's constant rate, or cosine decay to 0 over the epochs."""
    dropout: float = Field(0.2, ge=0, lt=1)
    base: int = Field(16, ge=2)
    depth: int = Field(2, ge=1, le=4)
    kernel: int = Field(7, ge=1)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    patience: int | None = Field(10, ge=1)
    augment: bool = True
    pmin: float = Field(1.0, ge=0, lt=100)
    pmax: float = Field(99.8, gt=1, le=100)
    poisson_peak: float | None = Field(None, gt=0)
    """Optional extra Poisson noise on the degraded patches (photons at the maximum)."""
    gauss_sigma: float = Field(0.0, ge=0)
    seed: int = 0
    device: str | None = None

    @field_validator("patch_size")
    @classmethod
    def _patch_multiple(cls, v: int) -> int:
        if v % 16:
            raise ValueError(f"patch_size must be a multiple of 16, got {v}")
        return v

    @field_validator("kernel")
    @classmethod
    def _odd_kernel(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"kernel must be odd, got {v}")
        return v

    def arch_kwargs(self) -> dict[str, Any]:
        """JSON-serialisable kwargs of the 2D network (used to rebuild it from a package)."""
        if self.arch == "unet":
            return {"base": self.base, "depth": self.depth, "kernel": self.kernel,
                    "dropout": self.dropout, "residual": True}
        return {"dropout": self.dropout, "residual": False}

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size,
                           val_fraction=self.val_fraction, patience=self.patience,
                           seed=self.seed, device=self.device,
                           steps_per_epoch=self.steps_per_epoch,
                           lr_schedule=self.lr_schedule)


def lateral_kernel_for(psf: np.ndarray | None, mode: str) -> np.ndarray:
    """2D kernel (rows = the axial direction) that degrades lateral slices for training."""
    if mode == "none" or psf is None:
        return np.ones((1, 1), dtype=np.float32)
    return psfmod.lateral_kernel(np.asarray(psf, dtype=np.float32), mode=mode, axis="y")


def _is_symmetric(k: np.ndarray, tol: float = 1e-3) -> tuple[bool, bool]:
    scale = float(np.abs(k).max()) or 1.0
    return (bool(np.abs(k - k[::-1, :]).max() <= tol * scale),
            bool(np.abs(k - k[:, ::-1]).max() <= tol * scale))


def make_training_pairs(stack: np.ndarray, kernel: np.ndarray, factor: int, *,
                        patch_size: int = 64, n_patches: int = 2048, seed: int = 0,
                        poisson_peak: float | None = None, gauss_sigma: float = 0.0,
                        axes: str = "ZYX") -> tuple[np.ndarray, np.ndarray]:
    """Degraded/original lateral patch pairs for IsoNet.

    Every lateral slice is used twice: as it is (degraded along y) and transposed (degraded
    along x), so the network always sees the axial direction as rows.

    Parameters
    ----------
    stack : ndarray, shape (Z, Y, X)
        The anisotropic stack, already normalised (float32).
    kernel : ndarray, shape (ky, kx)
        Lateral blur; rows are the axial direction (see :func:`lateral_kernel_for`).
    factor : int
        Axial subsampling factor.

    Returns
    -------
    (X, Y) : ndarrays, shape (N, 1, P, P), float32
        Degraded inputs and original targets.
    """
    from .._axes import check_axes

    check_axes(axes, np.ndim(stack), allowed=("ZYX",))
    z, h, w = stack.shape
    p = int(patch_size)
    if min(h, w) < p:
        raise InputError(
            f"lateral size {h}x{w} is smaller than patch_size {p}; use a smaller --patch-size "
            f"(a multiple of 16)")
    rng = np.random.default_rng(seed)
    images, degraded = [], []
    for zi in range(z):
        for img in (stack[zi], stack[zi].T):
            img = np.ascontiguousarray(img, dtype=np.float32)
            images.append(img)
            degraded.append(degrade.degrade_lateral(
                img, kernel, factor, axis=0, poisson_peak=poisson_peak,
                gauss_sigma=gauss_sigma, rng=rng).astype(np.float32))
    # draw candidates uniformly, keep the ones with the most structure (CSBDeep filters empty
    # patches by their maximum; here by the target's std, which also drops flat bright ones)
    n_cand = int(n_patches) * 2
    which = rng.integers(0, len(images), size=n_cand)
    xs, ys, scores = [], [], []
    for i in which:
        img, deg = images[i], degraded[i]
        r0 = int(rng.integers(0, img.shape[0] - p + 1))
        c0 = int(rng.integers(0, img.shape[1] - p + 1))
        t = img[r0:r0 + p, c0:c0 + p]
        xs.append(deg[r0:r0 + p, c0:c0 + p])
        ys.append(t)
        scores.append(float(t.std()))
    keep = np.argsort(scores)[::-1][: int(n_patches)]
    keep = np.sort(keep)
    X = np.stack([xs[i] for i in keep])[:, None].astype(np.float32)
    Y = np.stack([ys[i] for i in keep])[:, None].astype(np.float32)
    return X, Y


def negative_psnr_loss(pred: torch.Tensor, target: torch.Tensor,
                       data_range: float = 1.0) -> torch.Tensor:
    """The paper's loss: minus the PSNR per patch, averaged over the batch (dB).

    ``-PSNR = 10 log10(MSE / range²)``; a tiny epsilon keeps a perfect patch finite.
    """
    mse = torch.mean((pred - target) ** 2, dim=tuple(range(1, pred.ndim)))
    return torch.mean(10.0 * torch.log10(mse / data_range**2 + 1e-10))


class IsoNetTask(TrainTask):
    """The training step of IsoNet for the generic loop."""

    def __init__(self, net: torch.nn.Module, lr: float, flips: tuple[bool, bool]) -> None:
        self.models = {"net": net}
        self.lr = lr
        self.flips = flips

    def make_optimizers(self):
        return {"adam": torch.optim.Adam(self.models["net"].parameters(), lr=self.lr)}

    def _augment(self, x: torch.Tensor, y: torch.Tensor):
        # flips only along the directions in which the blur kernel is symmetric, so that the
        # augmented pair is still a valid (degraded, original) pair
        for dim, ok in ((2, self.flips[0]), (3, self.flips[1])):
            if ok and bool(torch.rand(()) < 0.5):
                x, y = torch.flip(x, dims=(dim,)), torch.flip(y, dims=(dim,))
        return x, y

    def train_step(self, batch, optimizers):
        x, y = self._augment(*batch)
        opt = optimizers["adam"]
        opt.zero_grad(set_to_none=True)
        loss = negative_psnr_loss(self.models["net"](x), y)
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach())}

    @torch.no_grad()
    def val_step(self, batch):
        x, y = batch
        return {"loss": float(negative_psnr_loss(self.models["net"](x), y))}


@dataclass
class IsoNetModel:
    """A trained IsoNet: the 2D network plus what is needed to deploy it."""

    net: torch.nn.Module
    config: IsoNetConfig
    normalizer: PercentileNormalizer
    result: TrainResult

    def deploy(self, *, upsample: bool, fuse: str = "geometric") -> IsoNetDeploy:
        """The exported 3D module (see DESIGN.md: same-shape or z-upsampling deployable)."""
        mod = IsoNetDeploy(arch=self.config.arch, arch_kwargs=self.config.arch_kwargs(),
                           factor=self.config.factor, upsample=upsample, fuse=fuse)
        mod.net.load_state_dict(self.net.state_dict())
        return mod.eval()

    def deploy_kwargs(self, *, upsample: bool, fuse: str = "geometric") -> dict[str, Any]:
        return {"arch": self.config.arch, "arch_kwargs": self.config.arch_kwargs(),
                "factor": self.config.factor, "upsample": upsample, "fuse": fuse}

    def receptive_radius(self) -> int:
        return receptive_radius(self.config.arch, **self.config.arch_kwargs())


def train_isonet(stack: np.ndarray, psf: np.ndarray | None, config: IsoNetConfig, *,
                 axes: str = "ZYX", out_dir: str | Path | None = None, resume: bool = False,
                 progress: bool = False) -> IsoNetModel:
    """Train IsoNet on an anisotropic stack.

    Parameters
    ----------
    stack : ndarray, shape (Z, Y, X)
        The raw anisotropic stack (any dtype; normalised here by percentiles).
    psf : ndarray, shape (pz, py, px) or None
        The microscope PSF sampled on an isotropic grid with the lateral pixel size (None only
        with ``psf_mode="none"``).
    config : IsoNetConfig
    out_dir, resume, progress
        Passed to :func:`sharpstack.training.fit`.
    """
    from .._axes import check_axes

    check_axes(axes, np.ndim(stack), allowed=("ZYX",))
    arr = np.asarray(stack)
    if not np.all(np.isfinite(arr)):
        raise InputError("the training stack contains NaN or infinite values; remove them first")
    if psf is None and config.psf_mode != "none":
        raise InputError(f"psf_mode={config.psf_mode!r} needs a PSF; give one or use psf_mode='none'")
    normalizer = PercentileNormalizer(config.pmin, config.pmax)
    norm = normalizer.before(arr)
    kernel = lateral_kernel_for(psf, config.psf_mode)
    X, Y = make_training_pairs(norm, kernel, config.factor, patch_size=config.patch_size,
                               n_patches=config.n_patches, seed=config.seed,
                               poisson_peak=config.poisson_peak, gauss_sigma=config.gauss_sigma)
    torch.manual_seed(config.seed)
    net = build_network(config.arch, **config.arch_kwargs())
    flips = _is_symmetric(kernel) if config.augment else (False, False)
    task = IsoNetTask(net, config.lr, flips)
    result = fit(task, (torch.from_numpy(X), torch.from_numpy(Y)), config.train_config(),
                 out_dir=out_dir, resume=resume, progress=progress,
                 config_record={"isonet": config.model_dump()})
    return IsoNetModel(net=task.models["net"], config=config, normalizer=normalizer,
                       result=result)


def restore(model: IsoNetModel | torch.nn.Module, stack: np.ndarray, *, factor: int,
            upsampled: bool = False, normalizer: PercentileNormalizer | None = None,
            chunk: int = 16, fuse: str = "geometric") -> np.ndarray:
    """Restore a whole stack in-process (for benchmarks; users run the package instead).

    ``stack`` is the raw anisotropic stack (ZYX) unless ``upsampled`` (already z-upsampled).
    Returns the normalised isotropic restoration (float32, ZYX), the same as the exported
    deploy module computes (planes processed ``chunk`` at a time to bound memory).
    """
    if isinstance(model, IsoNetModel):
        normalizer = normalizer or model.normalizer
        net = model.net
    else:
        net = model
    normalizer = normalizer or PercentileNormalizer()
    x = normalizer.before(np.asarray(stack))
    if not upsampled:
        x = degrade.upsample_linear(x, factor, axis=0)
    z, y, w = x.shape
    mult = 2 ** int(getattr(net, "depth", 0))  # U-Net sizes: multiples of 2**depth
    pad = [(0, (-s) % mult) for s in x.shape]
    xp = np.pad(x, pad, mode="reflect") if any(p[1] for p in pad) else x
    net.eval()
    dev = next(net.parameters()).device
    views = []
    with torch.no_grad():
        for perm in ((1, 0, 2), (2, 0, 1)):  # xz planes (per y), yz planes (per x)
            planes = np.ascontiguousarray(np.transpose(xp, perm))
            out = np.empty_like(planes)
            for s in range(0, planes.shape[0], chunk):
                t = torch.from_numpy(planes[s:s + chunk, None]).to(dev)
                out[s:s + chunk] = net(t)[:, 0].cpu().numpy()
            views.append(np.transpose(out, np.argsort(perm)))
    v1, v2 = views
    if fuse == "geometric":
        res = np.sqrt(np.clip(v1, 0, None) * np.clip(v2, 0, None))
    else:
        res = 0.5 * (v1 + v2)
    return res[:z, :y, :w].astype(np.float32)
