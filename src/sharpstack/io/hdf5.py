"""HDF5 (``.h5``, ``.hdf5``) through h5py: one dataset of a file, its axes and voxel size as
ilastik and PlantSeg write them; large datasets are read lazily, window by window."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .._axes import check_axes
from ..errors import InputError
from .dataarray import SPATIAL, build_dataarray, native_order
from .units import unit_factor

# Above this many bytes a dataset is read lazily (window by window) instead of into memory,
# as TIFFs are.
_LAZY_H5_BYTES = 2**28

# Lazy reads go by blocks of about this size (whole chunks of the file where it has them).
_BLOCK_BYTES = 2**26


def read_hdf5(path: Path, dataset: str | None, axes: str | None) -> xr.DataArray:
    """Read one dataset of an HDF5 file (see :func:`sharpstack.io.read_stack`).

    ``dataset``: its path in the file; None takes the file's only image dataset (2 or more
    dimensions). Axes come from ``axes``, else the dataset's ilastik ``axistags``, an ``axes``
    attribute or h5py dimension labels, else 2D = YX and 3D = ZYX. Voxel size (micrometres):
    ``element_size_um`` (ilastik, PlantSeg), else ``resolution`` or ``voxel_size`` with an
    optional ``unit``/``units`` attribute (default micrometre); given for the spatial axes in
    order (ZYX for a 3D dataset) or for every axis of the dataset.
    """
    import h5py

    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path} is not a readable HDF5 file ({exc}); check that it was "
                         f"copied completely, or open it with h5py / HDFView") from exc
    with fh:
        ds, name = _dataset(fh, dataset, path)
        shape, dtype = tuple(ds.shape), ds.dtype
        if not (np.issubdtype(dtype, np.number) or dtype == bool):
            raise InputError(f"{path}:{name} holds {dtype} values, not an image; choose an "
                             f"image dataset ({_syntax(path)})")
        ax = _axes(ds, axes, path, name)
        sizes = _voxel_size(ds, fh, ax, path, name)
        if math.prod(shape) * dtype.itemsize > _LAZY_H5_BYTES:
            array: Any = _lazy(path, name, shape, dtype, ds.chunks)
        else:
            array = native_order(ds[()])
    return build_dataarray(array, ax, sizes, f"{os.fspath(path)}:{name}")


def _syntax(path: Path) -> str:
    return f"give the path as {path}:/group/dataset"


def _images(fh: Any) -> list[tuple[str, Any]]:
    import h5py

    found: list[tuple[str, Any]] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and obj.ndim >= 2:
            found.append(("/" + name, obj))

    fh.visititems(visit)
    return found


def _listing(items: list[tuple[str, Any]]) -> str:
    return "; ".join(f"{n} {tuple(d.shape)} {d.dtype}" for n, d in items)


def _dataset(fh: Any, dataset: str | None, path: Path) -> tuple[Any, str]:
    import h5py

    images = _images(fh)
    if dataset is None:
        if len(images) == 1:
            return images[0][1], images[0][0]
        if not images:
            raise InputError(f"{path} holds no image dataset (2 or more dimensions); check the "
                             f"file in HDFView or with h5py")
        raise InputError(f"{path} holds {len(images)} image datasets: {_listing(images)}. "
                         f"Choose one by appending its path to the file name, e.g. "
                         f"{path}:{images[0][0]}")
    name = "/" + dataset.strip("/")
    obj = fh.get(name)
    if obj is None or not isinstance(obj, h5py.Dataset):
        what = "is a group" if isinstance(obj, h5py.Group) else "does not exist"
        listing = _listing(images) if images else "none"
        raise InputError(f"{path}: {name} {what}; its image datasets are: {listing} "
                         f"(e.g. {path}:{images[0][0] if images else '/raw'})")
    return obj, name


def _axes(ds: Any, axes: str | None, path: Path, name: str) -> str:
    where = f"{path}:{name}"
    if axes is not None:
        return check_axes(axes, ds.ndim, name=f"axes for {where}")
    found = _axes_in_file(ds)
    if found is not None:
        return check_axes(found, ds.ndim, name=f"axes of {where} (from the file)")
    if ds.ndim in (2, 3):
        return "YX" if ds.ndim == 2 else "ZYX"
    raise InputError(
        f"{where} has {ds.ndim} dimensions {tuple(ds.shape)} and the file does not say which "
        f"axes they are; write them into the file (h5py: f['{name}'].attrs['axes'] = 'CZYX', "
        f"one letter per dimension from TCZYX), or save one 3D dataset per channel")


def _axes_in_file(ds: Any) -> str | None:
    tags = ds.attrs.get("axistags")  # ilastik: JSON {"axes": [{"key": "z", ...}, ...]}
    if tags is not None:
        try:
            keys = [a["key"] for a in json.loads(_text(tags))["axes"]]
            return "".join(keys).upper()
        except (ValueError, KeyError, TypeError):
            pass
    text = ds.attrs.get("axes")
    if text is not None:
        text = _text(text) if not isinstance(text, np.ndarray) else "".join(_text(t) for t in text)
        return text.replace(",", "").replace(" ", "").upper()
    labels = [_text(d.label) for d in ds.dims]
    if all(len(lab) == 1 for lab in labels):
        return "".join(labels).upper()
    return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _voxel_size(ds: Any, fh: Any, axes: str, path: Path, name: str) -> dict[str, float | None]:
    space = [a for a in axes if a in SPATIAL]
    for holder in (ds, fh):
        for key in ("element_size_um", "resolution", "voxel_size"):
            if key not in holder.attrs:
                continue
            try:
                values = [float(v) for v in np.ravel(holder.attrs[key])]
            except (TypeError, ValueError):
                continue  # not numbers: not a calibration
            factor = 1.0 if key == "element_size_um" else unit_factor(
                _text(holder.attrs.get("unit", holder.attrs.get("units", "micrometer"))))
            if factor is None:
                continue
            if len(values) == len(space):
                return {a: v * factor for a, v in zip(space, values)}
            if len(values) == len(axes):
                return {a: v * factor for a, v in zip(axes, values) if a in SPATIAL}
            raise InputError(f"{path}:{name}: attribute {key}={values} has {len(values)} "
                             f"values but the dataset has axes {axes}; give one size per "
                             f"spatial axis ({''.join(space)}) in the file, or --voxel-size")
    return {}


def _lazy(path: Path, name: str, shape: tuple[int, ...], dtype: Any, chunks: Any) -> Any:
    import dask.array as dsa
    from dask.array.core import normalize_chunks

    source = _H5Window(os.fspath(path), name, shape, dtype)
    size = normalize_chunks("auto", shape, dtype=dtype, previous_chunks=chunks,
                            limit=_BLOCK_BYTES)
    return dsa.from_array(source, chunks=size, asarray=True)


class _H5Window:
    """One HDF5 dataset read window by window: each read opens the file (no handle is kept,
    so it pickles for dask's process and distributed schedulers and never holds a lock)."""

    def __init__(self, path: str, name: str, shape: tuple[int, ...], dtype: Any) -> None:
        self.path, self.name = path, name
        self.shape, self.dtype, self.ndim = shape, np.dtype(dtype), len(shape)

    def __dask_tokenize__(self):
        st = os.stat(self.path)
        return ("sharpstack-h5", self.path, self.name, st.st_mtime_ns, st.st_size)

    def __getitem__(self, index: Any) -> np.ndarray:
        import h5py

        try:
            with h5py.File(self.path, "r") as fh:
                return native_order(np.asarray(fh[self.name][index]))
        except (OSError, KeyError) as exc:
            raise InputError(f"{self.path}:{self.name}: a window cannot be read ({exc}); the "
                             f"file changed or is damaged") from None
