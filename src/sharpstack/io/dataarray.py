"""The in-memory form of a stack: an :class:`xarray.DataArray` with lower-case axis letters
as dims (canonical order ``b t c z y x s``) and the calibration attrs described in
:mod:`sharpstack.io`; wrapping arrays, checking dims, reading the known voxel sizes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from .._axes import check_axes
from ..errors import InputError
from .units import UNIT, unit_factor

# Canonical dimension order of every DataArray that sharpstack produces.
_ORDER = "BTCZYXS"
SPATIAL = "ZYX"


def positive_size(value: Any, axis: str, what: str) -> float:
    if isinstance(value, bool):  # True is not 1 micrometre
        value = str(value)
    try:
        size = float(value)
    except (TypeError, ValueError):
        size = float("nan")
    if not math.isfinite(size) or size <= 0:
        raise InputError(f"{what}: voxel size for axis {axis!r} is {value!r}; it must be a "
                         f"positive number of micrometres (leave the axis out when its size "
                         f"is unknown)")
    return size


def known_size(size: Any) -> float | None:
    """A size read from a file: positive and finite, or None (unknown)."""
    try:
        value = float(size)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def calibration_attrs(axes: str, sizes: Mapping[str, float], sources: Mapping[str, str]
                       ) -> dict[str, Any]:
    """The calibration attrs of an array with ``axes``: only known sizes, never a filler.

    ``sizes`` and ``sources`` map lower-case spatial axis letters to micrometres and to
    ``"file"``/``"given"``; axes not in ``axes`` are dropped.
    """
    space = [a.lower() for a in SPATIAL if a in axes.upper()]
    voxel_size = {a: float(sizes[a]) for a in space if a in sizes}
    return {"voxel_size": voxel_size, "unit": UNIT,
            "calibrated": bool(space) and len(voxel_size) == len(space),
            "voxel_size_source": {a: sources.get(a, "given") for a in voxel_size}}


def native_order(array: np.ndarray) -> np.ndarray:
    """Same values and dtype, native byte order (big-endian TIFFs come back as '>u2')."""
    if not array.dtype.isnative:
        return array.astype(array.dtype.newbyteorder("="))
    return array


def build_dataarray(array: Any, axes: str, sizes: Mapping[str, float | None], source: str | None
           ) -> xr.DataArray:
    """Wrap ``array`` (dims in ``axes`` order) and return it in canonical order with attrs.

    ``sizes`` maps spatial axis letters (upper case) to micrometres as read from the file,
    None when unknown; unknown axes stay out of ``attrs["voxel_size"]``.
    """
    known = {a.lower(): known_size(v) for a, v in sizes.items() if a in SPATIAL}
    known = {a: v for a, v in known.items() if v is not None}
    attrs = calibration_attrs(axes, known, {a: "file" for a in known})
    if source is not None:
        attrs["source"] = source
    da = xr.DataArray(array, dims=tuple(a.lower() for a in axes), attrs=attrs)
    order = [a.lower() for a in _ORDER if a in axes]
    if list(da.dims) != order:
        da = da.transpose(*order)
    return da


def data_axes(data: Any, what: str, allowed: str | None = None) -> str:
    """Check that ``data`` is a DataArray with single-letter dims; return them upper-case."""
    if not isinstance(data, xr.DataArray):
        raise InputError(
            f"{what} needs an xarray.DataArray with named dims, got {type(data).__name__}; wrap "
            f"a numpy array with sharpstack.io.as_dataarray(array, axes='ZYX', voxel_size=...)")
    dims = [str(d) for d in data.dims]
    if any(len(d) != 1 for d in dims):
        raise InputError(
            f"{what}: the DataArray dims {tuple(dims)} must be single axis letters such as "
            f"('z', 'y', 'x'); rename them with data.rename(...) or use as_dataarray")
    axes = check_axes("".join(dims), data.ndim, required="YX", name=f"{what} dims")
    if allowed is not None:
        bad = [a for a in axes if a not in allowed]
        if bad:
            raise InputError(f"{what}: axis/axes {''.join(bad)} cannot be written here; "
                             f"supported axes are {allowed}. Keep one {bad[0].lower()} position "
                             f"first (a file: save it in Fiji with Image > Duplicate; in "
                             f"Python: data.isel({bad[0].lower()}=0))")
    return axes


def known_voxel_sizes(data: xr.DataArray | Mapping[str, Any], axes: str, what: str
                 ) -> dict[str, float]:
    """The known voxel sizes of ``data`` (or of attrs) in micrometres, upper-case keys, axes
    of ``axes`` only.

    Axes absent from ``attrs["voxel_size"]`` (or None there) are unknown and left out; an
    empty dict means nothing is known. A zero, negative or non-finite size is an error, never
    silently dropped.
    """
    attrs = data.attrs if isinstance(data, xr.DataArray) else data
    vs = attrs.get("voxel_size")
    if vs is None:
        return {}
    if not isinstance(vs, Mapping):
        raise InputError(f"{what}: attrs['voxel_size'] must be a dict like "
                         f"{{'z': 0.3, 'y': 0.1, 'x': 0.1}}, got {type(vs).__name__}")
    lower = {str(k).lower(): v for k, v in vs.items() if v is not None}
    wanted = [a for a in SPATIAL if a in axes and a.lower() in lower]
    if not wanted:
        return {}
    factor = unit_factor(attrs.get("unit", UNIT))
    if factor is None:
        raise InputError(f"{what}: attrs['unit']={attrs.get('unit')!r} is not a length "
                         f"unit sharpstack knows; use 'micrometer'")
    return {a: positive_size(lower[a.lower()], a.lower(), what) * factor for a in wanted}


# --------------------------------------------------------------------------------------------
# public helpers


def as_dataarray(array: Any, axes: str, voxel_size: Mapping[str, float | None] | None = None
                 ) -> xr.DataArray:
    """Wrap an array with sharpstack's conventions (dims, voxel size, unit, calibrated).

    Parameters
    ----------
    array : numpy.ndarray or dask.array.Array
        Image data of any shape, e.g. ``(Z, Y, X)`` or ``(C, Z, Y, X)``; not copied, dtype kept.
    axes : str
        One letter per dimension of ``array``, in its order (e.g. ``"ZYX"``), checked with
        :func:`sharpstack._axes.check_axes`.
    voxel_size : dict, optional
        Axis letter (``"z"``, ``"y"``, ``"x"``, any case) -> size in micrometres. Spatial
        axes left out (or given as None) are unknown: they stay out of
        ``attrs["voxel_size"]`` and make ``attrs["calibrated"]`` False. Sizes of axes that
        ``axes`` lacks are dropped.

    Returns
    -------
    xarray.DataArray
        Dims are the lower-case letters of ``axes`` in the order given (not reordered);
        attrs ``voxel_size`` (known axes only), ``unit`` = ``"micrometer"``, ``calibrated``
        (every spatial axis known) and ``voxel_size_source`` (``"given"`` per known axis).

    Raises
    ------
    InputError
        A size that is zero, negative, NaN or not a number, or a key other than z, y, x.

    Examples
    --------
    >>> da = as_dataarray(np.zeros((4, 8, 8), "float32"), "ZYX", {"y": 0.1, "x": 0.1})
    >>> da.dims, da.attrs["voxel_size"], da.attrs["calibrated"]
    (('z', 'y', 'x'), {'y': 0.1, 'x': 0.1}, False)
    """
    ndim = getattr(array, "ndim", None)
    if ndim is None or not hasattr(array, "shape") or not hasattr(array, "dtype"):
        raise InputError(f"as_dataarray needs a numpy or dask array, got {type(array).__name__}; "
                         f"convert it with numpy.asarray first")
    ax = check_axes(axes, ndim)
    if voxel_size is not None and not isinstance(voxel_size, Mapping):
        raise InputError(f"as_dataarray: voxel_size must be a dict like {{'z': 0.5, 'y': 0.1, "
                         f"'x': 0.1}} (micrometres), got {type(voxel_size).__name__}")
    sizes: dict[str, float] = {}
    for key, value in (voxel_size or {}).items():
        k = str(key).lower()
        if k.upper() not in SPATIAL or len(k) != 1:
            raise InputError(f"voxel_size has key {key!r}; only 'z', 'y' and 'x' have a voxel size")
        if value is not None:
            sizes[k] = positive_size(value, k, "as_dataarray")
    da = xr.DataArray(array, dims=tuple(a.lower() for a in ax))
    da.attrs.update(calibration_attrs(ax, sizes, {}))
    return da
