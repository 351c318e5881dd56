"""OME-Zarr (NGFF 0.4, zarr format 2): read level 0 lazily, write atomically, or create an
empty image to be filled chunk by chunk (predict)."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .._axes import check_axes
from ..errors import InputError
from .atomic import prepare_target, temp_name, write_error
from .dataarray import SPATIAL, build_dataarray, data_axes, known_voxel_sizes
from .units import UNIT, unit_factor

def read_ome_zarr(path: Path, axes: str | None) -> xr.DataArray:
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
        factor = unit_factor(units[i])
        if names[i] in SPATIAL and scale is not None:
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
    da = build_dataarray(data, ax, sizes, os.fspath(path))
    if invalid:  # kept unknown; with_voxel_size refuses it unless --voxel-size gives the axis
        da.attrs["voxel_size_invalid"] = {a.lower(): v for a, v in invalid.items()
                                          if a in SPATIAL}
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


def _ngff_calibration(axes: str, sizes: Mapping[str, float]
                      ) -> tuple[list[dict[str, str]], list[float]]:
    """NGFF 0.4 ``axes`` entries and level-0 ``scale`` for ``axes`` (NGFF order)."""
    ngff_axes: list[dict[str, str]] = []
    scale: list[float] = []
    for a in axes:
        entry = {"name": a.lower(), "type": {"T": "time", "C": "channel"}.get(a, "space")}
        if a in SPATIAL and a in sizes:
            entry["unit"] = UNIT
            scale.append(float(sizes[a]))
        else:
            # NGFF requires a scale for every axis and has no "unknown". An unknown space
            # axis gets scale 1 and NO unit: a scale without a unit is in pixels, so no
            # reader (ours, napari, Fiji) takes it for 1 micrometre.
            scale.append(1.0)
        ngff_axes.append(entry)
    return ngff_axes, scale


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
    axes = data_axes(data, what, allowed="TCZYX")
    order = [a for a in "TCZYX" if a in axes]
    if order != list(axes):
        data = data.transpose(*[a.lower() for a in order])
        axes = "".join(order)
    chunk_shape = _zarr_chunks(chunks, axes, data.shape, what)
    sizes = known_voxel_sizes(data, axes, what)
    prepare_target(p, overwrite, "zarr")

    multiscales = _ngff_multiscales(p, axes, sizes)

    p.parent.mkdir(parents=True, exist_ok=True)
    from .._files import clean_stale

    clean_stale(p)
    tmp = temp_name(p)
    old: Path | None = None
    try:
        group = zarr.open_group(os.fspath(tmp), mode="w", zarr_format=2)
        arr = group.create_array("0", **zarr_array_kwargs(data.shape, data.dtype, chunk_shape))
        values = data.data
        if isinstance(values, dsa.Array):
            dsa.store(values.rechunk(chunk_shape), arr, lock=False)
        else:
            arr[...] = np.asarray(values)
        group.attrs["multiscales"] = multiscales
        if p.exists():  # overwrite=True: swap in, then delete the old folder
            from .._files import OLD_PREFIX, temp_path

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
            raise write_error(p, exc) from exc
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


def zarr_array_kwargs(shape: tuple[int, ...], dtype: Any, chunks: tuple[int, ...]
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
        creates level ``0`` itself; pass it ``zarr_array_kwargs``).

    Returns
    -------
    zarr.Array or zarr.Group
        Level ``0`` (or the group when ``create_array`` is False).
    """
    import zarr

    p = Path(path)
    what = f"open_ome_zarr({p})"
    axes = check_axes(dims, len(shape), name=f"{what} dims")
    sizes = known_voxel_sizes(attrs, axes, what)
    group = zarr.open_group(os.fspath(p), mode="w-", zarr_format=2)
    group.attrs["multiscales"] = _ngff_multiscales(p, axes, sizes)
    if not create_array:
        return group
    return group.create_array("0", **zarr_array_kwargs(shape, dtype, chunks))
