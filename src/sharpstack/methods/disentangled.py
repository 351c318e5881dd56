"""Disentangled-representation deblurring (Ritsema, MSc thesis, University of Twente 2023).

An autoencoder whose latent space is split into an *identity* code and a *blur* code is
trained on images of the same field (an identity) at many defocus levels. Deblurring decodes
the identity code of a blurry image with the blur code of an in-focus image.

Three models (``DisentangledConfig.variant``):

- ``manifold``: the thesis's own model (after Fumero et al. 2021): reconstruction loss plus,
  delayed by an exponential ``beta`` schedule, a consistency loss, a contrastive loss (margin
  0.6) and a cross-reconstruction loss (thesis Eq. 4.5).
- ``manifold1d``: the same with a one-dimensional blur code (the thesis's best model).
- ``mlvae``: the ML-VAE baseline (Bouchacourt et al. 2018): Gaussian codes, the identity
  posterior of a group of images of one field accumulated as a product of Gaussians, KL terms
  for both codes (thesis Eq. 4.4).

Training samples are built from a :class:`DefocusSeries` (``N`` identities x ``L`` focal
planes, each with its in-focus plane): one item is a group of images of one identity at
distinct defocus levels, cropped at the same place, plus one image of another identity at the
defocus of the first (the "same blur, different identity" pair of the thesis). Identities are
split into training / validation / test sets (seeded, recorded in the run).

The exported deploy module (:class:`~sharpstack.nn.disentangled_arch.DisentangledDeploy`)
holds the mean blur code of the in-focus training images as a buffer: 2D in, 2D out.

This module makes data and trains; it never writes files other than through the training
loop's ``out_dir`` and never parses CLI arguments (DESIGN.md).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from .._axes import check_axes
from ..errors import InputError
from ..nn.disentangled_arch import DisentangledAE, DisentangledDeploy, receptive_radius
from ..nn.losses import ssim_l1_loss
from ..normalize import PercentileNormalizer
from ..training import TrainConfig, TrainData, TrainResult, TrainTask, fit
from ._base import Demo, Deployable, Input, Method, Option, SynthResult, Trained

__all__ = [
    "VARIANTS", "DisentangledConfig", "DefocusSeries", "find_focus", "series_from_stacks",
    "read_defocus_series", "synthetic_series", "split_identities", "GroupDataset",
    "code_distance", "product_of_gaussians", "beta_schedule", "VGG16Features",
    "load_vgg16_features", "VGGPerceptualLoss", "ManifoldTask", "MLVAETask", "DisentangledModel",
    "train_disentangled", "encode_images", "decode_codes", "deblur", "reconstruct",
    "DisentangledSettings", "DisentangledSynth", "Disentangled", "shared_zscans_dir",
    "is_shared_data",
]

VARIANTS = ("manifold1d", "manifold", "mlvae")

#: file suffixes read as one stack each from a folder (io.read_stack reads them)
_STACK_SUFFIXES = (".tif", ".tiff", ".npy", ".zarr")


# ============================================================================================
# configuration
# ============================================================================================

class DisentangledConfig(BaseModel):
    """Everything that defines a disentangled-deblurring training run.

    Thesis values where the thesis gives them (Adam 0.9/0.999, lr 1e-3 x 0.98 every 5 epochs,
    400 epochs, margin 0.6, the architecture); the reduced CPU recipe changes only sizes and
    lengths. Unknown keys are rejected by name (a zoo recipe loads into this model).
    """

    model_config = ConfigDict(extra="forbid")

    variant: Literal["manifold1d", "manifold", "mlvae"] = Field(
        "manifold1d", description="manifold1d: manifold model with a 1-D blur code (the "
        "thesis's best); manifold: the thesis's manifold model; mlvae: the ML-VAE baseline")
    channels: list[int] = Field(
        [16, 32, 64], min_length=1, max_length=6,
        description="channels of each encoder block (one 2x2 pooling each; the last entry is "
        "the identity and blur heads). Thesis: 64, 128, 256, 512")
    id_channels: int = Field(64, ge=1, le=2048, description="channels of the identity code "
                             "map (thesis 512)")
    blur_channels: int | None = Field(
        None, ge=1, le=2048, description="length of the blur code; default 1 for manifold1d "
        "and id_channels otherwise (thesis: 512, or 1)")
    patch_size: int = Field(64, ge=16, le=1024, description="square training crop in pixels "
                            "(a multiple of 2**len(channels); thesis 128)")
    epochs: int = Field(60, ge=1, le=100000, description="training epochs (thesis 400)")
    steps_per_epoch: int = Field(50, ge=1, le=100000, description="batches per epoch")
    batch_size: int = Field(8, ge=1, le=4096, description="groups per batch (each group: "
                            "group_size images of one identity + one of another)")
    lr: float = Field(1e-3, gt=0, le=1, description="initial Adam learning rate (thesis 1e-3)")
    lr_decay: float = Field(0.98, gt=0, le=1, description="learning-rate factor applied "
                            "every lr_decay_every epochs (thesis 0.98)")
    lr_decay_every: int = Field(5, ge=1, le=10000, description="epochs between decays "
                                "(thesis 5)")
    margin: float = Field(0.6, gt=0, le=10, description="contrastive margin m on the "
                          "normalised distance (thesis 0.6)")
    distance: Literal["rms", "unit"] = Field(
        "rms", description="code distance delta: rms = Euclidean distance divided by the "
        "square root of the code length (defined for a 1-D code); unit = Euclidean distance "
        "of the codes scaled to unit length")
    beta_full: float = Field(0.075, ge=0, le=1, description="fraction of training at which "
                             "beta reaches 1 (thesis: about 30 of 400 epochs)")
    beta_rate: float = Field(25.0, gt=0, le=1000, description="beta = min(exp(beta_rate * "
                             "(t - beta_full)), 1), t = fraction of training done (Fumero et "
                             "al.'s code: 25)")
    w_consistency: float = Field(1.0, ge=0, le=1000, description="weight of the consistency "
                                 "loss (0 switches it off)")
    w_contrastive: float = Field(1.0, ge=0, le=1000, description="weight of the contrastive "
                                 "loss (0: the 'without contrastive' ablation)")
    w_cross: float = Field(1.0, ge=0, le=1000, description="weight of the cross-"
                           "reconstruction loss (0: the 'without cross-reconstruction' "
                           "ablation)")
    recon_loss: Literal["ssim_l1", "vgg"] = Field(
        "ssim_l1", description="reconstruction loss gamma: ssim_l1 = alpha (1 - SSIM) + "
        "(1 - alpha) L1 (no downloads); vgg = VGG-16 perceptual loss from vgg_weights")
    ssim_alpha: float = Field(0.84, ge=0, le=1, description="SSIM weight of ssim_l1")
    vgg_weights: str | None = Field(None, description="state dict of torchvision's vgg16 "
                                    "'features' (needed by recon_loss=vgg)")
    vgg_layers: list[int] = Field([3, 8, 15], min_length=1, max_length=13,
                                  description="indices of the ReLU layers of vgg16.features "
                                  "compared (3, 8, 15 = relu1_2, relu2_2, relu3_3)")
    kl_weight: float = Field(1.0, ge=0, le=1e6, description="ML-VAE: weight of the KL terms "
                             "(KL summed over the code, divided by the pixels of the image)")
    group_size: int = Field(4, ge=2, le=64, description="ML-VAE: images of one identity per "
                            "group (the manifold models use pairs)")
    p_focus: float = Field(0.25, ge=0, le=1, description="probability that the partner of a "
                           "same-identity pair is the in-focus plane (the thesis does not say "
                           "how pairs are drawn)")
    val_fraction: float = Field(0.15, gt=0, lt=1, description="fraction of identities for "
                                "validation (early stopping criterion: deblurring loss)")
    test_fraction: float = Field(0.0, ge=0, lt=1, description="fraction of identities held "
                                 "out entirely (recorded, never trained or validated on)")
    val_items: int = Field(64, ge=1, le=100000, description="validation groups per epoch "
                           "(fixed, seeded)")
    augment: bool = Field(True, description="random flips and 90 degree rotations (the same "
                          "for all images of one identity)")
    pmin: float = Field(1.0, ge=0, lt=100, description="lower percentile of the per-image "
                        "normalisation (bioimage.io scale_range)")
    pmax: float = Field(99.8, gt=0, le=100, description="upper percentile")
    patience: int | None = Field(None, ge=1, description="early stopping after this many "
                                 "epochs without a better validation loss (None: off)")
    seed: int = Field(0, ge=0, description="seed of splits, sampling and initialisation")
    device: str | None = Field(None, description="torch device (default: cuda if present)")

    @model_validator(mode="after")
    def _check(self) -> "DisentangledConfig":
        if any(c < 1 or c > 4096 for c in self.channels):
            raise ValueError(f"channels must be between 1 and 4096, got {self.channels}")
        mult = 2 ** len(self.channels)
        if self.patch_size % mult:
            raise ValueError(f"patch_size {self.patch_size} must be a multiple of "
                             f"2**len(channels) = {mult}")
        if self.variant == "manifold1d" and self.blur_channels not in (None, 1):
            raise ValueError(f"variant manifold1d has a 1-D blur code; blur_channels must be 1 "
                             f"or unset, got {self.blur_channels}")
        if self.recon_loss == "vgg" and not self.vgg_weights:
            raise ValueError("recon_loss 'vgg' needs vgg_weights (a state dict of torchvision's "
                             "vgg16 features); or use recon_loss 'ssim_l1'")
        if self.pmin >= self.pmax:
            raise ValueError(f"pmin {self.pmin} must be below pmax {self.pmax}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must leave identities to train on")
        if any(i < 0 or i > 29 for i in self.vgg_layers):
            raise ValueError(f"vgg_layers are indices into vgg16.features (0..29), got "
                             f"{self.vgg_layers}")
        return self

    @property
    def code_blur_channels(self) -> int:
        """The length of the blur code this config trains."""
        if self.variant == "manifold1d":
            return 1
        return int(self.blur_channels or self.id_channels)

    @property
    def multiple(self) -> int:
        """Image sizes must be multiples of this (``2**len(channels)``)."""
        return 2 ** len(self.channels)

    def arch_kwargs(self) -> dict[str, Any]:
        """JSON-serialisable kwargs of the network (used to rebuild it from a package)."""
        return {"channels": [int(c) for c in self.channels], "id_channels": self.id_channels,
                "blur_channels": self.code_blur_channels,
                "variational": self.variant == "mlvae"}

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size,
                           val_fraction=self.val_fraction, patience=self.patience,
                           seed=self.seed, device=self.device,
                           steps_per_epoch=self.steps_per_epoch)


# ============================================================================================
# data: defocus series
# ============================================================================================

@dataclass
class DefocusSeries:
    """``N`` identities (fields) imaged at ``L`` focal planes each.

    Attributes
    ----------
    images : ndarray, float32, shape (N, L, Y, X)
        Raw intensities (not normalised).
    focus : ndarray of int, shape (N,)
        Index (0-based) of the in-focus plane of every identity; the defocus of plane ``k`` of
        identity ``i`` is ``k - focus[i]`` planes.
    names : list of str
        One name per identity (file names for series read from disk).
    plane_spacing : float or None
        Distance between planes in micrometres, when known.
    """

    images: np.ndarray
    focus: np.ndarray
    names: list[str]
    plane_spacing: float | None = None

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images, dtype=np.float32)
        self.focus = np.asarray(self.focus, dtype=np.int64).reshape(-1)
        if self.images.ndim != 4:
            raise InputError(f"a defocus series holds (identities, planes, Y, X) images, got "
                             f"shape {self.images.shape}")
        n, planes = self.images.shape[:2]
        if len(self.focus) != n or len(self.names) != n:
            raise InputError(f"{n} identities but {len(self.focus)} focus planes and "
                             f"{len(self.names)} names")
        bad = [(nm, int(f)) for nm, f in zip(self.names, self.focus) if not 0 <= f < planes]
        if bad:
            nm, f = bad[0]
            raise InputError(f"in-focus plane {f + 1} of {nm} is outside its {planes} planes "
                             f"(1..{planes}); give a plane of the series")

    @property
    def n_identities(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_planes(self) -> int:
        return int(self.images.shape[1])

    def defocus(self, i: int) -> np.ndarray:
        """Defocus (in planes) of every plane of identity ``i``."""
        return np.arange(self.n_planes) - int(self.focus[i])

    def subset(self, idx: Sequence[int]) -> "DefocusSeries":
        idx = [int(i) for i in idx]
        return DefocusSeries(self.images[idx], self.focus[idx], [self.names[i] for i in idx],
                             self.plane_spacing)

    def in_focus(self) -> np.ndarray:
        """The in-focus image of every identity, ``(N, Y, X)``."""
        return self.images[np.arange(self.n_identities), self.focus]


def find_focus(stack, *, axes: str = "ZYX", name: str = "the series") -> int:
    """Index (0-based) of the in-focus plane of a defocus series: the plane of highest focus
    measure (:func:`sharpstack.metrics.focus_measure`, FM of De & Masilamani 2013).

    Raises :class:`~sharpstack.errors.InputError` when the series has no in-focus plane that
    can be found: every plane is equally sharp (FM varies by less than 2 %), or the sharpest
    plane is the first or the last one (the focus may lie outside the series).
    """
    from ..metrics import focus_measure

    arr = np.asarray(stack)
    check_axes(axes, arr.ndim, allowed=("ZYX",))
    fm = np.array([focus_measure(p) for p in arr], dtype=np.float64)
    best = int(np.argmax(fm))
    hint = ("give the in-focus plane explicitly (--focus-plane), or acquire planes on both "
            "sides of the focus")
    if fm.max() <= 1.02 * fm.min():
        raise InputError(f"{name} has no in-focus plane: no plane is sharper than the others "
                         f"(focus measure {fm.min():.4f}..{fm.max():.4f}); {hint}")
    if best in (0, len(fm) - 1):
        where = "first" if best == 0 else "last"
        raise InputError(f"{name} has no in-focus plane inside the series: its sharpest plane "
                         f"is the {where} one, so the focus may lie beyond it; {hint}")
    return best


def _check_focus_arg(focus, n: int) -> list[int | None]:
    if focus is None:
        return [None] * n
    if isinstance(focus, (int, np.integer)) and not isinstance(focus, bool):
        return [int(focus)] * n
    vals = list(focus)
    if len(vals) != n:
        raise InputError(f"give one in-focus plane per stack ({n}), got {len(vals)}")
    return [None if v is None else int(v) for v in vals]


def series_from_stacks(stacks: Sequence[Any], *, names: Sequence[str] | None = None,
                       focus: int | Sequence[int | None] | None = None, axes: str = "ZYX",
                       plane_spacing: float | None = None) -> DefocusSeries:
    """A :class:`DefocusSeries` from one z-stack per identity.

    Parameters
    ----------
    stacks : sequence of array_like, each (L, Y, X)
        One defocus series per identity; all must have the same shape.
    names : sequence of str, optional
    focus : int or sequence of int, optional
        In-focus plane (0-based) of every stack, or one index for all; ``None`` (or a
        ``None`` entry) finds it with :func:`find_focus`.
    axes : str
        Axes of every stack (``"ZYX"``).
    """
    if len(stacks) == 0:
        raise InputError("no stacks given; a defocus series needs at least one z-stack")
    names = list(names) if names is not None else [f"stack {i + 1}" for i in range(len(stacks))]
    if len(names) != len(stacks):
        raise InputError(f"{len(stacks)} stacks but {len(names)} names")
    arrays = []
    for nm, s in zip(names, stacks):
        a = np.asarray(s)
        if a.ndim == 2:
            raise InputError(f"{nm} is a single 2D image; a defocus series needs a z-stack "
                             f"(several focal planes of the same field) per identity")
        check_axes(axes, a.ndim, allowed=("ZYX",), name=f"axes of {nm}")
        if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
            raise InputError(f"{nm} must hold real numbers, got dtype {a.dtype}")
        if not np.all(np.isfinite(a)):
            raise InputError(f"{nm} contains NaN or infinite values; remove them first")
        from ..io import check_not_constant

        check_not_constant(a, f"the defocus series {nm}")
        if a.shape[0] < 3:
            raise InputError(f"{nm} has {a.shape[0]} plane(s); a defocus series needs at least "
                             f"3 (planes above, at and below the focus)")
        arrays.append(a)
    ref = arrays[0].shape
    for nm, a in zip(names, arrays):
        if a.shape != ref:
            raise InputError(
                f"images of unequal sizes: {names[0]} is {ref} (planes, Y, X) but {nm} is "
                f"{a.shape}; every stack of a defocus series must have the same number of "
                f"planes and the same image size, so crop or pad them to a common size")
    fidx = []
    for nm, a, f in zip(names, arrays, _check_focus_arg(focus, len(arrays))):
        if f is None:
            f = find_focus(a, name=nm)
        elif not 0 <= f < a.shape[0]:
            raise InputError(f"in-focus plane {f + 1} of {nm} is outside its {a.shape[0]} "
                             f"planes (1..{a.shape[0]}); give a plane of the series")
        fidx.append(f)
    return DefocusSeries(np.stack(arrays).astype(np.float32), np.array(fidx), names,
                         plane_spacing)


def read_defocus_series(path: str | os.PathLike | Sequence[str | os.PathLike], *,
                        focus: int | Sequence[int | None] | None = None,
                        axes: str | None = None,
                        voxel_size: Mapping[str, float] | None = None) -> DefocusSeries:
    """Read a user's defocus series: a folder of z-stacks (one identity each), one stack, or a
    list of stack files (TIFF, OME-Zarr, ``.npy``; read with :func:`sharpstack.io.read_stack`).

    Parameters
    ----------
    path : path or list of paths
        A folder (every ``.tif``, ``.tiff``, ``.npy``, ``.zarr`` in it, sorted by name), a
        single stack file, or a list of stack files.
    focus : int or sequence of int, optional
        In-focus plane (0-based) of every stack; found with :func:`find_focus` if omitted.
    axes : str, optional
        Axes of the files (``"ZYX"``) when their metadata does not say.
    voxel_size : dict, optional
        Micrometres per axis (``--voxel-size``) overriding or completing the files' sizes.
    """
    from ..io import read_stack, with_voxel_size

    if isinstance(path, (str, os.PathLike)):
        p = Path(path)
        if not p.exists():
            raise InputError(f"{p} does not exist; give a folder of z-stacks or a stack file")
        if p.is_dir() and p.suffix != ".zarr":
            files = sorted(q for q in p.iterdir()
                           if q.suffix.lower() in _STACK_SUFFIXES and not q.name.startswith("."))
            if not files:
                raise InputError(f"{p} holds no stacks ({', '.join(_STACK_SUFFIXES)}); put one "
                                 f"z-stack per field of view in it")
        else:
            files = [p]
    else:
        files = [Path(q) for q in path]
    stacks, names, spacing = [], [], []
    for f in files:
        da = read_stack(f, axes)
        dims = "".join(str(d) for d in da.dims).upper()
        if dims not in ("ZYX", "YX"):
            raise InputError(f"{f.name} has axes {dims}; a defocus series needs one-channel "
                             f"z-stacks (ZYX): split the channels (Fiji: Image > Color > "
                             f"Split Channels) or keep one time point (Image > Duplicate), or, "
                             f"if that axis is really the focal planes, set it as slices in "
                             f"Fiji (Image > Properties) and save the stack again")
        da = with_voxel_size(da, {k: v for k, v in (voxel_size or {}).items()
                                  if k in da.dims})  # refuses a broken (zero, negative) size
        stacks.append(da.values)
        names.append(f.name)
        vz = (da.attrs.get("voxel_size") or {}).get("z")
        spacing.append(float(vz) if vz else None)
    known = {s for s in spacing if s}
    return series_from_stacks(stacks, names=names, focus=focus, axes="ZYX",
                              plane_spacing=known.pop() if len(known) == 1 else None)


def synthetic_series(n_identities: int = 24, size: int = 96, *,
                     dz_um: Sequence[float] = tuple(np.round(np.arange(-3.0, 3.01, 0.5), 3)),
                     pixel_size_um: float = 0.2, na: float = 1.0,
                     poisson_peak: float | None = 200.0, gauss_sigma: float = 0.01,
                     seed: int = 0, fields: np.ndarray | None = None
                     ) -> tuple[DefocusSeries, np.ndarray]:
    """A synthetic widefield defocus series with known ground truth.

    Every identity is a 2D field (:func:`sharpstack.phantoms.defocus_fields`: a lateral slice
    of a nuclei + membranes phantom, or the given ``fields``), imaged at every defocus in
    ``dz_um`` with the 2D widefield PSF of :func:`sharpstack.psf.defocus_psf_2d` (NA ``na``,
    oil objective, water sample 3 um deep: PSFs above and below focus differ) and Poisson +
    Gaussian noise (:func:`sharpstack.phantoms.defocus_series`).

    Returns
    -------
    (DefocusSeries, ndarray)
        The series (in-focus plane: ``dz = 0``, which ``dz_um`` must contain) and the clean
        fields ``(N, Y, X)``.
    """
    from .. import phantoms
    from ..psf import defocus_psf_2d

    dz = np.asarray(dz_um, dtype=np.float64)
    zero = np.flatnonzero(np.isclose(dz, 0.0))
    if dz.ndim != 1 or len(zero) != 1 or len(dz) < 3:
        raise InputError(f"dz_um must list at least 3 defocus values including exactly one 0 "
                         f"(the in-focus plane), got {list(dz_um)}")
    if fields is None:
        gt = phantoms.defocus_fields(n_identities, size, seed=seed)
    else:
        gt = np.asarray(fields, dtype=np.float32)
        if gt.ndim != 3:
            raise InputError(f"fields must be (N, Y, X), got shape {gt.shape}")
    kernels = defocus_psf_2d(dz, pixel_size_um=pixel_size_um, na=na)
    side = min(gt.shape[1:])
    if kernels.shape[-1] >= side:
        c, h = kernels.shape[-1] // 2, (side - 1) // 2 - 1
        kernels = kernels[:, c - h:c + h + 1, c - h:c + h + 1]
        kernels = kernels / kernels.sum(axis=(1, 2), keepdims=True)
    stack = phantoms.defocus_series(gt, kernels, poisson_peak=poisson_peak,
                                    gauss_sigma=gauss_sigma, seed=seed + 1)
    steps = np.diff(dz)
    spacing = float(steps[0]) if np.allclose(steps, steps[0]) else None
    names = [f"synthetic {i + 1}" for i in range(len(gt))]
    return DefocusSeries(stack, np.full(len(gt), int(zero[0])), names, spacing), gt


def split_identities(n: int, *, val_fraction: float, test_fraction: float = 0.0,
                     seed: int = 0) -> dict[str, list[int]]:
    """Seeded split of ``n`` identities into ``train`` / ``val`` / ``test`` index lists.

    At least one validation identity and two training identities (a "different identity"
    partner needs a second one); the test set may be empty.
    """
    n = int(n)
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    n_val = max(1, int(round(n * val_fraction)))
    if n - n_test - n_val < 2:
        raise InputError(f"{n} identities are too few for {n_val} validation and {n_test} test "
                         f"identities and at least 2 training ones; add more stacks (fields of "
                         f"view) or lower the validation/test fractions")
    return {"test": sorted(perm[:n_test].tolist()),
            "val": sorted(perm[n_test:n_test + n_val].tolist()),
            "train": sorted(perm[n_test + n_val:].tolist())}


def _normalise_images(images: np.ndarray, normalizer: PercentileNormalizer) -> np.ndarray:
    """Every 2D image normalised by its own percentiles (bioimage.io ``scale_range`` per
    sample over y and x, as the package does)."""
    flat = images.reshape((-1,) + images.shape[-2:])
    out = np.empty(flat.shape, dtype=np.float32)
    for k, img in enumerate(flat):
        out[k] = normalizer.before(img)
    return out.reshape(images.shape)


class GroupDataset(Dataset):
    """Training groups drawn from a normalised defocus series (seeded per item).

    Item ``k``: identity ``i``; ``group_size`` distinct planes of ``i`` (the first uniform;
    with probability ``p_focus`` the second is the in-focus plane; ``force_focus``: the first
    is never in focus and the second always is), cropped at one random place; then one image of
    another identity ``j`` at the defocus of the first, cropped anywhere. The same random flip
    and 90 degree rotation is applied to the images of ``i`` (defocus blur has no preferred
    direction), an independent one to ``j``.

    With ``need_other=False`` a single identity is allowed (its own plane then stands in for
    the partner; validation uses only the first two images).

    Returns ``(images (G+1, 1, P, P) float32, defocus (G+1,) int64, identity (G+1,) int64)``.
    """

    def __init__(self, images: np.ndarray, focus: np.ndarray, identities: Sequence[int], *,
                 patch_size: int, group_size: int = 2, p_focus: float = 0.25,
                 length: int = 1000, seed: int = 0, augment: bool = True,
                 force_focus: bool = False, need_other: bool = True) -> None:
        self.images = images
        self.focus = np.asarray(focus, dtype=np.int64)
        self.ids = np.asarray(identities, dtype=np.int64)
        self.p = int(patch_size)
        self.g = int(group_size)
        self.p_focus = float(p_focus)
        self.length = int(length)
        self.seed = int(seed)
        self.augment = bool(augment)
        self.force_focus = bool(force_focus)
        planes, ny, nx = images.shape[1:]
        if len(self.ids) < (2 if need_other else 1):
            raise InputError("training groups need at least 2 identities (the 'same blur, "
                             "other identity' partner); add stacks")
        if self.g > planes:
            raise InputError(f"group_size {self.g} exceeds the {planes} planes of the series")
        if min(ny, nx) < self.p:
            raise InputError(f"images of {ny}x{nx} pixels are smaller than patch_size {self.p}; "
                             f"use a smaller patch size (a multiple of the network's "
                             f"downsampling factor)")

    def __len__(self) -> int:
        return self.length

    def _transform(self, rng: np.random.Generator):
        if not self.augment:
            return lambda a: a
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        return lambda a: np.rot90(a[..., ::-1] if flip else a, k, axes=(-2, -1))

    def _crop(self, rng: np.random.Generator) -> tuple[slice, slice]:
        ny, nx = self.images.shape[2:]
        y0, x0 = int(rng.integers(ny - self.p + 1)), int(rng.integers(nx - self.p + 1))
        return slice(y0, y0 + self.p), slice(x0, x0 + self.p)

    def __getitem__(self, k: int):
        rng = np.random.default_rng([self.seed, int(k)])
        planes = self.images.shape[1]
        i = int(self.ids[rng.integers(len(self.ids))])
        f = int(self.focus[i])
        if self.force_focus:
            first = int(rng.choice([q for q in range(planes) if q != f]))
            chosen = [first, f]
        else:
            first = int(rng.integers(planes))
            chosen = [first]
            if first != f and rng.random() < self.p_focus:
                chosen.append(f)
        rest = [q for q in range(planes) if q not in chosen]
        chosen += [int(q) for q in rng.choice(rest, self.g - len(chosen), replace=False)]
        dz0 = first - f
        others = [int(j) for j in self.ids if j != i and 0 <= self.focus[j] + dz0 < planes]
        if others:
            j = others[int(rng.integers(len(others)))]
        else:  # no other identity has this defocus: a same-identity partner at that plane
            j = i
        ys, xs = self._crop(rng)
        tf = self._transform(rng)
        group = [tf(self.images[i, q, ys, xs]) for q in chosen]
        ys2, xs2 = self._crop(rng)
        tf2 = self._transform(rng)
        group.append(tf2(self.images[j, int(self.focus[j]) + dz0, ys2, xs2]))
        imgs = np.stack([np.ascontiguousarray(a) for a in group])[:, None].astype(np.float32)
        dz = np.array([q - f for q in chosen] + [dz0], dtype=np.int64)
        ident = np.array([i] * len(chosen) + [j], dtype=np.int64)
        return torch.from_numpy(imgs), torch.from_numpy(dz), torch.from_numpy(ident)


# ============================================================================================
# losses
# ============================================================================================

def code_distance(a: torch.Tensor, b: torch.Tensor, kind: str = "rms") -> torch.Tensor:
    """The normalised Euclidean distance ``delta`` between codes (one value per sample).

    ``rms``: ``||a - b|| / sqrt(d)`` with ``d`` the code length (the thesis: "Euclidean distance
    normalized by vector length"; this reading is the one under which a 1-D blur code keeps a
    meaningful distance). ``unit``: ``|| a/|a| - b/|b| ||`` (codes scaled to unit length first;
    a 1-D code then keeps only its sign).
    """
    a, b = a.flatten(1), b.flatten(1)
    if kind == "unit":
        return (F.normalize(a, dim=1) - F.normalize(b, dim=1)).norm(dim=1)
    if kind != "rms":
        raise ValueError(f"kind must be 'rms' or 'unit', got {kind!r}")
    # the small constant keeps the gradient of sqrt finite for identical codes
    return torch.sqrt(torch.mean((a - b) ** 2, dim=1) + 1e-12)


def product_of_gaussians(mu: torch.Tensor, logvar: torch.Tensor, dim: int = 1
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """ML-VAE's accumulated group evidence: the normalised product of Gaussians
    ``N(mu_k, exp(logvar_k))`` over ``dim`` (thesis Eq. 4.1): precisions add and the mean is
    the precision-weighted mean. Returns ``(mean, variance)`` with ``dim`` removed."""
    prec = torch.exp(-logvar)
    total = prec.sum(dim=dim)
    return (mu * prec).sum(dim=dim) / total, 1.0 / total


def beta_schedule(progress: float, *, full: float = 0.075, rate: float = 25.0) -> float:
    """Delay of the distance losses: ``min(exp(rate * (progress - full)), 1)``.

    ``progress`` is the fraction of training done (0..1). With ``rate = 25`` (Fumero et al.'s
    code, per fraction of training) beta rises exponentially and reaches 1 at ``full`` (the
    thesis: about 30 of 400 epochs).
    """
    return float(min(math.exp(rate * (float(progress) - full)), 1.0))


# torchvision's vgg16 "features" layout: channels of each 3x3 convolution, "M" = 2x2 max pool;
# every convolution is followed by a ReLU, so layer indices match torchvision's state dict keys
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16Features(nn.Module):
    """The first layers of VGG-16 (Simonyan & Zisserman 2015), laid out as torchvision's
    ``vgg16().features`` (so its state dict loads unchanged), up to layer ``last``.

    Built here because torchvision is not a dependency of sharpstack (and its weights could not
    be downloaded anyway); the user supplies the weights (:func:`load_vgg16_features`).
    """

    def __init__(self, last: int = 15) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                cin = int(v)
            if len(layers) > last:
                break
        self.features = nn.Sequential(*layers[: last + 1])

    def forward(self, x: torch.Tensor, taps: Sequence[int]) -> list[torch.Tensor]:
        out, want = [], set(int(t) for t in taps)
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in want:
                out.append(x)
        return out


def load_vgg16_features(path: str | os.PathLike, layers: Sequence[int] = (3, 8, 15)
                        ) -> VGG16Features:
    """VGG-16 feature layers up to ``max(layers)`` with weights from a user's file.

    The file is a state dict of torchvision's ``vgg16().features`` (keys ``"0.weight"``,
    ``"0.bias"``, ``"2.weight"``, ...) or of the whole ``vgg16()`` (keys ``"features.0.weight"``
    ...; the classifier is ignored), read with ``torch.load(weights_only=True)`` (no code runs).
    Layers beyond ``max(layers)`` may be missing. A file that cannot be read, lacks a needed
    layer or holds a tensor of another shape is an :class:`~sharpstack.errors.InputError`.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"VGG-16 weights file {p} does not exist; give a state dict of "
                         f"torchvision's vgg16 features")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
        raise InputError(f"{p} is not a readable PyTorch state dict ({type(exc).__name__}); "
                         f"save one with torch.save(torchvision.models.vgg16(weights=...)"
                         f".features.state_dict(), path)") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise InputError(f"{p} does not hold a state dict (a mapping of names to tensors); "
                         f"save vgg16().features.state_dict()")
    if any(str(k).startswith("features.") for k in state):
        state = {str(k)[len("features."):]: v for k, v in state.items()
                 if str(k).startswith("features.")}
    last = max(int(i) for i in layers)
    net = VGG16Features(last)
    expected = net.features.state_dict()
    for key, ref in expected.items():
        if key not in state:
            raise InputError(f"VGG-16 weights file {p} lacks {key!r} (layer {key.split('.')[0]} "
                             f"of vgg16.features), needed for vgg_layers {list(layers)}; give "
                             f"the state dict of torchvision's vgg16 features")
        got = tuple(state[key].shape)
        if got != tuple(ref.shape):
            raise InputError(f"VGG-16 weights file {p}: {key!r} has shape {got} but vgg16."
                             f"features needs {tuple(ref.shape)}; this is not a VGG-16 features "
                             f"state dict (torchvision's vgg16, 3-channel input)")
    net.features.load_state_dict({k: state[k].float() for k in expected})
    for prm in net.parameters():
        prm.requires_grad_(False)
    for i in layers:
        if not isinstance(net.features[int(i)], nn.ReLU):
            raise InputError(f"vgg_layers must name ReLU layers of vgg16.features (odd indices "
                             f"before a pooling, e.g. 3, 8, 15), got {int(i)}")
    return net.eval()


class VGGPerceptualLoss(nn.Module):
    """Perceptual loss on VGG-16 features (Johnson et al. 2016): mean squared difference of
    the feature maps at ``layers``, summed over layers. One-channel images are repeated to
    three channels and standardised with the ImageNet mean and standard deviation."""

    def __init__(self, features: VGG16Features, layers: Sequence[int]) -> None:
        super().__init__()
        self.features, self.layers = features, [int(i) for i in layers]
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> "VGGPerceptualLoss":
        super().train(False)  # frozen, always in inference mode
        return self

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        a = (pred.repeat(1, 3, 1, 1) - self.mean) / self.std
        b = (target.repeat(1, 3, 1, 1) - self.mean) / self.std
        fa, fb = self.features(a, self.layers), self.features(b, self.layers)
        return sum(torch.mean((x - y) ** 2) for x, y in zip(fa, fb))


def _recon_loss(config: DisentangledConfig):
    if config.recon_loss == "vgg":
        return VGGPerceptualLoss(load_vgg16_features(config.vgg_weights, config.vgg_layers),
                                 config.vgg_layers)
    alpha = config.ssim_alpha
    return lambda p, t: ssim_l1_loss(p, t, alpha=alpha)


# ============================================================================================
# training tasks
# ============================================================================================

class _DisentangledTask(TrainTask):
    """Shared parts: optimiser, the thesis's step-wise learning-rate decay, beta, val step."""

    def __init__(self, net: DisentangledAE, config: DisentangledConfig, recon) -> None:
        self.models = {"net": net}
        self.cfg = config
        self.recon = recon
        self.step = 0
        self.total = config.epochs * config.steps_per_epoch

    def state_dict(self) -> dict[str, Any]:
        return {"step": int(self.step)}

    def load_state_dict(self, state) -> None:
        self.step = int(state.get("step", 0))

    def make_optimizers(self):
        return {"adam": torch.optim.Adam(self.models["net"].parameters(), lr=self.cfg.lr,
                                         betas=(0.9, 0.999))}

    def _begin(self, optimizers) -> torch.optim.Optimizer:
        opt = optimizers["adam"]
        epoch = self.step // self.cfg.steps_per_epoch
        lr = self.cfg.lr * self.cfg.lr_decay ** (epoch // self.cfg.lr_decay_every)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        return opt

    def beta(self) -> float:
        return beta_schedule(self.step / max(self.total, 1), full=self.cfg.beta_full,
                             rate=self.cfg.beta_rate)

    def _codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.models["net"].encode(x)

    @torch.no_grad()
    def val_step(self, batch):
        imgs = batch[0]
        blurry, focused = imgs[:, 0], imgs[:, 1]
        net = self.models["net"]
        idc, blur = self._codes(torch.cat([blurry, focused]))
        n = blurry.shape[0]
        deblurred = net.decode(idc[:n], blur[n:])
        rec = net.decode(idc, blur)
        loss = float(self.recon(deblurred, focused))
        return {"loss": loss, "deblur": loss,
                "rec": float(self.recon(rec, torch.cat([blurry, focused])))}


class ManifoldTask(_DisentangledTask):
    """The manifold model's step (thesis Eq. 4.5):
    ``L = L_rec + beta (w_cons L_cons + w_cont L_cont + w_cross L_cross)``.

    Batch: ``(B, 3, 1, P, P)`` groups ``(a, b, c)``: ``a, b`` one identity at two defocus
    levels, ``c`` another identity at the defocus of ``a``.

    - ``L_rec``: ``gamma(D(E(x)), x)`` for ``a, b, c``.
    - ``L_cross`` (Eq. 4.8): swap the blur codes of the same-identity pair (``D(I_a, B_b)`` ->
      ``b``, ``D(I_b, B_a)`` -> ``a``) and of the same-blur pair (``D(I_a, B_c)`` -> ``a``,
      ``D(I_c, B_a)`` -> ``c``).
    - ``L_cont`` (Eq. 4.7): for ``(a, b)`` pull the identity codes together and push the blur
      codes apart up to the margin; for ``(a, c)`` the reverse.
    - ``L_cons`` (Eq. 4.6): re-encode ``D(I_a, B_b)``: its identity code must be ``I_a``;
      re-encode ``D(I_c, B_a)``: its blur code must be ``B_a``.
    """

    def train_step(self, batch, optimizers):
        cfg = self.cfg
        imgs = batch[0]
        xa, xb, xc = imgs[:, 0], imgs[:, 1], imgs[:, 2]
        n = xa.shape[0]
        net = self.models["net"]
        opt = self._begin(optimizers)
        beta = self.beta()
        idc, blur = net.encode(torch.cat([xa, xb, xc]))
        ia, ib, ic = idc.split(n)
        ba, bb, bc = blur.split(n)
        cross = beta > 0 and cfg.w_cross > 0
        cons = beta > 0 and cfg.w_consistency > 0
        if cross or cons:
            out = net.decode(torch.cat([ia, ib, ic, ia, ib, ia, ic]),
                             torch.cat([ba, bb, bc, bb, ba, bc, ba]))
            rec, swapped = out[: 3 * n], out[3 * n:]
        else:
            rec, swapped = net.decode(idc, blur), None
        l_rec = self.recon(rec, torch.cat([xa, xb, xc]))
        loss = l_rec
        logs = {"rec": float(l_rec.detach()), "beta": beta}
        if cross:
            l_cross = self.recon(swapped, torch.cat([xb, xa, xa, xc]))
            loss = loss + beta * cfg.w_cross * l_cross
            logs["cross"] = float(l_cross.detach())
        if beta > 0 and cfg.w_contrastive > 0:
            d, m = (lambda u, v: code_distance(u, v, cfg.distance)), cfg.margin
            l_cont = (d(ia, ib) + F.relu(m - d(ba, bb))
                      + d(ba, bc) + F.relu(m - d(ia, ic))).mean()
            loss = loss + beta * cfg.w_contrastive * l_cont
            logs["cont"] = float(l_cont.detach())
        if cons:
            x_ab, x_ca = swapped[:n], swapped[3 * n:]
            i2, b2 = net.encode(torch.cat([x_ab, x_ca]))
            l_cons = 0.5 * (code_distance(i2[:n], ia, cfg.distance).mean()
                            + code_distance(b2[n:], ba, cfg.distance).mean())
            loss = loss + beta * cfg.w_consistency * l_cons
            logs["cons"] = float(l_cons.detach())
        loss.backward()
        opt.step()
        self.step += 1
        logs["loss"] = float(loss.detach())
        return logs


class MLVAETask(_DisentangledTask):
    """The ML-VAE step (Bouchacourt et al. 2018; thesis Eq. 4.4), maximising the ELBO.

    Batch: ``(B, G+1, 1, P, P)``; the first ``G`` images of every group show one identity. The
    identity posteriors of the group are multiplied (a product of Gaussians: precisions add,
    the mean is precision-weighted), one identity sample is drawn for the group and one blur
    sample per image, and every image is decoded from the pair. Loss: mean reconstruction loss
    plus ``kl_weight`` times (the blur KL of every image + the group's identity KL) divided by
    the pixels of the group's images.
    """

    def train_step(self, batch, optimizers):
        cfg = self.cfg
        imgs = batch[0][:, : cfg.group_size]
        b, g = imgs.shape[:2]
        x = imgs.reshape((b * g,) + imgs.shape[2:])
        net = self.models["net"]
        opt = self._begin(optimizers)
        idc, blur = net.encoder(x)
        ci, cb = net.id_channels, net.blur_channels
        mu_i, lv_i = idc[:, :ci], idc[:, ci:].clamp(-10.0, 10.0)
        mu_b, lv_b = blur[:, :cb], blur[:, cb:].clamp(-10.0, 10.0)
        mu_g, var_g = product_of_gaussians(mu_i.reshape((b, g) + mu_i.shape[1:]),
                                           lv_i.reshape((b, g) + lv_i.shape[1:]))
        z_i = mu_g + torch.sqrt(var_g) * torch.randn_like(mu_g)
        z_b = mu_b + torch.exp(0.5 * lv_b) * torch.randn_like(mu_b)
        z_i = z_i[:, None].expand((b, g) + z_i.shape[1:]).reshape(mu_i.shape)
        out = net.decode(z_i, z_b)
        l_rec = self.recon(out, x)
        kl_b = 0.5 * torch.sum(mu_b ** 2 + torch.exp(lv_b) - lv_b - 1.0)
        kl_i = 0.5 * torch.sum(mu_g ** 2 + var_g - torch.log(var_g) - 1.0)
        kl = (kl_b + kl_i) / float(x.numel())
        loss = l_rec + cfg.kl_weight * kl
        loss.backward()
        opt.step()
        self.step += 1
        return {"loss": float(loss.detach()), "rec": float(l_rec.detach()),
                "kl": float(kl.detach())}


# ============================================================================================
# the trained model
# ============================================================================================

@dataclass
class DisentangledModel:
    """A trained model: the network plus what is needed to deploy it.

    ``focus_code`` is the mean blur code of the in-focus images of the training identities
    (the buffer of the deploy module); ``split`` names the identities of each set.
    """

    net: DisentangledAE
    config: DisentangledConfig
    normalizer: PercentileNormalizer
    focus_code: np.ndarray
    split: dict[str, list[str]]
    result: TrainResult | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def multiple(self) -> int:
        return self.config.multiple

    def deploy(self) -> DisentangledDeploy:
        """The exported module: ``D(identity(x), focus_code)``, 2D -> 2D, same shape."""
        mod = DisentangledDeploy(**self.config.arch_kwargs())
        mod.ae.load_state_dict(self.net.state_dict())
        mod.focus_code.copy_(torch.as_tensor(self.focus_code, dtype=torch.float32))
        return mod.eval()

    def deploy_kwargs(self) -> dict[str, Any]:
        return self.config.arch_kwargs()

    def receptive_radius(self) -> int:
        return receptive_radius(**self.config.arch_kwargs())


def _device(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


def _pad_to(x: np.ndarray, mult: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad the last two axes at their ends to multiples of ``mult``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % mult, (-w) % mult
    if ph or pw:
        pad = [(0, 0)] * (x.ndim - 2) + [(0, ph), (0, pw)]
        x = np.pad(x, pad, mode="reflect" if min(h, w) > max(ph, pw) else "edge")
    return x, (h, w)


@torch.no_grad()
def encode_images(model: DisentangledModel, images: np.ndarray, *, batch: int = 16,
                  normalized: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Identity and blur codes (means for ML-VAE) of 2D images ``(M, Y, X)``.

    Images are normalised one by one with the model's percentiles (unless ``normalized``) and
    padded to a multiple of the network's downsampling. Returns ``(M, C_i, h, w)`` and
    ``(M, C_b)``.
    """
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 3:
        raise InputError(f"images must be (M, Y, X), got shape {x.shape}")
    if not normalized:
        x = _normalise_images(x, model.normalizer)
    x, _ = _pad_to(x, model.multiple)
    net = model.net.eval()
    dev = _device(net)
    ids, blurs = [], []
    for s in range(0, len(x), batch):
        i, b = net.encode(torch.from_numpy(x[s:s + batch, None]).to(dev))
        ids.append(i.cpu().numpy())
        blurs.append(b.cpu().numpy())
    return np.concatenate(ids), np.concatenate(blurs)


@torch.no_grad()
def decode_codes(model: DisentangledModel, identity: np.ndarray, blur: np.ndarray, *,
                 batch: int = 16) -> np.ndarray:
    """Decode identity maps ``(M, C_i, h, w)`` with blur codes ``(M, C_b)`` (or one ``(C_b,)``
    for all) to normalised images ``(M, h * 2**depth, w * 2**depth)``."""
    net = model.net.eval()
    dev = _device(net)
    idc = torch.as_tensor(np.asarray(identity, dtype=np.float32))
    bl = torch.as_tensor(np.asarray(blur, dtype=np.float32))
    if bl.ndim == 1:
        bl = bl[None].expand(len(idc), -1)
    out = [net.decode(idc[s:s + batch].to(dev), bl[s:s + batch].to(dev))[:, 0].cpu().numpy()
           for s in range(0, len(idc), batch)]
    return np.concatenate(out)


@torch.no_grad()
def deblur(model: DisentangledModel | DisentangledDeploy, image, *, axes: str = "YX",
           normalizer: PercentileNormalizer | None = None, batch: int = 8) -> np.ndarray:
    """Deblur a 2D image (``"YX"``) or every plane of a stack (``"ZYX"``) in-process, exactly as
    the exported package does (for benchmarks and tests; users run the package).

    The whole array is normalised with one pair of percentiles (``sharpstack predict``'s
    statistics over the whole input), padded to a multiple of the downsampling, run through the
    deploy module and cropped. Returns normalised intensities (float32, same shape).
    """
    ax = check_axes(axes, np.ndim(image), allowed=("YX", "ZYX"))
    if isinstance(model, DisentangledModel):
        normalizer = normalizer or model.normalizer
        mod, mult = model.deploy(), model.multiple
    else:
        mod, mult = model.eval(), 2 ** model.ae.depth
    normalizer = normalizer or PercentileNormalizer()
    arr = np.asarray(image)
    if not np.all(np.isfinite(arr)):
        raise InputError("the image contains NaN or infinite values; remove them first")
    x = normalizer.before(arr)
    planes = x[None] if ax == "YX" else x
    xp, (h, w) = _pad_to(planes, mult)
    dev = next(mod.parameters()).device
    out = np.empty(xp.shape, dtype=np.float32)
    for s in range(0, len(xp), batch):
        out[s:s + batch] = mod(torch.from_numpy(
            np.ascontiguousarray(xp[s:s + batch, None])).to(dev))[:, 0].cpu().numpy()
    out = out[:, :h, :w]
    return out[0] if ax == "YX" else out


def reconstruct(model: DisentangledModel, images: np.ndarray) -> np.ndarray:
    """``D(E(x))`` of 2D images ``(M, Y, X)`` (each normalised by its own percentiles);
    normalised output of the same shape."""
    x = np.asarray(images, dtype=np.float32)
    idc, bl = encode_images(model, x)
    return decode_codes(model, idc, bl)[:, : x.shape[1], : x.shape[2]]


# ============================================================================================
# training
# ============================================================================================

def _mean_focus_code(model: DisentangledModel, series: DefocusSeries, idx: Sequence[int]
                     ) -> np.ndarray:
    imgs = series.images[list(idx), series.focus[list(idx)]]
    _, blur = encode_images(model, imgs)
    return blur.mean(axis=0).astype(np.float32)


def train_disentangled(series: DefocusSeries, config: DisentangledConfig, *,
                       out_dir: str | Path | None = None, resume: bool = False,
                       progress: bool = False, workers: int = 0) -> DisentangledModel:
    """Train a disentangled-deblurring model on a defocus series.

    Identities are split by :func:`split_identities` (``config.val_fraction``,
    ``config.test_fraction``, ``config.seed``); training groups come from the training
    identities only, the validation loss (deblurring: ``gamma(D(I_blurry, B_focus),
    in-focus)``) from the validation identities. The returned model holds the network of the
    best validation epoch and the mean in-focus blur code of the training identities.

    Parameters
    ----------
    series : DefocusSeries
    config : DisentangledConfig
    out_dir, resume, progress
        Passed to :func:`sharpstack.training.fit`.
    workers : int
        DataLoader worker processes building the groups.
    """
    if not isinstance(series, DefocusSeries):
        raise TypeError("series must be a DefocusSeries (see read_defocus_series)")
    mult = config.multiple
    ny, nx = series.images.shape[2:]
    if min(ny, nx) < config.patch_size:
        raise InputError(f"images of {ny}x{nx} pixels are smaller than patch_size "
                         f"{config.patch_size}; use a smaller patch size (a multiple of {mult})")
    if series.n_planes < config.group_size and config.variant == "mlvae":
        raise InputError(f"group_size {config.group_size} exceeds the {series.n_planes} planes "
                         f"of the series; lower group_size")
    split = split_identities(series.n_identities, val_fraction=config.val_fraction,
                             test_fraction=config.test_fraction, seed=config.seed)
    normalizer = PercentileNormalizer(config.pmin, config.pmax)
    norm = _normalise_images(series.images, normalizer)
    group = config.group_size if config.variant == "mlvae" else 2
    total = config.epochs * config.steps_per_epoch * config.batch_size
    train_ds = GroupDataset(norm, series.focus, split["train"], patch_size=config.patch_size,
                            group_size=group, p_focus=config.p_focus, length=max(total, 1),
                            seed=config.seed, augment=config.augment)
    # validation: (blurry, in-focus) pairs of the validation identities (no partner needed)
    val_ds = GroupDataset(norm, series.focus, split["val"], patch_size=config.patch_size,
                          group_size=2, length=config.val_items, seed=config.seed + 7919,
                          augment=False, force_focus=True, need_other=False)
    torch.manual_seed(config.seed)
    net = DisentangledAE(**config.arch_kwargs())
    recon = _recon_loss(config)
    task_cls = MLVAETask if config.variant == "mlvae" else ManifoldTask
    task = task_cls(net, config, recon)
    if isinstance(recon, nn.Module):
        from ..training import pick_device

        recon.to(pick_device(config.device))
    names = {k: [series.names[i] for i in v] for k, v in split.items()}
    record = {"disentangled": config.model_dump(), "split": names,
              "focus": [int(f) for f in series.focus], "n_planes": series.n_planes,
              "image_size": [int(ny), int(nx)]}
    result = fit(task, TrainData(train_ds, val_ds, workers=workers), config.train_config(),
                 out_dir=out_dir, resume=resume, progress=progress, config_record=record)
    model = DisentangledModel(net=task.models["net"].eval(), config=config,
                              normalizer=normalizer, focus_code=np.zeros(0, np.float32),
                              split=names, result=result)
    model.focus_code = _mean_focus_code(model, series, split["train"])
    return model


# ============================================================================================
# the plug-in: disentangled deblurring through the method interface (methods/_base.py)
# ============================================================================================

def shared_zscans_dir() -> Path:
    """The ZSE-GAN paper's z-scans (``../shared/data/zse_gan/zscans``, or
    ``$SHARPSTACK_ZSEGAN_DATA/zscans``): 80 real defocus series of 29 planes, in focus at
    plane 15. Read in place, never copied into runs or packages."""
    env = os.environ.get("SHARPSTACK_ZSEGAN_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[3].parent / "shared" / \
        "data" / "zse_gan"
    if not (root / "zscans").is_dir():
        raise InputError(f"the real defocus series (zse_gan/zscans) is not at {root}; set "
                         f"SHARPSTACK_ZSEGAN_DATA to the zse_gan folder")
    return root / "zscans"


def is_shared_data(path: str | os.PathLike) -> bool:
    """Is ``path`` inside the project's shared data folder (``../shared/data``), whose files
    may not be redistributed in packages?"""
    shared = Path(__file__).resolve().parents[3].parent / "shared" / "data"
    try:
        Path(path).resolve().relative_to(shared.resolve())
        return True
    except ValueError:
        return False


class DisentangledSettings(DisentangledConfig):
    """What ``sharpstack train disentangled`` takes: the training config plus data options."""

    focus_plane: int | None = Field(None, ge=1, le=100000, description="1-based in-focus "
                                    "plane of every stack (default: found per stack by the "
                                    "focus measure FM)")

    def config(self) -> DisentangledConfig:
        return DisentangledConfig(**self.model_dump(exclude={"focus_plane"}))


class DisentangledSynth(BaseModel):
    """``sharpstack synth disentangled``: a synthetic widefield defocus series (see
    :func:`synthetic_series`) plus one more field as the sample (a defocused 2D plane and its
    whole series), with known in-focus images."""

    model_config = ConfigDict(extra="forbid")

    identities: int = Field(24, ge=4, le=10000, description="fields of view (identities) of "
                            "the training series")
    size: int = Field(96, ge=32, le=2048, description="lateral size of every field (pixels)")
    dz_max: float = Field(3.0, gt=0, le=50, description="largest defocus above and below "
                          "focus (micrometres)")
    dz_step: float = Field(0.5, gt=0, le=10, description="plane spacing (micrometres)")
    pixel_um: float = Field(0.2, gt=0, le=10, description="pixel size (micrometres)")
    na: float = Field(1.0, gt=0, lt=1.33, description="objective NA (oil objective, water "
                      "sample)")
    photons: float | None = Field(200.0, gt=0, description="photons at the brightest pixel "
                                  "of the in-focus series (None: no shot noise)")
    read_noise: float = Field(0.01, ge=0, le=1, description="Gaussian read noise")
    sample_dz: float = Field(2.0, description="defocus of the 2D sample plane (micrometres)")
    seed: int = Field(0, ge=0, description="random seed")

    @model_validator(mode="after")
    def _check(self) -> "DisentangledSynth":
        n = self.dz_max / self.dz_step
        if abs(n - round(n)) > 1e-6 or round(n) < 1:
            raise ValueError(f"dz_max {self.dz_max} must be a positive multiple of dz_step "
                             f"{self.dz_step}")
        k = self.sample_dz / self.dz_step
        if abs(k - round(k)) > 1e-6 or abs(self.sample_dz) > self.dz_max:
            raise ValueError(f"sample_dz {self.sample_dz} must be one of the planes (a multiple "
                             f"of dz_step within +-dz_max)")
        return self

    def dz(self) -> list[float]:
        n = int(round(self.dz_max / self.dz_step))
        return [round(k * self.dz_step, 6) for k in range(-n, n + 1)]


def _parse_ints(text) -> list[int]:
    if isinstance(text, (list, tuple)):
        return [int(v) for v in text]
    try:
        return [int(v) for v in str(text).replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise InputError(f"expected integers separated by commas, like 16,32,64; got "
                         f"{text!r}") from None


def _photons(value: float) -> float | None:
    return None if value == 0 else value


def _score_pair(target: np.ndarray, image: np.ndarray) -> tuple[float, float]:
    from ..metrics import psnr_normalized, ssim_normalized

    return psnr_normalized(target, image), ssim_normalized(target, image)


class Disentangled(Method):
    """Disentangled-representation deblurring behind the method interface."""

    name = "disentangled"
    title = "Disentangled-representation deblurring (Ritsema, MSc thesis, U. Twente 2023)"
    summary = ("deblurs 2D images: an autoencoder with separate identity and blur codes, "
               "trained on defocus series, decodes an image's identity with an in-focus blur "
               "code")
    settings_model = DisentangledSettings
    export_module = "sharpstack.export.disentangled"
    inputs = (Input("series", "Defocus series: a folder of z-stacks (one field of view each, "
                    "ZYX, all the same shape) or one such stack.", kind="file_or_folder"),)
    options = (
        Option("variant", "variant", str, "manifold1d (1-D blur code, the thesis's best), "
               "manifold, or mlvae (the ML-VAE baseline)."),
        Option("focus-plane", "focus_plane", int, "1-based in-focus plane of every stack "
               "(default: the sharpest plane by the focus measure FM)."),
        Option("channels", "channels", str, "Channels per encoder block, e.g. 16,32,64 (the "
               "thesis: 64,128,256,512).", parse=_parse_ints),
        Option("id-channels", "id_channels", int, "Channels of the identity code (thesis 512)."),
        Option("blur-channels", "blur_channels", int, "Length of the blur code (manifold, "
               "mlvae; default: id-channels)."),
        Option("patch-size", "patch_size", int, "Training crop (multiple of 2**blocks)."),
        Option("epochs", "epochs", int, "Epochs (the thesis: 400)."),
        Option("steps-per-epoch", "steps_per_epoch", int, "Batches per epoch."),
        Option("batch-size", "batch_size", int, "Groups per batch."),
        Option("lr", "lr", float, "Initial Adam learning rate (x0.98 every 5 epochs)."),
        Option("margin", "margin", float, "Contrastive margin (the thesis: 0.6)."),
        Option("distance", "distance", str, "Code distance: rms or unit."),
        Option("beta-full", "beta_full", float, "Fraction of training at which beta reaches 1."),
        Option("w-consistency", "w_consistency", float, "Consistency-loss weight."),
        Option("w-contrastive", "w_contrastive", float, "Contrastive-loss weight (0: ablation)."),
        Option("w-cross", "w_cross", float, "Cross-reconstruction weight (0: ablation)."),
        Option("recon-loss", "recon_loss", str, "ssim_l1 (default, no downloads) or vgg."),
        Option("vgg-weights", "vgg_weights", str, "State dict of torchvision's vgg16 "
               "features for --recon-loss vgg."),
        Option("kl-weight", "kl_weight", float, "ML-VAE KL weight."),
        Option("group-size", "group_size", int, "ML-VAE images per group."),
        Option("p-focus", "p_focus", float, "Probability that a pair's partner is in focus."),
        Option("val-fraction", "val_fraction", float, "Fraction of fields for validation."),
        Option("test-fraction", "test_fraction", float, "Fraction of fields held out."),
        Option("patience", "patience", int, "Early stopping patience (epochs)."),
        Option("seed", "seed", int, "Random seed."),
        Option("device", "device", str, "cpu, cuda, ...; default: GPU if present."),
    )
    deployables = (
        Deployable("deblur2d", "one 2D image (or each plane of a stack) in, the deblurred "
                   "image of the same size out", ("bioimageio", "deepimagej", "ilastik",
                                                  "qupath")),
    )
    synth_model = DisentangledSynth
    synth_options = (
        Option("identities", "identities", int, "Fields of view of the training series."),
        Option("size", "size", int, "Lateral size (pixels)."),
        Option("dz-max", "dz_max", float, "Largest defocus (micrometres)."),
        Option("dz-step", "dz_step", float, "Plane spacing (micrometres)."),
        Option("pixel", "pixel_um", float, "Pixel size (micrometres)."),
        Option("na", "na", float, "Objective NA."),
        Option("photons", "photons", float, "Photons at the brightest pixel; 0 = no shot "
               "noise.", parse=_photons),
        Option("read-noise", "read_noise", float, "Gaussian read noise."),
        Option("sample-dz", "sample_dz", float, "Defocus of the 2D sample (micrometres)."),
        Option("seed", "seed", int, "Random seed."),
    )
    demo = Demo(
        synth={"identities": 24, "size": 128, "dz_max": 3.0, "dz_step": 0.5, "seed": 0},
        settings={"variant": "manifold1d", "channels": [8, 16, 32], "id_channels": 16,
                  "patch_size": 48, "epochs": 12, "steps_per_epoch": 40, "batch_size": 8,
                  "p_focus": 0.5, "seed": 0},
        predict_with="deblur2d",
        about=("1-D-blur-code manifold model trained on a synthetic widefield defocus series "
               "(24 nuclei + membranes fields of 128x128 px, 13 planes from -3 to +3 um, NA 1.0, "
               "Poisson + Gaussian noise), reduced network (8-16-32 channels, 48 px crops, "
               "480 steps); a held-apart field defocused by 2 um deblurred by the package; "
               "PSNR/SSIM against its in-focus plane (CARE protocol)."),
    )
    bench_options = (
        Option("dataset", "datasets", list[str], "synthetic, real (repeat; default both).",
               parse=tuple),
        Option("model", "models", list[str], "mlvae, manifold, manifold1d, no_cross, "
               "no_contrastive (repeat; default all).", parse=tuple),
        Option("epochs", "epochs", int, "Epochs per model (the thesis: 400)."),
        Option("steps", "steps_per_epoch", int, "Batches per epoch."),
        Option("batch", "batch_size", int, "Groups per batch."),
        Option("patch", "patch_size", int, "Training crop."),
        Option("channels", "channels", str, "Encoder channels, e.g. 16,32,64.",
               parse=_parse_ints),
        Option("id-channels", "id_channels", int, "Identity-code channels."),
        Option("blur-channels", "blur_channels", int, "Blur-code length of manifold/mlvae."),
        Option("synthetic-fields", "n_synthetic", int, "Fields of the synthetic series."),
        Option("jobs", "jobs", int, "Trainings at once in worker processes (2 on 2 cores)."),
        Option("device", "device", str, "cpu or cuda."),
        Option("seed", "seed", int, "Random seed."),
    )
    citations = (
        {"text": "Ritsema, S. A Disentangled Representation Learning Approach for Deblurring "
                 "Microscopy Images. MSc thesis, University of Twente, 2023 (University of "
                 "Twente student theses repository).",
         "url": "https://essay.utwente.nl/"},
        {"text": "Fumero, Cosmo, Melzi & Rodola. Learning disentangled representations via "
                 "product manifold projection. ICML 2021.",
         "doi": "10.48550/arXiv.2103.01638"},
        {"text": "Bouchacourt, Tomioka & Nowozin. Multi-Level Variational Autoencoder: "
                 "Learning Disentangled Representations from Grouped Observations. arXiv "
                 "1705.08841, 2017 (AAAI 2018).",
         "doi": "10.48550/arXiv.1705.08841"},
    )

    # ------------------------------------------------------------------ training
    def train(self, inputs: Sequence[Path], settings: DisentangledSettings, *, out_dir: Path,
              resume: bool = False, progress: bool = False,
              voxel_size: Mapping[str, float] | None = None) -> Trained:
        (src,) = inputs
        focus = settings.focus_plane - 1 if settings.focus_plane else None
        series = read_defocus_series(src, focus=focus, voxel_size=voxel_size)
        if voxel_size and voxel_size.get("z"):
            series.plane_spacing = float(voxel_size["z"])
        model = train_disentangled(series, settings.config(), out_dir=out_dir, resume=resume,
                                   progress=progress)
        spacing = (f", plane spacing {series.plane_spacing:g} um" if series.plane_spacing
                   else "")
        record = {
            "normalizer": {"pmin": model.normalizer.pmin, "pmax": model.normalizer.pmax,
                           "eps": model.normalizer.eps},
            "split": model.split, "focus": [int(f) for f in series.focus],
            "focus_found": settings.focus_plane is None,
            "series_source": str(Path(src).resolve()),
            "shared_data": is_shared_data(src),
            "training_data": (
                f"{series.n_identities} defocus series of {series.n_planes} planes of "
                f"{series.images.shape[2]}x{series.images.shape[3]} px from "
                f"{Path(src).name}{spacing}; in-focus plane "
                + (f"{settings.focus_plane} (given)" if settings.focus_plane else
                   "found per series by the focus measure FM")
                + f"; split by field (seed {settings.seed}): {len(model.split['train'])} "
                  f"training, {len(model.split['val'])} validation, "
                  f"{len(model.split['test'])} held out"),
        }
        tensors = {"net": model.net.state_dict(),
                   "focus": {"code": torch.from_numpy(model.focus_code.copy())}}
        return Trained(settings=settings, model=model, result=model.result, record=record,
                       tensors=tensors)

    def load(self, settings: DisentangledSettings, record, tensors, result) -> Trained:
        cfg = settings.config()
        net = DisentangledAE(**cfg.arch_kwargs())
        try:
            net.load_state_dict(tensors["net"])
            code = tensors["focus"]["code"].detach().cpu().numpy().astype(np.float32)
        except (KeyError, RuntimeError) as exc:
            raise InputError(f"the run's weights do not fit its disentangled settings "
                             f"({str(exc).splitlines()[0]}); the run folder is damaged: train "
                             "again") from None
        if code.shape != (cfg.code_blur_channels,):
            raise InputError(f"the run's in-focus blur code has shape {code.shape}, expected "
                             f"({cfg.code_blur_channels},); the run folder is damaged")
        model = DisentangledModel(net=net.eval(), config=cfg,
                                  normalizer=PercentileNormalizer(**record["normalizer"]),
                                  focus_code=code, split=dict(record.get("split", {})),
                                  result=result)
        return Trained(settings=settings, model=model, result=result, record=record,
                       tensors=tensors)

    # ------------------------------------------------------------------ data, demo
    def synthesize(self, options: DisentangledSynth) -> SynthResult:
        from ..io import as_dataarray

        o = options
        dz = o.dz()
        series, gt = synthetic_series(o.identities + 1, o.size, dz_um=dz,
                                      pixel_size_um=o.pixel_um, na=o.na,
                                      poisson_peak=o.photons, gauss_sigma=o.read_noise,
                                      seed=o.seed)
        vs = {"z": o.dz_step, "y": o.pixel_um, "x": o.pixel_um}
        stacks = [as_dataarray(series.images[i], "ZYX", vs) for i in range(o.identities)]
        sample_stack = series.images[-1]
        focus = int(series.focus[-1])
        k = focus + int(round(o.sample_dz / o.dz_step))
        return SynthResult(
            arrays={"series": stacks,
                    "sample": as_dataarray(sample_stack[k], "YX", {"y": o.pixel_um,
                                                                   "x": o.pixel_um}),
                    "sample_series": as_dataarray(sample_stack, "ZYX", vs),
                    "sample_infocus": as_dataarray(sample_stack[focus], "YX",
                                                   {"y": o.pixel_um, "x": o.pixel_um})},
            inputs=("series",), sample="sample",
            settings={"focus_plane": focus + 1},
            info={"source": f"synthetic widefield defocus series: {o.identities} fields of "
                            f"{o.size}x{o.size} px, {len(dz)} planes dz = {dz[0]:g}..{dz[-1]:g}"
                            f" um (step {o.dz_step:g}), NA {o.na}, pixel {o.pixel_um} um, "
                            f"photons {o.photons}, read noise {o.read_noise}",
                  "sample_dz_um": o.sample_dz, "focus_plane": focus + 1},
            references={"sample": sample_stack[k], "sample_series": sample_stack,
                        "sample_infocus": sample_stack[focus], "sample_field": gt[-1],
                        "focus": focus})

    def evaluate(self, trained: Trained, synth: SynthResult) -> dict[str, Any]:
        model: DisentangledModel = trained.model
        stack = np.asarray(synth.references["sample_series"])
        f = int(synth.references["focus"])
        target = stack[f]
        pin, pout, sin, sout = [], [], [], []
        for q in range(len(stack)):
            if q == f:
                continue
            a = _score_pair(target, stack[q])
            b = _score_pair(target, deblur(model, stack[q]))
            pin.append(a[0]), sin.append(a[1]), pout.append(b[0]), sout.append(b[1])
        return {"PSNR vs in-focus plane, blurry planes (dB, mean)": float(np.mean(pin)),
                "PSNR vs in-focus plane, deblurred (dB, mean)": float(np.mean(pout)),
                "SSIM vs in-focus plane, blurry planes (mean)": float(np.mean(sin)),
                "SSIM vs in-focus plane, deblurred (mean)": float(np.mean(sout)),
                "data": f"every out-of-focus plane of a held-apart synthetic field "
                        f"({synth.info.get('source', '')})"}

    def score(self, synth: SynthResult, restored) -> dict[str, float]:
        target = np.asarray(synth.references["sample_infocus"])
        blurry = np.asarray(synth.references["sample"])
        out = np.asarray(restored, dtype=np.float32)
        p_in, s_in = _score_pair(target, blurry)
        p_out, s_out = _score_pair(target, out)
        return {"psnr_input_db": p_in, "psnr_restored_db": p_out, "ssim_input": s_in,
                "ssim_restored": s_out}

    def figure(self, synth: SynthResult, restored) -> list[tuple[str, Any]]:
        return [(f"input (dz {synth.info.get('sample_dz_um')} um)",
                 PercentileNormalizer().before(np.asarray(synth.references["sample"]))),
                ("deblurred (package)", np.asarray(restored)),
                ("in-focus plane",
                 PercentileNormalizer().before(np.asarray(synth.references["sample_infocus"])))]

    # ------------------------------------------------------------------ benchmark
    def bench(self, out_dir: Path, *, progress: bool = False, **options: Any) -> dict[str, Any]:
        from ..bench.disentangled import run_disentangled_bench

        return run_disentangled_bench(out_dir, progress=progress, **options)
