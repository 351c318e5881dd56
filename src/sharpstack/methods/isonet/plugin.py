"""IsoNet: self-supervised isotropic reconstruction (Weigert et al., MICCAI 2017).

Training pairs come from the lateral (xy) slices of the anisotropic stack itself: each slice is
blurred with a 2D kernel that makes it look like an axial slice (the PSF rotated into the
lateral plane, ``full``, or only its anisotropic part, ``split``), subsampled along one lateral
axis by the axial factor and linearly upsampled back. A 2D network learns degraded -> original.
At inference it is applied to every xz and yz plane of the z-upsampled stack and the two views
are fused (inside :class:`~sharpstack.nn.isonet_arch.IsoNetDeploy`, the exported module).

This module makes data and trains; it never writes files other than through the training
loop's ``out_dir`` and never parses CLI arguments (DESIGN.md). :class:`IsoNet` plugs it into
sharpstack through the method interface (:mod:`sharpstack.methods._base`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .. import degrade
from .. import psf as psfmod
from ..errors import InputError
from ..nn.isonet_arch import IsoNetDeploy, build_network, receptive_radius
from ..normalize import PercentileNormalizer
from ..training import TrainConfig, TrainResult, TrainTask, fit
from ._base import Demo, Deployable, Input, Method, Option, SynthResult, Trained

__all__ = ["IsoNetConfig", "IsoNetTask", "IsoNetModel", "make_training_pairs", "train_isonet",
           "negative_psnr_loss", "lateral_kernel_for", "restore", "IsoNet", "IsoNetSettings",
           "IsoNetSynth", "PsfSpec"]


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
    from .._axes import check_axes

    check_axes(axes, np.ndim(stack), allowed=("ZYX",))
    arr = np.asarray(stack)
    if not np.all(np.isfinite(arr)):
        raise InputError("the training stack contains NaN or infinite values; remove them first")
    if psf is None and config.psf_mode != "none":
        raise InputError(f"psf_mode={config.psf_mode!r} needs a PSF; give one or use psf_mode='none'")
    from ..io import check_not_constant

    check_not_constant(arr, "the training stack")
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
                 config_record=record or {"isonet": config.model_dump()})
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


# ============================================================================================
# the plug-in: IsoNet through the method interface (methods/_base.py)
# ============================================================================================



class PsfSpec(BaseModel):
    """Which PSF formed the data, sampled on the lateral pixel grid.

    ``kind``: ``gaussian`` (``sigma_xy``, ``sigma_z`` in lateral pixels), ``confocal`` (NA,
    wavelength, immersion index), ``lightsheet`` (detection and illumination NA) or ``file``
    (a TIFF/npy PSF already on an isotropic grid with the lateral pixel size). ``pixel_um``
    (the lateral pixel size the optical PSFs are sampled with) defaults to the training
    stack's calibration; an uncalibrated stack then needs it given.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["gaussian", "confocal", "lightsheet", "file"] = "gaussian"
    sigma_xy: float = Field(2.0, gt=0, le=64)
    sigma_z: float = Field(8.0, gt=0, le=256)
    na: float = Field(1.1, gt=0, le=1.7)
    na_illum: float = Field(0.1, gt=0, le=1.7)
    wavelength_um: float = Field(0.52, gt=0.1, le=2.0)
    n_immersion: float = Field(1.33, ge=1.0, le=1.8)
    pixel_um: float | None = Field(None, gt=0, le=100)
    path: str | None = None

    @model_validator(mode="after")
    def _check(self):
        if self.kind == "file" and not self.path:
            raise ValueError("--psf file needs --psf-file PATH")
        return self

    @property
    def needs_pixel(self) -> bool:
        return self.kind in ("confocal", "lightsheet")

    def build(self) -> np.ndarray:
        """The PSF as a normalised ZYX array on an isotropic grid of the lateral pixel size."""
        if self.kind == "gaussian":
            return psfmod.gaussian_psf(self.sigma_xy, self.sigma_z)
        if self.kind == "file":
            from ..io import read_stack

            arr = np.asarray(read_stack(self.path), dtype=np.float32)
            if arr.ndim != 3 or not np.isfinite(arr).all() or arr.sum() <= 0:
                raise InputError(f"PSF file {self.path} must be a finite, non-empty 3D (ZYX) "
                                 "stack; check --psf-file")
            return arr / arr.sum()
        if self.pixel_um is None:
            raise InputError(f"the {self.kind} PSF is sampled in micrometres and needs the "
                             "lateral pixel size: pass --pixel UM (or --voxel-size Z,Y,X)")
        if self.kind == "confocal":
            return psfmod.confocal_psf(na=self.na, wavelength_em_um=self.wavelength_um,
                                       n_immersion=self.n_immersion,
                                       voxel_size_um=self.pixel_um)
        return psfmod.lightsheet_psf(na_detect=self.na, na_illum=self.na_illum,
                                     wavelength_um=self.wavelength_um,
                                     n_immersion=self.n_immersion, voxel_size_um=self.pixel_um)

    def describe(self) -> str:
        if self.kind == "gaussian":
            return (f"anisotropic Gaussian, sigma_xy = {self.sigma_xy} px, sigma_z = "
                    f"{self.sigma_z} px (lateral pixels)")
        if self.kind == "confocal":
            return (f"confocal, NA {self.na}, emission {self.wavelength_um} um, n = "
                    f"{self.n_immersion}, pixel {self.pixel_um} um (psfmodels)")
        if self.kind == "lightsheet":
            return (f"light-sheet, detection NA {self.na}, illumination NA {self.na_illum}, "
                    f"pixel {self.pixel_um} um (psfmodels)")
        return f"measured PSF from {self.path}"


class IsoNetSettings(IsoNetConfig):
    """What ``sharpstack train isonet`` takes: the network/training config plus the PSF.

    ``factor`` may be left out: it is then the stack's z spacing divided by its pixel size,
    which must both be known (from the file or ``--voxel-size``).
    """

    factor: int | None = Field(None, ge=1, le=32)
    psf: PsfSpec = Field(default_factory=PsfSpec)

    def config(self) -> IsoNetConfig:
        return IsoNetConfig(**self.model_dump(exclude={"psf"}))


class IsoNetSynth(BaseModel):
    """IsoNet's synthetic protocol: phantom -> PSF -> axial subsampling -> noise."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["nuclei", "membranes", "nuclei+membranes"] = "nuclei"
    shape: tuple[int, int, int] = (128, 128, 128)
    factor: int = Field(8, ge=2, le=32)
    psf: PsfSpec = Field(default_factory=PsfSpec)
    photons: float | None = Field(200.0, gt=0)
    """Photons at the brightest voxel (Poisson noise); None = no Poisson noise."""
    read_noise: float = Field(0.01, ge=0, le=1)
    pixel_um: float = Field(0.2, gt=0, le=100)
    seed: int = 0

    @model_validator(mode="after")
    def _check(self):
        if any(s < 16 for s in self.shape):
            raise ValueError(f"shape {self.shape} is too small; use at least 16 voxels per axis")
        if self.shape[0] % self.factor:
            raise ValueError(f"z size {self.shape[0]} must be a multiple of the factor "
                             f"{self.factor}")
        return self


def _parse_shape(text: str) -> tuple[int, int, int]:
    try:
        vals = tuple(int(v) for v in str(text).replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise InputError(f"--shape must be integers like 128,128,128; got {text!r}") from None
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3:
        raise InputError(f"--shape needs 1 or 3 integers (Z,Y,X), got {text!r}")
    return vals  # type: ignore[return-value]


def _photons(value: float) -> float | None:
    return None if value == 0 else value


_PSF_OPTIONS = (
    Option("psf", "psf.kind", str, "PSF of the microscope: gaussian, confocal, lightsheet or file."),
    Option("sigma-xy", "psf.sigma_xy", float, "Gaussian PSF lateral sigma (pixels)."),
    Option("sigma-z", "psf.sigma_z", float, "Gaussian PSF axial sigma (pixels)."),
    Option("na", "psf.na", float, "Detection NA (confocal/light-sheet)."),
    Option("na-illum", "psf.na_illum", float, "Illumination NA (light-sheet)."),
)


def _factor_from(data, factor: int | None) -> int:
    """IsoNet's factor: given, or z spacing / lateral pixel size from known sizes only."""
    if factor:
        return int(factor)
    from ..io import require_voxel_size

    vs = require_voxel_size(data, "zyx", purpose="IsoNet's axial factor (z spacing / pixel "
                            "size)", alternative="give the factor with --factor N")
    f = vs["z"] / ((vs["y"] + vs["x"]) / 2)
    if f < 1.5:
        raise InputError(f"z spacing / pixel size = {f:.2f}: the stack is already (nearly) "
                         "isotropic; IsoNet needs a factor >= 2 (check --voxel-size)")
    return int(round(f))


class IsoNet(Method):
    """IsoNet isotropic reconstruction behind the method interface."""

    name = "isonet"
    title = "IsoNet (Weigert et al., MICCAI 2017)"
    summary = ("isotropic reconstruction of anisotropic z-stacks, self-supervised from the "
               "lateral slices of the stack itself")
    settings_model = IsoNetSettings
    export_module = "sharpstack.export.isonet"
    inputs = (Input("stack", "Anisotropic stack (TIFF, OME-Zarr, .npy) with axes ZYX."),)
    options = (
        Option("factor", "factor", int, "z spacing / pixel size; default from the file's "
               "calibration (or --voxel-size)."),
        *_PSF_OPTIONS,
        Option("psf-file", "psf.path", str, "Measured PSF (ZYX, isotropic grid) for --psf file."),
        Option("wavelength", "psf.wavelength_um", float, "Emission wavelength (micrometres)."),
        Option("immersion", "psf.n_immersion", float, "Refractive index of the immersion medium."),
        Option("pixel", "psf.pixel_um", float, "Lateral pixel size (micrometres) the PSF is "
               "sampled with; default from the file's calibration."),
        Option("mode", "psf_mode", str, "PSF used for training pairs: split (recommended), "
               "full, none."),
        Option("arch", "arch", str, "unet (IsoNet-2) or srcnn (IsoNet-1)."),
        Option("epochs", "epochs", int, "Epochs (the paper: 100)."),
        Option("steps-per-epoch", "steps_per_epoch", int, "Batches per epoch (default: all "
               "patches once)."),
        Option("patches", "n_patches", int, "Number of training patches."),
        Option("patch-size", "patch_size", int, "Patch size (multiple of 16)."),
        Option("batch-size", "batch_size", int, "Batch size."),
        Option("lr", "lr", float, "Adam learning rate (the paper: 5e-3)."),
        Option("lr-schedule", "lr_schedule", str, "constant (the paper) or cosine."),
        Option("dropout", "dropout", float, "Dropout after every convolution (the paper: 0.2; "
               "0 restores 2 dB better after short trainings, see README Table 1)."),
        Option("patience", "patience", int, "Stop after this many epochs without validation "
               "improvement."),
        Option("seed", "seed", int, "Random seed."),
        Option("device", "device", str, "cpu, cuda, cuda:1 ...; default: GPU if present."),
    )
    deployables = (
        Deployable("upsample", "raw anisotropic stack in, z upsampled x factor out "
                   "(bioimageio.core, sharpstack predict)", ("bioimageio",)),
        Deployable("isotropic", "stack resampled to isotropic voxels in, same shape out "
                   "(also Fiji/deepImageJ and ilastik)", ("bioimageio", "deepimagej", "ilastik")),
        Deployable("slice2d", "one axial slice (rows = z) in, same shape out (also QuPath)",
                   ("bioimageio", "deepimagej", "ilastik", "qupath")),
    )
    synth_model = IsoNetSynth
    synth_options = (
        Option("kind", "kind", str, "nuclei, membranes or nuclei+membranes."),
        Option("shape", "shape", str, "Isotropic ground-truth size Z,Y,X (voxels).",
               parse=_parse_shape),
        Option("factor", "factor", int, "Axial subsampling: keep every FACTOR-th slice."),
        *_PSF_OPTIONS,
        Option("pixel", "pixel_um", float, "Pixel size in micrometres (written as the "
               "calibration; z spacing = factor x pixel)."),
        Option("photons", "photons", float, "Photons at the brightest voxel (Poisson "
               "noise); 0 = none.", parse=_photons),
        Option("read-noise", "read_noise", float, "Gaussian read noise (fraction of max)."),
        Option("seed", "seed", int, "Random seed."),
    )
    demo = Demo(
        synth={"kind": "nuclei", "shape": (128, 128, 128), "factor": 8,
               "psf": {"kind": "gaussian", "sigma_xy": 2.0, "sigma_z": 8.0}, "seed": 0},
        settings={"arch": "unet", "psf_mode": "split", "epochs": 30, "steps_per_epoch": 25,
                  "batch_size": 16, "n_patches": 1024, "patch_size": 64, "lr": 1e-3,
                  "dropout": 0.0, "patience": None, "seed": 0},
        predict_with="upsample", deployables=("upsample", "isotropic"),
        about=("Nuclei phantom 128^3, Gaussian PSF sigma_xy/sigma_z = 2/8 px, every 8th slice "
               "kept, Poisson + Gaussian noise; IsoNet-2 (split PSF), 30 epochs x 25 batches of "
               "16 patches of 64^2, Adam lr 1e-3 (the paper's 5e-3 gains ~0.5 dB less at this "
               "budget); PSNR/SSIM against the isotropic ground truth (CARE protocol)."),
    )
    bench_options = (
        Option("size", "size", str, "Volume size Z,Y,X or one number (the paper: 512).",
               parse=lambda t: (lambda d: d[0] if len(set(d)) == 1 else d)(_parse_shape(t))),
        Option("volumes", "n_volumes", int, "Volumes per dataset (the paper: 10)."),
        Option("epochs", "epochs", int, "Training epochs per model (the paper: 100)."),
        Option("steps", "steps_per_epoch", int, "Batches per epoch."),
        Option("dataset", "datasets", list[str], "nuclei, membranes, nuclei+membranes "
               "(repeat; default all).", parse=tuple),
        Option("device", "device", str, "cpu or cuda; default GPU if present."),
        Option("seed", "seed", int, "Random seed."),
        Option("jobs", "jobs", int, "Trainings at once, in worker processes (2 uses both "
               "cores of a 2-core CPU; results do not depend on it)."),
    )
    citations = ({"text": "Weigert, Royer, Jug & Myers. Isotropic reconstruction of 3D "
                          "fluorescence microscopy images using convolutional neural networks. "
                          "MICCAI 2017.", "doi": "10.1007/978-3-319-66185-8_15"},)

    # ------------------------------------------------------------------ training
    def train(self, inputs: Sequence[Path], settings: IsoNetSettings, *, out_dir: Path,
              resume: bool = False, progress: bool = False,
              voxel_size: Mapping[str, float] | None = None) -> Trained:
        from ..io import (check_finite, check_not_constant, describe_voxel_size, read_stack,
                          with_voxel_size)

        (stack_path,) = inputs
        data = with_voxel_size(read_stack(stack_path), voxel_size)
        if tuple(data.dims) != ("z", "y", "x"):
            hint = ("split the channels first (Fiji: Image > Color > Split Channels)"
                    if "c" in data.dims else "give a z-stack, not a single plane"
                    if data.ndim == 2 else "save one time point of one channel as its own "
                    "file (Fiji: Image > Duplicate, one frame and channel) and train on that")
            raise InputError(f"{stack_path} has axes {''.join(data.dims).upper()}; IsoNet trains "
                             f"on one-channel z-stacks (ZYX): {hint}")
        if data.dtype == bool:
            raise InputError(f"{stack_path} is a binary (bool) mask; IsoNet restores intensity "
                             "images: give the raw stack")
        check_finite(data, str(stack_path))
        check_not_constant(data, f"the training stack {stack_path}")
        factor = _factor_from(data, settings.factor)
        psf_spec = settings.psf
        if psf_spec.needs_pixel and psf_spec.pixel_um is None and settings.psf_mode != "none":
            from ..io import require_voxel_size

            px = require_voxel_size(data, "x", purpose=f"the {psf_spec.kind} PSF (sampled in "
                                    "micrometres)", alternative="--pixel UM")["x"]
            psf_spec = psf_spec.model_copy(update={"pixel_um": px})
        settings = settings.model_copy(update={"factor": factor, "psf": psf_spec})
        h = psf_spec.build() if settings.psf_mode != "none" else None
        model = train_isonet(np.asarray(data.values), h, settings.config(), out_dir=out_dir,
                             resume=resume, progress=progress,
                             record={"isonet": settings.model_dump(mode="json"),
                                     "data": {"shape": list(data.shape),
                                              "name": Path(stack_path).name}})
        record = {
            "normalizer": {"pmin": model.normalizer.pmin, "pmax": model.normalizer.pmax,
                           "eps": model.normalizer.eps},
            "psf_text": psf_spec.describe() if h is not None else "none (psf_mode none)",
            "training_data": (f"{Path(stack_path).name}, shape {tuple(data.shape)}, voxel size "
                              f"{describe_voxel_size(data)}, factor {factor}"),
            "voxel_size": dict(data.attrs.get("voxel_size") or {}),
        }
        tensors = {"net": model.net.state_dict()}
        if h is not None:
            tensors["psf"] = {"psf": torch.from_numpy(np.ascontiguousarray(h))}
        return Trained(settings=settings, model=model, result=model.result, record=record,
                       tensors=tensors)

    def load(self, settings: IsoNetSettings, record, tensors, result) -> Trained:
        cfg = settings.config()
        net = build_network(cfg.arch, **cfg.arch_kwargs())
        try:
            net.load_state_dict(tensors["net"])
        except (KeyError, RuntimeError) as exc:
            raise InputError(f"the run's weights do not fit its IsoNet settings ({exc}); the "
                             "run folder is damaged: train again") from None
        net.eval()
        model = IsoNetModel(net=net, config=cfg,
                            normalizer=PercentileNormalizer(**record["normalizer"]),
                            result=result)
        return Trained(settings=settings, model=model, result=result, record=record,
                       tensors=tensors)

    # ------------------------------------------------------------------ synthetic data, demo
    def synthesize(self, options: IsoNetSynth) -> SynthResult:
        from .. import phantoms
        from ..io import as_dataarray

        psf_spec = options.psf
        if psf_spec.needs_pixel and psf_spec.pixel_um is None:
            psf_spec = psf_spec.model_copy(update={"pixel_um": options.pixel_um})
        h = psf_spec.build()
        labels = None
        if options.kind == "nuclei":
            gt, labels = phantoms.nuclei(options.shape, seed=options.seed, return_labels=True)
        elif options.kind == "membranes":
            gt = phantoms.membranes(options.shape, seed=options.seed)
        else:
            gt = phantoms.nuclei_membranes(options.shape, seed=options.seed)
        iso = degrade.blur(gt, psfmod.isotropic_psf(h))
        aniso = degrade.form_image(gt, h, options.factor, poisson_peak=options.photons,
                                   gauss_sigma=options.read_noise, seed=options.seed)
        px, f = options.pixel_um, options.factor
        vs_iso = {"z": px, "y": px, "x": px}
        arrays = {
            "anisotropic": as_dataarray(aniso, "ZYX", {"z": px * f, "y": px, "x": px}),
            "ground_truth": as_dataarray(gt, "ZYX", vs_iso),
            "ground_truth_isotropic": as_dataarray(iso, "ZYX", vs_iso),
            "psf": as_dataarray(h, "ZYX", vs_iso),
        }
        if labels is not None:
            arrays["labels"] = as_dataarray(labels.astype(np.uint16), "ZYX", vs_iso)
        return SynthResult(
            arrays=arrays, inputs=("anisotropic",), sample="anisotropic",
            settings={"factor": f, "psf": psf_spec.model_dump(mode="json")},
            info={"factor": f, "psf_text": psf_spec.describe(), "shape": list(options.shape),
                  "kind": options.kind},
            references={"ground_truth_isotropic": iso, "anisotropic": aniso, "psf": h,
                        "ground_truth": gt, "labels": labels})

    def evaluate(self, trained: Trained, synth: SynthResult) -> dict[str, Any]:
        from ..metrics import psnr_normalized

        f = trained.settings.factor
        iso = synth.references["ground_truth_isotropic"]
        aniso = synth.references["anisotropic"]
        up = degrade.upsample_linear(aniso, f, axis=0)
        return {"PSNR vs isotropic GT, z-interpolated input (dB)": psnr_normalized(iso, up),
                "PSNR vs isotropic GT, IsoNet restoration (dB)":
                    psnr_normalized(iso, restore(trained.model, aniso, factor=f)),
                "data": f"synthetic {synth.info.get('kind')} {tuple(synth.info.get('shape'))}, "
                        f"{synth.info.get('psf_text')}, factor {f}"}

    def score(self, synth: SynthResult, restored) -> dict[str, float]:
        from ..metrics import psnr_normalized, ssim_normalized

        iso = synth.references["ground_truth_isotropic"]
        f = int(synth.info["factor"])
        up = degrade.upsample_linear(synth.references["anisotropic"], f, axis=0)
        out = np.asarray(restored, dtype=np.float32)
        return {"psnr_input_db": psnr_normalized(iso, up),
                "psnr_restored_db": psnr_normalized(iso, out),
                "ssim_input": ssim_normalized(iso, up, axes="ZYX"),
                "ssim_restored": ssim_normalized(iso, out, axes="ZYX")}

    def figure(self, synth: SynthResult, restored) -> list[tuple[str, Any]]:
        f = int(synth.info["factor"])
        up = degrade.upsample_linear(synth.references["anisotropic"], f, axis=0)
        return [("input (z interpolated)", up), ("IsoNet (package)", np.asarray(restored)),
                ("isotropic GT", synth.references["ground_truth_isotropic"])]

    # ------------------------------------------------------------------ benchmark
    def bench(self, out_dir: Path, *, progress: bool = False, **options: Any) -> dict[str, Any]:
        from ..bench.isonet import run_isonet_table1

        return run_isonet_table1(out_dir, progress=progress, **options)
