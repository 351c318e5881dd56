"""ZSE-GAN's training data: z-scans and 2D image sets read from folders (axes checked), the
seeded split, normalisation to [-1, 1], histogram matching of the in-focus set, and the
training and validation datasets (random crops, in-focus and vertical sections)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..._axes import check_axes
from ...errors import InputError
from ...normalize import PercentileNormalizer

__all__ = ["read_zscans", "read_images2d", "split_zscans", "match_histogram",
           "as_unit_tensors", "ZScanTrainSet", "ZScanValSet", "vertical_sections",
           "stack_files", "held_apart_files", "shared_data_dir"]


# ------------------------------------------------------------------------------------- files
def stack_files(folder: Path) -> list[Path]:
    from ...io import READ_SUFFIXES

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
    from ...io import READ_SUFFIXES, check_finite, check_not_constant, read_stack

    p = _folder(folder, "the z-scan")
    files = stack_files(p)
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
    from ...io import READ_SUFFIXES, check_finite, check_not_constant, read_stack

    p = _folder(folder, f"the {what}")
    files = stack_files(p)
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


def as_unit_tensors(arrays: Sequence[np.ndarray], norm: PercentileNormalizer
                    ) -> list[torch.Tensor]:
    return [torch.from_numpy(_to_unit(np.asarray(a), norm)) for a in arrays]


def shared_data_dir() -> Path:
    """The paper's z-scans and in-focus images (``zse_gan/`` of the project's shared data, see
    :mod:`sharpstack.shared_data`), read in place: never copied into runs or packages."""
    from ...shared_data import shared_dataset

    try:
        return shared_dataset("zse_gan", "zscans", "infocus")
    except InputError as exc:
        raise InputError(f"{exc}; or use --source synthetic") from None


def held_apart_files(folder: Path, limit: int | None, val_count: int, seed: int) -> list[Path]:
    files = stack_files(folder)
    if limit:
        files = files[:limit]
    _, val = split_zscans(len(files), val_count, seed)
    return [files[i] for i in val]
