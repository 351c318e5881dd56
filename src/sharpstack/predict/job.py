"""A prepared prediction (:class:`Job`): everything checked before any output exists, then
run window by window into a sink.

:func:`prepare` digests the model, maps the stack onto it, plans the windows and chooses the
weights; :func:`input_stats` measures the whole input once (exact, streamed);
:func:`execute` runs the windows into a sink (see :mod:`.sinks`); :func:`compute_in_memory`
is the whole in-memory run that :func:`~sharpstack.predict.predict_array` and the self-check
share.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from ..errors import InputError
from .engine import Options
from .model import Layout, Model, Processing, attach_attrs, digest, layout_of, processing_of
from .budget import bytes_per_voxel, memory_budget, memory_tile, window_bytes
from .stats import describe_stats, measure_stats
from .tiling import SPACE, Plan
from .tiling import plan as plan_windows

__all__ = ["Job", "check_progress", "compute_in_memory", "describe_job", "execute",
           "input_stats", "prepare", "split_axes", "state_dict_refusal"]


# --------------------------------------------------------------------------------------------
# a prepared prediction: everything checked before any output exists
# --------------------------------------------------------------------------------------------

@dataclass
class Job:
    """A prediction ready to run: geometry, processing, statistics, options."""

    model: Model
    layout: Layout
    plan: Plan
    proc: Processing
    sizes: dict[str, int]          # input size per data dim
    in_shape: tuple[int, ...]
    in_dtype: Any
    out_dims: tuple[str, ...]      # output dims from c z y x (c only for several channels)
    out_shape: tuple[int, ...]
    out_chunks: tuple[int, ...]
    options: Options
    stats: dict[Any, np.ndarray] = field(default_factory=dict)
    out_stats: dict[Any, np.ndarray] = field(default_factory=dict)

    @property
    def out_measures(self) -> list[Any]:
        return sorted({m for op in self.proc.post_whole for m in op.required_measures
                       if str(m.member_id) == self.model.out_id}, key=repr)


def state_dict_refusal(package: Any, trust_code: bool) -> str | None:
    """Why the package's state-dict weights may not run (None: they may), see
    :mod:`sharpstack._trust`."""
    if trust_code:
        return None
    from .._trust import TRUST_FLAG, descr_code, state_dict_code

    if isinstance(package, (str, os.PathLike)):
        check = state_dict_code(package)
        return check.reason if check.runs_package_code else None
    if hasattr(package, "weights"):  # the loaded description that will run: checked as is
        check = descr_code(package)
        return check.reason if check.runs_package_code else None
    return (f"it was given as a loaded description, whose architecture code cannot be checked; "
            f"pass trust_code=True (CLI: {TRUST_FLAG}) if you trust its author")


def prepare(descr: Any, data: xr.DataArray, *, tile: Any, weight_format: str | None,
            device: str | None, threads: int | None, batch: int | None, planes: bool,
            code_reason: str | None = None, memory: float | None = None) -> Job:
    from .engine import choose_format, resolve_device

    model = digest(descr)
    if not isinstance(data, xr.DataArray):
        raise InputError(f"predict_array needs an xarray.DataArray with named dims, got "
                         f"{type(data).__name__}; wrap arrays with sharpstack.io.as_dataarray")
    layout = layout_of(model, data)
    if layout.loop_z and not planes:
        raise InputError(f"model {model.name!r} is 2D ({','.join(a for a in 'yx')}) and "
                         f"{layout.source} is a z-stack; run it plane by plane (planes=True, "
                         f"CLI: --planes) or give one plane")
    sizes = {str(d): int(n) for d, n in data.sizes.items()}
    for d, g in model.space.items():
        if d in sizes and sizes[d] < 2 <= g.min:
            raise InputError(f"{layout.source} has {sizes[d]} pixel along {d!r}, too small for "
                             f"model {model.name!r} (at least {g.min}, or 2 to pad from); "
                             f"give a larger stack")
    budget = memory_budget(memory)
    bpv = bytes_per_voxel(descr)
    if tile is None:  # the largest window that fits the memory budget (see .budget)
        tile = memory_tile(model.space, sizes, layout.loop_z, budget, bpv)
    plan = plan_windows(model.space, sizes, tile, layout.loop_z)
    proc = processing_of(model)
    dev = resolve_device(device)
    if batch is not None and (isinstance(batch, bool) or int(batch) < 1):
        raise InputError(f"batch must be a positive integer (windows per forward call), got "
                         f"{batch!r}")
    fmt = choose_format(model.descr, model.name, weight_format, dev, code_reason)
    options = Options(device=dev, weight_format=fmt, threads=threads,
                      batch=None if batch is None else int(batch), memory_budget=budget,
                      bytes_per_voxel=bpv)
    out: dict[str, tuple[int, int]] = {}
    if model.out_channels is not None and model.out_channels > 1:
        out["c"] = (model.out_channels, model.out_channels)
    for d in SPACE:
        wins = plan.axes.get(d)
        if wins and wins[-1].dst is not None:
            out[d] = (wins[-1].dst.stop, plan.chunks[d])
    return Job(model=model, layout=layout, plan=plan, proc=proc, sizes=sizes,
                in_shape=tuple(int(n) for n in data.shape), in_dtype=np.dtype(data.dtype),
                out_dims=tuple(out), out_shape=tuple(v[0] for v in out.values()),
                out_chunks=tuple(max(1, min(v[1], v[0])) for v in out.values()),
                options=options)


def _refuse_flat_input(stats: Mapping[Any, np.ndarray], model_name: str, name: str) -> None:
    """A stack whose lowest and highest normalisation percentiles are equal (or whose standard
    deviation is 0) normalises to all zero, or divides by ~0: the model would return
    structure it invented, so nothing is predicted."""
    quantiles: dict[Any, list[tuple[float, np.ndarray]]] = {}
    for m, v in stats.items():
        if m.name == "quantile":
            key = (str(m.member_id), None if m.axes is None else tuple(map(str, m.axes)))
            quantiles.setdefault(key, []).append((float(m.q), np.asarray(v, dtype=np.float64)))
        elif m.name == "std" and np.any(np.asarray(v) == 0):
            raise InputError(f"{name} is constant (standard deviation 0): model {model_name!r} "
                             f"would only return what its normalisation invents; check that "
                             f"this is the right file, channel or crop")
    for qs in quantiles.values():
        if len(qs) < 2:
            continue
        qs.sort(key=lambda t: t[0])
        (q_lo, lo), (q_hi, hi) = qs[0], qs[-1]
        if np.any(hi <= lo):
            value = float(np.atleast_1d(lo)[0])
            raise InputError(f"{name} has the same value ({value:g}) at its {100 * q_lo:g}th and "
                             f"{100 * q_hi:g}th percentiles, the range model {model_name!r} "
                             f"normalises with: it is (nearly) constant or empty, so the "
                             f"normalised input would be all zero or divided by ~0; check "
                             f"that this is the right file, channel or crop")


def input_stats(job: Job, data: Any, name: str) -> dict[Any, np.ndarray]:
    """Statistics of the whole input the processing needs (exact, streamed); refuses a flat
    input (see :func:`_refuse_flat_input`)."""
    measures = sorted(job.proc.input_measures, key=repr)
    dims = job.layout.dims

    def read(index: tuple[slice, ...]) -> np.ndarray:
        part = data[index]
        if hasattr(part, "compute"):
            part = part.compute(scheduler="synchronous")
        return np.asarray(part)

    stats = measure_stats(measures, read, job.in_shape, job.in_dtype, dims, job.model.in_dims,
                          job.model.name, name, chunks=getattr(data, "chunks", None))
    _refuse_flat_input(stats, job.model.name, name)
    return stats


# --------------------------------------------------------------------------------------------
# running a prepared prediction
# --------------------------------------------------------------------------------------------

def _progress(progress: Callable[[int, int], Any] | bool | None, total: int, name: str
              ) -> tuple[Callable[[int], None], Callable[[], None]]:
    """Return (step(done), close()) for ``progress`` (False, True for tqdm, or a callable)."""
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"predict {name}", unit="tile")

        def step(done: int) -> None:
            bar.update(done - bar.n)

        return step, bar.close
    if callable(progress):
        return (lambda done: progress(done, total)), (lambda: None)
    return (lambda done: None), (lambda: None)


def check_progress(progress: Any) -> None:
    if not (progress is None or isinstance(progress, bool) or callable(progress)):
        raise InputError(f"progress must be True, False or a callable(done, total), got "
                         f"{progress!r}")


def execute(job: Job, data: Any, sink: Any, progress: Any, name: str, *,
            done: set[int] | frozenset[int] = frozenset(),
            mark: Callable[[int], None] | None = None) -> None:
    """Run every window not in ``done`` into ``sink`` (then whole-output post-processing)."""
    from .engine import Runner
    from .windows import run_windows

    total = len(job.plan)
    runner = Runner(job.model, job.layout, job.proc, job.stats, job.options)
    step, close = _progress(progress, total, job.model.name)
    n_out = len(job.out_dims)

    def write(index: int, dst: tuple[slice, ...], values: np.ndarray) -> None:
        if values.ndim == n_out + 1:  # one output channel: no c axis in the output
            dst, values = dst[1:], values[0]
        sink.write(dst, values)
        if mark is not None:
            mark(index)

    try:
        windows = [(i, w) for i, w in enumerate(job.plan.windows()) if i not in done]
        if done:
            step(len(done))
        run_windows(runner, data, job.sizes, windows, len(windows), write,
                    progress=lambda n: step(len(done) + n),
                    check_finite=not job.stats and job.in_dtype.kind in "fc", name=name)
    finally:
        runner.close()
        close()
    from .sinks import post_whole

    post_whole(job, sink, name)


def window_overhead(job: Job) -> tuple[float, int]:
    """(voxels computed over all windows / input voxels, estimated bytes of one window): the
    halo's (and padding's) share of the work, and the per-window memory cost."""
    axes = list(job.plan.axes)
    computed = math.prod(sum(w.size for w in job.plan.axes[d]) for d in axes)
    total = math.prod(job.sizes[d] for d in axes)
    first = next(job.plan.windows())
    one = window_bytes(job.model.space, {d: first[d].size for d in axes},
                       job.options.bytes_per_voxel)
    return computed / max(total, 1), one


def describe_job(job: Job, data: Any) -> str:
    w = next(job.plan.windows())
    shape = "x".join(str(w[d].size) for d in job.plan.axes)
    axes = ",".join(job.plan.axes)
    opts = job.options
    ratio, one = window_overhead(job)
    return (f"{len(job.plan)} window(s) of {shape} ({axes}) with halo, output "
            f"{'x'.join(map(str, job.out_shape))} ({','.join(job.out_dims)}) in chunks of "
            f"{'x'.join(map(str, job.out_chunks))}; {opts.weight_format} weights on "
            f"{opts.device}; halo and padding add {100 * (ratio - 1):.0f}% to the voxels "
            f"computed; about {one / 2**30:.2f} GB per window (memory budget "
            f"{opts.memory_budget / 2**30:.2f} GB; --memory)")


def split_axes(job: Job) -> list[str]:
    """The model axes the job cuts into several windows (a 2D model's groups of planes are
    not windows of the model)."""
    return [a for a, wins in job.plan.axes.items()
            if len(wins) > 1 and a in job.model.space]


def compute_in_memory(job: Job, data: xr.DataArray, *, progress: Any = False,
                      log: Callable[[str], Any] | None = None) -> xr.DataArray:
    """Run a prepared prediction on ``data`` (the stack it was prepared for) in memory: the
    statistics of the whole input, every window, the output's attrs (what
    :func:`~sharpstack.predict.predict_array` does after its self-check, and what the
    self-check runs)."""
    from .sinks import MemorySink

    name = f"input stack {job.layout.source!r}"
    job.stats = input_stats(job, data.data, name)
    if log is not None:
        log(describe_job(job, data))
        if job.stats:
            log("statistics of the whole input (exact):\n" + describe_stats(job.stats))
    sink = MemorySink(job.out_dims, job.out_shape, job.out_chunks)
    execute(job, data.data, sink, progress, name)
    if log is not None and job.out_stats:
        log("statistics of the whole output (exact):\n" + describe_stats(job.out_stats))
    return attach_attrs(xr.DataArray(sink.commit(), dims=job.out_dims), data, job.model)
