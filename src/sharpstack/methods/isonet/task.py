"""IsoNet's training task, the trained model and in-process restoration.

A 2D network learns degraded -> original lateral patches (:mod:`.data`) with the paper's loss
(minus the PSNR). At inference it is applied to every xz and yz plane of the z-upsampled stack
and the two views are fused (inside :class:`.isonet_arch.IsoNetDeploy`, the exported module;
:func:`restore` computes the same in-process for benchmarks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import InputError
from ...normalize import PercentileNormalizer
from ...resample import upsample
from ...training import TrainResult, TrainTask, fit
from .data import lateral_kernel_for, make_training_pairs
from .isonet_arch import IsoNetDeploy, build_network, receptive_radius
from .noise import NoiseModel, estimate_noise
from .noise_pairs import make_noise_aware_pairs
from .settings import IsoNetConfig

__all__ = ["negative_psnr_loss", "IsoNetTask", "IsoNetModel", "train_isonet", "restore"]


def _is_symmetric(k: np.ndarray, tol: float = 1e-3) -> tuple[bool, bool]:
    scale = float(np.abs(k).max()) or 1.0
    return (bool(np.abs(k - k[::-1, :]).max() <= tol * scale),
            bool(np.abs(k - k[:, ::-1]).max() <= tol * scale))


def negative_psnr_loss(pred: torch.Tensor, target: torch.Tensor,
                       data_range: float = 1.0, mask: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """The paper's loss: minus the PSNR per patch, averaged over the batch (dB).

    ``-PSNR = 10 log10(MSE / range²)``; a tiny epsilon keeps a perfect patch finite. With a
    ``mask`` (1 = counted, same shape), the MSE of a patch is over its masked pixels only
    (the Noise2Void blind spots of :mod:`.noise_pairs`).
    """
    dims = tuple(range(1, pred.ndim))
    if mask is None:
        mse = torch.mean((pred - target) ** 2, dim=dims)
    else:
        mse = (torch.sum(mask * (pred - target) ** 2, dim=dims)
               / torch.clamp(torch.sum(mask, dim=dims), min=1.0))
    return torch.mean(10.0 * torch.log10(mse / data_range**2 + 1e-10))


class IsoNetTask(TrainTask):
    """The training step of IsoNet for the generic loop."""

    def __init__(self, net: torch.nn.Module, lr: float, flips: tuple[bool, bool]) -> None:
        self.models = {"net": net}
        self.lr = lr
        self.flips = flips

    def make_optimizers(self):
        return {"adam": torch.optim.Adam(self.models["net"].parameters(), lr=self.lr)}

    def _augment(self, *tensors: torch.Tensor):
        # flips only along the directions in which the blur kernel is symmetric, so that the
        # augmented pair is still a valid (degraded, original) pair
        for dim, ok in ((2, self.flips[0]), (3, self.flips[1])):
            if ok and bool(torch.rand(()) < 0.5):
                tensors = tuple(torch.flip(t, dims=(dim,)) for t in tensors)
        return tensors

    @staticmethod
    def _loss(net, batch) -> torch.Tensor:
        x, y, *m = batch  # (input, target) or (input, target, blind-spot mask)
        return negative_psnr_loss(net(x), y, mask=m[0] if m else None)

    def train_step(self, batch, optimizers):
        batch = self._augment(*batch)
        opt = optimizers["adam"]
        opt.zero_grad(set_to_none=True)
        loss = self._loss(self.models["net"], batch)
        self.backward(loss)
        self.optimizer_step(opt)
        return {"loss": float(loss.detach())}

    @torch.no_grad()
    def val_step(self, batch):
        return {"loss": float(self._loss(self.models["net"], batch))}


@dataclass
class IsoNetModel:
    """A trained IsoNet: the 2D network plus what is needed to deploy it."""

    net: torch.nn.Module
    config: IsoNetConfig
    normalizer: PercentileNormalizer
    result: TrainResult
    noise: NoiseModel | None = None
    """The stack's noise model (normalised units) the noise-aware pairs used."""

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
                 progress: bool = False, record: dict[str, Any] | None = None) -> IsoNetModel:
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
    record : dict, optional
        Settings record for the training log and the resume check (default: the config).
    """
    from ..._axes import check_axes

    check_axes(axes, np.ndim(stack), allowed=("ZYX",))
    arr = np.asarray(stack)
    if not np.all(np.isfinite(arr)):
        raise InputError("the training stack contains NaN or infinite values; remove them first")
    if psf is None and config.psf_mode != "none":
        raise InputError(f"psf_mode={config.psf_mode!r} needs a PSF; give one or use psf_mode='none'")
    from ...io import check_not_constant

    check_not_constant(arr, "the training stack")
    normalizer = PercentileNormalizer(config.pmin, config.pmax)
    norm = normalizer.before(arr)
    kernel = lateral_kernel_for(psf, config.psf_mode)
    noise = None
    if config.pairs == "noise-aware":
        noise = estimate_noise(norm)
        pairs = make_noise_aware_pairs(norm, kernel, config.factor, noise,
                                       target=config.noise_target,
                                       patch_size=config.patch_size,
                                       n_patches=config.n_patches, seed=config.seed)
    else:
        pairs = make_training_pairs(norm, kernel, config.factor, patch_size=config.patch_size,
                                    n_patches=config.n_patches, seed=config.seed,
                                    poisson_peak=config.poisson_peak,
                                    gauss_sigma=config.gauss_sigma)
    torch.manual_seed(config.seed)
    net = build_network(config.arch, **config.arch_kwargs())
    flips = _is_symmetric(kernel) if config.augment else (False, False)
    task = IsoNetTask(net, config.lr, flips)
    result = fit(task, tuple(torch.from_numpy(a) for a in pairs), config.train_config(),
                 out_dir=out_dir, resume=resume, progress=progress,
                 config_record=record or {"isonet": config.model_dump()})
    return IsoNetModel(net=task.models["net"], config=config, normalizer=normalizer,
                       result=result, noise=noise)


def restore(model: IsoNetModel | torch.nn.Module, stack: np.ndarray, *, factor: float,
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
        x = upsample(x, factor, axis=0)
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
