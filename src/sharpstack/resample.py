"""Resampling along one axis by any factor, integer or not, and stacks resampled to isotropic
voxels (``sharpstack resample``).

One sampling convention everywhere (the one of the linear upsampling of the training-pair code,
which these functions reproduce exactly for an integer factor): upsampling by ``f`` puts
output sample ``i`` at input coordinate ``i / f`` (so ``output[0] == input[0]``), holds the
last input value beyond the last input sample, and gives ``ceil(n * f)`` samples;
subsampling by ``f`` keeps the (linearly interpolated) values at ``0, f, 2f, ...``.

A factor is a float; a factor that is an integer up to round-off is returned as an ``int``
by :func:`exact_factor`, so that integer factors keep their exact integer code paths.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["MIN_FACTOR", "exact_factor", "factor_fraction", "upsample", "subsample",
           "isotropic_factor", "resample_to_isotropic", "resample_file"]

MIN_FACTOR = 1.5
"""Below this z/xy ratio a stack counts as (nearly) isotropic: nothing for an axial
restoration to recover, and resampling it would only interpolate."""


def exact_factor(value: Any, *, what: str = "factor") -> int | float:
    """``value`` as a finite factor > 0: an ``int`` when it is an integer up to 1e-6
    (relative), otherwise a float rounded to 6 significant decimals.

    >>> exact_factor(2.5000000000000004), exact_factor(3.0), exact_factor(0.2 / 0.08)
    (2.5, 3, 2.5)
    """
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(f) or f <= 0:
        raise InputError(f"{what} must be a positive number, got {value!r}")
    r = round(f)
    if r >= 1 and abs(f - r) <= 1e-6 * f:
        return int(r)
    return float(f"{f:.6g}")


def factor_fraction(factor: float, max_denominator: int = 8) -> Fraction:
    """The nearest fraction ``p/q`` with ``q <= max_denominator`` (an integer factor is
    itself): what a network with integer strides can realise (upsample by ``p``, keep every
    ``q``-th sample)."""
    return Fraction(exact_factor(factor)).limit_denominator(max_denominator)


def _axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise InputError(f"axis {axis} out of range for an array with {ndim} dimensions")
    return axis % ndim


def _interp(arr: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``arr`` at (non-negative) ``coords`` along ``axis``; beyond
    the last sample the last value is held."""
    n = arr.shape[axis]
    c = np.clip(coords, 0, n - 1)
    i0 = np.floor(c).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (c - i0).astype(np.float32)
    shape = [1] * arr.ndim
    shape[axis] = len(c)
    w = w.reshape(shape)
    a = np.take(arr, i0, axis=axis).astype(np.float32, copy=False)
    b = np.take(arr, i1, axis=axis).astype(np.float32, copy=False)
    return np.ascontiguousarray(a * (np.float32(1) - w) + b * w, dtype=np.float32)


def upsample(arr: np.ndarray, factor: float, axis: int = 0) -> np.ndarray:
    """Linear upsampling by ``factor`` (>= 1, any real) along ``axis``.

    Output ``i`` sits at input coordinate ``i / factor``; ``ceil(n * factor)`` samples;
    the last input value is held beyond the last input sample. For an integer factor this is
    the linear upsampling of the training-pair code, value for value.

    >>> upsample(np.array([0., 5., 10.]), 2.5)
    array([ 0.,  2.,  4.,  6.,  8., 10., 10., 10.], dtype=float32)
    """
    a = np.asarray(arr)
    ax = _axis(axis, a.ndim)
    f = exact_factor(factor)
    n = a.shape[ax]
    if n == 0:
        raise InputError("no samples along the axis to upsample")
    n_out = math.ceil(n * f - 1e-9)
    return _interp(a, np.arange(n_out, dtype=np.float64) / f, ax)


def subsample(arr: np.ndarray, factor: float, axis: int = 0) -> np.ndarray:
    """The values at ``0, f, 2f, ...`` (< n) along ``axis``, linearly interpolated between
    samples for a non-integer ``factor`` (plain slicing ``[::f]`` for an integer one)."""
    a = np.asarray(arr)
    ax = _axis(axis, a.ndim)
    f = exact_factor(factor)
    if isinstance(f, int):
        sl = [slice(None)] * a.ndim
        sl[ax] = slice(0, None, f)
        return np.ascontiguousarray(a[tuple(sl)], dtype=np.float32)
    n = a.shape[ax]
    k = np.arange(math.floor((n - 1) / f + 1e-9) + 1, dtype=np.float64)
    return _interp(a, k * f, ax)


def isotropic_factor(voxel_size: dict[str, float]) -> int | float:
    """z spacing / lateral pixel size (the mean of y and x) as an exact factor."""
    return exact_factor(voxel_size["z"] / ((voxel_size["y"] + voxel_size["x"]) / 2),
                        what="z spacing / pixel size")


def resample_to_isotropic(data, *, factor: float | None = None):
    """A ZYX DataArray resampled along z to isotropic voxels (z spacing = pixel size).

    ``factor`` (z spacing / pixel size) defaults to the calibration's. The result is float32
    (or the input's uint8/uint16, rounded), its ``voxel_size`` z = the input's z / factor.
    """
    from .io import as_dataarray

    f = _factor_of(data, factor)
    out = upsample(np.asarray(data.values), f, axis=0)
    out = _cast_like(out, data.dtype)
    return as_dataarray(out, "ZYX", _out_voxel_size(data, f))


def _factor_of(data, factor: float | None) -> int | float:
    from .io import require_voxel_size

    if tuple(data.dims) != ("z", "y", "x"):
        raise InputError(f"resampling to isotropic voxels needs a one-channel z-stack (ZYX), "
                         f"got axes {''.join(data.dims).upper()}; split channels or time "
                         "points first")
    if factor is None:
        vs = require_voxel_size(data, "zyx", purpose="the z/xy ratio to resample by",
                                alternative="give the ratio with --factor F")
        f = isotropic_factor(vs)
    else:
        f = exact_factor(factor, what="--factor")
    if f < MIN_FACTOR:
        raise InputError(f"z spacing / pixel size = {f:g}: the stack is already (nearly) "
                         f"isotropic (ratio < {MIN_FACTOR}); nothing to resample (check "
                         "--voxel-size or --factor)")
    return f


def _out_voxel_size(data, f: float) -> dict[str, float]:
    vs = dict(data.attrs.get("voxel_size") or {})
    if "z" in vs:
        vs["z"] = vs["z"] / f
    elif "x" in vs:
        vs["z"] = vs["x"]
    return vs


def _cast_like(out: np.ndarray, dtype) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt in (np.uint8, np.uint16):
        info = np.iinfo(dt)
        return np.clip(np.rint(out), info.min, info.max).astype(dt)
    return out.astype(np.float32, copy=False)


def resample_file(src: str | os.PathLike, dst: str | os.PathLike, *,
                  factor: float | None = None, voxel_size: dict[str, float] | None = None,
                  overwrite: bool = False, slab: int = 16) -> dict[str, Any]:
    """Resample the stack ``src`` along z to isotropic voxels and write it to ``dst``.

    The calibration is written (z spacing = the input's divided by the factor), so Fiji shows
    the isotropic voxel size. An ImageJ TIFF output is written ``slab`` output slices at a
    time into a memory map (a large input TIFF is read lazily, two input slices per output
    slice), so memory does not grow with the stack; other formats are written in one go.

    Returns ``{"path", "factor", "shape_in", "shape_out", "voxel_size"}``.
    """
    from .io import read_stack, with_voxel_size
    from .io.atomic import prepare_target

    src, dst = Path(src), Path(dst)
    data = with_voxel_size(read_stack(src), voxel_size)
    f = _factor_of(data, factor)
    vs = _out_voxel_size(data, f)
    n = data.shape[0]
    n_out = math.ceil(n * f - 1e-9)
    shape = (n_out, *data.shape[1:])
    dtype = data.dtype if np.dtype(data.dtype) in (np.uint8, np.uint16) else np.float32
    name = dst.name.lower()
    if name.endswith((".tif", ".tiff")) and not name.endswith((".ome.tif", ".ome.tiff")):
        prepare_target(dst, overwrite, "TIFF")
        _stream_tiff(data, dst, f, shape, dtype, vs, slab)
    else:
        from .io import write_stack

        write_stack(dst, resample_to_isotropic(data, factor=f), overwrite=overwrite)
    return {"path": dst, "factor": f, "shape_in": tuple(data.shape), "shape_out": shape,
            "voxel_size": vs}


def _stream_tiff(data, dst: Path, f: float, shape, dtype, vs, slab: int) -> None:
    from .io import open_tiff_memmap, set_tiff_display_range, write_file_atomic

    n = data.shape[0]
    coords = np.arange(shape[0], dtype=np.float64) / f
    lohi = [math.inf, -math.inf]

    def write(tmp: Path) -> None:
        mm = open_tiff_memmap(tmp, "ZYX", shape, dtype, {"voxel_size": vs,
                                                         "unit": "micrometer"})
        for s in range(0, shape[0], slab):
            c = coords[s:s + slab]
            first = int(min(math.floor(c[0]), n - 1))
            last = int(min(math.floor(c[-1]) + 1, n - 1))
            block = np.asarray(data[first:last + 1].values)
            out = _cast_like(_interp(block, c - first, 0), dtype)
            mm[s:s + len(c)] = out
            lohi[0], lohi[1] = min(lohi[0], float(out.min())), max(lohi[1], float(out.max()))
        mm.flush()
        del mm
        set_tiff_display_range(tmp, lohi[0], lohi[1])

    write_file_atomic(dst, write)
