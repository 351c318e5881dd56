"""Exact statistics of a whole stack in one streaming pass (two or three for float data).

Pre-processing such as ``scale_range`` needs percentiles of the whole stack; a stack larger
than memory cannot be sorted. numpy has no streaming quantile and ``dask.array.percentile``
merges per-chunk percentiles (an approximation whose error depends on the chunking), so
this module selects the exact order statistics itself:

- integer data of at most 16 bits: one pass, an exact histogram (``numpy.bincount``);
- other data: a pass for count, min, max (and mean/variance, and the NaN check), then a
  histogram of 65536 bins between min and max locating the bin of every wanted rank, then
  the values of those bins are collected and sorted (a bin with more than
  :data:`COLLECT_LIMIT` values is histogrammed again, a bin holding one value only is done).

The quantile is then interpolated exactly as ``numpy.quantile`` does (same virtual index,
same ``lerp``), so the result equals ``numpy.quantile`` of the whole stack bit for bit (asked for a list of
quantiles, as bioimageio.core does), and
the memory needed is one block (:data:`BLOCK_VOXELS`) plus the collected values. Mean and
variance are exact for integers of at most 16 bits (Python integer sums); for other data they
are accumulated in float64 block by block (Chan et al.'s pairwise update), so that their last
bits can depend on the blocks, which follow the storage chunks (each chunk is read once).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError, PackageError

BLOCK_VOXELS = 1 << 22
"""Voxels per block read by a statistics pass (16 MiB of float32)."""

COLLECT_LIMIT = 1 << 22
"""At most this many values are collected for one wanted rank before sorting."""

_BINS = 1 << 16
_METHODS = ("linear", "lower", "higher", "nearest")


def blocks(shape: Sequence[int], lead: int = 0,
           chunks: Sequence[Sequence[int]] | None = None) -> Iterator[tuple[slice, ...]]:
    """Blocks of at most :data:`BLOCK_VOXELS` voxels covering an array of ``shape``.

    The first ``lead`` dims (channels) are always taken whole. ``chunks`` (dask-style chunk
    sizes per dim, e.g. a zarr store's) make the blocks unions of whole chunks, so that
    every stored chunk is read once; of the other dims, the innermost are kept whole while
    they fit and the next one is cut.
    """
    shape = [int(n) for n in shape]
    rest = shape[lead:]
    if chunks is None:
        bounds = [list(range(0, n, 1)) + [n] for n in rest]
    else:
        bounds = [list(itertools.accumulate(c, initial=0)) for c in list(chunks)[lead:]]
    budget = max(1, BLOCK_VOXELS // max(1, math.prod(shape[:lead])))
    # grow from one chunk per dim, innermost dim first: merge whole chunks while the block
    # (this dim's segment x the others' current extent) stays within the budget
    extent = [max((e - a for a, e in zip(b, b[1:])), default=1) for b in bounds]
    segments: list[list[tuple[int, int]]] = [[] for _ in rest]
    for j in range(len(rest) - 1, -1, -1):
        others = math.prod(extent[:j] + extent[j + 1:])
        per = max(1, budget // max(others, 1))
        b, n = bounds[j], rest[j]
        segs, start = [], 0
        for k in range(1, len(b)):
            if b[k] - start > per and b[k - 1] > start:
                segs.append((start, b[k - 1]))
                start = b[k - 1]
        segs.append((start, n))
        segments[j] = segs
        extent[j] = max(e - a for a, e in segs)
    for parts in itertools.product(*segments):
        yield tuple([slice(None)] * lead + [slice(a, e) for a, e in parts])


@dataclass
class _Group:
    """Running statistics of one channel (or of the whole stack)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    isum: int | None = None  # exact sums of <= 16-bit integers (order-independent moments)
    isq: int = 0
    lo: float = math.inf
    hi: float = -math.inf
    hist: np.ndarray | None = None  # exact histogram of <= 16-bit integers
    values: dict[int, float] = field(default_factory=dict)  # rank -> order statistic

    def merge_moments(self, part: tuple) -> None:
        """Add the moments of one block, computed by :func:`_moments`."""
        if part[0] == "int":
            _, n_b, isum, isq = part
            self.isum = (self.isum or 0) + isum
            self.isq += isq
            self.n += n_b
            return
        _, n_b, mean_b, m2_b = part
        if n_b == 0:
            return
        delta = mean_b - self.mean
        n = self.n + n_b
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n


def _moments(v: np.ndarray) -> tuple:
    """Moments of one block: exact integer sums for <= 16-bit integers, else float64."""
    if _int_offset(v.dtype) is not None:  # exact: Python ints, whatever the blocks
        w = v.astype(np.int64)
        return ("int", v.size, int(w.sum()), int(np.dot(w, w)))
    if v.size == 0:
        return ("float", 0, 0.0, 0.0)
    mean_b = float(np.mean(v, dtype=np.float64))
    d = v.astype(np.float64) - mean_b
    return ("float", v.size, mean_b, float(np.dot(d, d)))


def _int_offset(dtype: np.dtype) -> int | None:
    """Offset that maps a <= 16-bit integer dtype onto 0..65535, None for other dtypes."""
    if dtype.kind in "ub" and dtype.itemsize <= 2:
        return 0
    if dtype.kind == "i" and dtype.itemsize <= 2:
        return 1 << (8 * dtype.itemsize - 1)
    return None


def _ranks(n: int, q: float, method: str) -> list[int]:
    v = (n - 1) * q
    lo = int(math.floor(v))
    if method == "lower":
        return [lo]
    if method == "higher":
        return [min(int(math.ceil(v)), n - 1)]
    if method == "nearest":
        return [int(np.around(v))]
    return sorted({lo, min(lo + 1, n - 1)})


def _interpolate(group: _Group, n: int, q: float, method: str, dtype: np.dtype) -> float:
    """The q-quantile from the selected order statistics, as numpy.quantile computes it."""
    ranks = _ranks(n, q, method)
    if method in ("lower", "higher", "nearest"):
        return float(group.values[ranks[0]])
    a = group.values[ranks[0]]
    b = group.values[ranks[-1]]
    pair = np.array([a, b], dtype=dtype)
    v = (n - 1) * q  # numpy: virtual index (n - 1) * q, gamma = v - floor(v), lerp(a, b, gamma)
    gamma = v - math.floor(v)
    # a list of quantiles, as bioimageio.core asks xarray for: numpy then interpolates in
    # float64 (a scalar q keeps float32 data in float32)
    return float(np.quantile(pair, [gamma])[0])


class StackStats:
    """Whole-stack statistics per channel: count, mean, std, var, min, max, quantiles.

    Parameters
    ----------
    read : callable
        ``read(index)`` returns the numpy block for a tuple of slices (numpy, zarr, dask or
        memory-mapped data behind it).
    shape : sequence of int
        Array shape; with ``per_channel`` the first dim is the channel.
    dtype : numpy dtype
    per_channel : bool
        Statistics per index of the first dim, otherwise over everything.
    quantiles : set of (q, method)
        The quantiles wanted (q in [0, 1], numpy methods linear, lower, higher, nearest,
        midpoint).
    moments : bool
        Also mean and variance (exact for <= 16-bit integers, else float64).
    name : str
        What to call the data in error messages (NaN check).
    chunks : sequence of sequences of int, optional
        The data's storage chunks (dask-style): blocks are unions of whole chunks.
    """

    def __init__(self, read: Callable[[tuple[slice, ...]], np.ndarray], shape: Sequence[int],
                 dtype: Any, *, per_channel: bool, quantiles: set[tuple[float, str]],
                 moments: bool, name: str, chunks: Sequence[Sequence[int]] | None = None
                 ) -> None:
        self.read, self.shape, self.dtype = read, tuple(int(n) for n in shape), np.dtype(dtype)
        self.chunks = chunks
        self.per_channel, self.quantiles, self.moments, self.name = (
            per_channel, set(quantiles), moments, name)
        self.threads = max(1, min(4, len(os.sched_getaffinity(0))
                                  if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
        for q, method in self.quantiles:
            if method not in _METHODS:
                raise InputError(f"quantile method {method!r} is not supported by sharpstack's "
                                 f"streaming statistics; use one of {', '.join(_METHODS)}")
        n_groups = self.shape[0] if per_channel else 1
        self.groups = [_Group() for _ in range(n_groups)]
        self.passes = 0
        self._compute()

    # -- passes ---------------------------------------------------------------------------

    def _block_groups(self, block: np.ndarray) -> list[np.ndarray]:
        if self.per_channel:
            return [np.ravel(block[i]) for i in range(block.shape[0])]
        return [np.ravel(block)]

    def _pass(self, part: Callable[[int, np.ndarray], Any],
              merge: Callable[[int, Any], None]) -> None:
        """Read every block once: ``part(group, values)`` runs in a thread pool (numpy and
        the zarr codecs release the GIL), ``merge(group, result)`` in block order here."""
        from concurrent.futures import ThreadPoolExecutor

        self.passes += 1

        def work(index: tuple[slice, ...]) -> list[Any]:
            block = np.asarray(self.read(index))
            return [part(i, v) for i, v in enumerate(self._block_groups(block))]

        index_iter = blocks(self.shape, 1 if self.per_channel else 0, self.chunks)
        with ThreadPoolExecutor(self.threads) as pool:
            pending: list[Any] = []
            for index in index_iter:  # at most 2 blocks per thread in flight
                pending.append(pool.submit(work, index))
                if len(pending) >= 2 * self.threads:
                    for i, r in enumerate(pending.pop(0).result()):
                        merge(i, r)
            for f in pending:
                for i, r in enumerate(f.result()):
                    merge(i, r)

    def _compute(self) -> None:
        offset = _int_offset(self.dtype)
        floating = self.dtype.kind in "fc"
        exact_hist = offset is not None and bool(self.quantiles)

        def first(i: int, v: np.ndarray) -> dict[str, Any]:
            if floating:
                finite = np.isfinite(v)
                if not finite.all():
                    n_nan = int(np.isnan(v).sum())
                    n_inf = int(v.size - finite.sum() - n_nan)
                    what = " and ".join(p for p in (f"{n_nan} NaN values" if n_nan else "",
                                                    f"{n_inf} infinite values" if n_inf else "")
                                        if p)
                    raise InputError(
                        f"{self.name} contains {what} (in one block of the stack); fill or "
                        f"remove them (e.g. Fiji Process > Math > Remove NaNs, or "
                        f"numpy.nan_to_num) before passing it to sharpstack")
            out: dict[str, Any] = {"n": v.size}
            if v.size:
                out["lo"], out["hi"] = float(v.min()), float(v.max())
            if self.moments:
                out["moments"] = _moments(v)
            if exact_hist:
                out["hist"] = np.bincount(v.astype(np.int64) + offset if offset else v,
                                          minlength=1 << 16)
            return out

        def merge_first(i: int, r: dict[str, Any]) -> None:
            g = self.groups[i]
            if "lo" in r:
                g.lo, g.hi = min(g.lo, r["lo"]), max(g.hi, r["hi"])
            if "moments" in r:
                g.merge_moments(r["moments"])
            else:
                g.n += r["n"]
            if "hist" in r:
                g.hist = r["hist"] if g.hist is None else g.hist + r["hist"]

        self._pass(first, merge_first)
        if not self.quantiles:
            return
        wanted = {i: sorted({r for q, m in self.quantiles for r in _ranks(g.n, q, m)})
                  for i, g in enumerate(self.groups) if g.n}
        if exact_hist:
            for i, ranks in wanted.items():
                g = self.groups[i]
                assert g.hist is not None
                cum = np.cumsum(g.hist)
                for r in ranks:
                    g.values[r] = float(int(np.searchsorted(cum, r, side="right")) - offset)
            return
        self._select(wanted)

    def _select(self, wanted: dict[int, list[int]]) -> None:
        """Order statistics by histogram refinement (see module doc).

        A target is one wanted rank of one group, with the chain of histogram bins known to
        hold it (``chain``: (lo, hi, bin) per level), how many values lie below the chain and
        how many inside it. Targets whose chains agree share the work of a pass.
        """
        todo = []
        for i, ranks in wanted.items():
            g = self.groups[i]
            for r in ranks:
                if g.lo == g.hi:
                    g.values[r] = g.lo
                else:
                    todo.append({"group": i, "rank": r, "chain": (), "below": 0, "count": g.n,
                                 "lo": g.lo, "hi": g.hi})
        while todo:
            # one job per distinct (group, chain): collect its values or histogram them
            jobs: dict[tuple, dict[str, Any]] = {}
            for t in todo:
                key = (t["group"], t["chain"])
                job = jobs.setdefault(key, {"collect": t["count"] <= COLLECT_LIMIT,
                                            "lo": t["lo"], "hi": t["hi"], "parts": [],
                                            "hist": np.zeros(_BINS, np.int64),
                                            "vmin": math.inf, "vmax": -math.inf})
                t["job"] = job

            def visit(i: int, v: np.ndarray) -> dict[tuple, Any]:
                level: dict[tuple, np.ndarray] = {}  # chain prefix -> its members in v
                found: dict[tuple, Any] = {}
                for key, job in jobs.items():
                    group, chain = key
                    if group != i:
                        continue
                    sel = v
                    for depth in range(len(chain)):
                        prefix = chain[:depth + 1]
                        if prefix not in level:
                            lo, hi, b = chain[depth]
                            level[prefix] = sel[_bin(sel, lo, hi) == b]
                        sel = level[prefix]
                    if job["collect"]:
                        found[key] = sel.copy()
                    elif sel.size:
                        found[key] = (np.bincount(_bin(sel, job["lo"], job["hi"]),
                                                  minlength=_BINS),
                                      float(sel.min()), float(sel.max()))
                return found

            def merge(i: int, found: dict[tuple, Any]) -> None:
                for key, r in found.items():
                    job = jobs[key]
                    if job["collect"]:
                        job["parts"].append(r)
                    else:
                        job["hist"] += r[0]
                        job["vmin"] = min(job["vmin"], r[1])
                        job["vmax"] = max(job["vmax"], r[2])

            self._pass(visit, merge)
            for job in jobs.values():
                if job["collect"]:
                    job["sorted"] = np.sort(np.concatenate(job["parts"])) if job["parts"] \
                        else np.array([])
                else:
                    job["cum"] = np.cumsum(job["hist"])
            nxt = []
            for t in todo:
                g, job = self.groups[t["group"]], t.pop("job")
                k = t["rank"] - t["below"]
                if job["collect"]:
                    g.values[t["rank"]] = float(job["sorted"][k])
                elif job["vmin"] == job["vmax"]:
                    g.values[t["rank"]] = job["vmin"]
                else:
                    cum = job["cum"]
                    b = int(np.searchsorted(cum, k, side="right"))
                    width = (t["hi"] - t["lo"]) / _BINS
                    nxt.append({"group": t["group"], "rank": t["rank"],
                                "chain": t["chain"] + ((t["lo"], t["hi"], b),),
                                "below": t["below"] + (int(cum[b - 1]) if b else 0),
                                "count": int(job["hist"][b]),
                                "lo": t["lo"] + b * width, "hi": t["lo"] + (b + 1) * width})
            todo = nxt

    # -- results --------------------------------------------------------------------------

    def quantile(self, q: float, method: str = "linear") -> np.ndarray:
        """The q-quantile per group (shape ``(channels,)`` or ``()``), float64."""
        out = [_interpolate(g, g.n, q, method, self._value_dtype()) if g.n else math.nan
               for g in self.groups]
        return self._shape(out)

    def mean(self) -> np.ndarray:
        return self._shape([(g.isum / g.n if g.isum is not None else g.mean) if g.n
                            else math.nan for g in self.groups])

    def var(self) -> np.ndarray:
        out = []
        for g in self.groups:
            if not g.n:
                out.append(math.nan)
            elif g.isum is not None:  # (n*sum(x^2) - sum(x)^2) / n^2, exactly rounded
                out.append((g.n * g.isq - g.isum * g.isum) / (g.n * g.n))
            else:
                out.append(g.m2 / g.n)
        return self._shape(out)

    def std(self) -> np.ndarray:
        return np.sqrt(self.var())

    def _value_dtype(self) -> np.dtype:
        return self.dtype if self.dtype.kind in "fc" else np.dtype(np.float64)

    def _shape(self, values: list[float]) -> np.ndarray:
        arr = np.asarray(values, dtype=np.float64)
        return arr if self.per_channel else arr.reshape(())


def _bin(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Histogram bin (0 .. 65535) of every value of ``v`` for the range [lo, hi].

    Monotonic in the value (rounding is), and always computed the same way, so a value's bin
    in one pass is its bin in the next. float32 data stay float32 (faster; the bins need not
    be exact, only consistent; float64 when the range could overflow float32).
    """
    small = v.dtype == np.float32 and max(abs(lo), abs(hi)) < 1e30
    work = np.dtype(np.float32) if small else np.dtype(np.float64)
    x = np.subtract(v, work.type(lo), dtype=work)
    x *= work.type(_BINS / (hi - lo))
    idx = x.astype(np.int64)
    np.clip(idx, 0, _BINS - 1, out=idx)
    return idx


# --------------------------------------------------------------------------------------------
# bioimageio.core measures
# --------------------------------------------------------------------------------------------

def _measure_group(m: Any, dims: Sequence[str], model_name: str) -> bool:
    """True when measure ``m`` is per channel, False when over everything; an error when it
    keeps a spatial axis (statistics per plane or row cannot be tiled)."""
    axes = None if m.axes is None else {str(a) for a in m.axes}
    kept = {d for d in dims if d != "batch" and (axes is not None and d not in axes)}
    if kept - {"channel"}:
        raise PackageError(f"model {model_name!r} normalises with statistics per "
                           f"{', '.join(sorted(kept - {'channel'}))} ({type(m).__name__} over "
                           f"axes {sorted(axes or [])}); sharpstack predict computes statistics "
                           f"over the whole stack and cannot tile this package")
    return "channel" in kept


def measure_stats(measures: Sequence[Any], read: Callable[[tuple[slice, ...]], np.ndarray],
                  shape: Sequence[int], dtype: Any, dims: Sequence[str], model_dims:
                  Sequence[str], model_name: str, name: str,
                   chunks: Sequence[Sequence[int]] | None = None) -> dict[Any, np.ndarray]:
    """Exact whole-stack statistics for bioimageio.core ``measures`` (quantiles, mean, std,
    var of one tensor), one streaming pass per group kind.

    ``dims`` are the data's dims (``c`` first when present), ``model_dims`` the tensor's
    axes the measures refer to.
    """
    if not measures:
        return {}
    per: dict[bool, list[Any]] = {}
    for m in measures:
        per.setdefault(_measure_group(m, model_dims, model_name), []).append(m)
    out: dict[Any, np.ndarray] = {}
    for per_channel, group in per.items():
        has_c = "c" in dims
        rd = read
        shp = list(shape)
        chk = chunks
        if per_channel and not has_c:  # one channel: a leading axis of 1
            shp = [1, *shp]
            rd = (lambda index, r=read: np.asarray(r(index[1:]))[None])  # noqa: E731
            chk = None if chunks is None else [(1,), *chunks]
        quantiles = {(float(m.q), str(getattr(m, "method", "linear"))) for m in group
                     if m.name == "quantile"}
        moments = any(m.name in ("mean", "std", "var") for m in group)
        st = StackStats(rd, shp, dtype, per_channel=per_channel, quantiles=quantiles,
                        moments=moments, name=name, chunks=chk)
        for m in group:
            if m.name == "quantile":
                out[m] = st.quantile(float(m.q), str(getattr(m, "method", "linear")))
            else:
                out[m] = getattr(st, m.name)()
    return out


def describe_stats(stats: Mapping[Any, np.ndarray]) -> str:
    """One line per statistic, e.g. ``input quantile 0.01 (z,y,x): 102.0``."""
    lines = []
    for m, v in sorted(stats.items(), key=lambda kv: (str(kv[0].member_id), kv[0].name,
                                                      float(getattr(kv[0], "q", 0.0)))):
        what = f"{m.name} {float(m.q):g}" if m.name == "quantile" else m.name
        axes = "all axes" if m.axes is None else ",".join(str(a) for a in m.axes)
        vals = np.atleast_1d(np.asarray(v, dtype=np.float64))
        text = ", ".join(f"{x:.6g}" for x in vals)
        lines.append(f"{m.member_id} {what} over {axes}: {text}")
    return "\n".join(lines)
