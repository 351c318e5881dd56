"""Where predicted windows go: memory, OME-Zarr, a memory-mapped TIFF or ``.npy``.

A sink is opened before the windows are computed (under a temporary name beside the
destination), receives each finished window (``write``), can be read back (statistics of the
whole output, post-processing that needs them) and is renamed into place by ``commit``
only when complete; ``abort`` removes it. An OME-Zarr output is written in a folder named
``.sharpstack-partial-<name>`` with a log of finished windows, so that an interrupted run
(Ctrl-C, SIGTERM, a killed job) can be continued with ``resume``.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, OutputExistsError, SharpstackError

PARTIAL_PREFIX = ".sharpstack-partial-"
_LOG = ".sharpstack-predict"  # inside the partial folder: fingerprint + finished windows

_TIFF_ORDER = "TZCYXS"


def partial_path(dest: Path) -> Path:
    """The folder an OME-Zarr output is written in until it is complete."""
    return dest.with_name(f"{PARTIAL_PREFIX}{dest.name}")


def output_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".zarr", ".ome.zarr")):
        return "zarr"
    if name.endswith(".npy"):
        return "npy"
    if name.endswith((".ome.tif", ".ome.tiff")):
        return "ome-tiff"
    if name.endswith((".tif", ".tiff")):
        return "tiff"
    from ..io import WRITE_SUFFIXES

    raise InputError(f"{path}: cannot tell the output format from the file name; use one of "
                     f"{', '.join(WRITE_SUFFIXES)}")


def tiff_dtype(dtype: Any) -> np.dtype:
    """What a predicted ``dtype`` is stored as in an ImageJ TIFF (uint8, uint16, float32)."""
    dt = np.dtype(dtype)
    if dt == np.float64 or dt == np.float16:
        return np.dtype(np.float32)
    if dt == np.bool_:
        return np.dtype(np.uint8)
    return dt


def _write_error(dest: Any, exc: OSError) -> SharpstackError:
    """One clear message for an output that cannot be written (permissions, a full disk, a
    file where a folder should be)."""
    where = dest if dest is not None else (exc.filename or "the output")
    return SharpstackError(f"cannot write the output {where} ({exc.strerror or exc}); check "
                           f"that its folder is writable and has free space, or choose "
                           f"another output path")


class Sink:
    """Base class: ``dims`` (from ``c z y x``), ``shape``, ``chunks``; opened on the first
    window (its dtype is the network's) unless resumed."""

    resumable = False

    def __init__(self, dims: Sequence[str], shape: Sequence[int], chunks: Sequence[int]) -> None:
        self.dims, self.shape, self.chunks = tuple(dims), tuple(shape), tuple(chunks)
        self.array: Any = None

    @property
    def chunk_grid(self) -> tuple[tuple[int, ...], ...]:
        """Chunk sizes per dim (dask style): the windows' cores."""
        return tuple(tuple([c] * (n // c) + ([n % c] if n % c else [])) for n, c in
                     zip(self.shape, self.chunks))

    def _open(self, dtype: np.dtype) -> None:
        raise NotImplementedError

    def write(self, index: tuple[slice, ...], values: np.ndarray) -> None:
        if self.array is None:
            self._open_checked(np.dtype(values.dtype))
        self.array[index] = values

    def _open_checked(self, dtype: np.dtype) -> None:
        try:
            self._open(dtype)
        except OSError as exc:
            raise _write_error(getattr(self, "dest", None), exc) from None

    def read(self, index: tuple[slice, ...]) -> np.ndarray:
        return np.asarray(self.array[index])

    def commit(self) -> Any:
        raise NotImplementedError

    def abort(self, interrupted: bool = False) -> None:
        """Remove what was written (a resumable sink keeps it when ``interrupted``)."""


class MemorySink(Sink):
    def _open(self, dtype: np.dtype) -> None:
        self.array = np.empty(self.shape, dtype=dtype)

    def commit(self) -> np.ndarray:
        if self.array is None:  # no window (cannot happen for a non-empty plan)
            self._open(np.dtype(np.float32))
        return self.array


class _FileSink(Sink):
    def __init__(self, dest: Path, dims: Sequence[str], shape: Sequence[int],
                 chunks: Sequence[int], attrs: Mapping[str, Any]) -> None:
        from .._files import clean_stale, temp_path

        super().__init__(dims, shape, chunks)
        self.dest, self.attrs = Path(dest), dict(attrs)
        try:
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            clean_stale(self.dest)
        except OSError as exc:
            raise _write_error(self.dest, exc) from None
        self.tmp = temp_path(self.dest)

    def abort(self, interrupted: bool = False) -> None:
        from .._files import remove_path

        self.array = None
        remove_path(self.tmp)

    def _replace(self) -> Path:
        from .._files import replace_atomically

        try:
            return replace_atomically(self.tmp, self.dest)
        except OSError as exc:
            raise SharpstackError(f"could not write {self.dest} ({exc.strerror or exc}); check "
                                  f"that the folder is writable and has enough free space"
                                  ) from exc


class _MappedSink(_FileSink):
    """A memory map of the output file. Written pages are flushed and dropped from this
    process after each window (``madvise(MADV_DONTNEED)``), so that they do not accumulate
    in its resident memory as the file grows."""

    order: tuple[str, ...] = ()

    def _perm(self) -> list[int]:
        return [self.dims.index(d) for d in self.order]

    def write(self, index: tuple[slice, ...], values: np.ndarray) -> None:
        if self.array is None:
            self._open_checked(np.dtype(values.dtype))
        perm = self._perm()
        idx = tuple(index[i] for i in perm)
        self.array[idx] = np.transpose(values, perm)
        self._release(idx)

    def read(self, index: tuple[slice, ...]) -> np.ndarray:
        perm = self._perm()
        inv = np.argsort(perm)
        return np.transpose(np.asarray(self.array[tuple(index[i] for i in perm)]), inv)

    def _release(self, idx: tuple[slice, ...]) -> None:
        mm = getattr(self.array, "_mmap", None)
        if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        self.array.flush()  # everything clean: dropping pages loses nothing
        bounds = [s.indices(n)[:2] for s, n in zip(idx, self.array.shape)]
        if any(b <= a for a, b in bounds):
            return
        strides, itemsize = self.array.strides, self.array.itemsize
        first = sum(a * st for (a, _), st in zip(bounds, strides))
        last = sum((b - 1) * st for (_, b), st in zip(bounds, strides)) + itemsize
        # numpy maps the file from the offset rounded down to the allocation granularity
        shift = int(self.array.offset) % mmap.ALLOCATIONGRANULARITY
        lo = (shift + first) // mmap.PAGESIZE * mmap.PAGESIZE
        hi = min(len(mm), shift + last)
        if hi > lo:
            mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


class TiffSink(_MappedSink):
    """An uncompressed ImageJ hyperstack (or OME-TIFF) written through a memory map."""

    def __init__(self, dest: Path, dims: Sequence[str], shape: Sequence[int],
                 chunks: Sequence[int], attrs: Mapping[str, Any], *, ome: bool) -> None:
        super().__init__(dest, dims, shape, chunks, attrs)
        self.ome = ome
        self.order = tuple(d for d in _TIFF_ORDER.lower() if d in self.dims)
        self.lo, self.hi = math.inf, -math.inf

    def _open(self, dtype: np.dtype) -> None:
        from ..io import open_tiff_memmap

        self.dtype = tiff_dtype(dtype)
        shape = tuple(self.shape[self.dims.index(d)] for d in self.order)
        self.array = open_tiff_memmap(self.tmp, "".join(self.order).upper(), shape, self.dtype,
                                      self.attrs, ome=self.ome)

    def write(self, index: tuple[slice, ...], values: np.ndarray) -> None:
        values = values.astype(tiff_dtype(values.dtype), copy=False)
        if values.size and values.dtype != np.uint8:
            with np.errstate(invalid="ignore"):
                self.lo = min(self.lo, float(np.nanmin(values)))
                self.hi = max(self.hi, float(np.nanmax(values)))
        super().write(index, values)

    def commit(self) -> Path:
        from ..io import set_tiff_display_range

        self.array.flush()
        self.array = None  # closes the map
        if not self.ome and math.isfinite(self.lo):
            set_tiff_display_range(self.tmp, self.lo, self.hi)
        return self._replace()


class NpySink(_MappedSink):
    def __init__(self, dest: Path, dims: Sequence[str], shape: Sequence[int],
                 chunks: Sequence[int], attrs: Mapping[str, Any]) -> None:
        super().__init__(dest, dims, shape, chunks, attrs)
        self.order = self.dims

    def _open(self, dtype: np.dtype) -> None:
        self.array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=dtype,
                                               shape=self.shape)

    def commit(self) -> Path:
        self.array.flush()
        self.array = None
        return self._replace()


class ZarrSink(_FileSink):
    """An OME-Zarr image chunked like the windows, with a log of finished windows."""

    resumable = True

    def __init__(self, dest: Path, dims: Sequence[str], shape: Sequence[int],
                 chunks: Sequence[int], attrs: Mapping[str, Any], *, fingerprint: dict,
                 resume: bool) -> None:
        super().__init__(dest, dims, shape, chunks, attrs)
        self.tmp = partial_path(self.dest)
        self.fingerprint = fingerprint
        self.done: set[int] = set()
        self._log: Any = None
        if resume and self.tmp.exists():
            self._reopen()

    def _reopen(self) -> None:
        import zarr

        log = self.tmp / _LOG
        try:
            lines = log.read_text().splitlines()
            saved = json.loads(lines[0])
        except (OSError, ValueError, IndexError) as exc:
            raise InputError(f"{self.tmp} is not a partial sharpstack output that can be "
                             f"resumed ({exc}); remove it or pass --overwrite") from exc
        if saved != self.fingerprint:
            diff = sorted(k for k in set(saved) | set(self.fingerprint)
                          if saved.get(k) != self.fingerprint.get(k))
            words = {"package": "the package's content (rdf or weights)",
                     "output_calibration": "the output's voxel size/calibration "
                                           "(--voxel-size or the input's)"}
            raise InputError(f"the interrupted run in {self.tmp} used other settings "
                             f"({', '.join(words.get(k, k) for k in diff)} differ); resume "
                             f"with the same package, input and options, or pass --overwrite "
                             f"to start over")
        for line in lines[1:]:
            if line.strip().isdigit():
                self.done.add(int(line))
        self.array = zarr.open_array(os.fspath(self.tmp / "0"), mode="r+")
        self._log = open(log, "a")  # noqa: SIM115 (closed in commit/abort)

    def _open(self, dtype: np.dtype) -> None:
        from ..io import open_ome_zarr

        self.array = open_ome_zarr(self.tmp, "".join(self.dims).upper(), self.shape, dtype,
                                   self.attrs, self.chunks)
        self._log = open(self.tmp / _LOG, "w")  # noqa: SIM115
        self._log.write(json.dumps(self.fingerprint) + "\n")
        self._log.flush()

    def mark(self, index: int) -> None:
        """Record that window ``index`` is completely written."""
        self.done.add(index)
        self._log.write(f"{index}\n")
        self._log.flush()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def commit(self) -> Path:
        if self.array is None:
            self._open(np.dtype(np.float32))
        self._close_log()
        (self.tmp / _LOG).unlink(missing_ok=True)
        self.array = None
        return self._replace()

    def abort(self, interrupted: bool = False) -> None:
        self._close_log()
        self.array = None
        if not interrupted:
            from .._files import remove_path

            remove_path(self.tmp)


def post_whole(job: Any, sink: Sink, name: str) -> None:
    """Post-processing that needs statistics of the whole output, applied block by block."""
    if not job.proc.post_whole:
        return
    from .engine import as_bioimageio_stat, bioimageio_ops, compile_ops
    from .stats import blocks, measure_stats

    dims = list(sink.dims)
    job.out_stats = measure_stats(job.out_measures, sink.read, sink.shape,
                                  sink.read(tuple(slice(0, 1) for _ in dims)).dtype, dims,
                                  job.model.out_dims, job.model.name, f"the output of {name}",
                                  chunks=sink.chunk_grid)
    stat = as_bioimageio_stat({**job.stats, **job.out_stats})
    op_dims = [{"c": "channel"}.get(d, d) for d in dims]
    fast = compile_ops(job.proc.post_whole, op_dims, stat, "numpy")
    if fast is None:  # operators without a version here: the whole output at once
        whole = (slice(None),) * len(dims)
        run = bioimageio_ops(job.proc.post_whole, job.model.out_id, op_dims, stat)
        _store_block(sink, whole, run(sink.read(whole)))
        return
    for index in blocks(sink.shape, 1 if "c" in dims else 0, getattr(sink, "chunk_grid", None)):
        values = fast(np.array(sink.read(index)))  # a copy: processed in place
        _store_block(sink, index, values)


def _store_block(sink: Sink, index: tuple[slice, ...], values: np.ndarray) -> None:
    if isinstance(sink, MemorySink) and sink.array.dtype != values.dtype:
        sink.array = sink.array.astype(values.dtype)  # the final dtype of the processing
    elif not isinstance(sink, MemorySink) and getattr(sink.array, "dtype", values.dtype) \
            != values.dtype:
        values = values.astype(sink.array.dtype)
    sink.write(index, values)


def prepare_destination(dest: Path, src: Path, *, overwrite: bool, resume: bool) -> None:
    """Refuse before any computation what cannot be written: the input itself, an existing
    output without ``overwrite``, a partial OME-Zarr run without ``resume``/``overwrite``."""
    d, s = dest.resolve(), src.resolve()
    if d == s:
        raise InputError(f"output {dest} is the input stack itself; choose another output path")
    if s in d.parents:
        raise InputError(f"output {dest} lies inside the input {src}; writing there would "
                         f"change the input: choose an output path outside it")
    if d in s.parents:
        raise InputError(f"the input {src} lies inside the output {dest}; replacing the output "
                         f"would delete the input: choose another output path")
    kind = output_kind(dest)
    from .._files import check_destination, clean_stale

    check_destination(dest, "output")
    # first put back what a killed replace left (so the checks below see the real state)
    # and remove dead runs' temporaries
    clean_stale(dest)
    partial = partial_path(dest)
    if kind == "zarr" and partial.exists() and not _has_log(partial):
        # a run killed before it wrote its first window's log: nothing to resume, and it
        # must not block this run
        import warnings

        from .._files import remove_path

        warnings.warn(f"removed {partial}: an interrupted run that had not finished any "
                      f"window (nothing to resume)", stacklevel=3)
        remove_path(partial)
    if kind == "zarr" and partial.exists() and not (resume or overwrite):
        raise OutputExistsError(
            f"{partial} holds an interrupted run towards {dest}; pass --resume to continue it "
            f"or --overwrite to start over (or delete that folder)")
    if resume and kind != "zarr":
        raise InputError(f"--resume continues an interrupted OME-Zarr output; {dest.name} is "
                         f"{kind} (write .ome.zarr to be able to resume)")
    if (dest.exists() or dest.is_symlink()) and not overwrite:
        raise OutputExistsError(f"{dest} already exists; pass overwrite=True (CLI: "
                                f"--overwrite) to replace it, or choose another path")
    if dest.exists() and kind == "zarr" and not dest.is_dir():
        raise InputError(f"{dest} is a file; cannot write an OME-Zarr folder over it")
    if dest.is_dir() and kind != "zarr":
        raise InputError(f"{dest} is a folder; cannot write a {kind} file over it")
    if overwrite and not resume and partial.exists():
        from .._files import remove_path

        remove_path(partial)


def _has_log(partial: Path) -> bool:
    """Does the partial OME-Zarr folder hold a readable run log (its fingerprint line)?"""
    try:
        with open(partial / _LOG) as fh:
            json.loads(fh.readline())
        return True
    except (OSError, ValueError):
        return False


def fingerprint(**items: Any) -> dict[str, Any]:
    """JSON-able description of a run, compared on resume (values rounded to JSON)."""
    out = {}
    for k, v in items.items():
        text = json.dumps(v, sort_keys=True, default=repr)
        out[k] = hashlib.sha256(text.encode()).hexdigest()[:16] if len(text) > 200 else \
            json.loads(text)
    return out
