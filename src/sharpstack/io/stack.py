"""One entry point per direction: :func:`read_stack` and :func:`write_stack` pick the format
from the file name (TIFF, OME-Zarr, ``.npy``; reading also HDF5 and, through bioio, CZI, ND2
and LIF)."""

from __future__ import annotations

import os
from pathlib import Path

import xarray as xr

from ..errors import InputError
from .hdf5 import read_hdf5
from .npy import read_npy, write_npy
from .source import select_planes, split_source
from .tiff import read_tiff, write_tiff
from .vendor import VENDOR_SUFFIXES, read_vendor
from .zarr import read_ome_zarr, write_ome_zarr

_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")

READ_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".btf", ".tf8", ".npy", ".zarr",
                 ".ome.zarr", *_HDF5_SUFFIXES, *VENDOR_SUFFIXES)
"""File name endings :func:`read_stack` understands (case-insensitive)."""

WRITE_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".npy", ".zarr", ".ome.zarr")
"""File name endings :func:`write_stack` understands (case-insensitive)."""


def _suffix_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith((".zarr", ".ome.zarr")):
        return "zarr"
    if name.endswith(".npy"):
        return "npy"
    if name.endswith((".tif", ".tiff", ".btf", ".tf8")):
        return "tiff"
    if name.endswith(_HDF5_SUFFIXES):
        return "hdf5"
    if name.endswith(tuple(VENDOR_SUFFIXES)):
        return "vendor"
    return None


def _is_zarr_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in (".zgroup", ".zattrs", "zarr.json"))


def read_stack(path: str | os.PathLike, axes: str | None = None) -> xr.DataArray:
    """Read a microscopy stack with its axes and voxel size.

    Parameters
    ----------
    path : str or path-like
        A TIFF (``.tif``, ``.tiff``, ``.ome.tif``, ``.btf``: ImageJ hyperstack, OME-TIFF, plain
        multi-page, compressed, BigTIFF), a ``.npy`` file, an OME-Zarr folder (``.zarr``,
        ``.ome.zarr``; level 0 of the first multiscales image, read lazily as a dask array),
        an HDF5 file (``.h5``, ``.hdf5``; see :func:`.hdf5.read_hdf5`), or a Zeiss ``.czi``,
        Nikon ``.nd2`` or Leica ``.lif`` file (through bioio and its plugins, the extra
        ``sharpstack[formats]``; see :func:`.vendor.read_vendor`). A selector may follow
        the file name after a colon (:func:`.source.split_source`): ``cells.h5:/raw`` (a
        dataset), ``plate.czi:scene=1,channel=0,time=2`` (a scene by index or name, a
        channel and a time point; channel and time work for every format and drop that
        axis). A file of several scenes or image datasets without one chosen is an error
        that lists them.
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
    - HDF5: ``element_size_um`` (ZYX, as ilastik and PlantSeg write it), ``resolution`` or
      ``voxel_size``; vendor files: bioio's ``physical_pixel_sizes`` (micrometres).
    - Data above 256 MiB are read lazily (dask) from BigTIFF, HDF5, OME-Zarr and vendor
      files whose chunks are smaller than a volume; smaller data are read into memory.

    Raises
    ------
    InputError
        Missing file, unsupported suffix, unreadable or truncated file, axes that do not fit.
    """
    p, sel = split_source(path)
    if not p.exists():
        raise InputError(f"{p} does not exist; check the path (relative paths start from "
                         f"{Path.cwd()})")
    kind = _suffix_kind(p)
    if kind is None and _is_zarr_dir(p):
        kind = "zarr"
    if kind is None:
        raise InputError(f"{p}: unsupported file type; sharpstack reads "
                         f"{', '.join(READ_SUFFIXES)} (CZI, ND2 and LIF need "
                         f"pip install 'sharpstack[formats]'; convert other formats with Fiji "
                         f"or Bio-Formats first)")
    what = "OME-Zarr" if kind == "zarr" else p.suffix.lstrip(".").upper()
    if sel.dataset is not None and kind != "hdf5":
        raise InputError(f"{path}: only HDF5 files hold named datasets; for a {what} file give "
                         f"the path alone (scene=, channel=, time= may follow ':')")
    if sel.scene is not None and kind != "vendor":
        raise InputError(f"{path}: --scene chooses a scene of a CZI, ND2 or LIF file; a "
                         f"{what} file has one image here: leave --scene out")
    if kind == "zarr":
        return select_planes(read_ome_zarr(p, axes), sel, p)
    if p.is_dir():
        raise InputError(f"{p} is a folder, not a {kind.upper()} file; give the path of a file")
    if kind == "vendor":
        return read_vendor(p, sel, axes)
    if kind == "hdf5":
        return select_planes(read_hdf5(p, sel.dataset, axes), sel, p)
    if kind == "npy":
        return select_planes(read_npy(p, axes), sel, p)
    return select_planes(read_tiff(p, axes), sel, p)


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
