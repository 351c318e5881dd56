"""``.npy`` arrays: no axes, no calibration (2D read as YX, 3D as ZYX)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .._axes import check_axes
from ..errors import InputError
from .atomic import prepare_target, write_error, write_file_atomic
from .dataarray import build_dataarray, known_voxel_sizes, native_order

def read_npy(path: Path, axes: str | None) -> xr.DataArray:
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
    return build_dataarray(native_order(array), ax, {}, os.fspath(path))


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
        known_voxel_sizes(data, "".join(str(d).upper() for d in data.dims), f"write_npy({p})")
    values = data.values if isinstance(data, xr.DataArray) else np.asarray(data)
    if values.dtype == object:
        raise InputError(f"write_npy({p}): object arrays cannot be saved without pickle; "
                         f"convert to a numeric dtype first")
    prepare_target(p, overwrite, ".npy")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, values, allow_pickle=False)

    try:
        return write_file_atomic(p, write)
    except OSError as exc:
        raise write_error(p, exc) from exc
