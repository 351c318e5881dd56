"""What every metric does with its inputs first: numeric numpy arrays of one shape, finite,
an explicit positive data range; sums in float64 over slabs."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..errors import InputError

# voxels per slab when reducing over big volumes (about 128 MiB per float64 temporary)
_SLAB_VOXELS = 1 << 24


def to_numpy(x, name: str, axes: str | None = None) -> np.ndarray:
    """Return ``x`` as a numpy array; an ``xarray.DataArray`` must have dims matching ``axes``."""
    dims = getattr(x, "dims", None)
    if dims is not None and axes is not None and not isinstance(x, np.ndarray):
        dims_str = "".join(str(d) for d in dims).upper()
        if dims_str != axes.upper():
            raise InputError(
                f"{name} is a DataArray with dims {tuple(dims)} but axes={axes!r} was given; "
                f"pass axes={dims_str!r} or transpose the array")
    try:
        arr = np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise InputError(f"{name} cannot be converted to a numpy array: {exc}") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                   or arr.dtype == np.bool_):
        raise InputError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise InputError(f"{name} is complex; pass a real-valued image (e.g. np.abs(x))")
    return arr


def check_pair(target, pred, axes: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    t = to_numpy(target, "target", axes)
    p = to_numpy(pred, "pred", axes)
    if t.shape != p.shape:
        raise InputError(
            f"target has shape {t.shape} but pred has shape {p.shape}; the metric compares "
            f"images voxel by voxel, so crop or resample them to the same shape")
    if t.size == 0:
        raise InputError("target and pred are empty; pass non-empty images")
    return t, p


def check_finite(x: np.ndarray, name: str) -> None:
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        raise InputError(f"{name} contains NaN or infinite values; remove or replace them "
                         f"(e.g. np.nan_to_num) before computing metrics")


def check_data_range(data_range) -> float:
    try:
        r = float(data_range)
    except (TypeError, ValueError):
        raise InputError(f"data_range must be a positive number, got {data_range!r}") from None
    if not np.isfinite(r) or r <= 0:
        raise InputError(
            f"data_range must be a positive finite number (e.g. 1.0 for [0, 1] data, or the "
            f"maximum minus the minimum of the target), got {data_range!r}")
    return r


def central_crop(a: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` part of ``a``'s last two axes (all of an axis shorter
    than ``size``), contiguous: the crop a self-check measures on."""
    def mid(n: int) -> slice:
        m = min(n, size)
        return slice((n - m) // 2, (n - m) // 2 + m)

    return np.ascontiguousarray(a[..., mid(a.shape[-2]), mid(a.shape[-1])])


def slabs(n: int, plane_size: int) -> Iterator[slice]:
    step = max(1, _SLAB_VOXELS // max(1, plane_size))
    for s in range(0, n, step):
        yield slice(s, min(n, s + step))


def flat_slabs(*arrays: np.ndarray) -> Iterator[tuple[np.ndarray, ...]]:
    """Yield aligned float64 chunks of the flattened arrays."""
    flats = [a.reshape(-1) for a in arrays]
    n = flats[0].size
    for s in range(0, n, _SLAB_VOXELS):
        yield tuple(f[s:s + _SLAB_VOXELS].astype(np.float64) for f in flats)


def mse(t: np.ndarray, p: np.ndarray, scale: float = 1.0, offset: float = 0.0) -> float:
    """Mean of ``(t - (scale * p + offset))**2`` in float64, computed slab by slab."""
    total = 0.0
    for tc, pc in flat_slabs(t, p):
        d = tc - (scale * pc + offset)
        total += float(np.dot(d, d))
    return total / t.size


def psnr_from_mse(mse: float, data_range: float) -> float:
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(data_range * data_range / mse))
