"""Windows in, windows out: reading (with a decoded-chunk cache), batching, the reader and
writer threads around the network, cropping each window's output to its core."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import xarray as xr

from ..errors import InputError, PackageError


class ChunkCache:
    """Windows of a chunked (dask) array, with each stored chunk decoded once while the
    windows that overlap it are read.

    Windows carry a halo, so neighbouring windows overlap the same chunks of the input:
    read straight from zarr, every chunk would be decoded 2-6 times. Hand-written because
    zarr-python 3 has no decoded-chunk cache (zarr 2's ``LRUStoreCache`` kept encoded bytes)
    and dask's opportunistic cache (``cachey``) scores by compute time, not by this access
    pattern. A least-recently-used set of chunks up to ``max_bytes``; windows are read in
    order (z outermost, x innermost), so one row of chunks is reused by the next row.
    """

    def __init__(self, array: Any, max_bytes: int = 256 << 20) -> None:
        import itertools
        from collections import OrderedDict

        self.array, self.max_bytes = array, int(max_bytes)
        self.shape, self.dtype = tuple(array.shape), np.dtype(array.dtype)
        self.bounds = [list(itertools.accumulate(c, initial=0)) for c in array.chunks]
        self.cache: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self.bytes = 0
        self.lock = threading.Lock()

    def _chunk(self, key: tuple[int, ...]) -> np.ndarray:
        with self.lock:
            hit = self.cache.get(key)
            if hit is not None:
                self.cache.move_to_end(key)
                return hit
        block = np.asarray(self.array.blocks[key].compute(scheduler="synchronous"))
        with self.lock:
            self.cache[key] = block
            self.bytes += block.nbytes
            while self.bytes > self.max_bytes and len(self.cache) > 1:
                _, old = self.cache.popitem(last=False)
                self.bytes -= old.nbytes
        return block

    def __getitem__(self, index: tuple[slice, ...]) -> np.ndarray:
        import bisect
        import itertools

        spans = [s.indices(n)[:2] for s, n in zip(index, self.shape)]
        out = np.empty([b - a for a, b in spans], dtype=self.dtype)
        ranges = []
        for (a, b), bd in zip(spans, self.bounds):
            first = bisect.bisect_right(bd, a) - 1
            last = bisect.bisect_left(bd, b)
            ranges.append(range(first, max(last, first + 1)))
        for key in itertools.product(*ranges):
            block = self._chunk(key)
            src, dst = [], []
            for k, (a, b), bd in zip(key, spans, self.bounds):
                lo, hi = max(a, bd[k]), min(b, bd[k + 1])
                src.append(slice(lo - bd[k], hi - bd[k]))
                dst.append(slice(lo - a, hi - a))
            out[tuple(dst)] = block[tuple(src)]
        return out


def read_window(data: Any, dims: Sequence[str], sizes: Mapping[str, int],
                wins: Mapping[str, Any]) -> np.ndarray:
    """Read one window from ``data`` (numpy, memory map, zarr or dask array with ``dims``),
    reflect-padding what lies outside the data."""
    index, pads = [], []
    for d in dims:
        w = wins.get(d)
        if w is None:
            index.append(slice(None))
            pads.append((0, 0))
            continue
        n = sizes[d]
        lo, hi = max(w.start, 0), min(w.start + w.size, n)
        index.append(slice(lo, hi))
        pads.append((lo - w.start, w.start + w.size - hi))
    part = data[tuple(index)]
    if hasattr(part, "compute"):  # dask: this thread reads the chunks, no scheduler
        part = part.compute(scheduler="synchronous")
    array = np.asarray(part)
    if any(p != (0, 0) for p in pads):
        array = np.pad(array, pads, mode="reflect")
    elif not array.flags.owndata:
        # a view of the caller's array, of a memory map or of a cached chunk: the engine
        # pre-processes windows in place, which would change the input under the windows
        # that overlap this one (a float32 stack tiled along any axis came out wrong)
        array = array.copy()
    return array


def crop(tile: xr.DataArray, wins: Mapping[str, Any], name: str
         ) -> tuple[tuple[slice, ...], np.ndarray]:
    """The kept part of a window's output and where it goes (output dims from ``c z y x``)."""
    src, dst = [], []
    for d in tile.dims:
        if d == "c":
            src.append(slice(None))
            dst.append(slice(None))
            continue
        w = wins[str(d)]
        assert w.dst is not None
        length = w.dst.stop - w.dst.start
        if w.src + length > tile.sizes[d]:
            raise PackageError(f"model {name!r} returned {tile.sizes[d]} pixels along {d!r} for "
                               f"a window of {w.size}, fewer than its description promises")
        src.append(slice(w.src, w.src + length))
        dst.append(w.dst)
    return tuple(dst), tile.values[tuple(src)]


def check_window(array: np.ndarray, wins: Mapping[str, Any], name: str) -> None:
    if array.dtype.kind in "fc" and not np.isfinite(array).all():
        where = ", ".join(f"{d} {w.start}..{w.start + w.size}" for d, w in wins.items())
        raise InputError(f"{name} contains NaN or infinite values (in the window at {where}); "
                         f"fill or remove them (e.g. Fiji Process > Math > Remove NaNs, or "
                         f"numpy.nan_to_num) before passing it to sharpstack")


def check_output(values: np.ndarray, runner: Any, wins: Mapping[str, Any]) -> None:
    """A model whose output holds NaN or infinities (damaged weights, an overflow) fails
    here, before the values reach the output file."""
    if values.dtype.kind in "fc" and not np.isfinite(values).all():
        where = ", ".join(f"{d} {w.start}..{w.start + w.size}" for d, w in wins.items())
        raise PackageError(f"model {runner.model.name!r} returned NaN or infinite values "
                           f"({runner.options.weight_format} weights, window at {where}); "
                           f"its weights may be damaged: check the package with `sharpstack "
                           f"validate PACKAGE` or try another --weight-format")


def run_windows(runner: Any, data: Any, sizes: Mapping[str, int],
                windows: Iterable[tuple[int, dict[str, Any]]], total: int,
                write: Callable[[int, tuple[slice, ...], np.ndarray], None],
                progress: Callable[[int], None] | None = None, *, check_finite: bool = False,
                name: str = "the input", prefetch: int = 2) -> None:
    """Run every window through ``runner`` and hand each kept output to ``write``.

    ``windows`` yields ``(index, wins)``; windows of one shape are batched into one forward
    call (as many as :meth:`Runner.units_per_call` allows). A reader thread prepares the
    next batches, a writer thread post-processes and writes finished ones; at most
    ``prefetch`` batches wait on either side, so memory stays a few batches.
    """
    dims = runner.layout.dims
    if hasattr(data, "blocks") and hasattr(data, "chunks"):  # dask (zarr, TIFF): decode once
        data = ChunkCache(data)
    it = iter(windows)
    first = next(it, None)
    if first is None:
        return
    probe = runner.units(read_window(data, dims, sizes, first[1]))
    per_call = runner.units_per_call(probe.shape[0], math.prod(probe.shape[1:]))

    def batches() -> Iterable[list[tuple[int, dict[str, Any]]]]:
        group = [first]
        for item in it:
            if len(group) >= per_call:
                yield group
                group = []
            group.append(item)
        yield group

    def load(group: list[tuple[int, dict[str, Any]]]) -> tuple[Any, list[int], Any]:
        parts = []
        for _, wins in group:
            window = read_window(data, dims, sizes, wins)
            if check_finite:
                check_window(window, wins, name)
            parts.append(runner.units(window))
        counts = [p.shape[0] for p in parts]
        units = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return group, counts, runner.prepare(units)

    def store(group: list[tuple[int, dict[str, Any]]], counts: list[int], y: Any) -> int:
        out = runner.finish(y)
        at = 0
        for (index, wins), n in zip(group, counts):
            tile = runner.tile(out[at:at + n])
            at += n
            dst, values = crop(tile, wins, runner.model.name)
            check_output(values, runner, wins)
            write(index, dst, values)
        return len(group)

    reader = ThreadPoolExecutor(1, thread_name_prefix="sharpstack-read")
    writer = ThreadPoolExecutor(1, thread_name_prefix="sharpstack-write")
    pending_reads: deque[Future] = deque()
    pending_writes: deque[Future] = deque()
    source = iter(batches())
    done = 0
    try:
        for group in source:
            pending_reads.append(reader.submit(load, group))
            if len(pending_reads) >= prefetch:
                break
        while pending_reads:
            group, counts, x = pending_reads.popleft().result()
            nxt = next(source, None)
            if nxt is not None:
                pending_reads.append(reader.submit(load, nxt))
            y = runner.forward(x)
            pending_writes.append(writer.submit(store, group, counts, y))
            while len(pending_writes) > prefetch or (pending_writes and pending_writes[0].done()):
                done = _report(pending_writes.popleft().result(), done, progress)
        while pending_writes:
            done = _report(pending_writes.popleft().result(), done, progress)
    finally:
        for f in list(pending_reads) + list(pending_writes):
            f.cancel()
        reader.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True, cancel_futures=True)
    assert done == total or total < 0, (done, total)


def _report(count: int, done: int, progress: Callable[[int], None] | None) -> int:
    for _ in range(count):  # once per window, also when a batch held several
        done += 1
        if progress is not None:
            progress(done)
    return done


