"""Run any bioimage.io model package on a stack of any size, tiled with the package's halo.

``predict`` runs bioimage.io model packages (format 0.4 or 0.5, sharpstack's or anyone's) on
microscopy stacks: the stack is cut into windows that are valid inputs for the model, each
window carries the package's halo as context, and the kept part of each window's output goes
straight to its place in the output (see :mod:`sharpstack._tiling` for the geometry).

Three ways to run, one engine (:mod:`sharpstack._engine`), identical values:

- :func:`predict_array`: a stack in memory in, the output in memory out;
- :func:`predict_file`: streamed. Windows are read lazily from the input (OME-Zarr, or a
  TIFF through tifffile's zarr store) and each finished window is written into the output
  (OME-Zarr chunked by windows, a memory-mapped ImageJ/OME-TIFF, or a memory-mapped
  ``.npy``), so memory holds a few windows and the model whatever the stack size. The
  output is written under a temporary name beside the destination and renamed when
  complete; an interrupted OME-Zarr run can be continued (``resume=True``);
- :func:`predict_file` with ``scheduler=``: the windows as a Dask graph
  (:mod:`sharpstack.distributed`), for a ``dask.distributed`` cluster.

Pre- and post-processing are the package's own steps, with statistics (``scale_range``
percentiles, mean/std) computed once over the whole stack by an exact streaming pass
(:mod:`sharpstack._stats`: the same values as ``numpy.quantile`` of the whole stack), so a
tiled prediction equals an untiled one.

This module never imports :mod:`sharpstack.methods` or :mod:`sharpstack.nn`: it runs
third-party packages as well as ours.

Default tile: 64 pixels along z and 256 along y and x (rounded to valid sizes), i.e. about
4 M voxels per 3D window; fixed-size models use their fixed size.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .._axes import check_axes
from .engine import CPU_PRIORITY, GPU_PRIORITY, Options
from .stats import describe_stats, measure_stats
from .tiling import DEFAULT_TILE, SPACE as _SPACE
from .tiling import AxisGeom as _AxisGeom
from .tiling import Plan as _Plan
from .tiling import Win as _Win  # noqa: F401  (re-exported for tests and tools)
from .tiling import plan as _plan_windows
from .tiling import plan_axis as _plan_axis  # noqa: F401
from ..errors import InputError, PackageError

__all__ = [
    "DEFAULT_TILE",
    "WEIGHT_FORMAT_PRIORITY",
    "load_model",
    "predict_array",
    "predict_file",
]

WEIGHT_FORMAT_PRIORITY: dict[str, tuple[str, ...]] = {"cpu": CPU_PRIORITY, "cuda": GPU_PRIORITY}
"""Weight formats tried in this order when ``weight_format`` is not given, per device
(measured with ``benchmarks/predict_speed.py``: ONNX Runtime is the faster CPU runtime)."""


# --------------------------------------------------------------------------------------------
# loading a package
# --------------------------------------------------------------------------------------------

def load_model(package: Any) -> Any:
    """Load a bioimage.io model package as a spec 0.5 description, offline.

    Parameters
    ----------
    package : str, path-like or bioimageio.spec.model.v0_5.ModelDescr
        A local package: ``.zip`` file, unpacked folder, or its ``rdf.yaml`` /
        ``bioimageio.yaml``. Format 0.4 packages are converted to 0.5. A loaded 0.5
        description is returned as is.

    Returns
    -------
    bioimageio.spec.model.v0_5.ModelDescr
        The model description. Loading reads only local files (no downloads, no
        resolving of zoo ids, no hash checks).

    Raises
    ------
    PackageError
        The path does not exist, is not a valid model package, or cannot be converted to
        format 0.5.
    """
    from bioimageio.spec import load_model_description
    from bioimageio.spec.model import v0_5

    if isinstance(package, v0_5.ModelDescr):
        return package
    if not isinstance(package, (str, os.PathLike)):
        raise PackageError(f"package must be a path to a bioimage.io model package (.zip, "
                           f"folder or rdf.yaml), got {type(package).__name__}")
    path = Path(package)
    if not path.exists():
        raise PackageError(f"model package {path} not found; give the path to a bioimage.io "
                           f"package (.zip file, unpacked folder or its rdf.yaml)")
    gone: dict[str, str] = {}
    if path.is_dir() or zipfile.is_zipfile(path) or path.suffix.lower() in (".yaml", ".yml"):
        from .._trust import preflight, weight_files

        # one description only (the one bioimageio loads is the one trusted), plain UTF-8
        # YAML, a model of a known format_version: each named before bioimageio sees it
        rdf = preflight(path)
        gone = weight_files(path, rdf)
        if gone and len(gone) == len(rdf.get("weights") or {}):
            raise PackageError(
                f"{path} has no weights it can run offline: "
                + "; ".join(f"{f}: {why}" for f, why in gone.items())
                + ". Get the complete package again (a package from the model zoo: "
                  "`bioimageio package ID` downloads it with its weights)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            descr = load_model_description(path, perform_io_checks=False,
                                           format_version="latest")
    except Exception as exc:  # bioimageio raises ValueError and friends with a long report
        descr = _fixed_halo_04(path)
        if descr is None:
            raise PackageError(f"{path} is not a valid bioimage.io model package: {exc}") from exc
    if not isinstance(descr, v0_5.ModelDescr):
        raise PackageError(f"{path} (format {getattr(descr, 'format_version', '?')}) could not "
                           f"be converted to bioimage.io model format 0.5; update the package "
                           f"with `bioimageio update-format`")
    if gone:  # run the weights that are there (a weight_format asked for is said missing)
        drop = {f: None for f in gone if f in type(descr.weights).model_fields}
        descr = descr.model_copy(update={"weights": descr.weights.model_copy(update=drop)})
        warnings.warn(f"{path}: not using its " + "; ".join(
            f"{f} weights ({why})" for f, why in gone.items()) + "; the other weights run",
            stacklevel=2)
    return descr



def _fixed_halo_04(path: Path) -> Any:
    """A spec 0.4 package whose output has a fixed shape *and* a halo is valid 0.4 (and
    bioimageio.core runs it) but bioimageio.spec cannot convert it to 0.5, where a fixed
    output size may not have a halo. Such a package is read as 0.4 and its fixed output
    shapes become the equivalent reference to the (fixed) input shape before the conversion.
    Returns the 0.5 description, or None when the package is not such a case."""
    from bioimageio.spec import ValidationContext, build_description, load_model_description
    from bioimageio.spec.model import v0_4, v0_5

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d4 = load_model_description(path, perform_io_checks=False,
                                        format_version="discover")
    except Exception:
        return None
    if not isinstance(d4, v0_4.ModelDescr) or len(d4.inputs) != 1:
        return None
    content = d4.model_dump(mode="json", exclude_unset=True)
    ipt = content["inputs"][0]
    changed = False
    for out in content["outputs"]:
        shape, in_shape = out.get("shape"), ipt.get("shape")
        if not (isinstance(shape, list) and out.get("halo") and isinstance(in_shape, list)
                and len(shape) == len(in_shape) and out.get("axes") == ipt.get("axes")):
            continue
        out["shape"] = {"reference_tensor": ipt["name"], "scale": [1.0] * len(shape),
                        "offset": [int(o) - int(i) for o, i in zip(shape, in_shape)]}
        changed = True
    if not changed:
        return None
    try:
        with warnings.catch_warnings(), ValidationContext(root=d4.root, perform_io_checks=False):
            warnings.simplefilter("ignore")
            descr = build_description(content, format_version="latest")
    except Exception:
        return None
    return descr if isinstance(descr, v0_5.ModelDescr) else None


# --------------------------------------------------------------------------------------------
# model geometry
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Model:
    """What predict needs to know about a (single input, single output) model."""

    descr: Any
    name: str
    in_id: str
    out_id: str
    in_dims: tuple[str, ...]   # model input axis ids in order, e.g. batch channel z y x
    out_dims: tuple[str, ...]
    space: dict[str, _AxisGeom]  # input spatial axes by id
    in_channels: int | None      # None: no channel axis
    out_channels: int | None
    in_dtype: str
    out_dtype: str = "float32"
    batch: int | None = 0        # None: no batch axis; 0: any batch size; 1: fixed to 1


def _axis_scale(axis: Any) -> float:
    return float(getattr(axis, "scale", 1.0) or 1.0)


def _input_axis(axis: Any, tensor_id: str, name: str, axes: Mapping[str, Any]) -> _AxisGeom:
    from bioimageio.spec.model import v0_5

    size = axis.size
    blocks = bool(getattr(axis, "concatenable", False))
    if isinstance(size, int):
        return _AxisGeom(axis.id, min=size, step=0, blocks=blocks)
    if isinstance(size, v0_5.ParameterizedSize):
        return _AxisGeom(axis.id, min=size.min, step=size.step, blocks=blocks)
    if isinstance(size, v0_5.SizeReference) and size.tensor_id == tensor_id \
            and size.axis_id in axes and size.axis_id != axis.id:
        factor = Fraction(_axis_scale(axes[size.axis_id]) / _axis_scale(axis)).limit_denominator(1000)
        return _AxisGeom(axis.id, min=1, step=1, ref=(size.axis_id, factor, size.offset))
    raise PackageError(f"model {name!r}: input axis {axis.id!r} has a size ({size!r}) that "
                       f"sharpstack predict cannot tile; it supports fixed, parameterised "
                       f"(min + n*step) and same-tensor referenced input sizes")


def _output_axis(axis: Any, geom: _AxisGeom, in_axis: Any, in_id: str, name: str) -> _AxisGeom:
    from bioimageio.spec.model import v0_5

    size = axis.size
    if isinstance(size, int) and geom.step == 0 and geom.ref is None:
        # a fixed-size output of a fixed-size input (e.g. a spec 0.4 package that lists its
        # output shape, halo included): the same as a reference to that input size, with
        # any difference an offset (a border the model crops)
        scale = Fraction(_axis_scale(in_axis) / _axis_scale(axis)).limit_denominator(1000)
        offset = Fraction(size) - geom.min * scale
        if offset.denominator != 1:
            raise PackageError(f"model {name!r}: fixed output size {size} of axis {axis.id!r} "
                               f"does not fit its fixed input size {geom.min} at scale "
                               f"{scale}; the package is inconsistent")
        return replace(geom, scale=scale, halo=int(getattr(axis, "halo", 0) or 0),
                       offset=int(offset))
    if not (isinstance(size, v0_5.SizeReference) and size.tensor_id == in_id
            and size.axis_id == axis.id):
        raise PackageError(
            f"model {name!r}: output axis {axis.id!r} must be sized relative to input axis "
            f"{axis.id!r} (a SizeReference) for tiled prediction, but its size is {size!r}")
    scale = Fraction(_axis_scale(in_axis) / _axis_scale(axis)).limit_denominator(1000)
    return replace(geom, scale=scale, halo=int(getattr(axis, "halo", 0) or 0),
                   offset=int(size.offset))


def _digest(descr: Any) -> _Model:
    """Check that ``descr`` is a model predict can tile and collect its geometry."""
    from bioimageio.spec.model import v0_5

    name = str(descr.name)
    required = [t for t in descr.inputs if not getattr(t, "optional", False)]
    if len(required) != 1:
        raise PackageError(f"model {name!r} has {len(required)} required inputs; sharpstack "
                           f"predict runs models with exactly one input")
    ipt, opt = required[0], descr.outputs[0]
    if len(descr.outputs) > 1:
        warnings.warn(f"model {name!r} has {len(descr.outputs)} outputs; sharpstack predict "
                      f"returns the first one ({opt.id!r})", stacklevel=3)
    in_axes = {str(a.id): a for a in ipt.axes}
    space: dict[str, _AxisGeom] = {}
    in_channels = None
    for a in ipt.axes:
        if isinstance(a, v0_5.BatchAxis):
            continue
        if isinstance(a, v0_5.ChannelAxis):
            in_channels = len(a.channel_names)
        elif isinstance(a, v0_5.SpaceInputAxis) and str(a.id) in _SPACE:
            space[str(a.id)] = _input_axis(a, ipt.id, name, in_axes)
        elif a.size != 1:
            raise PackageError(f"model {name!r}: input axis {a.id!r} ({a.type}) is not "
                               f"supported; sharpstack predict maps stacks onto batch, "
                               f"channel, z, y and x axes")
    if not {"y", "x"} <= set(space):
        raise PackageError(f"model {name!r}: input has spatial axes {sorted(space)}; "
                           f"sharpstack predict needs at least y and x")
    out_channels = None
    out_space: dict[str, _AxisGeom] = {}
    for a in opt.axes:
        if isinstance(a, v0_5.BatchAxis):
            continue
        if isinstance(a, v0_5.ChannelAxis):
            out_channels = len(a.channel_names)
        elif str(a.id) in space and a.type == "space":
            out_space[str(a.id)] = _output_axis(a, space[str(a.id)], in_axes[str(a.id)],
                                                ipt.id, name)
        elif a.size != 1:
            raise PackageError(f"model {name!r}: output axis {a.id!r} ({a.type}) has no "
                               f"matching input axis; sharpstack predict cannot place it")
    for k, g in space.items():
        space[k] = out_space.get(k, replace(g, scale=None))
    data = ipt.data if not isinstance(ipt.data, Sequence) else ipt.data[0]
    out_data = opt.data if not isinstance(opt.data, Sequence) else opt.data[0]
    batch_axes = [a for a in ipt.axes if isinstance(a, v0_5.BatchAxis)]
    batch = None if not batch_axes else (1 if batch_axes[0].size == 1 else 0)
    return _Model(descr=descr, name=name, in_id=str(ipt.id), out_id=str(opt.id),
                  in_dims=tuple(str(a.id) for a in ipt.axes),
                  out_dims=tuple(str(a.id) for a in opt.axes), space=space,
                  in_channels=in_channels, out_channels=out_channels, in_dtype=str(data.type),
                  out_dtype=str(out_data.type), batch=batch)



# --------------------------------------------------------------------------------------------
# data <-> model layout
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Layout:
    """How the input's dims map onto the model's axes."""

    dims: tuple[str, ...]   # data dims, e.g. ('z', 'y', 'x') or ('c', 'z', 'y', 'x')
    loop_z: bool            # 2D model on a z-stack: one plane at a time, z as batch
    source: str


def _layout(model: _Model, data: xr.DataArray) -> _Layout:
    source = str(data.attrs.get("source", "the input"))
    dims = tuple(str(d) for d in data.dims)
    if any(len(d) != 1 for d in dims):
        raise InputError(f"{source}: dims {dims} must be single axis letters such as "
                         f"('z', 'y', 'x'); rename them with data.rename(...)")
    axes = check_axes("".join(dims), data.ndim, required="YX", name=f"dims of {source}")
    extra = [a for a in axes if a not in "CZYX"]
    if extra:
        raise InputError(f"{source} has axis/axes {''.join(extra).lower()}; predict takes "
                         f"c, z, y, x only: save one time point as its own file (Fiji: "
                         f"Image > Duplicate, one frame) and predict that (in Python: "
                         f"data.isel({extra[0].lower()}=0))")
    space = "".join(a for a in "zyx" if a in model.space)
    if "z" in model.space and "z" not in dims:
        raise InputError(f"model {model.name!r} expects 3D ({','.join(space)}) input but "
                         f"{source} has axes {''.join(dims)}; give a z-stack")
    c = data.sizes.get("c")
    if model.in_channels is None and c not in (None, 1):
        raise InputError(f"model {model.name!r} takes one channel but {source} has {c}; "
                         f"split the channels (Fiji: Image > Color > Split Channels) and "
                         f"predict one per file (in Python: data.isel(c=...))")
    if model.in_channels is not None and (c or 1) != model.in_channels:
        fix = ("split the channels (Fiji: Image > Color > Split Channels) and predict one "
               "per file" if model.in_channels == 1 else
               f"give a stack with {model.in_channels} channels (Fiji: Image > Color > Merge "
               f"Channels)")
        raise InputError(f"model {model.name!r} expects {model.in_channels} channel(s) but "
                         f"{source} has {c or 1}; {fix}")
    dtype = np.dtype(data.dtype)
    want = np.dtype(model.in_dtype)
    if np.issubdtype(want, np.integer) and not np.can_cast(dtype, want, "safe"):
        raise InputError(f"model {model.name!r} takes {want} input but {source} is {dtype}; "
                         f"convert it explicitly (e.g. rescale to the {want} range) first")
    return _Layout(dims=dims, loop_z="z" in dims and "z" not in model.space, source=source)



# --------------------------------------------------------------------------------------------
# processing and its statistics
# --------------------------------------------------------------------------------------------

@dataclass
class _Processing:
    pre: list[Any]
    post_tile: list[Any]    # applied to every window's output
    post_whole: list[Any]   # need the whole output (sample-wise ops, output statistics)
    input_measures: set[Any]


def _processing(model: _Model) -> _Processing:
    from bioimageio.core._op_base import BlockwiseOperator
    from bioimageio.core.proc_ops import get_proc

    ipt, opt = model.descr.inputs[0], model.descr.outputs[0]
    for t in model.descr.inputs:
        if str(t.id) == model.in_id:
            ipt = t
    pre = [get_proc(p, ipt) for p in ipt.preprocessing]
    post = [get_proc(p, opt) for p in opt.postprocessing]
    for op in pre:
        if not isinstance(op, BlockwiseOperator):
            raise PackageError(f"model {model.name!r}: preprocessing {type(op).__name__} cannot "
                               f"be applied window by window")
    measures = {m for op in pre + post for m in op.required_measures
                if str(m.member_id) == model.in_id}
    split = len(post)
    for i, op in enumerate(post):
        own = [m for m in op.required_measures if str(m.member_id) != model.in_id]
        if own or not isinstance(op, BlockwiseOperator):
            split = i
            break
    return _Processing(pre=pre, post_tile=post[:split], post_whole=post[split:],
                       input_measures=measures)



# --------------------------------------------------------------------------------------------
# output attrs
# --------------------------------------------------------------------------------------------

def _output_attrs(in_attrs: Mapping[str, Any], model: _Model) -> dict[str, Any]:
    """Attrs of the model output (calibration, unit, model name) from the input's attrs.

    A pure function of the input's attrs and the model's geometry, used by every output path
    (in memory, streamed, Dask). ``voxel_size`` holds the output's spatial axes: the input's
    size divided by the model's output pixels per input pixel (e.g. z / 4 after a 4x
    z-upsampling); axes the model does not return are left out; axes the model does not
    know (z of a 2D model run plane by plane) keep the input's size.
    """
    # sharpstack.io's convention: voxel_size holds only the known sizes; an unknown axis is
    # absent and stays absent here (never a guessed 1.0). Sizes stay in the input's unit.
    vs_in = in_attrs.get("voxel_size")
    vs_in = {str(k).lower(): v for k, v in vs_in.items()} if isinstance(vs_in, Mapping) else {}
    src_in = in_attrs.get("voxel_size_source")
    src_in = src_in if isinstance(src_in, Mapping) else {}
    voxel_size: dict[str, float] = {}
    source: dict[str, Any] = {}
    all_known = True  # every spatial axis the model returns has a known size
    for d in _SPACE:
        g = model.space.get(d)
        if g is not None and g.scale is None:
            continue  # the model consumes this axis
        size = vs_in.get(d)
        if size is None:
            all_known = all_known and g is None  # a model axis of unknown size
            continue  # unknown (or absent) in the input: unknown in the output
        scale = g.scale if g is not None else Fraction(1)  # not a model axis: size kept
        voxel_size[d] = float(size) / float(scale)
        if d in src_in:
            source[d] = src_in[d]
    # an input axis the model does not know (z of a 2D model run plane by plane) cannot be
    # told from attrs when its size is unknown, so "calibrated" needs the input to be so too
    calibrated = bool(in_attrs.get("calibrated", False)) and all_known
    attrs: dict[str, Any] = {"voxel_size": voxel_size,
                             "unit": in_attrs.get("unit", "micrometer"),
                             "calibrated": calibrated, "model": model.name}
    if source:
        attrs["voxel_size_source"] = source
    return attrs



def _attach_attrs(out: xr.DataArray, data: xr.DataArray, model: _Model) -> xr.DataArray:
    attrs = _output_attrs(data.attrs, model)
    attrs["voxel_size"] = {d: v for d, v in attrs["voxel_size"].items() if d in out.dims}
    out.attrs = attrs
    return out


# --------------------------------------------------------------------------------------------
# a prepared prediction: everything checked before any output exists
# --------------------------------------------------------------------------------------------

@dataclass
class _Job:
    """A prediction ready to run: geometry, processing, statistics, options."""

    model: _Model
    layout: _Layout
    plan: _Plan
    proc: _Processing
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


def _code_reason(package: Any, trust_code: bool) -> str | None:
    """Why the package's state-dict weights may not run (None: they may), see _trust."""
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


def _prepare(descr: Any, data: xr.DataArray, *, tile: Any, weight_format: str | None,
             device: str | None, threads: int | None, batch: int | None, planes: bool,
             code_reason: str | None = None) -> _Job:
    from .engine import choose_format, resolve_device

    model = _digest(descr)
    if not isinstance(data, xr.DataArray):
        raise InputError(f"predict_array needs an xarray.DataArray with named dims, got "
                         f"{type(data).__name__}; wrap arrays with sharpstack.io.as_dataarray")
    layout = _layout(model, data)
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
    plan = _plan_windows(model.space, sizes, tile, layout.loop_z)
    proc = _processing(model)
    dev = resolve_device(device)
    if batch is not None and (isinstance(batch, bool) or int(batch) < 1):
        raise InputError(f"batch must be a positive integer (windows per forward call), got "
                         f"{batch!r}")
    fmt = choose_format(model.descr, model.name, weight_format, dev, code_reason)
    options = Options(device=dev, weight_format=fmt, threads=threads,
                      batch=None if batch is None else int(batch))
    out: dict[str, tuple[int, int]] = {}
    if model.out_channels is not None and model.out_channels > 1:
        out["c"] = (model.out_channels, model.out_channels)
    for d in _SPACE:
        wins = plan.axes.get(d)
        if wins and wins[-1].dst is not None:
            out[d] = (wins[-1].dst.stop, plan.chunks[d])
    return _Job(model=model, layout=layout, plan=plan, proc=proc, sizes=sizes,
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


def _input_stats(job: _Job, data: Any, name: str) -> dict[Any, np.ndarray]:
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
# public API
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


def _check_progress(progress: Any) -> None:
    if not (progress is None or isinstance(progress, bool) or callable(progress)):
        raise InputError(f"progress must be True, False or a callable(done, total), got "
                         f"{progress!r}")


def _execute(job: _Job, data: Any, sink: Any, progress: Any, name: str, *,
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


def _describe_job(job: _Job, data: Any) -> str:
    w = next(job.plan.windows())
    shape = "x".join(str(w[d].size) for d in job.plan.axes)
    axes = ",".join(job.plan.axes)
    opts = job.options
    return (f"{len(job.plan)} window(s) of {shape} ({axes}) with halo, output "
            f"{'x'.join(map(str, job.out_shape))} ({','.join(job.out_dims)}) in chunks of "
            f"{'x'.join(map(str, job.out_chunks))}; {opts.weight_format} weights on "
            f"{opts.device}")


def predict_array(package: Any, data: xr.DataArray, *, tile: Mapping[str, int] | int | None = None,
                  weight_format: str | None = None, device: str | None = None,
                  threads: int | None = None, batch: int | None = None, planes: bool = True,
                  trust_code: bool = False,
                  progress: Callable[[int, int], Any] | bool = False,
                  log: Callable[[str], Any] | None = None, check: bool = True) -> xr.DataArray:
    """Run a bioimage.io model package on a stack in memory, tiled with the package's halo.

    Parameters
    ----------
    package : str, path-like or bioimageio.spec.model.v0_5.ModelDescr
        A local model package (``.zip``, folder or ``rdf.yaml``; format 0.4 or 0.5), see
        :func:`load_model`. Nothing is downloaded.
    data : xarray.DataArray
        The stack, dims from ``c z y x`` with ``y`` and ``x`` required, e.g. ``(Z, Y, X)``
        or ``(C, Z, Y, X)``; numpy-, dask- or zarr-backed (windows are read lazily).
        ``attrs["voxel_size"]`` and ``attrs["unit"]`` are carried to the output. Any real
        dtype; the package's pre-processing converts it (no implicit rescaling).
    tile : int or dict, optional
        Requested window size in input pixels, halo included: one int for every tiled axis
        or a dict such as ``{"z": 32, "y": 128, "x": 128}``. Rounded down to a size the
        model accepts (and up when smaller than twice the halo). For a 2D model run plane
        by plane, ``z`` is the number of planes per window. Default :data:`DEFAULT_TILE`
        (64 along z, 256 along y and x).
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
        First the self-check (:func:`_self_test`): the package's test input through the
        same runner, weights and windows must reproduce its test output, else
        :class:`PackageError` says whether the weights or the windows are at fault and
        nothing is predicted. Default on.

    Returns
    -------
    xarray.DataArray
        The model output with dims from ``c z y x`` (batch dropped, channel dropped when the
        model returns one channel), e.g. ``(Z*4, Y, X)`` for a model that upsamples z 4x.
        attrs from :func:`_output_attrs`: ``voxel_size`` (the input's known sizes divided by
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
    from .sinks import MemorySink

    _check_progress(progress)
    descr = load_model(package)
    job = _prepare(descr, data, tile=tile, weight_format=weight_format,
                   device=device, threads=threads, batch=batch, planes=planes,
                   code_reason=_code_reason(descr, trust_code))
    if check:
        _self_test(descr, job.options.weight_format, trust_code, log, split=_split_axes(job),
                   tile=tile, device=device, threads=threads, batch=batch)
    name = f"input stack {job.layout.source!r}"
    job.stats = _input_stats(job, data.data, name)
    if log is not None:
        log(_describe_job(job, data))
        if job.stats:
            log("statistics of the whole input (exact):\n" + describe_stats(job.stats))
    sink = MemorySink(job.out_dims, job.out_shape, job.out_chunks)
    _execute(job, data.data, sink, progress, name)
    if log is not None and job.out_stats:
        log("statistics of the whole output (exact):\n" + describe_stats(job.out_stats))
    return _attach_attrs(xr.DataArray(sink.commit(), dims=job.out_dims), data, job.model)


def predict_file(package: Any, input_path: str | os.PathLike, output_path: str | os.PathLike, *,
                 tile: Mapping[str, int] | int | None = None, weight_format: str | None = None,
                 device: str | None = None, threads: int | None = None,
                 batch: int | None = None, planes: bool = True, trust_code: bool = False,
                 overwrite: bool = False, resume: bool = False, scheduler: str | None = None,
                 workers: int | None = None,
                 progress: Callable[[int, int], Any] | bool = False,
                 log: Callable[[str], Any] | None = None,
                 voxel_size: Mapping[str, float] | None = None, check: bool = True) -> Path:
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
    tile, weight_format, device, threads, batch, planes, trust_code, progress, log
        See :func:`predict_array`.
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
        (``tcp://host:8786``). See :func:`sharpstack.distributed.predict_dask`.
    workers : int, optional
        Worker processes (or threads for ``"threads"``) for ``scheduler``.
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
    from ..io import _IMAGEJ_DTYPES, read_stack, with_voxel_size

    _check_progress(progress)
    src, dst = Path(input_path), Path(output_path)
    kind = output_kind(dst)
    if scheduler is not None:
        from .dask_graph import check_scheduler

        check_scheduler(scheduler)
    prepare_destination(dst, src, overwrite=overwrite, resume=resume)
    descr = load_model(package)
    data = with_voxel_size(read_stack(src), voxel_size)
    job = _prepare(descr, data, tile=tile, weight_format=weight_format, device=device,
                   threads=threads, batch=batch, planes=planes,
                   code_reason=_code_reason(descr, trust_code))
    if check:
        _self_test(descr, job.options.weight_format, trust_code, log, split=_split_axes(job),
                   tile=tile, device=device, threads=threads, batch=batch)
    out_dtype = np.dtype(job.model.out_dtype)
    if kind == "tiff" and tiff_dtype(out_dtype) not in _IMAGEJ_DTYPES:
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
    attrs = _output_attrs(data.attrs, job.model)
    attrs["voxel_size"] = {d: v for d, v in attrs["voxel_size"].items() if d in job.out_dims}
    name = f"input stack {job.layout.source!r}"
    job.stats = _input_stats(job, data.data, name)
    if log is not None:
        log(_describe_job(job, data))
        if job.stats:
            log("statistics of the whole input (exact):\n" + describe_stats(job.stats))
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
            _execute(job, data.data, sink, progress, name, done=set(done), mark=mark)
            if log is not None and job.out_stats:
                log("statistics of the whole output (exact):\n" + describe_stats(job.out_stats))
            return sink.commit()
        except KeyboardInterrupt:
            sink.abort(interrupted=True)
            raise
        except BaseException:
            sink.abort()
            raise


def _split_axes(job: _Job) -> list[str]:
    """The model axes the job cuts into several windows (a 2D model's groups of planes are
    not windows of the model)."""
    return [a for a, wins in job.plan.axes.items()
            if len(wins) > 1 and a in job.model.space]


_WHOLE = 1 << 30  # a tile request that puts every axis into one window


def _close(got: np.ndarray, expected: np.ndarray) -> bool:
    """Within |d| <= 1e-3 + 1e-3 |expected| everywhere and finite (NaN compares False)."""
    if got.shape != expected.shape:
        return False
    return bool((np.abs(got.astype(np.float64) - expected) <= 1e-3 + 1e-3 * np.abs(expected)).all())


def _test_tensors(descr: Any) -> tuple[xr.DataArray, np.ndarray] | None:
    """The package's test input (dims from ``c z y x``) and test output, read safely; None
    when it has none."""
    from bioimageio.spec.utils import load_array

    ipt, opt = descr.inputs[0], descr.outputs[0]
    name = f"package {descr.name!r}"
    if ipt.test_tensor is None or opt.test_tensor is None:
        return None

    def as_named(arr: np.ndarray, axes: Any) -> xr.DataArray:
        dims = ["c" if str(a.id) == "channel" else str(a.id) for a in axes]
        if "batch" in dims:
            arr, dims = arr[(slice(None),) * dims.index("batch") + (0,)], \
                [d for d in dims if d != "batch"]
        if "c" in dims and arr.shape[dims.index("c")] == 1:
            arr, dims = arr.squeeze(dims.index("c")), [d for d in dims if d != "c"]
        return xr.DataArray(arr, dims=dims)

    try:  # load_array refuses pickled (object) arrays and checks the declared sha256
        x, y = (np.asarray(load_array(t.test_tensor)) for t in (ipt, opt))
        if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
            raise ValueError(f"test tensors of dtype {x.dtype} / {y.dtype}, not numbers")
        return as_named(x, ipt.axes), as_named(y, opt.axes).values
    except PackageError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to read them is the package's fault
        reason = " ".join(str(exc).split())[:300]
        raise PackageError(f"{name}: its test tensors cannot be read ({type(exc).__name__}: "
                           f"{reason}); the package is damaged or was altered. Nothing was "
                           f"predicted; get the package again, or predict with --no-check "
                           f"if you trust it") from None


def _mirror(x: xr.DataArray, axes: Sequence[str], times: int) -> xr.DataArray:
    """``x`` repeated ``times`` times along ``axes``, every other copy flipped (no seams)."""
    arr = np.asarray(x.values, dtype=x.dtype)
    for a in axes:
        k = x.dims.index(a)
        parts = [arr if i % 2 == 0 else np.flip(arr, axis=k) for i in range(times)]
        arr = np.ascontiguousarray(np.concatenate(parts, axis=k))
    return xr.DataArray(arr, dims=x.dims)


def _core_reproduces(descr: Any, weight_format: str, expected: np.ndarray) -> bool | None:
    """Does bioimageio.core's own pipeline reproduce the test output with these weights?
    None when it cannot run them."""
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import get_test_input_sample

    try:
        sample = get_test_input_sample(descr)
        with create_prediction_pipeline(bioimageio_model=descr, weight_format=weight_format) as pp:
            res = pp.predict_sample_without_blocking(sample)
        (t,) = res.members.values()
        got = np.asarray(t.data, dtype=np.float64).reshape(expected.shape)
    except Exception:  # noqa: BLE001 - only a diagnosis: unknown when core cannot run it
        return None
    return _close(got, expected)


def _self_test(descr: Any, weight_format: str, trust_code: bool,
               log: Callable[[str], Any] | None, *, split: Sequence[str] = (),
               tile: Any = None, device: str | None = None, threads: int | None = None,
               batch: int | None = None) -> None:
    """The self-check before a prediction (on by default; ``--no-check`` skips it).

    1. The package's test input through this runner, windows and weight format, compared
       with its test output (|d| <= 1e-3 + 1e-3 |expected|, finite). On a mismatch the same
       input in one window, then bioimageio.core's own pipeline, say whether sharpstack's
       windows, sharpstack's runner or the package's weights are at fault.
    2. Along the axes ``split`` (those cut into several windows for the user's stack), the
       test input mirrored into a longer stack is run in several windows and in one; they
       must agree, or the windows (or the package's halo) are at fault.

    Done here rather than with ``bioimageio.core.test_model``, whose comparison lets NaN
    through and which does not run the code path (tiling, batching, weight choice) used next.
    """
    tensors = _test_tensors(descr)
    name = f"package {descr.name!r}"
    if tensors is None:  # format 0.4 allowed it; nothing to compare with
        warnings.warn(f"{name} has no test tensors, so the self-check cannot run: its output "
                      f"is unchecked", stacklevel=2)
        return
    x, expected = tensors
    fix = "nothing was predicted"

    def run(inp: xr.DataArray, req: Any) -> np.ndarray:
        # a fresh copy for every run, so that nothing one run does to its input (a runner
        # that normalised windows in place did) can hide in the next one's
        inp = inp.copy(deep=True)
        # trust_code: the weight format was chosen under the caller's trust decision
        return predict_array(descr, inp, tile=req, weight_format=weight_format, device=device,
                             threads=threads, batch=batch, trust_code=True, check=False).values

    def attempt(inp: xr.DataArray, req: Any) -> tuple[np.ndarray | None, str]:
        try:
            return run(inp, req), ""
        except (PackageError, InputError) as exc:
            return None, str(exc)

    got, err = attempt(x, tile)
    if got is None or not _close(got, expected):
        whole, _ = attempt(x, _WHOLE)
        if whole is not None and _close(whole, expected):
            raise PackageError(
                f"{name}: its test input predicted in windows differs from its test output, "
                f"while one window reproduces it: sharpstack's windows are at fault (please "
                f"report this), not the weights; {fix}. Workaround: --tile larger than the "
                f"stack along every axis")
        core = _core_reproduces(descr, weight_format, expected)
        if core:
            raise PackageError(
                f"{name}: bioimageio.core reproduces its test output with the {weight_format} "
                f"weights but sharpstack's runner does not{': ' + err if err else ''}: a "
                f"sharpstack fault (please report this), not the weights; {fix}. Try another "
                f"--weight-format")
        what = err or (f"{int((~np.isfinite(got)).sum())} non-finite values, "
                       f"{int((~(np.abs(got.astype(np.float64) - expected) <= 1e-3 + 1e-3 * np.abs(expected))).sum())}"
                       f" of {got.size} differ" if got is not None and got.shape == expected.shape
                       else f"output shape {None if got is None else got.shape}, expected "
                            f"{expected.shape}")
        raise PackageError(
            f"{name}: its {weight_format} weights do not reproduce the package's own test "
            f"output ({what}; bioimageio.core "
            f"{'cannot run them either' if core is None else 'fails the same way'}): the "
            f"weights are damaged or were altered; {fix}. Get the package again, try another "
            f"--weight-format, or check it with `sharpstack validate PACKAGE`")
    if log is not None:
        log(f"self-check: the package's test output is reproduced ({weight_format} weights)")
    axes = [a for a in split if a in x.dims]
    if not axes:
        return
    model = _digest(descr)
    loop_z = "z" in x.dims and "z" not in model.space
    for times in (2, 3, 4):
        big = _mirror(x, axes, times)
        sizes = {str(d): int(n) for d, n in big.sizes.items()}
        req = {a: model.space[a].largest_valid(sizes[a] - 1) for a in axes}
        plan = _plan_windows(model.space, sizes, req, loop_z)
        if all(len(plan.axes[a]) > 1 for a in axes):
            break
    else:  # the test input is too small to cut into windows: nothing more to compare
        return
    whole, tiled = run(big, _WHOLE), run(big, req)
    if not _close(tiled, whole):
        diff = float(np.nanmax(np.abs(tiled.astype(np.float64) - whole)))
        raise PackageError(
            f"{name}: its test input, mirrored to {'x'.join(map(str, big.shape))} and predicted "
            f"in windows along {', '.join(axes)}, differs from one window by up to {diff:.3g}: "
            f"the windows are at fault (the package's halo may be smaller than its network's "
            f"reach, or sharpstack's tiling is wrong), not the weights; {fix}. Workaround: "
            f"--tile larger than the stack along {', '.join(axes)}")
    if log is not None:
        log(f"self-check: windows along {', '.join(axes)} agree with one window")


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

