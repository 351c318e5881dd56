"""TIFF: ImageJ hyperstacks, OME-TIFF, plain multi-page and BigTIFF; read (in memory, or
lazily through tifffile's zarr store above a size), written atomically, or created as a
memory map and filled window by window (predict)."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import xarray as xr

from .._axes import check_axes
from ..errors import InputError, SharpstackError
from .atomic import prepare_target, write_error, write_file_atomic
from .dataarray import (SPATIAL, build_dataarray, data_axes, known_size, known_voxel_sizes,
                        native_order)
from .units import unit_factor

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
IMAGEJ_DTYPES = (np.dtype("uint8"), np.dtype("uint16"), np.dtype("float32"))

# TIFF compression schemes accepted by write_tiff. Fiji's own TIFF reader opens zlib
# ("deflate"), lzw and packbits; zstd and lzma need Bio-Formats (File > Import > Bio-Formats).
_COMPRESSIONS = ("zlib", "deflate", "lzw", "packbits", "zstd", "lzma")


_INCH_UNITS = ("in", "inch", "inches")

# TIFF ResolutionUnit tag values -> micrometres per unit (INCH is left out on purpose: an
# inch unit nearly always means a meaningless 72/96 dpi default, not a calibration).
_RESUNIT_TO_UM = {3: 1e4, 4: 1e3, 5: 1.0}


def _is_ome_tiff_name(path: Path) -> bool:
    return path.name.lower().endswith((".ome.tif", ".ome.tiff"))


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


def read_tiff(path: Path, axes: str | None) -> xr.DataArray:
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
    return build_dataarray(native_order(array), ax, sizes, os.fspath(path))


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
        return unit_factor(text)

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
        sizes["Z"] = known_size(zunit * abs(float(spacing)))
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
    for a in SPATIAL:
        value = pixels.get(f"PhysicalSize{a}")
        # OME's default unit for PhysicalSize* is the micrometre.
        factor = unit_factor(pixels.get(f"PhysicalSize{a}Unit", "\u00b5m"))
        try:
            size = float(value) if value is not None else None
        except ValueError:
            size = None
        if size is not None and factor is not None and size > 0:
            sizes[a] = size * factor
    return sizes


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
    space = [a for a in SPATIAL if a in axes]
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
    for a in SPATIAL:
        if a in sizes:
            meta[f"PhysicalSize{a}"] = float(sizes[a])
            meta[f"PhysicalSize{a}Unit"] = "\u00b5m"
    return meta


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
    axes = data_axes(data, f"write_tiff({p})", allowed="TZCYXS")
    order = [a for a in "TZCYXS" if a in axes]
    if order != list(axes):
        data = data.transpose(*[a.lower() for a in order])
        axes = "".join(order)
    dtype = np.dtype(data.dtype)
    if not ome and dtype not in IMAGEJ_DTYPES:
        raise InputError(f"write_tiff({p}): ImageJ hyperstacks hold uint8, uint16 or float32, "
                         f"got {dtype}; convert explicitly first, e.g. data.astype('float32')")
    if compression is not None and str(compression).lower() not in _COMPRESSIONS:
        raise InputError(f"write_tiff({p}): compression={compression!r} is not supported; use "
                         f"None or one of {', '.join(_COMPRESSIONS)}")
    comp = None if compression is None else str(compression).lower()
    if comp == "deflate":
        comp = "zlib"
    sizes = known_voxel_sizes(data, axes, f"write_tiff({p})")
    prepare_target(p, overwrite, what)
    values = native_order(np.asarray(data.values))
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
        raise write_error(p, exc) from exc
    except (ValueError, TypeError) as exc:
        raise InputError(f"write_tiff({p}): tifffile cannot write this {what} "
                         f"({exc}); nothing was written") from exc


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
    if not ome and dtype not in IMAGEJ_DTYPES:
        raise InputError(f"{what}: ImageJ hyperstacks hold uint8, uint16 or float32, got "
                         f"{dtype}; write an OME-Zarr (.ome.zarr) or convert first")
    sizes = known_voxel_sizes(attrs, axes, what)
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
