"""Microscope vendors' formats through bioio and its plugins: Zeiss CZI (``bioio-czi``), Nikon
ND2 (``bioio-nd2``), Leica LIF (``bioio-lif``), all in the optional extra
``pip install sharpstack[formats]``. One scene of the file, with bioio's physical pixel sizes
(micrometres) as the voxel size; read lazily where the file's layout allows."""

from __future__ import annotations

import importlib
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .._axes import check_axes
from ..errors import InputError
from .dataarray import SPATIAL, build_dataarray, known_size
from .source import Selection, select_planes

VENDOR_SUFFIXES = {".czi": ("bioio_czi", "bioio-czi", "Zeiss CZI"),
                   ".nd2": ("bioio_nd2", "bioio-nd2", "Nikon ND2"),
                   ".lif": ("bioio_lif", "bioio-lif", "Leica LIF")}
"""File ending -> (plugin module, its PyPI name, what the format is)."""

_EXTRA = "pip install 'sharpstack[formats]'"

# Up to this many bytes of image data (after choosing a scene) are read into memory at once,
# as for TIFF and HDF5.
_LAZY_BYTES = 2**28


def read_vendor(path: Path, sel: Selection, axes: str | None) -> xr.DataArray:
    """Read one scene of a CZI, ND2 or LIF file (see :func:`sharpstack.io.read_stack`).

    Returns the channel ``sel.channel`` and time point ``sel.time`` of the scene, or all of
    them (singleton axes dropped). A file of several scenes needs ``sel.scene`` (an index or
    a name).
    """
    image = _open(path)
    what = VENDOR_SUFFIXES[path.suffix.lower()][2]
    try:
        scenes = tuple(image.scenes)
    except Exception as exc:  # noqa: BLE001 - a plugin's metadata error is the file's problem
        raise _unreadable(path, what, exc) from exc
    _set_scene(image, scenes, sel.scene, path)
    try:
        data = image.dask_data
        order = str(image.dims.order)
        pps = image.physical_pixel_sizes
    except Exception as exc:  # noqa: BLE001
        raise _unreadable(path, what, exc) from exc
    names, data = _standard_axes(order, data, path)
    sizes = {a: known_size(getattr(pps, a, None)) for a in SPATIAL if a in names}
    if axes is not None:  # user override: calibration follows position
        ax = check_axes(axes, data.ndim, name=f"axes for {path}")
        sizes = {ax[j]: sizes.get(names[j]) for j in range(len(ax))}
    else:
        ax = check_axes(names, data.ndim, name=f"axes of {path}")
    chosen = Selection(scene=sel.scene if len(scenes) > 1 else None, channel=sel.channel,
                       time=sel.time).text()
    da = build_dataarray(data, ax, sizes, os.fspath(path) + (f":{chosen}" if chosen else ""))
    da = select_planes(da, sel, path)  # before reading: only the chosen planes are read
    return da.copy(data=_whole_chunks(da.data))


def _open(path: Path) -> Any:
    module, package, what = VENDOR_SUFFIXES[path.suffix.lower()]
    try:
        from bioio import BioImage
        from bioio_base.exceptions import UnsupportedFileFormatError

        reader = importlib.import_module(module).Reader
    except ImportError as exc:
        raise InputError(f"{path} is a {what} file, read through bioio and its plugin "
                         f"{package}, which are not installed: {_EXTRA} (or pip install "
                         f"bioio {package})") from exc
    try:
        return BioImage(path, reader=reader)
    except UnsupportedFileFormatError as exc:
        raise _unreadable(path, what, exc) from exc


def _unreadable(path: Path, what: str, exc: Exception) -> InputError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return InputError(f"{path} is not a readable {what} file ({first[:300]}); check that it was "
                      f"copied completely and opens in Fiji (Bio-Formats)")


def _set_scene(image: Any, scenes: tuple[str, ...], scene: int | str | None, path: Path) -> None:
    listing = ", ".join(f"{i} ({name!r})" for i, name in enumerate(scenes))
    if scene is None:
        if len(scenes) > 1:
            raise InputError(
                f"{path} holds {len(scenes)} scenes: {listing}. Choose one with --scene "
                f"(its index or name), e.g. --scene 0; in a path or from Python: "
                f"{path}:scene=0")
        return
    if isinstance(scene, int):
        if scene >= len(scenes):
            raise InputError(f"{path} has {len(scenes)} scene(s): {listing}; scene {scene} "
                             f"does not exist (indices start at 0)")
    elif scene not in scenes:
        raise InputError(f"{path} has no scene named {scene!r}; its scenes are: {listing} "
                         f"(choose by index or name)")
    image.set_scene(scene)


def _standard_axes(order: str, data: Any, path: Path) -> tuple[str, Any]:
    """bioio's dims (``TCZYX``, ``S`` for RGB samples, ...) -> sharpstack letters, singleton
    time, channel and other axes dropped; RGB samples become channels."""
    index: list[Any] = []
    names = ""
    has_c = "C" in order and data.shape[order.index("C")] > 1
    for letter, n in zip(order.upper(), data.shape):
        if letter in "ZYX" or (letter in "TC" and n > 1):
            index.append(slice(None))
            names += letter
        elif letter == "S" and n > 1:
            if has_c:
                raise InputError(f"{path} has both channels and colour samples; export one "
                                 f"channel per file (Fiji: Image > Color > Split Channels)")
            index.append(slice(None))
            names += "C"
        elif n == 1:
            index.append(0)
        else:
            raise InputError(f"{path} has a dimension {letter!r} of size {n} that sharpstack "
                             f"does not know; export the stack you need as OME-TIFF from Fiji")
    return names, data[tuple(index)]


def _whole_chunks(data: Any) -> Any:
    """Small data, and data whose chunks each hold a whole volume (some plugins decode a
    scene only as a whole), are read into memory once; others stay lazy, read window by
    window (a window of a whole-volume chunk would decode the whole volume each time)."""
    nbytes = math.prod(data.shape) * np.dtype(data.dtype).itemsize
    whole = all(len(c) == 1 for c in data.chunks[-3:])
    if nbytes <= _LAZY_BYTES or whole:
        return np.asarray(data.compute(scheduler="synchronous"))
    return data
