"""ZSE-GAN: focal-length weighted GANs for z-scan stacks ("Visual enhancement of image stacks
from a z-scanning microscope using focal lengths weighted GANs"; reference code
keerfish/ZSE-GAN; ``../shared/papers/zse-gan-focal-weighted-gans.md``).

A z-scan x through a thin tissue section is sharp only near its focal plane. Without any 3D
ground truth, a 3D generator G_S learns to make every horizontal plane x_∥ and every vertical
section x_⊥ as sharp as in-focus 2D images y*, while a second 3D generator G_B maps the
result back (cycle consistency). Both are trained against two 2D PatchGAN discriminators:

- D_S sees horizontal sections y_∥ and vertical sections y_⊥ of ``y = G_S(x)`` against sharp
  in-focus images (weights 1 - p and p, p = 0.35);
- D_B sees horizontal sections of ``G_B(y)`` against the planes of x, each weighted by the
  focal coefficient α(d) of its plane (1.67 at the stack ends, 1.00 at the focal plane).

What is y for G_B? The paper defines the sharp set Y as "the translated x from X"
(Sect. 2.2): there are no 3D sharp volumes, so G_B's input is always ``y = G_S(x)`` and
``G_B(y) = G_B(G_S(x))`` is both the cycle reconstruction and what D_B judges (as in the
reference notebook). The 2D sets are only ever seen by D_S.

Losses (least-squares GAN, Mao et al. 2017, as in the notebook), per training step with a
batch of z-scan crops, in-focus crops and sharp vertical crops::

    L_G = (1-p) E_k[w_k (D_S(y_∥k) - 1)²] + p E[(D_S(y_⊥) - 1)²]
          + E_k[α_k (D_B(G_B(y)_∥k) - 1)²]
          + λ Σ_k c_k |x_k - G_B(y)_k|₁ / Z                 (per-slice weighted cycle L1)
          + λ_id (|G_B(x) - x|₁ + |G_S(y) - y|₁)            (identity, notebook)
    L_D = ½[(1-p)(D_S(y*)-1)² + p(D_S(y*_⊥)-1)² + (1-p) w D_S(pool_∥)² + p D_S(pool_⊥)²]
          + ½[α (D_B(x_∥)-1)² + α D_B(pool_B)²]

with ``k`` the sampled planes, ``w_k = 1`` (the paper's Eq. 2-3; ``alpha_on_ds`` uses α as
the notebook does), ``c_k`` the notebook's per-slice cycle weights, fake sections drawn from
image pools of 50 (Shrivastava et al. 2017), two Adam optimisers (generators,
discriminators), lr 2e-4, betas (0.5, 0.999).

This module reads files and trains; it never writes files other than through the training
loop's ``out_dir`` and never parses CLI arguments (DESIGN.md).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch.nn import functional as F
from torch.utils.data import Dataset

from .._axes import check_axes
from ..errors import InputError
from ..nn.zsegan_arch import (PatchDiscriminator2D, ResnetGenerator3D, ZSEGANDeploy,
                              calibrate_norms, receptive_radius)
from ..normalize import PercentileNormalizer
from ..training import TrainConfig, TrainData, TrainResult, TrainTask, fit

__all__ = ["ZSEGANConfig", "ZSEGANSettings", "ZSEGANSynth", "ZSEGAN", "ZSEGANTask",
           "ZSEGANModel", "ImagePool", "focal_coefficients", "cycle_weights", "read_zscans",
           "read_images2d", "train_zsegan", "match_histogram", "restore", "split_zscans",
           "vertical_sections",
           "shared_data_dir"]

_LAYOUT = torch.channels_last_3d  # ~2-3x faster 3D convolutions on CPU (measured, torch 2.x)


# ------------------------------------------------------------------------------------ config
class ZSEGANConfig(BaseModel):
    """Everything that defines a ZSE-GAN training run.

    Defaults are the paper's and, where the paper is silent, the reference notebook's
    (network sizes, loss weights, pool, optimiser). A reduced CPU recipe changes only the
    size fields (``crop``, ``ngf``, ``n_res``, ``ndf``, ``epochs``, ``steps_per_epoch``).
    Unknown keys are rejected by name (a zoo recipe loads into this model).
    """

    model_config = ConfigDict(extra="forbid")

    n_planes: int = Field(29, ge=5, le=512, description=(
        "Focal planes per z-scan (29 in the paper); every z-scan must have exactly this many."))
    focal_plane: int | None = Field(None, ge=1, description=(
        "1-based index of the in-focus plane (default: the centre, 15 of 29)."))
    crop: int = Field(128, ge=16, le=1024, description=(
        "Lateral size of the training crops of z-scans and in-focus images (multiple of 4; "
        "the paper trains on whole 128x128 scans)."))
    ngf: int = Field(16, ge=1, le=256, description="Generator filters of the first layer.")
    n_res: int = Field(6, ge=0, le=32, description="Residual blocks of each generator.")
    first_kernel: int = Field(5, ge=1, le=9, description="Size of the first 3D convolution (odd).")
    residual: bool = Field(False, description=(
        "Generators output x + net(x), starting as the identity (not in the notebook: its "
        "generators end in tanh; converges in far fewer steps, for short CPU trainings)."))
    upsample: Literal["transposed", "resize"] = Field("transposed", description=(
        "Decoder upsampling: stride-2 transposed convolutions (the notebook) or nearest x2 + "
        "convolution (no checkerboard artefacts)."))
    ndf: int = Field(32, ge=1, le=512, description="Discriminator filters of the first layer.")
    d_layers: int = Field(4, ge=1, le=6, description="Stride-2 layers of each PatchGAN.")
    d_norm: Literal["instance", "none"] = Field("instance", description=(
        "Normalisation inside the discriminators: instance norm (the notebook) or none. "
        "Instance norm rescales every channel to unit variance, erasing the edge energy "
        "that separates blurred from sharp sections; on small crops (3x3 maps) the "
        "discriminators then cannot tell them apart and the generator stays the identity."))
    infocus_match: Literal["focal", "none"] = Field("none", description=(
        "Map the in-focus images' intensities onto the histogram of the training z-scans' "
        "focal planes (quantile mapping) so that D_S compares sharpness, not brightness "
        "(normalised on their own, the in-focus crops are brighter: mean 0.66 vs 0.58), or "
        "leave them as normalised (the notebook)."))
    p_vertical: float = Field(0.35, ge=0.0, le=1.0, description=(
        "Weight p of the vertical sections in D_S's loss (horizontal: 1 - p)."))
    lambda_cycle: float = Field(10.5, ge=0.0, le=1000.0, description=(
        "Weight of the per-slice weighted cycle-consistency L1."))
    lambda_identity: float = Field(0.5, ge=0.0, le=100.0, description=(
        "Weight of the identity L1 terms (0 skips them and their two generator passes)."))
    cycle_weighting: Literal["notebook", "focal", "uniform"] = Field("notebook", description=(
        "Per-slice weights c_k of the cycle L1: the reference notebook's (3.05 at the ends, "
        "1.03 at the focal plane), the focal coefficients α, or all 1."))
    cycle_reduce: Literal["mean", "max"] = Field("mean", description=(
        "Combine the weighted per-slice L1s by their mean (the paper's expectation) or "
        "their maximum (the notebook)."))
    alpha_on_ds: bool = Field(False, description=(
        "Also weight D_S's horizontal sections by α (the notebook; the paper does not)."))
    sections: int = Field(1, ge=1, le=256, description=(
        "Horizontal planes and vertical sections sampled per z-scan and step for each "
        "adversarial term (the notebook: 1)."))
    pool_size: int = Field(50, ge=0, le=10000, description="Image pool size (0: no pool).")
    lr: float = Field(2e-4, gt=0.0, le=1.0, description="Adam learning rate (both optimisers).")
    lr_d: float | None = Field(None, gt=0.0, le=1.0, description=(
        "Discriminators' learning rate if other than lr (two time-scale update rule, Heusel "
        "et al. 2017; not in the notebook)."))
    beta1: float = Field(0.5, ge=0.0, lt=1.0, description="Adam beta1.")
    beta2: float = Field(0.999, ge=0.0, lt=1.0, description="Adam beta2.")
    epochs: int = Field(200, ge=1, le=100000, description="Training epochs.")
    steps_per_epoch: int | None = Field(None, ge=1, le=10**7, description=(
        "Batches per epoch (default: one pass over the training z-scans)."))
    batch_size: int = Field(1, ge=1, le=256, description="z-scans per batch (paper: 1).")
    val_count: int = Field(16, ge=1, le=100000, description=(
        "z-scans held apart (seeded) for validation and the benchmark (20% of 80 in the "
        "paper's split)."))
    val_monitor: int = Field(4, ge=1, le=100000, description=(
        "Held-apart z-scans scored after every epoch (validation log; the benchmark scores "
        "all of them after training)."))
    select: Literal["last", "best"] = Field("last", description=(
        "Weights kept: the last epoch's (as for any CycleGAN), or the epoch with the lowest "
        "validation criterion log(max FM / min FM over the planes) + 1 - SSIM at the focal "
        "plane (then the held-apart scans were used for selection)."))
    calib_crops: int = Field(32, ge=1, le=100000, description=(
        "Training crops whose instance statistics become the stored normalisation of the "
        "exported generator."))
    pmin: float = Field(1.0, ge=0.0, lt=100.0, description="Lower normalisation percentile.")
    pmax: float = Field(99.8, gt=0.0, le=100.0, description="Upper normalisation percentile.")
    augment: bool = Field(True, description="Random lateral flips and 90 degree rotations.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of split, crops and init.")
    device: str | None = Field(None, description="torch device (default: CUDA if present).")

    @field_validator("crop")
    @classmethod
    def _crop4(cls, v: int) -> int:
        if v % 4:
            raise ValueError(f"crop must be a multiple of 4 (two stride-2 layers), got {v}")
        return v

    @field_validator("first_kernel")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"first_kernel must be odd, got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "ZSEGANConfig":
        if self.focal_plane is not None and self.focal_plane > self.n_planes:
            raise ValueError(f"focal_plane {self.focal_plane} is beyond the {self.n_planes} "
                             f"planes")
        if self.pmin >= self.pmax:
            raise ValueError(f"pmin ({self.pmin}) must be below pmax ({self.pmax})")
        w = min(self.n_planes, self.crop)
        for _ in range(self.d_layers):
            w = (w - 2) // 2 + 1
        if w < 1:
            raise ValueError(f"d_layers={self.d_layers} halves sections of {self.n_planes} "
                             f"planes to nothing; use fewer layers")
        return self

    @property
    def focal_index(self) -> int:
        """0-based index of the focal plane."""
        return (self.focal_plane - 1) if self.focal_plane else (self.n_planes - 1) // 2

    def generator_kwargs(self) -> dict[str, Any]:
        """JSON-serialisable kwargs of both generators (rebuilds them from a package)."""
        return {"ngf": self.ngf, "n_res": self.n_res, "n_planes": self.n_planes,
                "first_kernel": self.first_kernel, "residual": self.residual,
                "upsample": self.upsample}

    def discriminator_kwargs(self) -> dict[str, Any]:
        return {"ndf": self.ndf, "n_layers": self.d_layers, "norm": self.d_norm}

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, val_fraction=0.5,
                           patience=None, seed=self.seed, device=self.device,
                           steps_per_epoch=self.steps_per_epoch)


# --------------------------------------------------------------------------- per-slice weights
def _notebook_gaussian(sigma: float, x: float) -> float:
    """The notebook's ``gaussian``: round(3.4 N(x; 0, sigma) + 0.1, 2)."""
    g = math.exp(-x * x / (2 * sigma * sigma)) / (sigma * math.sqrt(2 * math.pi))
    return round(g * 3.4 + 0.1, 2)


def focal_coefficients(n_planes: int = 29) -> np.ndarray:
    """Focal coefficient α per plane (METHODS.md; the notebook's ``anisotropic``):
    ``0.72 + round(3.4 N(0.2 d; σ=1.6) + 0.1, 2)`` with d the distance (planes) from the
    nearer stack end: 1.67 at both ends, 1.00 at the centre of 29 planes.

    >>> a = focal_coefficients(29)
    >>> float(a[0]), float(a[14]), float(a[28])
    (1.67, 1.0, 1.67)
    """
    n = int(n_planes)
    d = np.minimum(np.arange(n), n - 1 - np.arange(n))
    return np.array([round(_notebook_gaussian(1.6, 0.2 * k), 2) + 0.72 for k in d])


def cycle_weights(n_planes: int = 29, kind: str = "notebook") -> np.ndarray:
    """Per-slice weights of the cycle L1.

    ``notebook``: the reference notebook's ``similarity`` (``round(3.4 N(0.05 d; σ) +
    0.1, 2)``, σ = 0.46 for the upper half and 0.45 minus a 0.01-per-plane ramp for the
    lower half; 3.05 and 2.97 at the ends, 1.03 at the focal plane of 29); ``focal``: α;
    ``uniform``: ones.
    """
    n = int(n_planes)
    if kind == "uniform":
        return np.ones(n)
    if kind == "focal":
        return focal_coefficients(n)
    if kind != "notebook":
        raise InputError(f"cycle weighting must be notebook, focal or uniform, got {kind!r}")
    half = (n + 1) // 2
    w = np.ones(n)
    mid = (n - 1) / 2
    for i in range(half):
        w[i] = _notebook_gaussian(0.46, 0.05 * i)
    for i in range(half, n):
        w[i] = round(_notebook_gaussian(0.45, 0.05 * (n - 1 - i)) - 0.01 * (i - mid), 2)
    return w


# ------------------------------------------------------------------------------------- files
def _files(folder: Path) -> list[Path]:
    from ..io import READ_SUFFIXES

    out = []
    for f in sorted(folder.iterdir()):
        name = f.name.lower()
        if f.name.startswith("."):
            continue
        if any(name.endswith(s) for s in READ_SUFFIXES):
            out.append(f)
    return out


def _folder(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} folder {p} does not exist; check the path")
    if not p.is_dir():
        raise InputError(f"{what} must be a folder of files, but {p} is a file; put it (and "
                         f"the others) into a folder and give the folder")
    return p


def read_zscans(folder: str | Path, *, n_planes: int = 29) -> list[tuple[str, np.ndarray]]:
    """Read every z-scan (one ZYX stack per file) of a folder, sorted by name.

    Returns ``(name, array)`` pairs with the files' dtypes. Raises
    :class:`~sharpstack.errors.InputError` for a folder without z-scans, a 2D image, a
    multichannel stack, a plane count other than ``n_planes``, or NaNs.
    """
    from ..io import READ_SUFFIXES, check_finite, check_not_constant, read_stack

    p = _folder(folder, "the z-scan")
    files = _files(p)
    if not files:
        raise InputError(f"no z-scans in {p}: expected one ZYX stack of {n_planes} focal "
                         f"planes per file ({', '.join(READ_SUFFIXES)})")
    out = []
    for f in files:
        da = read_stack(f)
        dims = "".join(str(d) for d in da.dims).upper()
        if dims == "YX":
            raise InputError(f"{f} is a 2D image {tuple(da.shape)}, not a z-scan; a z-scan is "
                             f"a stack of {n_planes} focal planes (ZYX). Put in-focus 2D "
                             f"images into the in-focus folder instead")
        if dims != "ZYX":
            raise InputError(f"{f} has axes {dims} {tuple(da.shape)}; z-scans must be "
                             f"single-channel ZYX stacks of {n_planes} focal planes")
        check_axes(dims, da.ndim, allowed=("ZYX",))
        if da.shape[0] != n_planes:
            raise InputError(
                f"{f} has {da.shape[0]} focal planes, but the model takes {n_planes}; give "
                f"z-scans of {n_planes} planes, or train a model for {da.shape[0]}-plane "
                f"scans (--planes {da.shape[0]})")
        check_finite(da, f"z-scan {f.name!r}")
        check_not_constant(da, f"z-scan {f}")
        out.append((f.name, np.asarray(da.values)))
    return out


def read_images2d(folder: str | Path, *, what: str = "in-focus image"
                  ) -> list[tuple[str, np.ndarray]]:
    """Read every 2D (YX) image of a folder, sorted by name (in-focus or vertical sets)."""
    from ..io import READ_SUFFIXES, check_finite, check_not_constant, read_stack

    p = _folder(folder, f"the {what}")
    files = _files(p)
    if not files:
        raise InputError(f"no {what}s in {p}: expected one 2D (YX) image per file "
                         f"({', '.join(READ_SUFFIXES)})")
    out = []
    for f in files:
        da = read_stack(f)
        dims = "".join(str(d) for d in da.dims).upper()
        if dims != "YX":
            raise InputError(f"{f} has axes {dims} {tuple(da.shape)}; the {what} folder holds "
                             f"single-channel 2D images (YX), not stacks")
        check_finite(da, f"{what} {f.name!r}")
        check_not_constant(da, f"{what} {f}")
        out.append((f.name, np.asarray(da.values)))
    return out


def split_zscans(n: int, val_count: int, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of ``n`` z-scans into (training, held-apart) indices, both sorted."""
    if n < 2:
        raise InputError(f"need at least 2 z-scans (training + held apart), got {n}")
    if val_count >= n:
        raise InputError(f"val_count={val_count} leaves no training z-scans out of {n}; use "
                         f"--val-count {max(1, n // 5)} (20%)")
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(int(i) for i in perm[val_count:]), sorted(int(i) for i in perm[:val_count])


# -------------------------------------------------------------------------------------- data
def _to_unit(arr: np.ndarray, norm: PercentileNormalizer) -> np.ndarray:
    """Percentile-normalise to [0, 1] (scale_range of the package), then map to [-1, 1]."""
    return 2.0 * norm.before(arr) - 1.0


def match_histogram(images: Sequence[torch.Tensor], reference: torch.Tensor,
                    n_quantiles: int = 1001) -> list[torch.Tensor]:
    """Map the pooled intensity distribution of ``images`` onto that of ``reference``
    (quantile mapping, one monotone function for all images): structure and sharpness stay,
    brightness and contrast become the reference's. Used to put the in-focus images on the
    intensity scale of the z-scans' focal planes."""
    q = np.linspace(0.0, 1.0, int(n_quantiles))
    src = np.quantile(torch.cat([t.reshape(-1) for t in images]).double().numpy(), q)
    ref = np.quantile(reference.reshape(-1).double().numpy(), q)
    src, keep = np.unique(src, return_index=True)  # np.interp needs increasing abscissae
    ref = ref[keep]
    return [torch.from_numpy(np.interp(t.double().numpy(), src, ref).astype(np.float32))
            for t in images]


def _d4(t: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """Rotate the last two (lateral) axes by k*90 degrees, then optionally flip."""
    t = torch.rot90(t, k, dims=(-2, -1)) if k else t
    return torch.flip(t, dims=(-1,)) if flip else t


class ZScanTrainSet(Dataset):
    """Training items ``(x, y_h, y_v)``: a random lateral crop ``(1, Z, c, c)`` of one
    z-scan, ``K`` random crops ``(K, c, c)`` of in-focus images and ``K`` sharp vertical
    crops ``(K, c, Z)`` (rows lateral, columns z), all in [-1, 1].

    Sharp vertical examples come from ``vertical`` images ``(L, Z)`` when given (the
    notebook's ``trainA29``), otherwise from ``c x Z`` windows of the in-focus images (the
    paper: D_S compares vertical sections with in-focus images). Random positions and
    augmentations use torch's global generator, which the training loop checkpoints.
    """

    def __init__(self, zscans: torch.Tensor, infocus: list[torch.Tensor],
                 vertical: list[torch.Tensor] | None, *, crop: int, sections: int,
                 augment: bool) -> None:
        self.x, self.infocus, self.vertical = zscans, infocus, vertical
        self.c, self.k, self.augment = int(crop), int(sections), bool(augment)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @staticmethod
    def _pos(n: int, c: int) -> int:
        return int(torch.randint(0, n - c + 1, ()))

    def _aug(self) -> tuple[int, bool]:
        if not self.augment:
            return 0, False
        return int(torch.randint(0, 4, ())), bool(torch.randint(0, 2, ()))

    def __getitem__(self, i: int):
        c = self.c
        x = self.x[i]
        y0, x0 = self._pos(x.shape[-2], c), self._pos(x.shape[-1], c)
        xc = _d4(x[..., y0:y0 + c, x0:x0 + c], *self._aug())
        z = x.shape[1]
        hs, vs = [], []
        for _ in range(self.k):
            im = self.infocus[int(torch.randint(0, len(self.infocus), ()))]
            a, b = self._pos(im.shape[0], c), self._pos(im.shape[1], c)
            hs.append(_d4(im[a:a + c, b:b + c], *self._aug()))
            if self.vertical is not None:
                v = self.vertical[int(torch.randint(0, len(self.vertical), ()))]
                a = self._pos(v.shape[0], c)
                v = v[a:a + c]
            else:
                im = self.infocus[int(torch.randint(0, len(self.infocus), ()))]
                if self.augment and bool(torch.randint(0, 2, ())):
                    im = im.T
                a, b = self._pos(im.shape[0], c), self._pos(im.shape[1], z)
                v = im[a:a + c, b:b + z]
            if self.augment and bool(torch.randint(0, 2, ())):
                v = torch.flip(v, dims=(0,))
            vs.append(v)
        return (xc.contiguous(), torch.stack(hs).contiguous(), torch.stack(vs).contiguous())


class ZScanValSet(Dataset):
    """Validation items ``(x,)``: whole held-apart z-scans ``(1, Z, Y, X)`` in [-1, 1],
    laterally cropped to multiples of 4."""

    def __init__(self, zscans: torch.Tensor) -> None:
        h, w = zscans.shape[-2] // 4 * 4, zscans.shape[-1] // 4 * 4
        self.x = zscans[..., :h, :w]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int):
        return (self.x[i],)


def vertical_sections(vol: torch.Tensor, idx: torch.Tensor, orient: torch.Tensor
                      ) -> torch.Tensor:
    """Vertical sections of ``vol`` ``(B, 1, Z, H, W)`` (H == W): for each ``idx[j]``,
    the xz plane at row ``idx[j]`` (``orient[j] == 0``) or the yz plane at column
    ``idx[j]``; returned as ``(B * K, 1, H, Z)`` images with rows lateral, columns z."""
    out = []
    for j, o in zip(idx.tolist(), orient.tolist()):
        s = vol[:, 0, :, j, :] if o == 0 else vol[:, 0, :, :, j]  # (B, Z, L)
        out.append(s.transpose(1, 2))
    return torch.stack(out, dim=1).reshape(-1, 1, vol.shape[-1], vol.shape[2])


# -------------------------------------------------------------------------------------- pool
class ImagePool:
    """History of generated images for a discriminator (Shrivastava et al. 2017), with the
    reference notebook's rule: while not full, store and return each new image; then with
    probability 1/2 return a stored one (replaced by the new one), else the new one. Each
    image carries a loss weight (its plane's α). Random draws use torch's global generator.
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self.images: list[torch.Tensor] = []
        self.weights: list[torch.Tensor] = []

    def query(self, images: torch.Tensor, weights: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.size == 0:
            return images.detach(), weights
        out_i, out_w = [], []
        for im, w in zip(images.detach(), weights):
            im, w = im.clone(), w.clone()
            if len(self.images) < self.size:
                self.images.append(im)
                self.weights.append(w)
                out_i.append(im)
                out_w.append(w)
            elif float(torch.rand(())) > 0.5:
                j = int(torch.randint(0, self.size, ()))
                out_i.append(self.images[j])
                out_w.append(self.weights[j])
                self.images[j], self.weights[j] = im, w
            else:
                out_i.append(im)
                out_w.append(w)
        return torch.stack(out_i), torch.stack(out_w)

    def state_dict(self) -> dict[str, torch.Tensor]:
        if not self.images:
            return {"images": torch.zeros(0), "weights": torch.zeros(0)}
        return {"images": torch.stack(self.images).cpu(),
                "weights": torch.stack(self.weights).cpu()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor], device: torch.device) -> None:
        imgs, ws = state["images"], state["weights"]
        self.images = [t.to(device) for t in imgs] if imgs.numel() else []
        self.weights = [t.to(device) for t in ws] if imgs.numel() else []


# -------------------------------------------------------------------------------------- task
def _lsq(pred: torch.Tensor, target: float) -> torch.Tensor:
    """Least-squares GAN loss per sample: mean over the score map of (D - target)²."""
    return ((pred - target) ** 2).flatten(1).mean(dim=1)


def _fm_ratio(vol01: np.ndarray) -> float:
    from ..metrics import focus_measure

    fm = [focus_measure(p) for p in vol01]
    return float(max(fm) / min(fm))


class ZSEGANTask(TrainTask):
    """ZSE-GAN's step for the generic loop: one generator update (both generators, one
    Adam), then one discriminator update (both discriminators, one Adam) per batch.

    ``val_step`` first refreshes the generators' stored normalisation statistics from
    ``calib`` (training crops) whenever training steps ran since the last refresh, so the
    validation metrics, the best/last snapshots and the checkpoints all hold the statistics
    that the exported generator uses.
    """

    def __init__(self, config: ZSEGANConfig, calib: torch.Tensor) -> None:
        cfg = config
        self.cfg = cfg
        gk, dk = cfg.generator_kwargs(), cfg.discriminator_kwargs()
        self.models = {"G_S": ResnetGenerator3D(**gk).to(memory_format=_LAYOUT),
                       "G_B": ResnetGenerator3D(**gk).to(memory_format=_LAYOUT),
                       "D_S": PatchDiscriminator2D(**dk), "D_B": PatchDiscriminator2D(**dk)}
        self.alpha = torch.tensor(focal_coefficients(cfg.n_planes), dtype=torch.float32)
        self.cycle_w = torch.tensor(cycle_weights(cfg.n_planes, cfg.cycle_weighting),
                                    dtype=torch.float32)
        self.pools = {k: ImagePool(cfg.pool_size) for k in ("S_h", "S_v", "B")}
        self.calib = calib
        self._stale = True
        self.final_state: dict[str, dict[str, torch.Tensor]] | None = None

    # ---- state beyond networks and optimisers (checkpointed by the loop)
    def state_dict(self) -> dict[str, Any]:
        return {"pools": {k: p.state_dict() for k, p in self.pools.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        dev = next(self.models["G_S"].parameters()).device
        for k, st in (state.get("pools") or {}).items():
            self.pools[k].load_state_dict(st, dev)

    def make_optimizers(self):
        betas = (self.cfg.beta1, self.cfg.beta2)
        g = list(self.models["G_S"].parameters()) + list(self.models["G_B"].parameters())
        d = list(self.models["D_S"].parameters()) + list(self.models["D_B"].parameters())
        return {"G": torch.optim.Adam(g, lr=self.cfg.lr, betas=betas),
                "D": torch.optim.Adam(d, lr=self.cfg.lr_d or self.cfg.lr, betas=betas)}

    # ---- pieces
    def _cycle(self, x: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
        per_slice = (x - rec).abs().mean(dim=(0, 1, 3, 4)) * self.cycle_w.to(x.device)
        return per_slice.max() if self.cfg.cycle_reduce == "max" else per_slice.mean()

    def _sample(self, z: int, lateral: int, device):
        k = self.cfg.sections
        return (torch.randint(0, z, (k,)), torch.randint(0, lateral, (k,)),
                torch.randint(0, 2, (k,)))

    @staticmethod
    def _requires_grad(nets, flag: bool) -> None:
        for n in nets:
            for p in n.parameters():
                p.requires_grad_(flag)

    def train_step(self, batch, optimizers):
        self._stale = True
        cfg, m = self.cfg, self.models
        gs, gb, ds, db = m["G_S"], m["G_B"], m["D_S"], m["D_B"]
        x, yh, yv = batch
        x = x.contiguous(memory_format=_LAYOUT)
        b, _, z, h, _ = x.shape
        kk = cfg.sections
        yh = yh.reshape(b * kk, 1, *yh.shape[-2:])
        yv = yv.reshape(b * kk, 1, *yv.shape[-2:])
        p = cfg.p_vertical
        alpha = self.alpha.to(x.device)
        # ---- generators
        self._requires_grad((ds, db), False)
        y = gs(x)
        rec = gb(y)
        kh, jv, ov = self._sample(z, h, x.device)
        hs = y[:, 0, kh].reshape(b * kk, 1, *y.shape[-2:])
        w_h = (alpha[kh] if cfg.alpha_on_ds else torch.ones(kk, device=x.device)).repeat(b)
        vs = vertical_sections(y, jv, ov)
        g_s = (1 - p) * (w_h * _lsq(ds(hs), 1.0)).mean() + p * _lsq(ds(vs), 1.0).mean()
        kb = torch.randint(0, z, (kk,))
        rb = rec[:, 0, kb].reshape(b * kk, 1, *rec.shape[-2:])
        a_b = alpha[kb].repeat(b)
        g_b = (a_b * _lsq(db(rb), 1.0)).mean()
        cyc = self._cycle(x, rec)
        loss = g_s + g_b + cfg.lambda_cycle * cyc
        idt = torch.zeros(())
        if cfg.lambda_identity > 0:
            idt = F.l1_loss(gb(x), x) + F.l1_loss(gs(y), y)
            loss = loss + cfg.lambda_identity * idt
        opt_g = optimizers["G"]
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        # ---- discriminators (fakes through the pools)
        self._requires_grad((ds, db), True)
        hs_q, w_hq = self.pools["S_h"].query(hs, w_h)
        vs_q, _ = self.pools["S_v"].query(vs, torch.ones(vs.shape[0], device=x.device))
        rb_q, a_q = self.pools["B"].query(rb, a_b)
        kr = torch.randint(0, z, (kk,))
        xr = x[:, 0, kr].reshape(b * kk, 1, *x.shape[-2:])
        a_r = alpha[kr].repeat(b)
        d_s = 0.5 * ((1 - p) * _lsq(ds(yh), 1.0).mean() + p * _lsq(ds(yv), 1.0).mean()
                     + (1 - p) * (w_hq * _lsq(ds(hs_q), 0.0)).mean()
                     + p * _lsq(ds(vs_q), 0.0).mean())
        d_b = 0.5 * ((a_r * _lsq(db(xr), 1.0)).mean() + (a_q * _lsq(db(rb_q), 0.0)).mean())
        opt_d = optimizers["D"]
        opt_d.zero_grad(set_to_none=True)
        (d_s + d_b).backward()
        opt_d.step()
        return {"loss": float(loss.detach()), "g_adv_s": float(g_s.detach()),
                "g_adv_b": float(g_b.detach()), "cycle": float(cyc.detach()),
                "identity": float(idt.detach()), "d_s": float(d_s.detach()),
                "d_b": float(d_b.detach())}

    # ---- normalisation statistics and validation
    @torch.no_grad()
    def calibrate(self, chunk: int = 4) -> None:
        """Stored norm statistics of G_S from training crops, then of G_B from G_S's
        (eval-mode) outputs on the same crops."""
        gs, gb = self.models["G_S"], self.models["G_B"]
        dev = next(gs.parameters()).device
        batches = [self.calib[i:i + chunk].to(dev).contiguous(memory_format=_LAYOUT)
                   for i in range(0, len(self.calib), chunk)]
        calibrate_norms(gs, batches)
        was = gs.training
        gs.eval()
        outs = [gs(b_) for b_ in batches]
        gs.train(was)
        calibrate_norms(gb, outs)

    @torch.no_grad()
    def val_step(self, batch):
        if self._stale:
            self.calibrate()
            self._stale = False
            self.final_state = {k: {n: v.detach().cpu().clone() for n, v in m.state_dict().items()}
                                for k, m in self.models.items()}
        from ..metrics import ssim

        (x,) = batch
        x = x.contiguous(memory_format=_LAYOUT)
        gs, gb = self.models["G_S"], self.models["G_B"]
        y = gs(x)
        rec = gb(y)
        cyc = float(self._cycle(x, rec))
        f = self.cfg.focal_index
        ratios, ssims = [], []
        for i in range(x.shape[0]):
            y01 = ((y[i, 0] + 1) / 2).clamp(0, 1).cpu().numpy()
            x01 = ((x[i, 0] + 1) / 2).clamp(0, 1).cpu().numpy()
            ratios.append(_fm_ratio(y01))
            ssims.append(ssim(x01[f], y01[f], data_range=1.0))
        r, s = float(np.mean(ratios)), float(np.mean(ssims))
        return {"loss": math.log(r) + (1.0 - s), "fm_ratio": r, "ssim_focal": s,
                "cycle": cyc}


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

    def deploy(self) -> ZSEGANDeploy:
        """The exported module: G_S alone, [0, 1] in and out, same shape (DESIGN.md)."""
        mod = ZSEGANDeploy(generator=self.config.generator_kwargs())
        mod.net.load_state_dict(self.G_S.state_dict())
        return mod.eval()

    def deploy_kwargs(self) -> dict[str, Any]:
        return {"generator": self.config.generator_kwargs()}

    def receptive_radius(self) -> int:
        return receptive_radius(**self.config.generator_kwargs())


def _as_tensor_list(arrays: Sequence[np.ndarray], norm: PercentileNormalizer
                    ) -> list[torch.Tensor]:
    return [torch.from_numpy(_to_unit(np.asarray(a), norm)) for a in arrays]


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
    xs = torch.stack(_as_tensor_list(zscans, norm))[:, None]
    x_train, x_val = xs[train_idx], xs[val_idx]
    torch.manual_seed(cfg.seed)
    ys = _as_tensor_list(infocus, norm)
    vs = _as_tensor_list(vertical, norm) if vertical else None
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
    task = ZSEGANTask(cfg, torch.stack(calib))
    data = TrainData(ZScanTrainSet(x_train, ys, vs, crop=c, sections=cfg.sections,
                                   augment=cfg.augment), ZScanValSet(x_val[:cfg.val_monitor]))
    split = {"train": [names[i] for i in train_idx], "held_apart": [names[i] for i in val_idx]}
    record = {"zsegan": cfg.model_dump(), "split": split,
              "vertical_source": "vertical set" if vs else "in-focus windows",
              "n_infocus": len(ys)}
    result = fit(task, data, cfg.train_config(), out_dir=out_dir, resume=resume,
                 progress=progress, config_record=record)
    if cfg.select == "last":
        state = task.final_state
        if state is None and out_dir is not None and (Path(out_dir) / "last.pt").exists():
            from ..training import load_checkpoint

            state = load_checkpoint(Path(out_dir) / "last.pt")["models"]
        if state is not None:
            for k, m in task.models.items():
                m.load_state_dict(state[k])
    models = {k: copy.deepcopy(m).to(memory_format=torch.contiguous_format).eval()
              for k, m in task.models.items()}
    return ZSEGANModel(G_S=models["G_S"], G_B=models["G_B"], config=cfg, normalizer=norm,
                       result=result, split=split)


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


# =========================================================================== the plug-in
from ._base import Demo, Deployable, Input, Method, Option, SynthResult, Trained  # noqa: E402


def shared_data_dir() -> Path:
    """The paper's z-scans (``../shared/data/zse_gan`` beside the project, or the folder in
    ``SHARPSTACK_ZSEGAN_DATA``), read in place: never copied into runs or packages."""
    import os

    env = os.environ.get("SHARPSTACK_ZSEGAN_DATA")
    p = Path(env) if env else Path(__file__).resolve().parents[3].parent / "shared" / "data" / \
        "zse_gan"
    if not (p / "zscans").is_dir() or not (p / "infocus").is_dir():
        raise InputError(f"the ZSE-GAN paper's data (zscans/, infocus/) is not at {p}; set "
                         f"SHARPSTACK_ZSEGAN_DATA to its folder, or use --source synthetic")
    return p


class ZSEGANSettings(ZSEGANConfig):
    """ZSE-GAN training settings plus the data options of ``sharpstack train zsegan``."""

    zscan_limit: int | None = Field(None, ge=2, le=10**6, description=(
        "Use only the first N z-scans of the folder (sorted by name)."))
    vertical: str | None = Field(None, description=(
        "Folder of sharp vertical sections (lateral x planes) for D_S (the notebook's "
        "trainA29); default: windows of the in-focus images."))


class ZSEGANSynth(BaseModel):
    """Data of ``sharpstack synth zsegan``: the paper's shared z-scans (read in place) or
    synthetic z-scans of :func:`sharpstack.phantoms.zscan`."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["shared", "synthetic"] = Field("shared", description=(
        "shared: the paper's z-scans in ../shared/data/zse_gan (not copied); synthetic: "
        "phantom z-scans with their true in-focus fields."))
    zscans: int = Field(12, ge=2, le=10**5, description="Number of z-scans used.")
    held_apart: int = Field(4, ge=1, le=10**5, description=(
        "Of those, z-scans held apart (seeded); the first is the sample."))
    infocus: int = Field(16, ge=1, le=10**5, description="Synthetic in-focus images.")
    size: int = Field(64, ge=16, le=2048, description="Synthetic lateral size (pixels).")
    planes: int = Field(29, ge=5, le=512, description="Synthetic focal planes.")
    sigma_max: float = Field(4.0, gt=0, le=50, description=(
        "Synthetic defocus blur (pixels) of the outermost plane."))
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed (also the split's).")

    @model_validator(mode="after")
    def _check(self) -> "ZSEGANSynth":
        if self.held_apart >= self.zscans:
            raise ValueError(f"held_apart ({self.held_apart}) must be below zscans "
                             f"({self.zscans})")
        return self


def _held_apart_files(folder: Path, limit: int | None, val_count: int, seed: int) -> list[Path]:
    files = _files(folder)
    if limit:
        files = files[:limit]
    _, val = split_zscans(len(files), val_count, seed)
    return [files[i] for i in val]


def _zscan_scores(x01: np.ndarray, y01: np.ndarray, focal: int) -> dict[str, float]:
    """No-reference scores of one restoration (both in [0, 1], ZYX)."""
    from ..metrics import focus_measure, piqe, ssim

    fx = [focus_measure(p) for p in x01]
    fy = [focus_measure(p) for p in y01]
    outer = [0, 1, 2, 3, len(x01) - 4, len(x01) - 3, len(x01) - 2, len(x01) - 1]
    h = x01.shape[1]
    rows = sorted({h // 5, h // 2, 4 * h // 5})
    return {
        "fm_max_min_input": max(fx) / min(fx), "fm_max_min_restored": max(fy) / min(fy),
        "piqe_outer_input": float(np.mean([piqe(x01[k], data_range=1.0) for k in outer])),
        "piqe_outer_restored": float(np.mean([piqe(y01[k], data_range=1.0) for k in outer])),
        "fm_vertical_input": float(np.mean([focus_measure(x01[:, r, :]) for r in rows])),
        "fm_vertical_restored": float(np.mean([focus_measure(y01[:, r, :]) for r in rows])),
        "ssim_focal_plane": ssim(x01[focal], y01[focal], data_range=1.0),
    }


class ZSEGAN(Method):
    """ZSE-GAN behind the method interface."""

    name = "zsegan"
    title = "ZSE-GAN (focal-length weighted GANs for z-scans)"
    summary = ("sharpens z-scans through thin sections: every plane and every vertical section "
               "as sharp as the focal plane, learnt without 3D ground truth")
    settings_model = ZSEGANSettings
    export_module = "sharpstack.export.zsegan"
    inputs = (Input("zscans", "Folder of z-scans: one ZYX stack of N focal planes per file.",
                    kind="folder"),
              Input("infocus", "Folder of sharp in-focus 2D images (YX) of the same tissue.",
                    kind="folder"))
    options = (
        Option("planes", "n_planes", int, "Focal planes per z-scan (the paper: 29)."),
        Option("focal-plane", "focal_plane", int, "1-based in-focus plane (default: centre)."),
        Option("vertical", "vertical", str, "Folder of sharp vertical sections (lateral x "
               "planes) for D_S (the notebook's trainA29)."),
        Option("zscan-limit", "zscan_limit", int, "Use only the first N z-scans."),
        Option("val-count", "val_count", int, "z-scans held apart for validation."),
        Option("crop", "crop", int, "Lateral training crop (multiple of 4; paper 128)."),
        Option("ngf", "ngf", int, "Generator filters (notebook 16)."),
        Option("res-blocks", "n_res", int, "Residual blocks per generator (notebook 6)."),
        Option("ndf", "ndf", int, "Discriminator filters (notebook 32)."),
        Option("residual", "residual", bool, "Generators output x + net(x) (not in the "
               "notebook; for short trainings)."),
        Option("upsample", "upsample", str, "transposed (notebook) or resize (nearest + conv)."),
        Option("d-layers", "d_layers", int, "Stride-2 layers per PatchGAN (notebook 4)."),
        Option("d-norm", "d_norm", str, "instance (notebook) or none: normalisation inside "
               "the discriminators (none lets them see edge strength on small crops)."),
        Option("infocus-match", "infocus_match", str, "focal: map the in-focus images onto "
               "the focal planes' intensity histogram; none (notebook)."),
        Option("p-vertical", "p_vertical", float, "Weight of vertical sections in D_S."),
        Option("lambda-cycle", "lambda_cycle", float, "Cycle-consistency weight."),
        Option("lambda-identity", "lambda_identity", float, "Identity-loss weight."),
        Option("cycle-weighting", "cycle_weighting", str, "notebook, focal or uniform."),
        Option("cycle-reduce", "cycle_reduce", str, "mean (paper) or max (notebook)."),
        Option("alpha-on-ds", "alpha_on_ds", bool, "Weight D_S's planes by alpha too."),
        Option("sections", "sections", int, "Sections per z-scan and step for each "
               "adversarial term."),
        Option("pool", "pool_size", int, "Image pool size."),
        Option("lr", "lr", float, "Adam learning rate."),
        Option("lr-d", "lr_d", float, "Discriminators' learning rate (default: --lr)."),
        Option("epochs", "epochs", int, "Epochs (the notebook: 200)."),
        Option("steps-per-epoch", "steps_per_epoch", int, "Batches per epoch."),
        Option("batch-size", "batch_size", int, "z-scans per batch."),
        Option("select", "select", str, "last or best (validation FM flatness + SSIM)."),
        Option("seed", "seed", int, "Random seed."),
        Option("device", "device", str, "cpu, cuda, ...; default: GPU if present."),
    )
    deployables = (
        Deployable("zscan", "z-scan of N planes (or k*N: k scans stacked) in, sharpened, "
                   "same shape out", ("bioimageio", "deepimagej", "ilastik")),
    )
    synth_model = ZSEGANSynth
    synth_options = (
        Option("source", "source", str, "shared (the paper's z-scans, read in place) or "
               "synthetic."),
        Option("zscans", "zscans", int, "Number of z-scans."),
        Option("held-apart", "held_apart", int, "z-scans held apart (seeded)."),
        Option("infocus", "infocus", int, "Synthetic in-focus images."),
        Option("size", "size", int, "Synthetic lateral size."),
        Option("planes", "planes", int, "Synthetic focal planes."),
        Option("sigma-max", "sigma_max", float, "Synthetic blur of the outermost plane."),
        Option("seed", "seed", int, "Random seed."),
    )
    demo = Demo(
        synth={"source": "shared", "zscans": 16, "held_apart": 4, "seed": 0},
        settings={"crop": 48, "ngf": 8, "n_res": 3, "ndf": 16, "sections": 4, "epochs": 5,
                  "steps_per_epoch": 40, "calib_crops": 16, "residual": True,
                  "upsample": "resize"},
        predict_with="zscan",
        about=("ZSE-GAN trained briefly on 12 of the paper's brain-section z-scans (29 planes, "
               "128x128) and its in-focus images, reduced networks (8 generator filters, 3 "
               "residual blocks, residual generators, 48x48 crops, 200 steps); one "
               "held-apart z-scan restored with "
               "the package. No ground truth exists: scores are the paper's no-reference "
               "ones (FM flatness over the planes, PIQE of the outer planes, FM of vertical "
               "sections, SSIM at the focal plane)."),
    )
    bench_options = (
        Option("crop", "crop", int, "Lateral training crop (the paper: 128)."),
        Option("ngf", "ngf", int, "Generator filters (notebook 16)."),
        Option("res-blocks", "n_res", int, "Residual blocks (notebook 6)."),
        Option("ndf", "ndf", int, "Discriminator filters (notebook 32)."),
        Option("sections", "sections", int, "Sections per step and term."),
        Option("residual", "residual", bool, "Residual generators (reduced recipe: on)."),
        Option("upsample", "upsample", str, "transposed (notebook) or resize (reduced recipe)."),
        Option("epochs", "epochs", int, "Epochs (the notebook: 200)."),
        Option("steps", "steps_per_epoch", int, "Batches per epoch."),
        Option("val-count", "val_count", int, "Held-apart z-scans."),
        Option("lambda-identity", "lambda_identity", float, "Identity-loss weight."),
        Option("lambda-cycle", "lambda_cycle", float, "Cycle weight (the paper: 10.5)."),
        Option("vertical-set", "use_vertical", bool, "Use the notebook's vertical sections "
               "for D_S."),
        Option("device", "device", str, "cpu or cuda."),
        Option("seed", "seed", int, "Random seed."),
    )
    citations = ({"text": "Visual enhancement of image stacks from a z-scanning microscope "
                          "using focal lengths weighted GANs (ZSE-GAN); reference code and "
                          "data: keerfish/ZSE-GAN.",
                  "url": "https://github.com/keerfish/ZSE-GAN"},)

    # ------------------------------------------------------------------ training
    def train(self, inputs: Sequence[Path], settings: ZSEGANSettings, *, out_dir: Path,
              resume: bool = False, progress: bool = False,
              voxel_size: Mapping[str, float] | None = None) -> Trained:
        zdir, fdir = (Path(p) for p in inputs)
        zs = read_zscans(zdir, n_planes=settings.n_planes)
        if settings.zscan_limit:
            zs = zs[:settings.zscan_limit]
        fs = read_images2d(fdir, what="in-focus image")
        vert = None
        if settings.vertical:
            vert = [a for _, a in read_images2d(settings.vertical, what="vertical section")]
        model = train_zsegan([a for _, a in zs], [a for _, a in fs], settings, vertical=vert,
                             names=[n for n, _ in zs], out_dir=out_dir, resume=resume,
                             progress=progress)
        shape = tuple(zs[0][1].shape)
        record = {
            "normalizer": {"pmin": model.normalizer.pmin, "pmax": model.normalizer.pmax,
                           "eps": model.normalizer.eps},
            "split": model.split, "zscans_dir": str(zdir.resolve()),
            "infocus_dir": str(fdir.resolve()),
            "training_data": (f"{len(zs)} z-scans {shape} (ZYX) from {zdir.name}/, "
                              f"{len(model.split['held_apart'])} held apart (seed "
                              f"{settings.seed}); {len(fs)} in-focus images from {fdir.name}/; "
                              "sharp vertical examples: "
                              + ("the vertical sections in " + Path(settings.vertical).name
                                 if vert else "windows of the in-focus images")),
        }
        tensors = {"G_S": model.G_S.state_dict(), "G_B": model.G_B.state_dict()}
        return Trained(settings=settings, model=model, result=model.result, record=record,
                       tensors=tensors)

    def load(self, settings: ZSEGANSettings, record, tensors, result) -> Trained:
        gk = settings.generator_kwargs()
        nets = {}
        for k in ("G_S", "G_B"):
            net = ResnetGenerator3D(**gk)
            try:
                net.load_state_dict(tensors[k])
            except (KeyError, RuntimeError) as exc:
                raise InputError(f"the run's {k} weights do not fit its ZSE-GAN settings "
                                 f"({str(exc).splitlines()[0]}); the run folder is damaged: "
                                 "train again") from None
            nets[k] = net.eval()
        model = ZSEGANModel(G_S=nets["G_S"], G_B=nets["G_B"], config=settings,
                            normalizer=PercentileNormalizer(**record["normalizer"]),
                            result=result, split=dict(record.get("split", {})))
        return Trained(settings=settings, model=model, result=result, record=record,
                       tensors=tensors)

    # ------------------------------------------------------------------ data, demo
    def synthesize(self, options: ZSEGANSynth) -> SynthResult:
        from .. import phantoms
        from ..io import as_dataarray

        o = options
        if o.source == "shared":
            root = shared_data_dir()
            files = _files(root / "zscans")
            if len(files) < o.zscans:
                raise InputError(f"{root / 'zscans'} has {len(files)} z-scans, fewer than "
                                 f"--zscans {o.zscans}")
            sample = _held_apart_files(root / "zscans", o.zscans, o.held_apart, o.seed)[0]
            return SynthResult(
                arrays={"zscans": root / "zscans", "infocus": root / "infocus",
                        "sample": sample},
                inputs=("zscans", "infocus"), sample="sample",
                settings={"zscan_limit": o.zscans, "val_count": o.held_apart, "seed": o.seed},
                info={"source": f"the paper's z-scans ({root}), read in place",
                      "sample_name": sample.name},
                references={})
        n = o.planes
        shape = (n, o.size, o.size)
        zs, fields = [], []
        for i in range(o.zscans + 1):
            st, f = phantoms.zscan(shape, seed=o.seed * 1000 + i, sigma_max=o.sigma_max,
                                   return_field=True)
            zs.append(st)
            fields.append(f)
        infocus = [phantoms.zscan(shape, seed=o.seed * 1000 + 500 + i, return_field=True)[1]
                   for i in range(o.infocus)]
        return SynthResult(
            arrays={"zscans": [as_dataarray(z, "ZYX") for z in zs[:-1]],
                    "infocus": [as_dataarray(f, "YX") for f in infocus],
                    "sample": as_dataarray(zs[-1], "ZYX"),
                    "sample_infocus": as_dataarray(fields[-1], "YX")},
            inputs=("zscans", "infocus"), sample="sample",
            settings={"n_planes": n, "val_count": o.held_apart, "seed": o.seed,
                      "crop": min(128, o.size // 4 * 4)},
            info={"source": f"synthetic z-scans {shape}, defocus blur up to {o.sigma_max} px"},
            references={"sample": zs[-1], "sample_infocus": fields[-1]})

    def _sample_array(self, synth: SynthResult) -> np.ndarray:
        from ..io import read_stack

        if "sample" in synth.references:
            return np.asarray(synth.references["sample"])
        return np.asarray(read_stack(synth.arrays["sample"]).values)

    def evaluate(self, trained: Trained, synth: SynthResult) -> dict[str, Any]:
        model: ZSEGANModel = trained.model
        x = self._sample_array(synth)
        y = restore(model, x)
        x01 = np.clip(model.normalizer.before(x), 0, 1)
        s = _zscan_scores(x01, y, model.config.focal_index)
        out: dict[str, Any] = {
            "FM max/min over planes, input": s["fm_max_min_input"],
            "FM max/min over planes, ZSE-GAN": s["fm_max_min_restored"],
            "PIQE of planes 1-4, 26-29, input": s["piqe_outer_input"],
            "PIQE of planes 1-4, 26-29, ZSE-GAN": s["piqe_outer_restored"],
            "FM of vertical sections, input": s["fm_vertical_input"],
            "FM of vertical sections, ZSE-GAN": s["fm_vertical_restored"],
            "SSIM(x, y) at the focal plane": s["ssim_focal_plane"],
            "data": f"held-apart z-scan {synth.info.get('sample_name', 'sample')} "
                    f"({synth.info.get('source', '')})"}
        if "sample_infocus" in synth.references:
            from ..metrics import ssim_normalized

            f = synth.references["sample_infocus"]
            out["SSIM vs true in-focus field, input (mean over planes)"] = float(
                np.mean([ssim_normalized(f, p) for p in x01]))
            out["SSIM vs true in-focus field, ZSE-GAN (mean over planes)"] = float(
                np.mean([ssim_normalized(f, p) for p in y]))
        return out

    def score(self, synth: SynthResult, restored) -> dict[str, float]:
        x = self._sample_array(synth)
        norm = PercentileNormalizer()
        x01 = np.clip(norm.before(x), 0, 1)
        y = np.asarray(restored, dtype=np.float32)
        return _zscan_scores(x01, y, (x.shape[0] - 1) // 2)

    def figure(self, synth: SynthResult, restored) -> list[tuple[str, Any]]:
        x = np.clip(PercentileNormalizer().before(self._sample_array(synth)), 0, 1)
        y = np.asarray(restored, dtype=np.float32)
        r = x.shape[1] // 2
        return [("input, plane 1", x[0]), ("ZSE-GAN, plane 1", y[0]),
                ("input, focal plane", x[(len(x) - 1) // 2]),
                ("ZSE-GAN, focal plane", y[(len(y) - 1) // 2]),
                ("input, vertical section (x, z)", x[:, r, :].T),
                ("ZSE-GAN, vertical section", y[:, r, :].T)]

    # ------------------------------------------------------------------ benchmark
    def bench(self, out_dir: Path, *, progress: bool = False, **options: Any) -> dict[str, Any]:
        from ..bench.zsegan import run_zsegan_bench

        return run_zsegan_bench(out_dir, progress=progress, **options)
