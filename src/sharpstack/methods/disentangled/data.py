"""Training data of disentangled deblurring: defocus series (identities x focal planes, each
with its in-focus plane) read from stacks or folders (axes checked, focus found by FM), the
split by identity, normalisation, the group dataset, and where the shared data lie."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..._axes import check_axes
from ...errors import InputError
from ...normalize import PercentileNormalizer

__all__ = ["DefocusSeries", "find_focus", "series_from_stacks", "read_defocus_series",
           "split_identities", "normalise_images", "GroupDataset", "shared_zscans_dir",
           "is_shared_data"]

#: file suffixes read as one stack each from a folder (io.read_stack reads them)
_STACK_SUFFIXES = (".tif", ".tiff", ".npy", ".zarr")


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
    from ...metrics import focus_measure

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
        from ...io import check_not_constant

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
    from ...io import read_stack, stack_file, with_voxel_size

    if isinstance(path, (str, os.PathLike)):
        p = Path(path)
        if not stack_file(p).exists():
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


def normalise_images(images: np.ndarray, normalizer: PercentileNormalizer) -> np.ndarray:
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
    the partner; validation uses only the first two images). With ``with_focus``, one more
    image ends every group: the in-focus plane of ``i`` at the crop and orientation of the
    others (the target of the supervised steps).

    Returns ``(images (N, 1, P, P) float32, defocus (N,) int64, identity (N,) int64)``,
    ``N = G + 1`` (``G + 2`` with ``with_focus``).
    """

    def __init__(self, images: np.ndarray, focus: np.ndarray, identities: Sequence[int], *,
                 patch_size: int, group_size: int = 2, p_focus: float = 0.25,
                 length: int = 1000, seed: int = 0, augment: bool = True,
                 force_focus: bool = False, need_other: bool = True,
                 with_focus: bool = False) -> None:
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
        self.with_focus = bool(with_focus)
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
        dz = [q - f for q in chosen] + [dz0]
        ident = [i] * len(chosen) + [j]
        if self.with_focus:
            group.append(tf(self.images[i, f, ys, xs]))
            dz.append(0)
            ident.append(i)
        imgs = np.stack([np.ascontiguousarray(a) for a in group])[:, None].astype(np.float32)
        dz, ident = np.array(dz, dtype=np.int64), np.array(ident, dtype=np.int64)
        return torch.from_numpy(imgs), torch.from_numpy(dz), torch.from_numpy(ident)


def shared_zscans_dir() -> Path:
    """The real defocus series of the project's shared data (``zse_gan/zscans``, see
    :mod:`sharpstack.shared_data`): 80 z-scans of 29 planes, in focus at plane 15. Read in
    place, never copied into runs or packages."""
    from ...shared_data import shared_dataset

    return shared_dataset("zse_gan", "zscans") / "zscans"


def is_shared_data(path: str | os.PathLike) -> bool:
    """Is ``path`` inside the project's shared data folder, whose files may not be
    redistributed in packages?"""
    from ...shared_data import is_shared_data as inside

    return inside(path)
