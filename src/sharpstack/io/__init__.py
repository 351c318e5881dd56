"""Read and write microscopy stacks: TIFF (ImageJ, OME, plain, BigTIFF), OME-Zarr and ``.npy``;
read HDF5 and, through bioio (the extra ``sharpstack[formats]``), Zeiss CZI, Nikon ND2 and
Leica LIF.

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

A path may choose a part of its file after a colon: ``cells.h5:/raw`` (an HDF5 dataset),
``plate.czi:scene=1,channel=0,time=2``; :func:`with_selection` composes it from the CLI's
``--scene``, ``--channel`` and ``--time``, and :func:`stack_file` gives the file back.

The package, one module per format or concern:

- :mod:`.stack`: :func:`read_stack` / :func:`write_stack`, the format chosen by file name;
- :mod:`.source`: ``PATH[:SELECTOR]``: which dataset, scene, channel and time point;
- :mod:`.tiff`: ImageJ / OME / plain TIFF and BigTIFF, read, written, memory-mapped;
- :mod:`.zarr`: OME-Zarr (NGFF 0.4), read lazily, written, created to be filled;
- :mod:`.npy`: ``.npy`` arrays;
- :mod:`.hdf5`: HDF5 datasets through h5py (``element_size_um``), read lazily when large;
- :mod:`.vendor`: CZI, ND2, LIF through bioio and its plugins;
- :mod:`.dataarray`: the DataArray conventions and :func:`as_dataarray`;
- :mod:`.calibration`: voxel sizes given, parsed, required and described;
- :mod:`.units`: length units -> micrometres;
- :mod:`.checks`: finite and not-constant values;
- :mod:`.atomic`: writing through a temporary file renamed into place.
"""

from __future__ import annotations

from .atomic import write_file_atomic
from .calibration import (describe_voxel_size, parse_voxel_size, require_voxel_size,
                          with_voxel_size)
from .checks import check_finite, check_not_constant
from .dataarray import as_dataarray
from .npy import write_npy
from .source import split_source, stack_file, with_selection
from .stack import READ_SUFFIXES, WRITE_SUFFIXES, read_stack, write_stack
from .tiff import IMAGEJ_DTYPES, open_tiff_memmap, set_tiff_display_range, write_tiff
from .units import unit_factor
from .zarr import open_ome_zarr, write_ome_zarr, zarr_array_kwargs

__all__ = [
    "IMAGEJ_DTYPES",
    "READ_SUFFIXES",
    "WRITE_SUFFIXES",
    "as_dataarray",
    "check_finite",
    "check_not_constant",
    "describe_voxel_size",
    "open_ome_zarr",
    "open_tiff_memmap",
    "parse_voxel_size",
    "read_stack",
    "require_voxel_size",
    "set_tiff_display_range",
    "split_source",
    "stack_file",
    "unit_factor",
    "with_selection",
    "with_voxel_size",
    "write_npy",
    "write_file_atomic",
    "write_ome_zarr",
    "write_stack",
    "write_tiff",
    "zarr_array_kwargs",
]
