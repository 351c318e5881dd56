"""Voxel size: what the file gave, what the user supplies (``--voxel-size``), what a
computation needs."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import xarray as xr

from .._axes import check_axes
from ..errors import InputError
from .dataarray import SPATIAL, calibration_attrs, data_axes, known_voxel_sizes, positive_size
from .units import unit_factor

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
        factor = 1.0 if unit is None else unit_factor(unit)
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
    axes = data_axes(data, "with_voxel_size")
    name = _stack_name(data)
    if voxel_size is not None and not isinstance(voxel_size, Mapping):
        raise InputError(f"with_voxel_size: voxel_size must be a dict like {{'z': 0.5}} "
                         f"(micrometres), e.g. from parse_voxel_size, got "
                         f"{type(voxel_size).__name__}")
    sizes = {a.lower(): v for a, v in known_voxel_sizes(data, axes, f"{name}").items()}
    old = data.attrs.get("voxel_size_source")
    sources = {a: (old.get(a, "file") if isinstance(old, Mapping) else "file") for a in sizes}
    for key, value in (voxel_size or {}).items():
        a = str(key).lower()
        if a.upper() not in SPATIAL or len(a) != 1:
            raise InputError(f"{option}: {key!r} is not a spatial axis; name z, y or x")
        if a.upper() not in axes:
            raise InputError(f"{option} gives a {a} size but {name} has no {a} axis (dims "
                             f"{', '.join(str(d) for d in data.dims)}); give only the sizes of "
                             f"its axes, e.g. {option} y=0.24,x=0.24")
        sizes[a] = positive_size(value, a, option)
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
    out.attrs.update(calibration_attrs(axes, sizes, sources))
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
    bad = [a for a in wanted if a.upper() not in SPATIAL]
    if bad:
        raise InputError(f"require_voxel_size: {''.join(bad)} has no voxel size; ask for z, y "
                         f"or x")
    if isinstance(data, xr.DataArray):
        dims = [str(d) for d in data.dims]
        absent = [a for a in wanted if a not in dims]
        if absent:
            raise InputError(f"{purpose} needs the {', '.join(absent)} voxel size, but {name} "
                             f"has no {', '.join(absent)} axis (dims {', '.join(dims)})")
    sizes = {a.lower(): v for a, v in known_voxel_sizes(attrs, wanted.upper(), name).items()}
    missing = [a for a in wanted if a not in sizes]
    if not missing:
        return {a: sizes[a] for a in wanted}
    what = {"z": "z spacing", "y": "pixel height", "x": "pixel width"}
    known = {a.lower(): v for a, v in known_voxel_sizes(attrs, SPATIAL, name).items()}
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
    axes = data_axes(data, "describe_voxel_size")
    sizes = {a.lower(): v for a, v in known_voxel_sizes(data, axes, _stack_name(data)).items()}
    sources = data.attrs.get("voxel_size_source")
    sources = sources if isinstance(sources, Mapping) else {}
    parts = []
    for a in (x.lower() for x in SPATIAL if x in axes):
        if a in sizes:
            origin = sources.get(a)
            parts.append(f"{a} {_fmt(sizes[a])} µm" + (f" ({origin})" if origin else ""))
        else:
            parts.append(f"{a} unknown")
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------
# reading
