"""DQLR's training data: the user's z-stacks, checked and normalised, and seeded clips of
consecutive slices (random lateral patches, flips and 90-degree rotations) for training and
validation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..._axes import check_axes
from ...errors import InputError
from ...normalize import PercentileNormalizer
from ...training import TrainData
from .settings import DQLRConfig, min_slices

__all__ = ["check_stack", "prepare_stacks", "DQLRClips", "make_datasets",
           "read_training_stacks"]


def check_stack(stack: Any, axes: str, name: str) -> np.ndarray:
    """``stack`` as an array after checking what DQLR needs: a numeric, finite z-stack with
    ``axes`` ZYX (``name`` names it in the errors)."""
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
        arr = check_stack(s, axes, name)
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
    """Training and validation clips from normalised stacks (:func:`prepare_stacks`):
    :class:`DQLRClips` (``pairs="self"``, the paper's) or
    :class:`~.shallow_deep.ShallowDeepClips` (``pairs="shallow_to_deep"``, pairs of a
    shallow clip degraded to a deeper depth and the clip itself).

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
    if config.pairs == "shallow_to_deep":
        from .shallow_deep import ShallowDeepClips, estimate_depth_model

        t = config.window + config.n_predict
        models = {id(s): estimate_depth_model(s, shallow_fraction=config.shallow_fraction,
                                              min_shallow=t) for s in stacks}
        train = ShallowDeepClips(train_stacks, [models[id(s)] for s in train_stacks],
                                 length=config.n_clips, rows=train_rows, seed=config.seed,
                                 augment=config.augment, axial_ratio=config.axial_ratio,
                                 **common)
        val = ShallowDeepClips(val_stacks, [models[id(s)] for s in val_stacks],
                               length=config.val_clips, rows=val_rows,
                               seed=config.seed + 1_000_003, augment=False,
                               axial_ratio=config.axial_ratio, **common)
        return TrainData(train=train, val=val)
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
    from ...io import read_stack, stack_file

    p = Path(path)
    if not stack_file(p).exists():
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
