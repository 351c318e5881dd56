"""Tiled prediction as a Dask graph, for one machine's cores or a ``dask.distributed`` cluster.

The output is a Dask array with one block per output chunk (the chunks are the windows'
cores, see :mod:`.tiling`); each block is one task, built with
``dask.array.map_blocks`` on windows with explicit overlaps: the task reads its window
(core + halo) from the input zarr store (or TIFF) itself, runs the package and returns the
core. ``dask.array.to_zarr`` writes the blocks into an OME-Zarr laid out as
:func:`sharpstack.io.write_ome_zarr` lays it out (under a temporary name, renamed when
complete). Because blocks and zarr chunks coincide, no two tasks write the same chunk.

Every worker process loads the package once (a per-process cache keyed by the run) and
reads the input by path, so the package, the input and the output must be reachable under
the same paths from every worker (a shared file system on a cluster). The statistics for
normalisation are computed once by the client (exact, streamed) and shipped with the graph,
so every worker normalises alike and the result equals the single-process run.

Schedulers: ``"threads"`` (one process, ``workers`` threads), ``"processes"`` (dask's
multiprocessing scheduler), ``"local"`` (a ``LocalCluster`` of ``workers`` processes,
started and stopped here), or the address of a running scheduler (``"tcp://host:8786"``;
a cluster started by ``dask-scheduler``/``dask-worker`` or by ``dask_jobqueue.SLURMCluster``).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["predict_dask", "check_scheduler"]

_CACHE: dict[str, tuple[Any, Any]] = {}  # run token -> (Runner, input array) in this process
_CACHE_LOCK = threading.Lock()
_LOADS = 0  # packages loaded by this process (once per run and process)


@dataclass(frozen=True)
class _Spec:
    """Everything a task needs, small and picklable (the package is loaded by the worker)."""

    token: str
    package: Any
    source: str
    plan: Any
    sizes: dict[str, int]
    out_dims: tuple[str, ...]
    out_dtype: str
    stats: dict[Any, np.ndarray]
    options: Any
    check_finite: bool


def _worker_state(spec: _Spec) -> tuple[Any, Any]:
    """The Runner and the input of this run in this process (loaded on first use)."""
    with _CACHE_LOCK:
        hit = _CACHE.get(spec.token)
        if hit is not None:
            return hit
        from .engine import Runner
        from ..io import read_stack
        from .model import digest, layout_of, load_model, processing_of

        data = read_stack(spec.source)
        model = digest(load_model(spec.package))
        layout = layout_of(model, data)
        options = spec.options
        if options.threads is None:
            options = replace(options, threads=_worker_threads())
        runner = Runner(model, layout, processing_of(model), spec.stats, options)
        global _LOADS
        _LOADS += 1
        while len(_CACHE) >= 2:  # keep this run and at most one before it
            _, (old, _) = _CACHE.popitem()
            old.close()
        _CACHE[spec.token] = (runner, data.data)
        return _CACHE[spec.token]


def _worker_threads() -> int | None:
    """torch threads in a dask.distributed worker: the worker's own thread count."""
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        return None


def _predict_block(spec: _Spec, block_info: dict | None = None) -> np.ndarray:
    """One output chunk: read its window from the input, run the package, keep the chunk."""
    from .windows import check_output, check_window, read_window

    assert block_info is not None
    location = block_info[None]["array-location"]
    runner, data = _worker_state(spec)
    wins: dict[str, Any] = {}
    keep: dict[str, tuple[int, int]] = {}
    for d, (a, b) in zip(spec.out_dims, location):
        if d == "c":
            continue
        w = next(w for w in spec.plan.axes[d] if w.dst.start <= a < w.dst.stop)
        wins[d] = w
        keep[d] = (w.src + a - w.dst.start, b - a)
    for d, axis_wins in spec.plan.axes.items():
        wins.setdefault(d, axis_wins[0])  # axes the model consumes: one window
    window = read_window(data, runner.layout.dims, spec.sizes, wins)
    if spec.check_finite:
        check_window(window, wins, f"input stack {spec.source!r}")
    y = runner.finish(runner.forward(runner.prepare(runner.units(window))))
    tile = runner.tile(y)
    index = tuple(slice(None) if d == "c" else slice(keep[d][0], keep[d][0] + keep[d][1])
                  for d in tile.dims)
    values = tile.values[index]
    check_output(values, runner, wins)
    if values.ndim == len(spec.out_dims) + 1:  # one output channel: no c axis
        values = values[0]
    return values.astype(spec.out_dtype, copy=False)


def _chunks(shape: tuple[int, ...], chunks: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    out = []
    for n, c in zip(shape, chunks):
        full, rest = divmod(n, c)
        out.append((c,) * full + ((rest,) if rest else ()))
    return tuple(out)


def graph(job: Any, package: Any, source: Path) -> Any:
    """The prediction of ``job`` (a prepared :class:`.job.Job`) as a lazy Dask array."""
    import dask.array as da

    dtype = np.dtype(job.model.out_dtype)
    spec = _Spec(token=uuid.uuid4().hex, package=_portable(package),
                 source=os.fspath(Path(source).resolve()), plan=job.plan, sizes=job.sizes,
                 out_dims=job.out_dims, out_dtype=dtype.str, stats=job.stats,
                 options=job.options,
                 check_finite=not job.stats and job.in_dtype.kind in "fc")
    return da.map_blocks(_predict_block, spec, dtype=dtype,
                         chunks=_chunks(job.out_shape, job.out_chunks),
                         meta=np.empty((0,) * len(job.out_shape), dtype),
                         name=f"sharpstack-predict-{spec.token}")


def _portable(package: Any) -> Any:
    """A package argument workers can load: an absolute path, or the description itself."""
    if isinstance(package, (str, os.PathLike)):
        return os.fspath(Path(package).resolve())
    return package


_LOCAL_SCHEDULERS = ("threads", "processes", "synchronous", "local")


def check_scheduler(scheduler: Any) -> None:
    """Refuse, before any work, a scheduler that is neither a local one nor an address
    (``tcp://host:8786``, ``tls://...``, ``host:8786``)."""
    import re

    if scheduler is None or not isinstance(scheduler, str):
        return  # None, or a distributed.Client
    if scheduler in _LOCAL_SCHEDULERS:
        return
    if re.fullmatch(r"(tcp|tls|inproc|ucx|ws|wss)://[^\s/]+", scheduler) or \
            re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+:\d+", scheduler):
        return
    raise InputError(f"--scheduler {scheduler!r} is neither threads, processes, local nor the "
                     f"address of a dask.distributed scheduler (e.g. tcp://host:8786); give "
                     f"one of those")


def _client(scheduler: str, workers: int | None) -> tuple[Any, Callable[[], None]]:
    """A dask.distributed Client for "local" or an address, and how to close what was opened."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - distributed is a dependency
        raise InputError("the 'distributed' package is needed for --scheduler local or an "
                         "address: pip install distributed") from exc
    if scheduler == "local":
        cluster = LocalCluster(n_workers=workers or 2, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)

        def close() -> None:
            client.close()
            cluster.close()

        return client, close
    import dask

    try:
        client = Client(scheduler, timeout=dask.config.get("distributed.comm.timeouts.connect"))
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(f"no Dask scheduler answered at {scheduler!r} ({exc}); start one "
                         f"(dask scheduler / dask_jobqueue) or use --scheduler local") from exc
    return client, client.close


def predict_dask(job: Any, package: Any, source: Path, dest: Path, attrs: dict[str, Any], *,
                 scheduler: Any = "threads", workers: int | None = None,
                 progress: Any = False) -> Path:
    """Compute a prepared prediction with Dask and write it to the OME-Zarr ``dest``.

    Parameters
    ----------
    job
        A prepared prediction (:class:`.job.Job`, statistics computed).
    package, source
        The model package and the input stack, as paths every worker can read.
    dest : pathlib.Path
        The OME-Zarr output (written beside it under a temporary name, then renamed).
    attrs : dict
        The output's attrs (calibration), see :func:`.model.output_attrs`.
    scheduler : str or distributed.Client
        ``"threads"``, ``"processes"``, ``"local"``, a scheduler address, or a Client.
    workers : int, optional
        Threads or processes (default: dask's, or 2 for ``"local"``).
    progress : bool or callable
        A callable gets ``(done, total)`` blocks for the local schedulers and once at the end
        on a cluster; True shows dask's progress bar (local schedulers).

    Returns
    -------
    pathlib.Path
        ``dest``.
    """
    import dask
    import dask.array as da

    from .._files import clean_stale, remove_path, replace_atomically, temp_path
    # io's private name, imported as io names it today (io is restructured separately;
    # it should become public there)
    from ..io import open_ome_zarr, zarr_array_kwargs

    if job.proc.post_whole:
        raise InputError(f"model {job.model.name!r} post-processes with statistics of the "
                         f"whole output; run it without --dask/--scheduler")
    if not isinstance(scheduler, str):
        client, close = scheduler, (lambda: None)
        local = None
    elif scheduler in ("threads", "processes", "synchronous"):
        client, close, local = None, (lambda: None), scheduler
    else:
        client, close = _client(scheduler, workers)
        local = None
    if local == "processes" and job.options.threads is None:
        from .engine import default_threads

        # the cores shared out between the processes, not oversubscribed (with "threads" the
        # tasks share one Runner whose forward calls take turns, each with every core)
        n = workers or default_threads()
        job.options = replace(job.options, threads=max(1, default_threads() // n))
    arr = graph(job, package, source)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(dest)
    tmp = temp_path(dest)
    try:
        open_ome_zarr(tmp, "".join(job.out_dims).upper(), job.out_shape, arr.dtype, attrs,
                      job.out_chunks, create_array=False)
        kwargs = zarr_array_kwargs(job.out_shape, arr.dtype, job.out_chunks)
        store = da.to_zarr(arr, os.fspath(tmp), component="0", mode="a", compute=False,
                           zarr_format=2, **kwargs)
        total = int(np.prod([len(c) for c in arr.chunks]))
        if client is not None:
            client.compute(store, sync=True)
            if callable(progress):
                progress(total, total)
        else:
            with dask.config.set(scheduler=local, num_workers=workers), \
                    _local_progress(progress, total):
                dask.compute(store)
        return replace_atomically(tmp, dest)
    except BaseException:
        remove_path(tmp)
        raise
    finally:
        close()


class _Counter:
    """dask local-scheduler callback counting finished prediction blocks."""

    def __init__(self, progress: Callable[[int, int], Any], total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        name = key[0] if isinstance(key, tuple) else key
        if str(name).startswith("sharpstack-predict-"):
            self.done += 1
            self.progress(self.done, self.total)


def _local_progress(progress: Any, total: int) -> Any:
    import contextlib

    from dask.callbacks import Callback

    if progress is True:
        from dask.diagnostics import ProgressBar

        return ProgressBar()
    if callable(progress):
        counter = _Counter(progress, total)
        return Callback(posttask=counter.posttask)
    return contextlib.nullcontext()
