"""IsoNet's settings: the network/training config, the PSF and what ``sharpstack train isonet``
takes (pydantic models; unknown keys are rejected by name, so a zoo recipe loads into them)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ... import psf as psfmod
from ...errors import InputError
from ...resample import exact_factor
from ...training import EarlyStopping, LearningRate, LoopSettings, LrSchedule
from . import optics

__all__ = ["IsoNetConfig", "PsfSpec", "IsoNetSettings"]


class IsoNetConfig(LoopSettings, LrSchedule, EarlyStopping):
    """Everything that defines an IsoNet training run (paper defaults where the paper says,
    except the learning rate and dropout: the measured better ones, see ``lr`` and ``dropout``).

    Unknown keys are rejected by name (a zoo recipe loads into this model). The loop's
    options (epochs 100, batch size 16, steps per epoch, lr, lr schedule, patience 10, seed,
    device) come from :class:`~sharpstack.training.LoopSettings`.
    """

    model_config = ConfigDict(extra="forbid")

    lr: LearningRate = 1e-3
    """Adam learning rate. 1e-3, not the paper's 5e-3: on the demo and on the reduced Table 1
    protocol 1e-3 restores ~0.5-3 dB better (README); ``--lr 5e-3`` gives the paper's."""
    arch: Literal["unet", "srcnn"] = "unet"
    """``unet`` = IsoNet-2 (U-Net, residual), ``srcnn`` = IsoNet-1."""
    psf_mode: Literal["full", "split", "none"] = "split"
    """Lateral blur for the training pairs: rotated PSF (``full``), its anisotropic part
    (``split``), or no blur at all (``none``: the SRCNN baseline that ignores the PSF)."""
    factor: int | float = Field(ge=1, le=32)
    """Axial subsampling factor: z spacing / lateral pixel size, any real >= 1.5 (2.5 for
    0.2 um z / 0.08 um xy, used exactly; an integer one stays an int)."""
    patch_size: int = Field(64, ge=16, le=512)
    n_patches: int = Field(2048, ge=8)
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout after every convolution. 0, not the paper's 0.2, which cost ~2 dB after short
    trainings (README, Table 1); ``--dropout 0.2`` gives the paper's."""
    base: int = Field(16, ge=2)
    depth: int = Field(2, ge=1, le=4)
    kernel: int = Field(7, ge=1)
    bias: bool = False
    """Additive biases in the U-Net's convolutions. ``False`` (default): a bias-free U-Net,
    scale-equivariant (``f(a x) = a f(x)``), so a dim and a bright spot are restored alike
    and a spot keeps its integrated intensity; with biases (``True``, the paper's) the
    network restores a spot the way it restored the lateral slices' structures of that
    brightness: on sparse spots it kept ~65 % of their intensity and broadened them
    laterally by 15 % (README, real-data benchmark)."""
    val_fraction: float = Field(0.1, gt=0, lt=1)
    augment: bool = True
    pmin: float = Field(1.0, ge=0, lt=100)
    pmax: float = Field(99.8, gt=1, le=100)
    pairs: Literal["noise-aware", "paper"] = "noise-aware"
    """Training pairs: ``noise-aware`` (default: the stack's own noise model fitted from the
    stack, inputs as noisy as its axial planes, targets whose noise the network cannot
    predict; :mod:`.noise_pairs`) or ``paper`` (noisy lateral slice as target, its blurred
    copy as input: the paper's, for the Table 1 protocol; amplifies noise on real stacks)."""
    noise_target: Literal["denoised", "masked"] = "denoised"
    """Target of the noise-aware pairs: the slice denoised (non-local means) or the noisy
    slice with a Noise2Void blind spot (loss on masked pixels only)."""
    poisson_peak: float | None = Field(None, gt=0)
    """Paper pairs only: extra Poisson noise on the degraded patches (photons at the max)."""
    gauss_sigma: float = Field(0.0, ge=0)

    @field_validator("factor")
    @classmethod
    def _exact_factor(cls, v):
        return v if v is None else exact_factor(v)

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
                    "dropout": self.dropout, "residual": True, "bias": self.bias}
        return {"dropout": self.dropout, "residual": False}


class PsfSpec(BaseModel):
    """Which PSF formed the data, sampled on the lateral pixel grid.

    ``kind``: ``gaussian`` (``sigma_xy``, ``sigma_z`` in lateral pixels), ``confocal`` (NA,
    wavelength, immersion index), ``lightsheet`` (detection and illumination NA) or ``file``
    (a TIFF/npy PSF on any grid: with its calibration it is resampled to isotropic voxels of
    the lateral pixel size, :mod:`.psf_file`; without, taken to be on that grid). ``pixel_um``
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
        return self.build_noted()[0]

    def build_noted(self) -> tuple[np.ndarray, list[str]]:
        """:meth:`build` plus notes for the training log (how a PSF file was resampled)."""
        if self.kind == "file":
            from .psf_file import load_psf_file

            return load_psf_file(str(self.path), self.pixel_um)
        return self._build(), []

    def _build(self) -> np.ndarray:
        if self.kind == "gaussian":
            return psfmod.gaussian_psf(self.sigma_xy, self.sigma_z)
        if self.pixel_um is None:
            raise InputError(f"the {self.kind} PSF is sampled in micrometres and needs the "
                             "lateral pixel size: pass --pixel UM (or --voxel-size Z,Y,X)")
        if self.kind == "confocal":
            return optics.confocal_psf(na=self.na, wavelength_em_um=self.wavelength_um,
                                       n_immersion=self.n_immersion,
                                       voxel_size_um=self.pixel_um)
        return optics.lightsheet_psf(na_detect=self.na, na_illum=self.na_illum,
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

    factor: int | float | None = Field(None, ge=1, le=32)
    psf: PsfSpec = Field(default_factory=PsfSpec)

    def config(self) -> IsoNetConfig:
        return IsoNetConfig(**self.model_dump(exclude={"psf"}))
