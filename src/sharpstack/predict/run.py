"""The public entry points: :func:`predict_array` (a stack in memory) and
:func:`predict_file` (streamed from file to file, or as a Dask graph)."""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import InputError
from .engine import CPU_PRIORITY, GPU_PRIORITY
from .job import (check_progress, compute_in_memory, describe_job, execute,
                  input_stats, prepare, split_axes, state_dict_refusal)
from .model import load_model, output_attrs
from .selfcheck import self_test
from .stats import describe_stats

__all__ = ["WEIGHT_FORMAT_PRIORITY", "predict_array", "predict_file"]

WEIGHT_FORMAT_PRIORITY: dict[str, tuple[str, ...]] = {"cpu": CPU_PRIORITY, "cuda": GPU_PRIORITY}
"""Weight formats tried in this order when ``weight_format`` is not given, per device
(measured with ``benchmarks/predict_speed.py``: ONNX Runtime is the faster CPU runtime)."""


def predict_array(package: Any, data: xr.DataArray, *, tile: Mapping[str, int] | int | None = None,
                  weight_format: str | None = None, device: str | None = None,
                  threads: int | None = None, batch: int | None = None, planes: bool = True,
                  trust_code: bool = False,
                  progress: Callable[[int, int], Any] | bool = False,
                  log: Callable[[str], Any] | None = None, check: bool = True,
                  memory: float | None = None, distribution_check: bool = True
                  ) -> xr.DataArray:
    """Run a bioimage.io model package on a stack in memory, tiled with the package's halo.

    Parameters
    ----------
    package : str, path-like or bioimageio.spec.model.v0_5.ModelDescr
        A local model package (``.zip``, folder or ``rdf.yaml``; format 0.4 or 0.5), see
        :func:`.model.load_model`. Nothing is downloaded.
    data : xarray.DataArray
        The stack, dims from ``c z y x`` with ``y`` and ``x`` required, e.g. ``(Z, Y, X)``
        or ``(C, Z, Y, X)``; numpy-, dask- or zarr-backed (windows are read lazily).
        ``attrs["voxel_size"]`` and ``attrs["unit"]`` are carried to the output. Any real
        dtype; the package's pre-processing converts it (no implicit rescaling).
    tile : int or dict, optional
        Requested window size in input pixels, halo included: one int for every tiled axis
        or a dict such as ``{"z": 32, "y": 128, "x": 128}``. Rounded down to a size the
        model accepts (and up when smaller than twice the halo). For a 2D model run plane
        by plane, ``z`` is the number of planes per window. Default: the largest window that
        fits the memory budget (``memory``), the whole stack when it fits (see
        :mod:`.budget`).
    weight_format : str, optional
        Weights to run (``"torchscript"``, ``"onnx"``, ``"pytorch_state_dict"``, ...).
        Default: the first present in ``WEIGHT_FORMAT_PRIORITY[device]`` (ONNX Runtime on a
        CPU, TorchScript on a GPU).
    device : str, optional
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``. Default: the GPU when torch sees one.
    threads : int, optional
        CPU threads for the network (torch's intra-op threads, ONNX Runtime's
        ``intra_op_num_threads``). Default: torch's current setting.
    batch : int, optional
        Windows (or planes of a 2D model) per forward call, when the model's batch axis
        allows more than one. Default: as many as fit in about 4 M voxels on a CPU (16 M on
        a GPU).
    planes : bool
        Run a 2D model on a z-stack plane by plane (default); False makes that an error.
    trust_code : bool
        Allow ``pytorch_state_dict`` weights whose architecture is code from the package
        (not sharpstack's own); without it such weights are never chosen.
    progress : bool or callable, optional
        True shows a tqdm bar over windows; a callable is called as ``progress(done, total)``
        after each window. Default: silent.
    log : callable, optional
        Called with lines describing the run (windows, weights, the statistics used).
    check : bool
        First the self-check (:func:`.selfcheck.self_test`): the package's test input through the
        same runner, weights and windows must reproduce its test output, else
        :class:`PackageError` says whether the weights or the windows are at fault and
        nothing is predicted. Default on.
    memory : float, optional
        GB one window may use when ``tile`` is not given (default: half the memory
        available now, at most 8 GB).
    distribution_check : bool
        Compare the input with the training statistics the package records
        (``training_stats.json``, :mod:`.distribution`) and warn when it is far from them
        (the output is computed either way). Default on; a package without them predicts
        as before.

    Returns
    -------
    xarray.DataArray
        The model output with dims from ``c z y x`` (batch dropped, channel dropped when the
        model returns one channel), e.g. ``(Z*4, Y, X)`` for a model that upsamples z 4x.
        attrs from :func:`.model.output_attrs`: ``voxel_size`` (the input's known sizes divided by
        the model's output pixels per input pixel), ``unit``, ``calibrated``, ``model``.

    Raises
    ------
    PackageError
        The package is missing, invalid, or has a geometry that cannot be tiled.
    InputError
        The stack does not fit the model (axes, channels, dtype, size) or holds NaN/inf.

    Notes
    -----
    - Statistics for pre- and post-processing (``scale_range`` percentiles, mean/std) are
      exact over the whole stack (for a 2D model: over all planes together), computed once
      in a streaming pass and reused for every window, so tiled and untiled predictions
      agree. Post-processing that needs statistics of the output runs after all windows.
    - The same engine writes :func:`predict_file`'s outputs: the values are identical.

    Examples
    --------
    >>> out = predict_array("isonet.zip", stack, tile={"z": 32})  # doctest: +SKIP
    >>> out.attrs["voxel_size"]["z"]  # doctest: +SKIP
    """
    check_progress(progress)
    descr = load_model(package)
    job = prepare(descr, data, tile=tile, weight_format=weight_format,
                  device=device, threads=threads, batch=batch, planes=planes,
                  code_reason=state_dict_refusal(descr, trust_code), memory=memory)
    if check:
        self_test(descr, job.options.weight_format, trust_code, log, split=split_axes(job),
                  tile=tile, device=device, threads=threads, batch=batch)
    out = compute_in_memory(job, data, progress=progress, log=log)
    if distribution_check:
        _warn_out_of_distribution(descr, data, job.stats, log)
    return out


def _warn_out_of_distribution(descr: Any, data: xr.DataArray, stats: Any,
                              log: Callable[[str], Any] | None) -> None:
    from .distribution import distribution_note

    note = distribution_note(descr, data, stats, log=log)
    if note:
        warnings.warn(note, stacklevel=3)


def predict_file(package: Any, input_path: str | os.PathLike, output_path: str | os.PathLike, *,
                 tile: Mapping[str, int] | int | None = None, weight_format: str | None = None,
                 device: str | None = None, threads: int | None = None,
                 batch: int | None = None, planes: bool = True, trust_code: bool = False,
                 overwrite: bool = False, resume: bool = False, scheduler: str | None = None,
                 workers: int | None = None,
                 progress: Callable[[int, int], Any] | bool = False,
                 log: Callable[[str], Any] | None = None,
                 voxel_size: Mapping[str, float] | None = None, check: bool = True,
                 resample: bool = False, memory: float | None = None,
                 distribution_check: bool = True) -> Path:
    """Run a model package on a stack file and stream the result into the output file.

    Parameters
    ----------
    package : str, path-like or ModelDescr
        The model package, see :func:`predict_array`.
    input_path : str or path-like
        Stack readable by :func:`sharpstack.io.read_stack` (TIFF, OME-Zarr, ``.npy``);
        OME-Zarr and TIFFs above 256 MiB are read window by window.
    output_path : str or path-like
        Format from the suffix: ``.ome.zarr``/``.zarr`` (chunked like the windows),
        ``.tif`` (ImageJ hyperstack whose voxel size accounts for any resampling by the
        model; float64 is stored as float32, bool as uint8), ``.ome.tif``, ``.npy``. Each
        finished window is written straight into it (memory-mapped for TIFF and ``.npy``),
        under a temporary name beside it; renamed into place when complete.
    tile, weight_format, device, threads, batch, planes, trust_code, progress, log, memory
    distribution_check
        See :func:`predict_array` (the warning comes before the windows run).
    overwrite : bool
        Replace an existing output (kept until the new one is complete). Checked before any
        computation.
    resume : bool
        Continue an interrupted OME-Zarr output (the run's ``.sharpstack-partial-<name>``
        folder beside ``output_path``) where it stopped; the package, input and options
        must be the same.
    scheduler : str, optional
        Run the windows as a Dask graph (OME-Zarr output only): ``"threads"``,
        ``"processes"``, ``"local"`` (a ``dask.distributed.LocalCluster`` of ``workers``
        processes) or the address of a running ``dask.distributed`` scheduler
        (``tcp://host:8786``). See :func:`.dask_graph.predict_dask`.
    workers : int, optional
        Worker processes (or threads for ``"threads"``) for ``scheduler``.
    resample : bool
        Resample the input along z to isotropic voxels first (by its calibration's z/xy
        ratio, :func:`sharpstack.resample.resample_to_isotropic`; in memory), for packages
        that expect isotropic voxels. Without it, such a package given an input whose
        calibration is anisotropic warns and names ``--resample``.
    voxel_size : dict, optional
        Micrometres per input axis (``--voxel-size``, see
        :func:`sharpstack.io.parse_voxel_size`): overrides or completes the file's
        calibration; the output's voxel size follows from it and the model's scaling.
    check : bool
        The self-check of :func:`predict_array` (default on): a package that fails it stops
        here, before any output exists.

    Returns
    -------
    pathlib.Path
        The written output path.

    Raises
    ------
    OutputExistsError
        ``output_path`` exists and ``overwrite`` is False, or an interrupted run's partial
        output is there and neither ``resume`` nor ``overwrite`` is given (nothing is
        computed or written).
    InputError
        ``output_path`` is the input itself, the input does not fit the model, or the
        output format cannot hold the result.
    PackageError
        See :func:`predict_array`.

    Notes
    -----
    Everything that can be checked (paths, package, axes, channels, sizes, dtype for the
    format) is checked before any output exists. An interrupted run leaves nothing at the
    destination: TIFF and ``.npy`` temporaries are removed; an OME-Zarr run keeps its
    partial folder for ``resume`` (removed when a run fails for another reason).
    """
    from .._files import signals_as_interrupts
    from .sinks import (NpySink, TiffSink, ZarrSink, fingerprint, output_kind,
                          prepare_destination, tiff_dtype)
    from ..io import IMAGEJ_DTYPES, read_stack, stack_file, with_voxel_size

    check_progress(progress)
    src, dst = Path(input_path), Path(output_path)
    kind = output_kind(dst)
    if scheduler is not None:
        from .dask_graph import check_scheduler

        check_scheduler(scheduler)
    prepare_destination(dst, stack_file(src), overwrite=overwrite, resume=resume)
    descr = load_model(package)
    data = with_voxel_size(read_stack(src), voxel_size)
    if resample:  # z interpolated to the pixel size first (sharpstack.resample)
        from ..resample import resample_to_isotropic

        data = resample_to_isotropic(data)
    else:
        from .isotropy import anisotropic_input_note

        note = anisotropic_input_note(descr, data)
        if note:
            warnings.warn(note, stacklevel=2)
    job = prepare(descr, data, tile=tile, weight_format=weight_format, device=device,
                  threads=threads, batch=batch, planes=planes,
                  code_reason=state_dict_refusal(descr, trust_code), memory=memory)
    if check:
        self_test(descr, job.options.weight_format, trust_code, log, split=split_axes(job),
                  tile=tile, device=device, threads=threads, batch=batch)
    out_dtype = np.dtype(job.model.out_dtype)
    if kind == "tiff" and tiff_dtype(out_dtype) not in IMAGEJ_DTYPES:
        raise InputError(f"model {job.model.name!r} returns {out_dtype}, which an ImageJ TIFF "
                         f"cannot hold (uint8, uint16, float32); write {dst.stem}.ome.zarr "
                         f"or .npy instead")
    if scheduler is not None and kind != "zarr":
        raise InputError(f"--dask/--scheduler writes an OME-Zarr output (dask.array.to_zarr); "
                         f"{dst.name} is {kind}: name the output .ome.zarr")
    if scheduler is not None and resume:
        raise InputError("--resume continues a single-process run; run without --scheduler "
                         "(or pass --overwrite to start the Dask run over)")
    if resume and job.proc.post_whole:
        raise InputError(f"model {job.model.name!r} post-processes with statistics of the "
                         f"whole output, so an interrupted run cannot be resumed; pass "
                         f"--overwrite to start over")
    attrs = output_attrs(data.attrs, job.model)
    attrs["voxel_size"] = {d: v for d, v in attrs["voxel_size"].items() if d in job.out_dims}
    name = f"input stack {job.layout.source!r}"
    job.stats = input_stats(job, data.data, name)
    if log is not None:
        log(describe_job(job, data))
        if job.stats:
            log("statistics of the whole input (exact):\n" + describe_stats(job.stats))
    if distribution_check:
        _warn_out_of_distribution(descr, data, job.stats, log)
    with signals_as_interrupts():
        if scheduler is not None:
            from .dask_graph import predict_dask

            return predict_dask(job, package, src, dst, attrs, scheduler=scheduler,
                                workers=workers, progress=progress)
        if kind == "zarr":
            fp = fingerprint(package=_package_id(package, descr), input=str(src.resolve()),
                             output_calibration=attrs,
                             input_shape=list(job.in_shape), input_dtype=str(job.in_dtype),
                             windows=[[repr(w) for w in v] for v in job.plan.axes.values()],
                             output=list(job.out_shape), weights=job.options.weight_format,
                             stats={repr(m): np.asarray(v).tolist()
                                    for m, v in sorted(job.stats.items(), key=repr)})
            sink: Any = ZarrSink(dst, job.out_dims, job.out_shape, job.out_chunks, attrs,
                                 fingerprint=fp, resume=resume)
            done, mark = sink.done, sink.mark
            if done and log is not None:
                log(f"resuming: {len(done)} of {len(job.plan)} windows already written")
        elif kind == "npy":
            sink, done, mark = NpySink(dst, job.out_dims, job.out_shape, job.out_chunks,
                                       attrs), frozenset(), None
        else:
            sink, done, mark = TiffSink(dst, job.out_dims, job.out_shape, job.out_chunks,
                                        attrs, ome=kind == "ome-tiff"), frozenset(), None
        try:
            execute(job, data.data, sink, progress, name, done=set(done), mark=mark)
            if log is not None and job.out_stats:
                log("statistics of the whole output (exact):\n" + describe_stats(job.out_stats))
            return sink.commit()
        except KeyboardInterrupt:
            sink.abort(interrupted=True)
            raise
        except BaseException:
            sink.abort()
            raise


def _package_id(package: Any, descr: Any = None) -> str:
    """What identifies the package's *content* for resuming (never its path or mtime): the
    sha256 of a zip, or of a folder's rdf and of every file its weights name; for a loaded
    description, of its serialised form."""
    import hashlib

    h = hashlib.sha256()
    if isinstance(package, (str, os.PathLike)):
        p = Path(package)

        def add(f: Path) -> None:
            h.update(f"{f.name}\n".encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)

        if p.is_file() and zipfile.is_zipfile(p):
            add(p)
            return h.hexdigest()
        from .._trust import find_rdf, load_rdf

        folder, name = find_rdf(p)
        add(folder / name)
        weights = load_rdf(p).get("weights") or {}
        for fmt in sorted(weights):
            entry = weights[fmt] if isinstance(weights[fmt], dict) else {}
            arch = entry.get("architecture")
            for src in (entry.get("source"), arch.get("source") if isinstance(arch, dict)
                        else None):
                f = folder / src if isinstance(src, str) else None
                if f is not None and f.is_file():
                    add(f)
        return h.hexdigest()
    if descr is None:
        descr = package
    try:
        h.update(descr.model_dump_json().encode())
    except Exception:  # noqa: BLE001 - not a pydantic description
        h.update(repr(descr).encode())
    return h.hexdigest()

