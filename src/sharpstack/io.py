"""Read and write microscopy stacks: TIFF (ImageJ, OME, plain, BigTIFF), OME-Zarr and ``.npy``.

Every stack travels as an :class:`xarray.DataArray` whose dims are lower-case axis letters
in the canonical order ``b t c z y x s`` (only the axes present), with attrs

- ``voxel_size``: dict axis letter -> size in micrometres, ONLY for the axes of ``z``, ``y``,
  ``x`` whose size is known (read from the file or given); an unknown axis is absent, never
  filled in with 1.0;
- ``unit``: ``"micrometer"``;
- ``calibrated``: True when every spatial axis of the array has a known size;
- ``voxel_size_source``: per known axis, ``"file"`` (read) or ``"given"`` (supplied by the
  caller: :func:`as_dataarray`, :func:`with_voxel_size`);
- ``source``: the path read from (set by :func:`read_stack` only).

Writers keep what is known and invent nothing: each format writes the known sizes and marks
the unknown ones as unknown in its own way (see :func:`write_tiff`, :func:`write_ome_zarr`);
``.npy`` stores no calibration. Anything that derives a number from a voxel size asks
:func:`require_voxel_size` first, which stops with a message naming the missing axis and the
option (``--voxel-size``, parsed by :func:`parse_voxel_size`) that supplies it.

Data keep their dtype: nothing is rescaled or normalised here (only the byte order is
made native, so that numpy and torch can use the array directly).

Writers are atomic: they write a temporary file (or folder) next to the target and then
rename it into place, so a failed or interrupted write never leaves a half-written output,
and an existing output is never replaced without ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import xarray as xr

from ._axes import check_axes
from .errors import InputError, OutputExistsError, SharpstackError

__all__ = [
    "READ_SUFFIXES",
    "WRITE_SUFFIXES",
    "as_dataarray",
    "check_finite",
    "check_not_constant",
    "describe_voxel_size",
    "parse_voxel_size",
    "read_stack",
    "require_voxel_size",
    "with_voxel_size",
    "write_npy",
    "write_file_atomic",
    "write_ome_zarr",
    "write_stack",
    "write_tiff",
]

READ_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".btf", ".tf8", ".npy", ".zarr",
                 ".ome.zarr")
"""File name endings :func:`read_stack` understands (case-insensitive)."""

WRITE_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".npy", ".zarr", ".ome.zarr")
"""File name endings :func:`write_stack` understands (case-insensitive)."""

# Canonical dimension order of every DataArray that sharpstack produces.
_ORDER = "BTCZYXS"
_SPATIAL = "ZYX"
_UNIT = "micrometer"

# Above this many bytes of image data, compressed ImageJ TIFFs and OME-TIFFs are written as
# BigTIFF (a classic TIFF cannot address more than 4 GiB; compressed strips can be larger than
# the raw data for noisy images, hence the margin). Uncompressed ImageJ hyperstacks stay
# classic TIFF at any size: that is what tifffile recommends ("ImageJ hyperstacks do not
# support BigTIFF"; it writes the image data contiguously after the first IFD, which Fiji reads
# beyond 4 GiB), whereas an ImageJ-flavoured BigTIFF opens only through Bio-Formats.
_BIGTIFF_BYTES = 2**31

# Above this many bytes of image data, TIFFs are read lazily (through tifffile's zarr store,
# window by window) instead of into memory.
_LAZY_TIFF_BYTES = 2**28

# ImageJ hyperstacks hold these dtypes (tifffile also writes int16, which Fiji shifts by 32768).
_IMAGEJ_DTYPES = (np.dtype("uint8"), np.dtype("uint16"), np.dtype("float32"))

# TIFF compression schemes accepted by write_tiff. Fiji's own TIFF reader opens zlib
# ("deflate"), lzw and packbits; zstd and lzma need Bio-Formats (File > Import > Bio-Formats).
_COMPRESSIONS = ("zlib", "deflate", "lzw", "packbits", "zstd", "lzma")

# Length units -> micrometres per unit. Three sources of spellings:
# - OME's UnitsLength enumeration (OME-XML ``PhysicalSize*Unit``): symbols whose case matters
#   ("Mm" is the megametre, "mm" the millimetre; "Pm" petametre, "pm" picometre);
# - UDUNITS-2 names as OME-Zarr (NGFF) axis units ("micrometer", "nanometer", ...);
# - what ImageJ and microscope software write in the ``unit`` field ("um", "micron",
#   "\u00B5m" escaped, "µm" with either micro sign).
# ``pixel`` and ``reference frame`` (OME) are not lengths: a size in them is unknown.
_UM_PER_METRE = 1e6
_LENGTH_SYMBOLS: dict[str, float] = {  # exact case
    "Ym": 1e24 * _UM_PER_METRE, "Zm": 1e21 * _UM_PER_METRE, "Em": 1e18 * _UM_PER_METRE,
    "Pm": 1e15 * _UM_PER_METRE, "Tm": 1e12 * _UM_PER_METRE, "Gm": 1e9 * _UM_PER_METRE,
    "Mm": 1e6 * _UM_PER_METRE, "km": 1e9, "hm": 1e8, "dam": 1e7, "m": 1e6, "dm": 1e5,
    "cm": 1e4, "mm": 1e3, "\u00b5m": 1.0, "\u03bcm": 1.0, "um": 1.0, "nm": 1e-3,
    "pm": 1e-6, "fm": 1e-9, "am": 1e-12, "zm": 1e-15, "ym": 1e-18,
    "\u00c5": 1e-4, "\u212b": 1e-4,
    # OME's non-SI lengths: thou (mil), line (1/12 inch), inch, foot, yard, mile,
    # astronomical unit, light year, parsec, typographic point (1/72 inch)
    "thou": 25.4, "li": 25400.0 / 12, "in": 25400.0, "ft": 304800.0, "yd": 914400.0,
    "mi": 1609344000.0, "ua": 149597870700.0 * _UM_PER_METRE,
    "ly": 9460730472580800.0 * _UM_PER_METRE, "pc": 30856775814913673.0 * _UM_PER_METRE,
    "pt": 25400.0 / 72,
}
# Symbols matched whatever their case ("UM", "Nm"): those whose lower-case form is not
# shared by two OME units (mm/Mm, pm/Pm, zm/Zm, ym/Ym need their exact case).
_lower_counts: dict[str, int] = {}
for _sym in _LENGTH_SYMBOLS:
    _lower_counts[_sym.lower()] = _lower_counts.get(_sym.lower(), 0) + 1
_CASELESS_SYMBOLS = {k.lower(): v for k, v in _LENGTH_SYMBOLS.items()
                     if _lower_counts[k.lower()] == 1}
_SI_PREFIXES = {"yotta": 1e24, "zetta": 1e21, "exa": 1e18, "peta": 1e15, "tera": 1e12,
                "giga": 1e9, "mega": 1e6, "kilo": 1e3, "hecto": 1e2, "deca": 1e1, "deka": 1e1,
                "": 1.0, "deci": 1e-1, "centi": 1e-2, "milli": 1e-3, "micro": 1e-6,
                "nano": 1e-9, "pico": 1e-12, "femto": 1e-15, "atto": 1e-18, "zepto": 1e-21,
                "yocto": 1e-24}
_LENGTH_NAMES: dict[str, float] = {}  # lower case
for _prefix, _power in _SI_PREFIXES.items():
    for _stem in ("meter", "metre"):
        for _plural in ("", "s"):
            _LENGTH_NAMES[f"{_prefix}{_stem}{_plural}"] = _power * _UM_PER_METRE
for _names, _factor in (
    (("micron", "microns"), 1.0),
    (("angstrom", "angstroms", "\u00e5ngstr\u00f6m"), 1e-4),
    (("inch", "inches"), 25400.0), (("foot", "feet"), 304800.0),
    (("yard", "yards"), 914400.0), (("mile", "miles"), 1609344000.0),
    (("parsec", "parsecs"), 30856775814913673.0 * _UM_PER_METRE),
    (("light year", "light years", "lightyear"), 9460730472580800.0 * _UM_PER_METRE),
    (("astronomical unit", "astronomical units"), 149597870700.0 * _UM_PER_METRE),
):
    for _name in _names:
        _LENGTH_NAMES[_name] = _factor
del _lower_counts, _sym, _prefix, _power, _stem, _plural, _names, _factor, _name
_INCH_UNITS = ("in", "inch", "inches")

# TIFF ResolutionUnit tag values -> micrometres per unit (INCH is left out on purpose: an
# inch unit nearly always means a meaningless 72/96 dpi default, not a calibration).
_RESUNIT_TO_UM = {3: 1e4, 4: 1e3, 5: 1.0}

_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------

def _unit_factor(unit: Any) -> float | None:
    """Return micrometres per ``unit``, or None when the unit is missing or not a length.

    Understands OME's UnitsLength symbols (case-sensitive where two differ only by case:
    ``mm``/``Mm``), UDUNITS names (``micrometer``, ``nanometre``, plurals), ``micron``, and
    ImageJ's spellings (``um``, ``µm``/``μm`` and the escaped ``\\u00B5m``). ``pixel``,
    ``reference frame``, empty and unknown strings give None.
    """
    if not isinstance(unit, str):
        return None
    text = " ".join(_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), unit).split())
    if text in _LENGTH_SYMBOLS:
        return _LENGTH_SYMBOLS[text]
    lower = text.lower()
    return _CASELESS_SYMBOLS.get(lower, _LENGTH_NAMES.get(lower))


def _suffix_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith((".zarr", ".ome.zarr")):
        return "zarr"
    if name.endswith(".npy"):
        return "npy"
    if name.endswith((".tif", ".tiff", ".btf", ".tf8")):
        return "tiff"
    return None


def _is_zarr_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in (".zgroup", ".zattrs", "zarr.json"))


def _is_ome_tiff_name(path: Path) -> bool:
    return path.name.lower().endswith((".ome.tif", ".ome.tiff"))


def _positive_size(value: Any, axis: str, what: str) -> float:
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


def _known(size: Any) -> float | None:
    """A size read from a file: positive and finite, or None (unknown)."""
    try:
        value = float(size)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _calibration_attrs(axes: str, sizes: Mapping[str, float], sources: Mapping[str, str]
                       ) -> dict[str, Any]:
    """The calibration attrs of an array with ``axes``: only known sizes, never a filler.

    ``sizes`` and ``sources`` map lower-case spatial axis letters to micrometres and to
    ``"file"``/``"given"``; axes not in ``axes`` are dropped.
    """
    space = [a.lower() for a in _SPATIAL if a in axes.upper()]
    voxel_size = {a: float(sizes[a]) for a in space if a in sizes}
    return {"voxel_size": voxel_size, "unit": _UNIT,
            "calibrated": bool(space) and len(voxel_size) == len(space),
            "voxel_size_source": {a: sources.get(a, "given") for a in voxel_size}}


def _native(array: np.ndarray) -> np.ndarray:
    """Same values and dtype, native byte order (big-endian TIFFs come back as '>u2')."""
    if not array.dtype.isnative:
        return array.astype(array.dtype.newbyteorder("="))
    return array


def _build(array: Any, axes: str, sizes: Mapping[str, float | None], source: str | None
           ) -> xr.DataArray:
    """Wrap ``array`` (dims in ``axes`` order) and return it in canonical order with attrs.

    ``sizes`` maps spatial axis letters (upper case) to micrometres as read from the file,
    None when unknown; unknown axes stay out of ``attrs["voxel_size"]``.
    """
    known = {a.lower(): _known(v) for a, v in sizes.items() if a in _SPATIAL}
    known = {a: v for a, v in known.items() if v is not None}
    attrs = _calibration_attrs(axes, known, {a: "file" for a in known})
    if source is not None:
        attrs["source"] = source
    da = xr.DataArray(array, dims=tuple(a.lower() for a in axes), attrs=attrs)
    order = [a.lower() for a in _ORDER if a in axes]
    if list(da.dims) != order:
        da = da.transpose(*order)
    return da


def _data_axes(data: Any, what: str, allowed: str | None = None) -> str:
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


def _voxel_sizes(data: xr.DataArray | Mapping[str, Any], axes: str, what: str
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
    wanted = [a for a in _SPATIAL if a in axes and a.lower() in lower]
    if not wanted:
        return {}
    factor = _unit_factor(attrs.get("unit", _UNIT))
    if factor is None:
        raise InputError(f"{what}: attrs['unit']={attrs.get('unit')!r} is not a length "
                         f"unit sharpstack knows; use 'micrometer'")
    return {a: _positive_size(lower[a.lower()], a.lower(), what) * factor for a in wanted}


# --------------------------------------------------------------------------------------------
# public helpers
# --------------------------------------------------------------------------------------------

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
        if k.upper() not in _SPATIAL or len(k) != 1:
            raise InputError(f"voxel_size has key {key!r}; only 'z', 'y' and 'x' have a voxel size")
        if value is not None:
            sizes[k] = _positive_size(value, k, "as_dataarray")
    da = xr.DataArray(array, dims=tuple(a.lower() for a in ax))
    da.attrs.update(_calibration_attrs(ax, sizes, {}))
    return da


def check_finite(data: Any, name: str) -> None:
    """Raise :class:`InputError` if ``data`` holds NaN or infinite values.

    Parameters
    ----------
    data : xarray.DataArray, numpy.ndarray or dask.array.Array
        Any shape. Integer data are always finite and return at once; dask data are
        counted chunk by chunk without loading the whole array.
    name : str
        What to call the data in the message, e.g. ``"input stack 'cells.tif'"``.

    Raises
    ------
    InputError
        Naming how many NaN and infinite values were found and how to remove them.
    """
    arr = data.data if isinstance(data, xr.DataArray) else data
    dtype = np.dtype(getattr(arr, "dtype", np.asarray(arr).dtype))
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.complexfloating)):
        return
    if hasattr(arr, "compute") and hasattr(arr, "chunks"):  # dask: stream over chunks
        import dask.array as dsa

        n_nan, n_inf = (int(v) for v in dsa.compute(dsa.isnan(arr).sum(), dsa.isinf(arr).sum()))
    else:
        arr = np.asarray(arr)
        n_nan, n_inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
    problems = []
    if n_nan:
        problems.append(f"{n_nan} NaN values")
    if n_inf:
        problems.append(f"{n_inf} infinite values")
    if problems:
        raise InputError(
            f"{name} contains {' and '.join(problems)}; fill or remove them (e.g. Fiji "
            f"Process > Math > Remove NaNs, or numpy.nan_to_num) before passing it to sharpstack")


def check_not_constant(data: Any, name: str) -> None:
    """Raise :class:`InputError` if every value of ``data`` is the same (an all-zero or blank
    stack): a network trained on it learns nothing, and normalising it divides by zero.

    ``data``: a DataArray, numpy or dask array (dask: reduced chunk by chunk). ``name`` is
    what to call it in the message, e.g. ``"training stack 'cells.tif'"``.
    """
    arr = data.data if isinstance(data, xr.DataArray) else data
    if int(np.prod(getattr(arr, "shape", np.shape(arr)))) == 0:
        return
    if hasattr(arr, "compute") and hasattr(arr, "chunks"):
        import dask.array as dsa

        lo, hi = (v.item() for v in dsa.compute(arr.min(), arr.max()))
    else:
        a = np.asarray(arr)
        lo, hi = a.min().item(), a.max().item()
    if lo == hi:
        what = "all zero" if lo == 0 else f"constant (every value is {lo:g})"
        raise InputError(
            f"{name} is {what}: there is no structure to learn from; check the file in Fiji "
            f"(Analyze > Histogram: a failed or empty acquisition, or the wrong channel?) and "
            f"give the stack with the signal")


# --------------------------------------------------------------------------------------------
# voxel size: what the file gave, what the user supplies, what a computation needs
# --------------------------------------------------------------------------------------------

_SIZE_ITEM = re.compile(
    r"^\s*(?:(?P<axis>[A-Za-z])\s*=\s*)?"
    r"(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
    r"\s*(?P<unit>[^\s\d.+\-,=][^,=]*?)?\s*$")


def _fmt(size: float) -> str:
    return f"{size:.6g}"


def parse_voxel_size(text: str, *, option: str = "--voxel-size") -> dict[str, float]:
    """Parse a voxel size as the CLI takes it (``Z,Y,X``, optional unit) into micrometres.

    Parameters
    ----------
    text : str
        Three sizes in z, y, x order, or ``axis=size`` items for the axes one knows (any
        order, any subset). Without a unit the sizes are micrometres; one unit after the last
        size applies to all (``0.5,0.24,0.24um``, ``500,240,240nm``), or each size carries
        its own (``z=0.5um,x=240nm``). Units: any length :func:`read_stack` understands
        (``um``, ``µm``, ``micron``, ``nm``, ``mm``, ``micrometer``, ...).
    option : str
        The option's name for error messages.

    Returns
    -------
    dict
        Lower-case axis letter -> size in micrometres, in z, y, x order, only the axes given.

    Raises
    ------
    InputError
        Naming ``option``, for anything else: wrong number of sizes, unknown axis or unit,
        zero, negative or non-finite sizes, an axis given twice, mixed forms.

    Examples
    --------
    >>> parse_voxel_size("0.5,0.24,0.24")
    {'z': 0.5, 'y': 0.24, 'x': 0.24}
    >>> parse_voxel_size("500,240,240nm")
    {'z': 0.5, 'y': 0.24, 'x': 0.24}
    >>> parse_voxel_size("z=2")
    {'z': 2.0}
    """
    usage = (f"give three sizes Z,Y,X in micrometres (e.g. {option} 0.5,0.24,0.24, or with a "
             f"unit: 0.5,0.24,0.24um, 500,240,240nm), or only the axes you know "
             f"(e.g. {option} z=0.5 or {option} y=0.24,x=0.24)")
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{option} is empty; {usage}")
    items = []
    for part in text.split(","):
        m = _SIZE_ITEM.match(part)
        if m is None:
            raise InputError(f"{option} {text!r}: cannot read {part.strip()!r} as a size; "
                             f"{usage}")
        items.append((m["axis"], m["number"], m["unit"]))
    keyed = [axis is not None for axis, _, _ in items]
    if any(keyed) and not all(keyed):
        raise InputError(f"{option} {text!r} mixes named (z=...) and unnamed sizes; {usage}")
    if not any(keyed):
        if len(items) != 3:
            raise InputError(f"{option} {text!r} has {len(items)} size(s); {usage}")
        items = [(axis, number, unit) for axis, (_, number, unit) in zip("zyx", items)]
    units = [unit for _, _, unit in items]
    if any(units[:-1]) and not all(units):
        raise InputError(f"{option} {text!r}: give one unit after the last size (applies to "
                         f"all) or a unit with every size")
    out: dict[str, float] = {}
    for axis, number, unit in items:
        a = axis.lower()
        if a not in ("z", "y", "x"):
            raise InputError(f"{option} {text!r}: {axis!r} is not a spatial axis; name z, y "
                             f"or x")
        if a in out:
            raise InputError(f"{option} {text!r} gives the {a} size twice")
        unit = unit or units[-1]
        factor = 1.0 if unit is None else _unit_factor(unit)
        if factor is None:
            raise InputError(f"{option} {text!r}: {unit.strip()!r} is not a length unit "
                             f"sharpstack knows; use um (µm, micron), nm or mm")
        size = float(number) * factor
        if not math.isfinite(size) or size <= 0:
            raise InputError(f"{option} {text!r}: the {a} size must be a positive number, "
                             f"got {number}")
        out[a] = size
    return {a: out[a] for a in "zyx" if a in out}


def _stack_name(data: Any) -> str:
    source = getattr(data, "attrs", {}).get("source")
    return f"{source}" if source else "the stack"


def with_voxel_size(data: xr.DataArray, voxel_size: Mapping[str, float] | None, *,
                    option: str = "--voxel-size") -> xr.DataArray:
    """Return ``data`` with supplied voxel sizes overriding or completing what was read.

    Parameters
    ----------
    data : xarray.DataArray
        A stack with sharpstack's attrs, e.g. from :func:`read_stack` (any dims with ``y``
        and ``x``). Not modified; the result shares its values.
    voxel_size : dict or None
        Lower-case axis letter -> micrometres, e.g. from :func:`parse_voxel_size`; axes left
        out keep what ``data`` had (known or unknown). None or empty changes nothing.
    option : str
        What supplied the sizes, for error messages.

    Returns
    -------
    xarray.DataArray
        Same values and dims; attrs ``voxel_size`` (micrometres, known axes only), ``unit``,
        ``calibrated`` recomputed, and ``voxel_size_source`` saying per known axis whether
        its size is ``"given"`` (supplied here) or ``"file"`` (read). Other attrs are kept.

    Raises
    ------
    InputError
        A size for an axis the data lack, or a size that is not a positive number.

    Examples
    --------
    >>> da = as_dataarray(np.zeros((4, 8, 8), "uint8"), "ZYX", {"y": 0.24, "x": 0.24})
    >>> with_voxel_size(da, {"z": 2.0}).attrs["voxel_size"]
    {'z': 2.0, 'y': 0.24, 'x': 0.24}
    """
    axes = _data_axes(data, "with_voxel_size")
    name = _stack_name(data)
    if voxel_size is not None and not isinstance(voxel_size, Mapping):
        raise InputError(f"with_voxel_size: voxel_size must be a dict like {{'z': 0.5}} "
                         f"(micrometres), e.g. from parse_voxel_size, got "
                         f"{type(voxel_size).__name__}")
    sizes = {a.lower(): v for a, v in _voxel_sizes(data, axes, f"{name}").items()}
    old = data.attrs.get("voxel_size_source")
    sources = {a: (old.get(a, "file") if isinstance(old, Mapping) else "file") for a in sizes}
    for key, value in (voxel_size or {}).items():
        a = str(key).lower()
        if a.upper() not in _SPATIAL or len(a) != 1:
            raise InputError(f"{option}: {key!r} is not a spatial axis; name z, y or x")
        if a.upper() not in axes:
            raise InputError(f"{option} gives a {a} size but {name} has no {a} axis (dims "
                             f"{', '.join(str(d) for d in data.dims)}); give only the sizes of "
                             f"its axes, e.g. {option} y=0.24,x=0.24")
        sizes[a] = _positive_size(value, a, option)
        sources[a] = "given"
    broken = data.attrs.get("voxel_size_invalid")
    broken = {str(a).lower(): v for a, v in broken.items() if str(a).lower() not in
              {str(k).lower() for k in (voxel_size or {})}} if isinstance(broken, Mapping) else {}
    if broken:
        listed = ", ".join(f"{a} {v:g}" for a, v in broken.items())
        example = ",".join(f"{a}=SIZE" for a in broken)
        raise InputError(
            f"{name} gives a zero or negative voxel size ({listed}: its OME-Zarr scale); that "
            f"is a broken calibration, not a size sharpstack can use. Give the right size in "
            f"micrometres with {option} (e.g. {option} {example}), or correct the 'scale' in "
            f"the file's .zattrs (or zarr.json)")
    out = data.copy(deep=False)
    out.attrs = {k: v for k, v in data.attrs.items()
                 if k not in ("voxel_size", "unit", "calibrated", "voxel_size_source",
                              "voxel_size_invalid")}
    out.attrs.update(_calibration_attrs(axes, sizes, sources))
    return out


def require_voxel_size(data: xr.DataArray | Mapping[str, Any], axes: str, *, purpose: str,
                       option: str = "--voxel-size", alternative: str | None = None
                       ) -> dict[str, float]:
    """Return the voxel sizes ``purpose`` needs, or stop with a message naming what is missing.

    Call this before any work that derives a number from a voxel size (IsoNet's axial
    factor, a PSF sampled in micrometres, an output's z spacing), so that a missing size
    stops the command at once instead of being replaced by a guess.

    Parameters
    ----------
    data : xarray.DataArray or dict
        The stack (its attrs are read) or its attrs.
    axes : str
        The axes whose size is needed, e.g. ``"zyx"`` or ``"x"`` (any case).
    purpose : str
        What needs them, for the message, e.g. ``"IsoNet's axial factor"``.
    option : str
        The option that supplies them (``--voxel-size`` takes Z,Y,X, see
        :func:`parse_voxel_size`).
    alternative : str, optional
        Another option that makes the sizes unnecessary, e.g. ``"--factor"``.

    Returns
    -------
    dict
        Lower-case axis letter -> micrometres for each axis of ``axes``.

    Raises
    ------
    InputError
        Naming the stack, the axis or axes whose size is unknown (or which the stack lacks),
        ``purpose``, and how to pass the sizes with ``option`` (or ``alternative``).

    Examples
    --------
    >>> da = as_dataarray(np.zeros((4, 8, 8), "uint8"), "ZYX", {"y": 0.24, "x": 0.24})
    >>> require_voxel_size(da, "yx", purpose="the PSF")
    {'y': 0.24, 'x': 0.24}
    """
    attrs = data.attrs if isinstance(data, xr.DataArray) else data
    if not isinstance(attrs, Mapping):
        raise InputError(f"require_voxel_size needs a DataArray or its attrs, got "
                         f"{type(data).__name__}")
    name = _stack_name(data) if isinstance(data, xr.DataArray) else str(
        attrs.get("source") or "the stack")
    wanted = check_axes(axes, name="axes").lower()
    bad = [a for a in wanted if a.upper() not in _SPATIAL]
    if bad:
        raise InputError(f"require_voxel_size: {''.join(bad)} has no voxel size; ask for z, y "
                         f"or x")
    if isinstance(data, xr.DataArray):
        dims = [str(d) for d in data.dims]
        absent = [a for a in wanted if a not in dims]
        if absent:
            raise InputError(f"{purpose} needs the {', '.join(absent)} voxel size, but {name} "
                             f"has no {', '.join(absent)} axis (dims {', '.join(dims)})")
    sizes = {a.lower(): v for a, v in _voxel_sizes(attrs, wanted.upper(), name).items()}
    missing = [a for a in wanted if a not in sizes]
    if not missing:
        return {a: sizes[a] for a in wanted}
    what = {"z": "z spacing", "y": "pixel height", "x": "pixel width"}
    known = {a.lower(): v for a, v in _voxel_sizes(attrs, _SPATIAL, name).items()}
    told = (f"known: {', '.join(f'{a} {_fmt(v)} µm' for a, v in known.items())}" if known
            else "no voxel size is known")
    # an example with the known sizes filled in; the unknown ones are marked as examples
    example = ",".join(_fmt(known[a]) if a in known else ("2.0" if a == "z" else "0.1")
                       for a in "zyx")
    cases = ((["the z step was 2.0 µm"] if "z" in missing else [])
             + (["the pixel size was 0.1 µm"] if "y" in missing or "x" in missing else []))
    fix = f"pass {option} Z,Y,X in µm, e.g. {option} {example} if {' and '.join(cases)}"
    if alternative:
        fix += f", or {alternative}"
    if len(missing) == 1:
        unknown = f"the {missing[0]} voxel size ({what[missing[0]]}) is unknown"
    else:
        unknown = (f"the {' and '.join(missing)} voxel sizes "
                   f"({', '.join(what[a] for a in missing)}) are unknown")
    raise InputError(f"{name}: {unknown} ({told}); {purpose} needs "
                     f"{'it' if len(missing) == 1 else 'them'}: {fix}")


def describe_voxel_size(data: xr.DataArray) -> str:
    """One line saying each spatial axis' size and where it came from, for logs and cards.

    Examples
    --------
    >>> da = with_voxel_size(as_dataarray(np.zeros((2, 4, 4), "uint8"), "ZYX"), {"x": 0.24})
    >>> describe_voxel_size(da)
    'z unknown, y unknown, x 0.24 µm (given)'
    """
    axes = _data_axes(data, "describe_voxel_size")
    sizes = {a.lower(): v for a, v in _voxel_sizes(data, axes, _stack_name(data)).items()}
    sources = data.attrs.get("voxel_size_source")
    sources = sources if isinstance(sources, Mapping) else {}
    parts = []
    for a in (x.lower() for x in _SPATIAL if x in axes):
        if a in sizes:
            origin = sources.get(a)
            parts.append(f"{a} {_fmt(sizes[a])} µm" + (f" ({origin})" if origin else ""))
        else:
            parts.append(f"{a} unknown")
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------

def read_stack(path: str | os.PathLike, axes: str | None = None) -> xr.DataArray:
    """Read a microscopy stack with its axes and voxel size.

    Parameters
    ----------
    path : str or path-like
        A TIFF (``.tif``, ``.tiff``, ``.ome.tif``, ``.btf``: ImageJ hyperstack, OME-TIFF, plain
        multi-page, compressed, BigTIFF), a ``.npy`` file, or an OME-Zarr folder (``.zarr``,
        ``.ome.zarr``; level 0 of the first multiscales image, read lazily as a dask array).
    axes : str, optional
        One letter per dimension as the file stores them (e.g. ``"ZYX"``, ``"CZYX"``),
        overriding the file's metadata. TIFF and OME-Zarr take their axes from the metadata;
        ``.npy`` has none, so 2D arrays default to ``"YX"``, 3D ones to ``"ZYX"`` and others
        need ``axes``.

    Returns
    -------
    xarray.DataArray
        Dims in the canonical order ``t c z y x`` (those present), e.g. ``(Z, Y, X)`` or
        ``(C, Z, Y, X)``; the file's dtype; attrs ``voxel_size`` (micrometres, the axes
        whose size the file gives), ``unit``, ``calibrated`` (every spatial axis known),
        ``voxel_size_source`` (``"file"`` per known axis) and ``source``.

    Notes
    -----
    - Length-1 dimensions are dropped (TIFF: as tifffile does; OME-Zarr: singleton ``t``
      and ``c``); ``axes`` then describes the remaining dimensions.
    - tifffile's generic page axis (``I``, plain multi-page TIFF) or single unknown axis
      (``Q``) becomes ``Z`` as in Fiji, when there is no ``Z`` already; RGB samples (``S``)
      become channels ``C``.
    - Calibration, per axis: ImageJ X/YResolution (pixels per unit) in ``unit``/``yunit``
      and ``spacing`` (z) in ``zunit``/``unit`` (``um``, ``µm``, ``\\u00B5m``, ``micron``,
      ``nm``, ``mm`` ...); OME ``PhysicalSize*`` with ``PhysicalSize*Unit`` (every OME
      UnitsLength; default µm); OME-Zarr ``scale`` transforms with axis units; plain TIFF
      X/YResolution in cm/mm/µm. An axis without a size, or whose unit is missing or not a
      length (``pixel``), is unknown: it is left out of ``voxel_size``. In particular an
      ImageJ TIFF without ``spacing`` has an unknown z (Fiji's default depth of 1.0 is not
      in the file), and a plain multi-page TIFF never has a z size.
    - Only the first image series of a multi-series TIFF is read.

    Raises
    ------
    InputError
        Missing file, unsupported suffix, unreadable or truncated file, axes that do not fit.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p} does not exist; check the path (relative paths start from "
                         f"{Path.cwd()})")
    kind = _suffix_kind(p)
    if kind is None and _is_zarr_dir(p):
        kind = "zarr"
    if kind is None:
        raise InputError(f"{p}: unsupported file type; sharpstack reads "
                         f"{', '.join(READ_SUFFIXES)} (convert other formats with Fiji or "
                         f"Bio-Formats first)")
    if kind == "zarr":
        return _read_ome_zarr(p, axes)
    if p.is_dir():
        raise InputError(f"{p} is a folder, not a {kind.upper()} file; give the path of a file")
    if kind == "npy":
        return _read_npy(p, axes)
    return _read_tiff(p, axes)


def _read_npy(path: Path, axes: str | None) -> xr.DataArray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path} is not a readable .npy array ({exc}); save it with "
                         f"numpy.save") from exc
    if axes is None:
        if array.ndim not in (2, 3):
            raise InputError(
                f"{path} has {array.ndim} dimensions {array.shape}, and a .npy file does not "
                f"say which axes they are, so sharpstack reads only 2D (YX) and 3D (ZYX) .npy "
                f"files: save the array as a TIFF or OME-Zarr that names its axes (e.g. "
                f"tifffile.imwrite('stack.tif', array, imagej=True, metadata={{'axes': "
                f"'CZYX'}})), or one .npy file per channel / time point")
        axes = "YX" if array.ndim == 2 else "ZYX"
    ax = check_axes(axes, array.ndim, name=f"axes for {path}")
    return _build(_native(array), ax, {}, os.fspath(path))


@contextlib.contextmanager
def _tiff_errors(path: Path) -> Iterator[list[str]]:
    """Turn tifffile's exceptions and corruption warnings into InputError naming ``path``."""
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = _Collect(level=logging.WARNING)
    logger = logging.getLogger("tifffile")
    logger.addHandler(handler)
    try:
        yield messages
    except SharpstackError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # tifffile/imagecodecs raise many types for broken files
        raise InputError(f"{path} is not a readable TIFF file ({type(exc).__name__}: {exc}); it "
                         f"may be truncated or corrupt: re-export or re-copy it") from exc
    finally:
        logger.removeHandler(handler)


# Fragments of what tifffile logs (instead of raising) when pages are missing.
_CORRUPTION_WORDS = ("corrupt", "invalid page offset", "invalid offset to page", "truncat",
                     "failed to reshape", "invalid ifd")


def _check_complete(path: Path, tif: tifffile.TiffFile, series: Any, messages: list[str]) -> None:
    """Catch truncated files that tifffile reads without an exception (it logs instead)."""
    bad = [m for m in messages if any(w in m.lower() for w in _CORRUPTION_WORDS)]
    if bad:
        raise InputError(f"{path} is truncated or corrupt ({bad[0]}); re-export or re-copy it")
    if tif.is_imagej and not tif.is_ome:
        images = (tif.imagej_metadata or {}).get("images")
        planes = int(np.prod([n for n, a in zip(series.shape, series.axes) if a not in "YXS"]))
        if isinstance(images, int) and images > 1 and planes != images:
            raise InputError(f"{path}: the ImageJ header announces {images} images but only "
                             f"{planes} can be read; the file is truncated or corrupt: "
                             f"re-export it")
    for meta in tif.shaped_metadata or ():
        shape = meta.get("shape") if isinstance(meta, Mapping) else None
        if series.kind == "shaped" and shape and int(np.prod(shape)) != int(np.prod(series.shape)):
            raise InputError(f"{path}: the file announces shape {tuple(shape)} but only "
                             f"{tuple(series.shape)} can be read; it is truncated or corrupt")
        break
    size = os.path.getsize(path)
    for page in series.pages:
        if page is None:
            continue
        offsets = getattr(page, "dataoffsets", ())
        counts = getattr(page, "databytecounts", ())
        if any(o + c > size for o, c in zip(offsets, counts)):
            raise InputError(f"{path} is truncated: image data end beyond the file's {size} bytes; "
                             f"re-export or re-copy it")


def _read_tiff(path: Path, axes: str | None) -> xr.DataArray:
    with _tiff_errors(path) as messages, tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise InputError(f"{path} contains no images")
        series = tif.series[0]
        file_axes = series.axes
        if math.prod(series.shape) * series.dtype.itemsize > _LAZY_TIFF_BYTES:
            _check_complete(path, tif, series, messages)
            array = _lazy_tiff(path)
        else:
            array = series.asarray()
            _check_complete(path, tif, series, messages)
        if tif.is_ome:
            sizes = _ome_sizes(tif.ome_metadata)
        elif tif.is_imagej:
            sizes = _imagej_sizes(tif.imagej_metadata or {}, series.pages[0])
        else:
            sizes = _plain_tiff_sizes(series.pages[0])
    if axes is not None:
        ax = check_axes(axes, array.ndim, name=f"axes for {path}")
    else:
        ax = _map_tifffile_axes(file_axes, path)
        ax = check_axes(ax, array.ndim, name=f"axes of {path}")
    return _build(_native(array), ax, sizes, os.fspath(path))


def _lazy_tiff(path: Path) -> Any:
    """The first series of a TIFF as a dask array over tifffile's zarr store: windows are
    read from the file on demand, so a BigTIFF larger than memory works (read with file
    reads, not a memory map, whose pages would count against the process). Chunks are
    tifffile's (a page, a strip group or a tile); compressed files are decoded per chunk."""
    import dask.array as dsa
    import zarr

    tif = tifffile.TiffFile(path)  # stays open with the store; closed when collected
    return dsa.from_zarr(zarr.open(tif.series[0].aszarr(level=0), mode="r"))


def _map_tifffile_axes(axes: str, path: Path) -> str:
    """tifffile's axes codes -> sharpstack letters (I/Q -> Z, S -> C); errors name the fix."""
    ax = axes.upper()
    generic = [a for a in ax if a in "IQ"]
    if generic:
        if len(generic) > 1 or "Z" in ax:
            raise InputError(f"{path}: the file does not say what dimensions {axes!r} are "
                             f"(I/Q = unknown); open it in Fiji, set the channels, slices and "
                             f"frames (Image > Properties) and save it as TIFF again (in "
                             f"Python: read_stack(path, axes='TZYX'))")
        ax = ax.replace(generic[0], "Z")
    if "S" in ax:
        if "C" in ax:
            raise InputError(f"{path} has both channels and colour samples (axes {axes!r}); "
                             f"split them in Fiji (Image > Color > Split Channels) and save "
                             f"one channel per file (in Python: read_stack(path, axes=...))")
        ax = ax.replace("S", "C")
    unknown = [a for a in ax if a not in "TCZYX"]
    if unknown:
        raise InputError(f"{path} has axes {axes!r} with {''.join(unknown)} that sharpstack does "
                         f"not know: open it in Fiji, set the channels, slices and frames "
                         f"(Image > Properties) and save it as TIFF again (in Python: "
                         f"read_stack(path, axes=...) with letters from TCZYX)")
    return ax


def _imagej_sizes(meta: Mapping[str, Any], page: Any) -> dict[str, float | None]:
    """Voxel sizes as Fiji reads them from an ImageJ TIFF; None for every unknown axis.

    Fiji takes the pixel width and height from X/YResolution (pixels per unit) in the
    description's ``unit`` (``yunit`` for y when given), and the z spacing from ``spacing``
    in ``zunit`` (default: ``unit``). Without ``spacing`` Fiji shows its default depth of
    1.0 unit: that number is not in the file, so z is unknown here. A unit that is not a
    length (``pixel``, none) makes that axis unknown, as does ``inch`` (what a 72-dpi
    default leaves behind, not a microscope calibration).
    """
    def factor(key: str, default: Any) -> float | None:
        text = meta.get(key, default)
        if isinstance(text, str) and text.strip().lower() in _INCH_UNITS:
            return None
        return _unit_factor(text)

    unit = factor("unit", None)
    yunit = factor("yunit", meta.get("unit"))
    zunit = factor("zunit", meta.get("unit"))
    xres, yres = _resolution(page)
    t = page.tags.get("ResolutionUnit")
    if t is not None and int(t.value) == 3 and meta.get("unit") == "um":
        # ImageJ's FileOpener: resolution in pixels per cm with unit=um -> x 10000
        xres = xres / 1e4 if xres else xres
        yres = yres / 1e4 if yres else yres
    sizes: dict[str, float | None] = {"X": None, "Y": None, "Z": None}
    if unit is not None and xres:
        sizes["X"] = unit / xres
    if yunit is not None and yres:
        sizes["Y"] = yunit / yres
    spacing = meta.get("spacing")
    if (zunit is not None and isinstance(spacing, (int, float))
            and not isinstance(spacing, bool)):
        # Fiji takes |spacing|; a zero or non-finite one is no calibration (-> unknown)
        sizes["Z"] = _known(zunit * abs(float(spacing)))
    return sizes


def _resolution(page: Any) -> tuple[float | None, float | None]:
    """Pixels per unit from X/YResolution, None when missing or zero."""
    out = []
    for tag in ("XResolution", "YResolution"):
        t = page.tags.get(tag)
        value = None
        if t is not None:
            v = t.value
            try:
                value = v[0] / v[1] if isinstance(v, tuple) else float(v)
            except (ZeroDivisionError, TypeError, IndexError):
                value = None
        out.append(value if value and math.isfinite(value) and value > 0 else None)
    return out[0], out[1]


def _plain_tiff_sizes(page: Any) -> dict[str, float | None]:
    t = page.tags.get("ResolutionUnit")
    factor = _RESUNIT_TO_UM.get(int(t.value) if t is not None else 2)
    xres, yres = _resolution(page)
    return {"X": factor / xres if factor and xres else None,
            "Y": factor / yres if factor and yres else None, "Z": None}


def _ome_sizes(xml: str | None) -> dict[str, float | None]:
    sizes: dict[str, float | None] = {"X": None, "Y": None, "Z": None}
    if not xml:
        return sizes
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return sizes
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return sizes
    for a in _SPATIAL:
        value = pixels.get(f"PhysicalSize{a}")
        # OME's default unit for PhysicalSize* is the micrometre.
        factor = _unit_factor(pixels.get(f"PhysicalSize{a}Unit", "\u00b5m"))
        try:
            size = float(value) if value is not None else None
        except ValueError:
            size = None
        if size is not None and factor is not None and size > 0:
            sizes[a] = size * factor
    return sizes


def _read_ome_zarr(path: Path, axes: str | None) -> xr.DataArray:
    import dask.array as dsa
    import zarr

    try:
        group = zarr.open_group(os.fspath(path), mode="r")
        attrs = dict(group.attrs)
    except Exception as exc:  # zarr raises several types for folders that are not groups
        raise InputError(f"{path} is not a readable OME-Zarr group ({type(exc).__name__}: "
                         f"{exc}); give the image's top folder (the one holding .zattrs or "
                         f"zarr.json)") from exc
    multiscales = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
    if not multiscales:
        raise InputError(f"{path} has no OME-Zarr 'multiscales' metadata; sharpstack reads "
                         f"OME-Zarr images (NGFF), e.g. written by write_ome_zarr or ome-zarr-py")
    ms = multiscales[0]
    try:
        dataset = ms["datasets"][0]
        array = group[dataset["path"]]
    except Exception as exc:
        raise InputError(f"{path}: the multiscales metadata names no readable level 0 "
                         f"({type(exc).__name__}: {exc}); the OME-Zarr is incomplete") from exc
    data = dsa.from_array(_CheckedZarr(array, os.fspath(path)), chunks=array.chunks,
                          asarray=True)
    names, units = _ngff_axes(ms.get("axes"), data.ndim, path)
    scale = _ngff_scale(dataset.get("coordinateTransformations"), data.ndim, path)
    global_scale = _ngff_scale(ms.get("coordinateTransformations"), data.ndim, path)
    # drop singleton time and channel axes (NGFF images often carry t=1, c=1)
    keep = [i for i, n in enumerate(names) if not (n in "TC" and data.shape[i] == 1)]
    if len(keep) != data.ndim:
        data = data[tuple(slice(None) if i in keep else 0 for i in range(data.ndim))]
    sizes: dict[str, float | None] = {}
    invalid: dict[str, float] = {}  # a zero, negative or non-finite scale: a broken file
    for i in keep:
        factor = _unit_factor(units[i])
        if names[i] in _SPATIAL and scale is not None:
            value = scale[i] * (global_scale[i] if global_scale else 1.0)
            if not (math.isfinite(value) and value > 0):
                invalid[names[i]] = value
            elif factor is not None:
                sizes[names[i]] = value * factor
    names = "".join(names[i] for i in keep)
    if axes is not None:
        ax = check_axes(axes, data.ndim, name=f"axes for {path}")
    else:
        ax = check_axes(names, data.ndim, name=f"axes of {path}")
    if ax != names:  # user override: calibration follows position, not the file's names
        sizes = {ax[j]: sizes.get(names[j]) for j in range(len(ax))}
        invalid = {ax[j]: invalid[names[j]] for j in range(len(ax)) if names[j] in invalid}
    da = _build(data, ax, sizes, os.fspath(path))
    if invalid:  # kept unknown; with_voxel_size refuses it unless --voxel-size gives the axis
        da.attrs["voxel_size_invalid"] = {a.lower(): v for a, v in invalid.items()
                                          if a in _SPATIAL}
    return da


def _ngff_axes(axes: Any, ndim: int, path: Path) -> tuple[str, list[Any]]:
    if axes is None:  # NGFF 0.1/0.2: always tczyx
        axes = list("tczyx")[-ndim:]
    names, units = [], []
    for item in axes:
        name = item.get("name") if isinstance(item, Mapping) else item
        units.append(item.get("unit") if isinstance(item, Mapping) else None)
        names.append(str(name).upper())
    if len(names) != ndim or any(len(n) != 1 or n not in "TCZYX" for n in names):
        raise InputError(f"{path}: OME-Zarr axes {[str(n).lower() for n in names]} do not map "
                         f"onto t, c, z, y, x for a {ndim}-D array: name them t, c, z, y or x "
                         f"in the 'axes' of the multiscales metadata (.zattrs or zarr.json) "
                         f"(in Python: read_stack(path, axes=...))")
    return "".join(names), units


class _CheckedZarr:
    """A zarr array whose reads report a chunk that cannot be decoded as the user's file
    problem (a damaged OME-Zarr), not as a codec's RuntimeError deep inside a computation.
    dask reads through it chunk by chunk; it pickles (for dask's process and distributed
    schedulers) with the zarr array it wraps."""

    def __init__(self, array: Any, source: str) -> None:
        self.array, self.source = array, source
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __dask_tokenize__(self):
        from dask.base import tokenize

        return ("sharpstack-zarr", self.source, tokenize(self.array))

    def __getitem__(self, index: Any) -> np.ndarray:
        try:
            return np.asarray(self.array[index])
        except (RuntimeError, ValueError, OSError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise InputError(f"{self.source}: a chunk of the image cannot be read "
                             f"({type(exc).__name__}: {first}); the OME-Zarr is damaged: copy "
                             "or export it again") from None


def _ngff_scale(transforms: Any, ndim: int, path: Path | None = None) -> list[float] | None:
    for t in transforms or []:
        if isinstance(t, Mapping) and t.get("type") == "scale" and "scale" in t:
            try:
                scale = [float(s) for s in t["scale"]]
            except (TypeError, ValueError):
                raise InputError(f"{path}: the OME-Zarr scale {t['scale']!r} is not a list of "
                                 "numbers; fix coordinateTransformations in its .zattrs (or "
                                 "zarr.json)") from None
            if len(scale) == ndim:
                return scale
    return None


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------

def _prepare_target(path: Path, overwrite: bool, what: str) -> None:
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise OutputExistsError(f"{path} already exists; pass overwrite=True (CLI: "
                                    f"--overwrite) to replace it, or choose another path")
        if path.is_dir() and what != "zarr":
            raise InputError(f"{path} is a folder; cannot write a {what} file over it")
        if not path.is_dir() and what == "zarr":
            raise InputError(f"{path} is a file; cannot write an OME-Zarr folder over it")


def _temp_name(path: Path) -> Path:
    """Beside ``path``, under the one recognisable temporary name (``sharpstack._files``), so
    that the next run to the same destination cleans what a killed run left."""
    from ._files import temp_path

    return temp_path(path)


def write_file_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Write via ``write(tmp)`` to a temporary file next to ``path``, then rename into place."""
    from ._files import clean_stale

    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tmp = _temp_name(path)  # created by ``write`` with the usual permissions (not mkstemp's 0600)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def _os_error(path: Path, exc: OSError) -> SharpstackError:
    return SharpstackError(f"could not write {path} ({exc.strerror or exc}); check that the "
                           f"folder is writable and has enough free space")


def _imagej_calibration(axes: str, sizes: Mapping[str, float]
                        ) -> tuple[tuple[float, float] | None, dict[str, Any]]:
    """What an ImageJ TIFF says about the known ``sizes`` (upper-case keys, micrometres).

    Returns ``(resolution, metadata)`` for tifffile: X/YResolution in pixels per unit (None:
    tifffile's default 1, 1 with no unit) and the description's ``unit``/``yunit``/``zunit``
    and ``spacing``. ImageJ has no "unknown" size, only the unit ``pixel``, which Fiji shows
    as an uncalibrated axis (a 1-pixel width, height or depth). So an unknown axis is
    written in pixels, never as a number of micrometres:

    - x unknown: ``unit=pixel``, XResolution 1 (y, z may still be in ``um`` via
      ``yunit``/``zunit``, as ImageJ itself saves such images);
    - z unknown: no ``spacing`` (Fiji's default depth of 1.0) in ``zunit=pixel``, so that
      Fiji shows a depth of 1 pixel, not 1 µm, next to a calibrated lateral size;
    - nothing known: no unit, no spacing, default resolution (fully uncalibrated).

    :func:`_imagej_sizes` reads every case back with the same axes unknown.
    """
    space = [a for a in _SPATIAL if a in axes]
    if not any(a in sizes for a in space):
        return None, {}
    unit = "um" if "X" in sizes else "pixel"  # ImageJ's Calibration turns "um" into "µm"
    meta: dict[str, Any] = {"unit": unit}
    yunit = "um" if "Y" in sizes else "pixel"
    if yunit != unit:
        meta["yunit"] = yunit
    if "Z" in space:
        zunit = "um" if "Z" in sizes else "pixel"
        if zunit != unit:
            meta["zunit"] = zunit
        if "Z" in sizes:
            meta["spacing"] = sizes["Z"]
    resolution = (1.0 / sizes["X"] if "X" in sizes else 1.0,
                  1.0 / sizes["Y"] if "Y" in sizes else 1.0)
    return resolution, meta


def _ome_calibration(sizes: Mapping[str, float]) -> dict[str, Any]:
    """OME ``PhysicalSize*`` (with unit µm) for the known sizes only; OME leaves an unknown
    size out, which is how it says "unknown"."""
    meta: dict[str, Any] = {}
    for a in _SPATIAL:
        if a in sizes:
            meta[f"PhysicalSize{a}"] = float(sizes[a])
            meta[f"PhysicalSize{a}Unit"] = "\u00b5m"
    return meta


def _ngff_calibration(axes: str, sizes: Mapping[str, float]
                      ) -> tuple[list[dict[str, str]], list[float]]:
    """NGFF 0.4 ``axes`` entries and level-0 ``scale`` for ``axes`` (NGFF order)."""
    ngff_axes: list[dict[str, str]] = []
    scale: list[float] = []
    for a in axes:
        entry = {"name": a.lower(), "type": {"T": "time", "C": "channel"}.get(a, "space")}
        if a in _SPATIAL and a in sizes:
            entry["unit"] = _UNIT
            scale.append(float(sizes[a]))
        else:
            # NGFF requires a scale for every axis and has no "unknown". An unknown space
            # axis gets scale 1 and NO unit: a scale without a unit is in pixels, so no
            # reader (ours, napari, Fiji) takes it for 1 micrometre.
            scale.append(1.0)
        ngff_axes.append(entry)
    return ngff_axes, scale


def write_tiff(path: str | os.PathLike, data: xr.DataArray, *, overwrite: bool = False,
               compression: str | None = None) -> Path:
    """Write an ImageJ hyperstack TIFF that opens in Fiji with the right calibration.

    Parameters
    ----------
    path : str or path-like
        Target file (``.tif``/``.tiff``). A name ending in ``.ome.tif``/``.ome.tiff`` writes
        an OME-TIFF instead (``PhysicalSizeX/Y/Z`` in micrometres).
    data : xarray.DataArray
        Dims from ``t z c y x s`` with ``y`` and ``x`` required, e.g. ``(Z, Y, X)``;
        reordered to ImageJ's TZCYXS. dtype uint8, uint16 or float32 (kept as is; other
        dtypes raise: convert explicitly). Calibration: the known sizes in
        ``attrs["voxel_size"]`` (in ``attrs["unit"]``); axes left out are unknown.
    overwrite : bool
        Replace an existing file.
    compression : str, optional
        ``"zlib"``, ``"lzw"``, ``"packbits"`` (Fiji opens these directly), ``"zstd"`` or
        ``"lzma"`` (Fiji needs Bio-Formats). None writes uncompressed.

    Returns
    -------
    pathlib.Path
        The written path.

    Notes
    -----
    The calibration is written as ImageJ does: X/YResolution = 1 / voxel size (pixels per
    unit, ResolutionUnit NONE), ``spacing`` = z voxel size, ``unit=um`` (ImageJ shows
    ``µm``). Only known sizes are written: an unknown axis is in ImageJ's unit ``pixel``
    (an unknown z: no ``spacing`` and ``zunit=pixel``, so that Fiji shows a depth of 1 pixel
    beside a lateral size in µm; nothing known: no calibration at all). An OME-TIFF has
    ``PhysicalSize*`` (unit µm) for the known axes only. Uncompressed hyperstacks are
    classic TIFF at any size (tifffile's ImageJ layout, which Fiji reads beyond 4 GiB);
    compressed data above 2 GiB are written as BigTIFF with
    ImageJ metadata, which Fiji opens through Bio-Formats only.
    The file is written to a temporary file in the same folder and renamed into place.

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is False (nothing is written).
    InputError
        Unsupported dims, dtype, compression or voxel size.
    """
    p = Path(path)
    ome = _is_ome_tiff_name(p)
    what = "OME-TIFF" if ome else "ImageJ TIFF"
    axes = _data_axes(data, f"write_tiff({p})", allowed="TZCYXS")
    order = [a for a in "TZCYXS" if a in axes]
    if order != list(axes):
        data = data.transpose(*[a.lower() for a in order])
        axes = "".join(order)
    dtype = np.dtype(data.dtype)
    if not ome and dtype not in _IMAGEJ_DTYPES:
        raise InputError(f"write_tiff({p}): ImageJ hyperstacks hold uint8, uint16 or float32, "
                         f"got {dtype}; convert explicitly first, e.g. data.astype('float32')")
    if compression is not None and str(compression).lower() not in _COMPRESSIONS:
        raise InputError(f"write_tiff({p}): compression={compression!r} is not supported; use "
                         f"None or one of {', '.join(_COMPRESSIONS)}")
    comp = None if compression is None else str(compression).lower()
    if comp == "deflate":
        comp = "zlib"
    sizes = _voxel_sizes(data, axes, f"write_tiff({p})")
    _prepare_target(p, overwrite, what)
    values = _native(np.asarray(data.values))
    kwargs: dict[str, Any] = {"compression": comp, "photometric": "minisblack"}
    if "S" in axes:
        kwargs["photometric"] = "rgb"
    if ome:
        meta: dict[str, Any] = {"axes": axes, **_ome_calibration(sizes)}
        kwargs.update(ome=True, metadata=meta, bigtiff=values.nbytes > _BIGTIFF_BYTES)
    else:
        resolution, calibration = _imagej_calibration(axes, sizes)
        meta = {"axes": axes, **calibration}
        if resolution is not None:
            kwargs["resolution"] = resolution
        if values.size and dtype != np.uint8 and "S" not in axes:
            with warnings.catch_warnings():  # all-NaN data: no display range, no warning
                warnings.simplefilter("ignore", RuntimeWarning)
                lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
            if math.isfinite(lo) and math.isfinite(hi):
                meta.update(min=lo, max=hi)  # Fiji's initial display range
        kwargs.update(imagej=True, metadata=meta,
                      bigtiff=comp is not None and values.nbytes > _BIGTIFF_BYTES)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            # deliberate, see _BIGTIFF_BYTES
            warnings.filterwarnings("ignore", message=".*nonconformant BigTIFF ImageJ")
            tifffile.imwrite(tmp, values, **kwargs)

    try:
        return write_file_atomic(p, write)
    except OSError as exc:
        raise _os_error(p, exc) from exc
    except (ValueError, TypeError) as exc:
        raise InputError(f"write_tiff({p}): tifffile cannot write this {what} "
                         f"({exc}); nothing was written") from exc


def write_npy(path: str | os.PathLike, data: Any, *, overwrite: bool = False) -> Path:
    """Write the values of ``data`` as a ``.npy`` array (axes and voxel size are not stored:
    read back, every axis is of unknown size).

    Parameters
    ----------
    path : str or path-like
        Target ``.npy`` file.
    data : xarray.DataArray or numpy.ndarray
        Any shape; written in its current dim order and dtype.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        The written path.

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is False (nothing is written).
    """
    p = Path(path)
    if isinstance(data, xr.DataArray):  # .npy keeps no calibration, but a broken one is a bug
        _voxel_sizes(data, "".join(str(d).upper() for d in data.dims), f"write_npy({p})")
    values = data.values if isinstance(data, xr.DataArray) else np.asarray(data)
    if values.dtype == object:
        raise InputError(f"write_npy({p}): object arrays cannot be saved without pickle; "
                         f"convert to a numeric dtype first")
    _prepare_target(p, overwrite, ".npy")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, values, allow_pickle=False)

    try:
        return write_file_atomic(p, write)
    except OSError as exc:
        raise _os_error(p, exc) from exc


def write_ome_zarr(path: str | os.PathLike, data: xr.DataArray, *, overwrite: bool = False,
                   chunks: tuple[int, ...] | Mapping[str, int] | None = None) -> Path:
    """Write a single-level OME-Zarr image (NGFF 0.4, zarr format 2).

    Parameters
    ----------
    path : str or path-like
        Target folder, conventionally ``*.ome.zarr``.
    data : xarray.DataArray
        Dims from ``t c z y x`` with ``y`` and ``x`` required (NGFF 0.4 allows 2-5 of
        them); written in that order. numpy- or dask-backed (dask data are written chunk by
        chunk). dtype kept.
    overwrite : bool
        Replace an existing folder.
    chunks : tuple of int or dict, optional
        Chunk shape in the written (``t c z y x``) order, or axis letter -> size. Default:
        1 for t and c, up to 64 for z, up to 256 for y and x.

    Returns
    -------
    pathlib.Path
        The written folder.

    Notes
    -----
    Axes carry NGFF types (``time``, ``channel``, ``space``); level ``0`` has a ``scale``
    transform. A space axis of known size has ``unit: micrometer`` and its size as scale; an
    unknown one has scale 1 and no unit (NGFF has no "unknown"; a unitless scale is in
    pixels). Chunks use Blosc-lz4 and ``/`` as dimension separator (NGFF 0.4).
    The image is written to a temporary folder next to ``path`` and renamed into place.

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is False (nothing is written).
    InputError
        Unsupported dims, chunks or voxel size.
    """
    import dask.array as dsa
    import zarr

    p = Path(path)
    what = f"write_ome_zarr({p})"
    axes = _data_axes(data, what, allowed="TCZYX")
    order = [a for a in "TCZYX" if a in axes]
    if order != list(axes):
        data = data.transpose(*[a.lower() for a in order])
        axes = "".join(order)
    chunk_shape = _zarr_chunks(chunks, axes, data.shape, what)
    sizes = _voxel_sizes(data, axes, what)
    _prepare_target(p, overwrite, "zarr")

    multiscales = _ngff_multiscales(p, axes, sizes)

    p.parent.mkdir(parents=True, exist_ok=True)
    from ._files import clean_stale

    clean_stale(p)
    tmp = _temp_name(p)
    old: Path | None = None
    try:
        group = zarr.open_group(os.fspath(tmp), mode="w", zarr_format=2)
        arr = group.create_array("0", **_zarr_array_kwargs(data.shape, data.dtype, chunk_shape))
        values = data.data
        if isinstance(values, dsa.Array):
            dsa.store(values.rechunk(chunk_shape), arr, lock=False)
        else:
            arr[...] = np.asarray(values)
        group.attrs["multiscales"] = multiscales
        if p.exists():  # overwrite=True: swap in, then delete the old folder
            from ._files import OLD_PREFIX, temp_path

            old = temp_path(p, OLD_PREFIX)  # restored by clean_stale if a kill comes now
            os.replace(p, old)
        os.replace(tmp, p)
    except BaseException as exc:
        if old is not None and not p.exists():
            with contextlib.suppress(OSError):
                os.replace(old, p)
            old = None
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise _os_error(p, exc) from exc
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return p


def _ngff_multiscales(path: Path, axes: str, sizes: Mapping[str, float]) -> list[dict[str, Any]]:
    """NGFF 0.4 ``multiscales`` of a single-level image (level ``0``) with ``axes``."""
    ngff_axes, scale = _ngff_calibration(axes, sizes)
    return [{
        "version": "0.4",
        "name": path.name.split(".")[0] or "image",
        "axes": ngff_axes,
        "datasets": [{"path": "0",
                      "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
    }]


def _zarr_array_kwargs(shape: tuple[int, ...], dtype: Any, chunks: tuple[int, ...]
                       ) -> dict[str, Any]:
    """How sharpstack lays out level 0 of an OME-Zarr: Blosc-lz4, ``/`` separated keys."""
    import numcodecs

    return {"shape": tuple(shape), "dtype": np.dtype(dtype).newbyteorder("="),
            "chunks": tuple(chunks), "fill_value": 0,
            "compressors": numcodecs.Blosc(cname="lz4", clevel=5,
                                           shuffle=numcodecs.Blosc.SHUFFLE),
            "chunk_key_encoding": {"name": "v2", "separator": "/"}}


def _zarr_chunks(chunks: Any, axes: str, shape: tuple[int, ...], what: str) -> tuple[int, ...]:
    default = {"T": 1, "C": 1, "Z": 64, "Y": 256, "X": 256}
    if chunks is None:
        sizes = [default[a] for a in axes]
    elif isinstance(chunks, Mapping):
        lower = {str(k).upper(): v for k, v in chunks.items()}
        bad = [k for k in lower if k not in axes]
        if bad:
            raise InputError(f"{what}: chunks names axes {bad} that the data (dims "
                             f"{axes.lower()}) do not have")
        sizes = [lower.get(a, default[a]) for a in axes]
    else:
        sizes = list(chunks)
        if len(sizes) != len(axes):
            raise InputError(f"{what}: chunks={tuple(chunks)} has {len(sizes)} entries but the "
                             f"data have {len(axes)} dims ({axes.lower()}); give one per dim")
    out = []
    for a, c, n in zip(axes, sizes, shape):
        if not isinstance(c, (int, np.integer)) or c < 1:
            raise InputError(f"{what}: chunk size {c!r} for axis {a.lower()!r} must be a "
                             f"positive integer")
        out.append(int(min(c, max(n, 1))))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# streaming writers: the output is created first and filled window by window (predict)
# --------------------------------------------------------------------------------------------

def open_ome_zarr(path: str | os.PathLike, dims: str, shape: tuple[int, ...], dtype: Any,
                  attrs: Mapping[str, Any], chunks: tuple[int, ...], *,
                  create_array: bool = True) -> Any:
    """Create an empty single-level OME-Zarr image at ``path``, laid out as
    :func:`write_ome_zarr` writes it, to be filled chunk by chunk.

    Parameters
    ----------
    path : str or path-like
        A new folder (normally a temporary one beside the destination; the caller renames
        it when complete).
    dims : str
        Axis letters in NGFF order (from ``TCZYX``), e.g. ``"ZYX"``.
    shape, dtype, chunks
        Of level ``0``.
    attrs : mapping
        The image's attrs (``voxel_size``, ``unit``): the calibration written, as
        :func:`write_ome_zarr` writes it.
    create_array : bool
        False creates the group and its metadata only (for ``dask.array.to_zarr``, which
        creates level ``0`` itself; pass it ``_zarr_array_kwargs``).

    Returns
    -------
    zarr.Array or zarr.Group
        Level ``0`` (or the group when ``create_array`` is False).
    """
    import zarr

    p = Path(path)
    what = f"open_ome_zarr({p})"
    axes = check_axes(dims, len(shape), name=f"{what} dims")
    sizes = _voxel_sizes(attrs, axes, what)
    group = zarr.open_group(os.fspath(p), mode="w-", zarr_format=2)
    group.attrs["multiscales"] = _ngff_multiscales(p, axes, sizes)
    if not create_array:
        return group
    return group.create_array("0", **_zarr_array_kwargs(shape, dtype, chunks))


def open_tiff_memmap(path: str | os.PathLike, dims: str, shape: tuple[int, ...], dtype: Any,
                     attrs: Mapping[str, Any], *, ome: bool = False) -> np.memmap:
    """Create an uncompressed ImageJ hyperstack (or OME-TIFF) at ``path`` and return its
    image data as a writable memory map, so that an output larger than memory is written
    window by window.

    Parameters
    ----------
    path : str or path-like
        A new file (normally a temporary one beside the destination).
    dims : str
        Axis letters in ImageJ order (from ``TZCYXS``), e.g. ``"ZCYX"``.
    shape, dtype
        The image; ImageJ holds uint8, uint16 and float32.
    attrs : mapping
        ``voxel_size``/``unit``: the calibration, written as :func:`write_tiff` writes it.
    ome : bool
        An OME-TIFF (``PhysicalSize*``) instead of an ImageJ TIFF.

    Returns
    -------
    numpy.memmap
        Shape ``shape``; flush (or delete) it before renaming the file. The ImageJ display
        range can be set afterwards with :func:`set_tiff_display_range`.
    """
    p = Path(path)
    what = f"open_tiff_memmap({p})"
    axes = check_axes(dims, len(shape), name=f"{what} dims")
    dtype = np.dtype(dtype)
    if not ome and dtype not in _IMAGEJ_DTYPES:
        raise InputError(f"{what}: ImageJ hyperstacks hold uint8, uint16 or float32, got "
                         f"{dtype}; write an OME-Zarr (.ome.zarr) or convert first")
    sizes = _voxel_sizes(attrs, axes, what)
    nbytes = math.prod(shape) * dtype.itemsize
    kwargs: dict[str, Any] = {"photometric": "rgb" if "S" in axes else "minisblack"}
    if ome:
        kwargs.update(ome=True, metadata={"axes": axes, **_ome_calibration(sizes)},
                      bigtiff=nbytes > _BIGTIFF_BYTES)
    else:
        resolution, calibration = _imagej_calibration(axes, sizes)
        if resolution is not None:
            kwargs["resolution"] = resolution
        kwargs.update(imagej=True, metadata={"axes": axes, **calibration})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*nonconformant BigTIFF ImageJ")
        # > 4 GiB: tifffile's contiguous ImageJ layout (first IFD only), see _BIGTIFF_BYTES
        warnings.filterwarnings("ignore", message=".*truncating ImageJ file")
        return tifffile.memmap(os.fspath(p), shape=tuple(shape), dtype=dtype, **kwargs)


def set_tiff_display_range(path: str | os.PathLike, lo: float, hi: float) -> None:
    """Write Fiji's initial display range (``min``/``max`` of the ImageJ description) into
    an ImageJ TIFF written by :func:`open_tiff_memmap`, as :func:`write_tiff` does."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return
    with tifffile.TiffFile(os.fspath(path)) as tif:
        if not tif.is_imagej:
            return
        text = tif.pages[0].tags["ImageDescription"].value
    lines = [ln for ln in str(text).splitlines() if not ln.startswith(("min=", "max="))]
    lines += [f"min={lo}", f"max={hi}"]
    tifffile.tiffcomment(os.fspath(path), comment="\n".join(lines))


def write_stack(path: str | os.PathLike, data: xr.DataArray, *, overwrite: bool = False) -> Path:
    """Write ``data`` in the format its suffix names.

    Parameters
    ----------
    path : str or path-like
        ``.tif``/``.tiff`` -> :func:`write_tiff` (ImageJ), ``.ome.tif`` -> OME-TIFF,
        ``.npy`` -> :func:`write_npy`, ``.zarr``/``.ome.zarr`` -> :func:`write_ome_zarr`.
    data : xarray.DataArray
        See the format's writer, e.g. ``(Z, Y, X)`` with ``attrs["voxel_size"]``.
    overwrite : bool
        Replace an existing output.

    Returns
    -------
    pathlib.Path
        The written path.
    """
    p = Path(path)
    kind = _suffix_kind(p)
    if kind == "tiff" and not p.name.lower().endswith((".btf", ".tf8")):
        return write_tiff(p, data, overwrite=overwrite)
    if kind == "npy":
        return write_npy(p, data, overwrite=overwrite)
    if kind == "zarr":
        return write_ome_zarr(p, data, overwrite=overwrite)
    raise InputError(f"{p}: cannot tell the output format from the file name; use one of "
                     f"{', '.join(WRITE_SUFFIXES)}")
