"""Run any bioimage.io model package on a stack, tiled with the package's halo.

``predict`` runs bioimage.io model packages (format 0.4 or 0.5, sharpstack's or anyone's) on
microscopy stacks of any size: the stack is cut into windows that are valid inputs for the
model, each window carries the package's halo as context, the outputs are cropped and
stitched into one preallocated array. Pre- and post-processing are bioimageio.core's own
operators, fed with statistics computed once over the whole stack, so a tiled prediction
equals an untiled one.

This module never imports :mod:`sharpstack.methods` or :mod:`sharpstack.nn`: it runs
third-party packages as well as ours.

Tiling, per spatial axis of the model input (all sizes in input pixels)
----------------------------------------------------------------------------
- Window sizes are valid for the model: ``min + n*step`` for a parameterised axis, the
  fixed size otherwise. The requested tile is rounded down to a valid size (and up when it
  is too small to keep anything after removing the halo).
- Window starts lie on the ``step`` grid (multiples of ``step`` from the volume start), so
  down-sampling networks see the same pixel grid as an untiled run; only the last window is
  shifted inward to end at the volume border.
- Each window's output is cropped by the halo on every side that faces another window;
  sides on the volume border keep everything, exactly as an untiled run would.
- Padding (reflect) happens only when the whole axis fits into one window and its length
  is not a valid size (e.g. the stack is smaller than the model's minimum); the padded part
  is cropped from the output. Models whose output is smaller than their input (a negative
  ``SizeReference`` offset, i.e. a halo already cropped by the model) get that margin padded
  at the volume borders.
- Output geometry follows the output axes: ``SizeReference`` with the axes' ``scale``
  (spec 0.5; 0.4 packages are converted to 0.5 on loading). An output axis whose pixels are
  4x smaller than the input's (e.g. z upsampled 4x) gets 4 output pixels per input pixel,
  and the output voxel size is divided by 4.

Default tile: 64 pixels along z and 256 along y and x (rounded to valid sizes), i.e. about
4 M voxels per 3D window; fixed-size models use their fixed size.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ._axes import check_axes
from .errors import InputError, PackageError

__all__ = [
    "DEFAULT_TILE",
    "WEIGHT_FORMAT_PRIORITY",
    "load_model",
    "predict_array",
    "predict_file",
]

DEFAULT_TILE: dict[str, int] = {"z": 64, "y": 256, "x": 256}
"""Requested window size (input pixels, halo included) per axis when ``tile`` is not given."""

WEIGHT_FORMAT_PRIORITY: tuple[str, ...] = (
    "torchscript", "onnx", "pytorch_state_dict",
    "tensorflow_saved_model_bundle", "keras_v3", "keras_hdf5",
)
"""Weight formats tried in this order when ``weight_format`` is not given."""

_SPACE = ("z", "y", "x")
_DATA_ORDER = ("c", "z", "y", "x")  # sharpstack's canonical dim order (io: b t c z y x s)


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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            descr = load_model_description(path, perform_io_checks=False,
                                           format_version="latest")
    except Exception as exc:  # bioimageio raises ValueError and friends with a long report
        raise PackageError(f"{path} is not a valid bioimage.io model package: {exc}") from exc
    if not isinstance(descr, v0_5.ModelDescr):
        raise PackageError(f"{path} (format {getattr(descr, 'format_version', '?')}) could not "
                           f"be converted to bioimage.io model format 0.5; update the package "
                           f"with `bioimageio update-format`")
    return descr


# --------------------------------------------------------------------------------------------
# model geometry
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _AxisGeom:
    """A spatial axis of the model input and how the output relates to it.

    ``step == 0`` means the only valid size is ``min``. ``scale`` is output pixels per
    input pixel (None: the axis is not in the output); ``halo`` and ``offset`` are in
    output pixels (``offset`` from the output ``SizeReference``).
    """

    name: str
    min: int
    step: int
    scale: Fraction | None = Fraction(1)
    halo: int = 0
    offset: int = 0
    ref: tuple[str, Fraction, int] | None = None  # input size = ref size * factor + offset

    def largest_valid(self, size: int) -> int:
        """Largest valid size <= ``size`` (at least ``min``)."""
        if self.step == 0 or size <= self.min:
            return self.min
        return self.min + (size - self.min) // self.step * self.step

    def smallest_valid(self, size: int) -> int | None:
        """Smallest valid size >= ``size``, None if there is none (fixed size too small)."""
        if size <= self.min:
            return self.min
        if self.step == 0:
            return None
        return self.min + -(-(size - self.min) // self.step) * self.step


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


def _axis_scale(axis: Any) -> float:
    return float(getattr(axis, "scale", 1.0) or 1.0)


def _input_axis(axis: Any, tensor_id: str, name: str, axes: Mapping[str, Any]) -> _AxisGeom:
    from bioimageio.spec.model import v0_5

    size = axis.size
    if isinstance(size, int):
        return _AxisGeom(axis.id, min=size, step=0)
    if isinstance(size, v0_5.ParameterizedSize):
        return _AxisGeom(axis.id, min=size.min, step=size.step)
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
    return _Model(descr=descr, name=name, in_id=str(ipt.id), out_id=str(opt.id),
                  in_dims=tuple(str(a.id) for a in ipt.axes),
                  out_dims=tuple(str(a.id) for a in opt.axes), space=space,
                  in_channels=in_channels, out_channels=out_channels, in_dtype=str(data.type))


# --------------------------------------------------------------------------------------------
# tiling
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Win:
    """One window along one axis.

    ``start``/``size``: input pixels read (``start`` may be negative or the window may end
    past the data: those pixels are reflect-padded). ``src``: first pixel of the window's
    output that is kept. ``dst``: where the kept pixels go in the whole output, None when
    the axis is not in the output.
    """

    start: int
    size: int
    src: int = 0
    dst: slice | None = None


def _ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _plan_axis(n: int, g: _AxisGeom, tile: int) -> list[_Win]:
    """Cut an axis of ``n`` input pixels into windows valid for the model (see module doc)."""
    if g.scale is None:  # not in the output: the whole axis must go into one window
        size = g.smallest_valid(n)
        if size is None:
            raise InputError(f"the model takes exactly {g.min} pixels along {g.name!r} and does "
                             f"not return that axis, but the input has {n}; crop it to {g.min}")
        return [_Win(start=0, size=size)]
    s, q = g.scale, g.scale.denominator
    if g.offset > 0 or g.offset % 2:
        raise PackageError(f"output axis {g.name!r} has size offset {g.offset}; sharpstack "
                           f"predict supports offsets that are negative and even (a halo "
                           f"cropped by the model) or 0")
    margin = Fraction(-g.offset, 2) / s  # input pixels the model eats on each side
    if margin.denominator != 1:
        raise PackageError(f"output axis {g.name!r}: offset {g.offset} does not correspond to a "
                           f"whole number of input pixels at scale {s}")
    m = int(margin)
    h = _ceil_to(math.ceil(Fraction(g.halo) / s), q)  # halo in input pixels
    n_pad = _ceil_to(n, q)
    need = n_pad + 2 * m
    out_n = math.floor(n * s)
    grid = math.lcm(g.step or 1, q)
    size = g.largest_valid(tile)
    if size - 2 * (m + h) < grid:
        bigger = g.smallest_valid(2 * (m + h) + grid)
        if bigger is None:
            raise PackageError(f"model input size {g.min} along {g.name!r} is too small for "
                               f"its own halo ({g.halo} output pixels); the package is faulty")
        size = bigger
    if need <= size:
        one = g.smallest_valid(need)
        assert one is not None  # need <= size, a valid size
        return [_Win(start=-m, size=one, src=0, dst=slice(0, out_n))]
    stride = (size - 2 * (m + h)) // grid * grid
    count = 1 + -(-(need - size) // stride)
    starts = [i * stride for i in range(count - 1)] + [_ceil_to(need - size, q)]
    cores = [0] + [u + h for u in starts[1:]] + [n_pad]
    wins = []
    for u, lo, hi in zip(starts, cores[:-1], cores[1:]):
        dst = slice(min(int(lo * s), out_n), min(int(hi * s), out_n))
        wins.append(_Win(start=u - m, size=size, src=int((lo - u) * s), dst=dst))
    return wins


def _resolve_refs(space: dict[str, _AxisGeom], sizes: Mapping[str, int]) -> dict[str, _AxisGeom]:
    """Turn input axes sized by reference into fixed-size axes once the referenced size is known."""
    out = dict(space)
    for k, g in space.items():
        if g.ref is not None:
            ref, factor, offset = g.ref
            if ref not in sizes:
                raise PackageError(f"input axis {k!r} is sized by reference to {ref!r}, which "
                                   f"is itself sized by reference; sharpstack cannot tile that")
            out[k] = replace(g, min=math.floor(sizes[ref] * factor) + offset, step=0, ref=None)
    return out


def _tile_request(tile: Any, axes: Sequence[str], ignored: Sequence[str] = ()) -> dict[str, int]:
    """Normalise ``tile`` (None, int or dict axis -> int) to a size for each axis in ``axes``.

    Keys in ``ignored`` are accepted and dropped (z for a 2D model run plane by plane)."""
    req = {a: DEFAULT_TILE.get(a, 256) for a in axes}
    if tile is None:
        return req
    if isinstance(tile, (int, np.integer)) and not isinstance(tile, bool):
        items = {a: int(tile) for a in axes}
    elif isinstance(tile, Mapping):
        items = {}
        for k, v in tile.items():
            key = str(k).lower()
            if key in ignored and key not in axes:
                continue
            if key not in axes:
                raise InputError(f"tile names axis {k!r}, but the model tiles only "
                                 f"{', '.join(axes)}; use e.g. tile={{'y': 128, 'x': 128}}")
            items[key] = v
    else:
        raise InputError(f"tile must be an int or a dict like {{'z': 32, 'y': 128, 'x': 128}}, "
                         f"got {type(tile).__name__}")
    for k, v in items.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise InputError(f"tile size for axis {k!r} must be a positive integer, got {v!r}")
        req[k] = int(v)
    return req


def _plan(model: _Model, sizes: Mapping[str, int], tile: Any,
          loop_z: bool) -> dict[str, list[_Win]]:
    """Windows per data axis (z included as one-plane windows when a 2D model loops over z)."""
    axes = [a for a in _SPACE if a in model.space]
    req = _tile_request(tile, axes, ignored=("z",) if loop_z else ())
    plan: dict[str, list[_Win]] = {}
    for k in axes:  # axes with their own size first, then those sized by reference
        if model.space[k].ref is None:
            plan[k] = _plan_axis(sizes[k], model.space[k], req[k])
    space = _resolve_refs(model.space, {k: wins[0].size for k, wins in plan.items()})
    for k in axes:
        if k not in plan:
            plan[k] = _plan_axis(sizes[k], space[k], req[k])
    if loop_z:
        plan["z"] = [_Win(start=k, size=1, src=0, dst=slice(k, k + 1)) for k in range(sizes["z"])]
    return {k: plan[k] for k in _SPACE if k in plan}  # z outermost: windows read in order


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
                         f"c, z, y, x only: select one position first, e.g. data.isel("
                         f"{extra[0].lower()}=0)")
    space = "".join(a for a in "zyx" if a in model.space)
    if "z" in model.space and "z" not in dims:
        raise InputError(f"model {model.name!r} expects 3D ({','.join(space)}) input but "
                         f"{source} has axes {''.join(dims)}; give a z-stack")
    c = data.sizes.get("c")
    if model.in_channels is None and c not in (None, 1):
        raise InputError(f"model {model.name!r} takes one channel but {source} has {c}; "
                         f"select one with data.isel(c=...)")
    if model.in_channels is not None and (c or 1) != model.in_channels:
        raise InputError(f"model {model.name!r} expects {model.in_channels} channel(s) but "
                         f"{source} has {c or 1}; give a stack with a c axis of size "
                         f"{model.in_channels}")
    dtype = np.dtype(data.dtype)
    want = np.dtype(model.in_dtype)
    if np.issubdtype(want, np.integer) and not np.can_cast(dtype, want, "safe"):
        raise InputError(f"model {model.name!r} takes {want} input but {source} is {dtype}; "
                         f"convert it explicitly (e.g. rescale to the {want} range) first")
    return _Layout(dims=dims, loop_z="z" in dims and "z" not in model.space, source=source)


def _to_model(array: np.ndarray, dims: Sequence[str], model: _Model, loop_z: bool) -> Any:
    """Wrap a window (data dims) as a bioimageio Tensor in the model's input axes."""
    from bioimageio.core import Tensor

    da = xr.DataArray(array, dims=tuple(dims))
    if "z" in da.dims and loop_z:
        da = da.rename(z="batch") if "batch" in model.in_dims else da.squeeze("z", drop=True)
    if "c" in da.dims:
        da = da.rename(c="channel") if "channel" in model.in_dims else da.squeeze("c", drop=True)
    missing = [a for a in model.in_dims if a not in da.dims]
    if missing:
        da = da.expand_dims(missing)
    return Tensor.from_xarray(da.transpose(*model.in_dims))


def _from_model(tensor: Any, model: _Model, loop_z: bool) -> xr.DataArray:
    """Model output (model axes) -> DataArray with dims from ``c z y x`` in that order."""
    da = tensor.data
    if "batch" in da.dims:
        da = da.rename(batch="z") if loop_z else da.isel(batch=0, drop=True)
    elif loop_z:
        da = da.expand_dims("z")
    if "channel" in da.dims:
        da = da.rename(channel="c")
    other = [d for d in da.dims if d not in _DATA_ORDER]
    if other:
        da = da.isel({d: 0 for d in other}, drop=True)
    return da.transpose(*[d for d in _DATA_ORDER if d in da.dims])


def _back_to_model(da: xr.DataArray, model: _Model, loop_z: bool) -> Any:
    """Inverse of :func:`_from_model` for the whole output (used by whole-sample post-processing)."""
    from bioimageio.core import Tensor

    dims = list(model.out_dims)
    if loop_z and "z" in da.dims:
        if "batch" in model.out_dims:
            da = da.rename(z="batch")
        else:  # no batch axis to hold the planes: keep z as an extra leading axis
            dims.insert(0, "z")
    if "c" in da.dims:
        da = da.rename(c="channel")
    missing = [a for a in dims if a not in da.dims]
    if missing:
        da = da.expand_dims(missing)
    return Tensor.from_xarray(da.transpose(*dims))


def _stats_tensor(data: xr.DataArray, layout: _Layout, model: _Model) -> Any:
    """The whole input as one model tensor for statistics.

    A 2D model on a z-stack sees all planes at once (z folded into y), so every plane is
    normalised with the statistics of the whole stack.
    """
    array = np.asarray(data.values)
    dims = list(layout.dims)
    if layout.loop_z:
        rest = [d for d in dims if d != "z"]
        order = rest[:rest.index("y")] + ["z"] + rest[rest.index("y"):]
        array = np.transpose(array, [dims.index(d) for d in order])
        shape = list(array.shape)
        iy = order.index("z")
        array = array.reshape(shape[:iy] + [shape[iy] * shape[iy + 1]] + shape[iy + 2:])
        dims = rest
    return _to_model(array, dims, model, loop_z=False)


# --------------------------------------------------------------------------------------------
# processing and weights (bioimageio.core)
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


def _input_stats(data: xr.DataArray, layout: _Layout, model: _Model,
                 proc: _Processing) -> dict[Any, Any]:
    """Normalisation statistics of the whole input, computed once for all windows."""
    if not proc.input_measures:
        return {}
    from bioimageio.core import Sample
    from bioimageio.core.stat_calculators import compute_measures

    sample = Sample(members={model.in_id: _stats_tensor(data, layout, model)}, stat={}, id=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "dataset percentiles by averaging": exact for one sample
        return dict(compute_measures(proc.input_measures, [sample]))


def _adapter(model: _Model, weight_format: str | None) -> Any:
    from bioimageio.core.backends import create_model_adapter

    weights = model.descr.weights
    present = [w for w in WEIGHT_FORMAT_PRIORITY if getattr(weights, w, None) is not None]
    if weight_format is not None:
        if weight_format not in WEIGHT_FORMAT_PRIORITY:
            raise InputError(f"weight_format={weight_format!r} is unknown; use one of "
                             f"{', '.join(WEIGHT_FORMAT_PRIORITY)}")
        if weight_format not in present:
            raise PackageError(f"model {model.name!r} has no {weight_format} weights; it has "
                               f"{', '.join(present) or 'none that sharpstack can run'}")
        present = [weight_format]
    if not present:
        raise PackageError(f"model {model.name!r} has no weights in a format sharpstack can run "
                           f"({', '.join(WEIGHT_FORMAT_PRIORITY)})")
    try:
        return create_model_adapter(model.descr, weight_format_priority_order=present)
    except Exception as exc:
        raise PackageError(f"could not load the weights of model {model.name!r} "
                           f"({', '.join(present)}): {exc}") from exc


def _run_window(adapter: Any, model: _Model, proc: _Processing, stats: Mapping[Any, Any],
                tensor: Any) -> Any:
    """Pre-process one window, run the weights, post-process the window's output."""
    from bioimageio.core import Sample

    sample = Sample(members={model.in_id: tensor}, stat=dict(stats), id=None)
    for op in proc.pre:
        op(sample)
    outputs = adapter.forward(sample.members)
    if model.out_id not in outputs:
        raise PackageError(f"model {model.name!r} returned no output {model.out_id!r}")
    result = Sample(members={model.out_id: outputs[model.out_id]}, stat=sample.stat, id=None)
    for op in proc.post_tile:
        op(result)
    return result.members[model.out_id]


def _post_whole(out: xr.DataArray, model: _Model, proc: _Processing, stats: Mapping[Any, Any],
                loop_z: bool) -> xr.DataArray:
    """Post-processing that needs the whole output (output statistics, sample-wise ops)."""
    if not proc.post_whole:
        return out
    from bioimageio.core import Sample
    from bioimageio.core.stat_calculators import compute_measures

    sample = Sample(members={model.out_id: _back_to_model(out, model, loop_z)},
                    stat=dict(stats), id=None)
    for op in proc.post_whole:
        missing = [m for m in op.required_measures if m not in sample.stat]
        if missing:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sample.stat.update(compute_measures(missing, [sample]))
        op(sample)
    return _from_model(sample.members[model.out_id], model, loop_z)


# --------------------------------------------------------------------------------------------
# the tile loop
# --------------------------------------------------------------------------------------------

def _read_window(data: xr.DataArray, wins: Mapping[str, _Win]) -> np.ndarray:
    """Read one window lazily from ``data`` (numpy, dask or zarr backed), reflect-padding
    what lies outside the data."""
    index, pads = {}, []
    for d in data.dims:
        w = wins.get(str(d))
        if w is None:
            pads.append((0, 0))
            continue
        n = data.sizes[d]
        lo, hi = max(w.start, 0), min(w.start + w.size, n)
        index[d] = slice(lo, hi)
        pads.append((lo - w.start, w.start + w.size - hi))
    array = np.asarray(data.isel(index).values)
    if any(p != (0, 0) for p in pads):
        array = np.pad(array, pads, mode="reflect")
    return array


def _progress(progress: Callable[[int, int], Any] | bool | None, total: int, name: str
              ) -> tuple[Callable[[int], None], Callable[[], None]]:
    """Return (step(done), close()) for ``progress`` (False, True for tqdm, or a callable)."""
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"predict {name}", unit="tile")
        return (lambda done: bar.update(1)), bar.close
    if callable(progress):
        return (lambda done: progress(done, total)), (lambda: None)
    return (lambda done: None), (lambda: None)


def _output_shape(model: _Model, plan: Mapping[str, list[_Win]]) -> dict[str, int]:
    shape: dict[str, int] = {}
    if model.out_channels is not None:
        shape["c"] = model.out_channels
    for d in ("z", "y", "x"):
        if d in plan and plan[d][-1].dst is not None:
            shape[d] = plan[d][-1].dst.stop
    return shape


def _windows(plan: Mapping[str, list[_Win]]) -> Iterator[dict[str, _Win]]:
    keys = list(plan)
    for combo in itertools.product(*(plan[k] for k in keys)):
        yield dict(zip(keys, combo))


def _write_window(buffer: np.ndarray, dims: Sequence[str], tile: xr.DataArray,
                  wins: Mapping[str, _Win], name: str) -> None:
    src, dst = {}, []
    for d in dims:
        if d == "c":
            dst.append(slice(None))
            continue
        w = wins[d]
        assert w.dst is not None
        length = w.dst.stop - w.dst.start
        if w.src + length > tile.sizes[d]:
            raise PackageError(f"model {name!r} returned {tile.sizes[d]} pixels along {d!r} for "
                               f"a window of {w.size}, fewer than its description promises")
        src[d] = slice(w.src, w.src + length)
        dst.append(w.dst)
    buffer[tuple(dst)] = tile.isel(src).transpose(*dims).values


def _run_tiles(data: xr.DataArray, layout: _Layout, model: _Model, proc: _Processing,
               stats: Mapping[Any, Any], plan: Mapping[str, list[_Win]], adapter: Any,
               progress: Any) -> xr.DataArray:
    shape = _output_shape(model, plan)
    dims = list(shape)
    total = math.prod(len(v) for v in plan.values())
    step, close = _progress(progress, total, model.name)
    buffer: np.ndarray | None = None
    try:
        for done, wins in enumerate(_windows(plan), start=1):
            array = _read_window(data, wins)
            out = _run_window(adapter, model, proc, stats,
                              _to_model(array, layout.dims, model, layout.loop_z))
            tile = _from_model(out, model, layout.loop_z)
            if buffer is None:  # allocate once the output dtype is known
                buffer = np.empty([shape[d] for d in dims], dtype=tile.dtype)
            _write_window(buffer, dims, tile, wins, model.name)
            step(done)
    finally:
        close()
    assert buffer is not None
    return xr.DataArray(buffer, dims=tuple(dims))


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
    if "c" in out.dims and out.sizes["c"] == 1:
        out = out.isel(c=0, drop=True)
    attrs = _output_attrs(data.attrs, model)
    attrs["voxel_size"] = {d: v for d, v in attrs["voxel_size"].items() if d in out.dims}
    out.attrs = attrs
    return out


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------

def predict_array(package: Any, data: xr.DataArray, *, tile: Mapping[str, int] | int | None = None,
                  weight_format: str | None = None,
                  progress: Callable[[int, int], Any] | bool = False) -> xr.DataArray:
    """Run a bioimage.io model package on a stack, tiled with the package's halo.

    Parameters
    ----------
    package : str, path-like or bioimageio.spec.model.v0_5.ModelDescr
        A local model package (``.zip``, folder or ``rdf.yaml``; format 0.4 or 0.5), see
        :func:`load_model`. Nothing is downloaded.
    data : xarray.DataArray
        The stack, dims from ``c z y x`` with ``y`` and ``x`` required, e.g. ``(Z, Y, X)``
        or ``(C, Z, Y, X)``; numpy-, dask- or zarr-backed (windows are read lazily).
        ``attrs["voxel_size"]`` (micrometres per axis) and ``attrs["calibrated"]`` are
        carried to the output. Any real dtype; the package's pre-processing converts it
        (no implicit rescaling).
    tile : int or dict, optional
        Requested window size in input pixels, halo included: one int for every tiled axis
        or a dict such as ``{"z": 32, "y": 128, "x": 128}``. Rounded down to a size the
        model accepts (and up when smaller than twice the halo). A z entry is ignored for
        a 2D model run plane by plane. Default :data:`DEFAULT_TILE` (64 along z, 256 along
        y and x).
    weight_format : str, optional
        Weights to run (``"torchscript"``, ``"onnx"``, ``"pytorch_state_dict"``, ...).
        Default: the first present in :data:`WEIGHT_FORMAT_PRIORITY`.
    progress : bool or callable, optional
        True shows a tqdm bar over windows; a callable is called as ``progress(done, total)``
        after each window. Default: silent.

    Returns
    -------
    xarray.DataArray
        The model output with dims from ``c z y x`` (batch dropped, channel dropped when the
        model returns one channel), e.g. ``(Z*4, Y, X)`` for a model that upsamples z 4x.
        attrs ``voxel_size`` (input voxel size divided by the model's output pixels per
        input pixel, e.g. z/4), ``unit``, ``calibrated`` (carried) and ``model`` (its name).

    Raises
    ------
    PackageError
        The package is missing, invalid, or has a geometry that cannot be tiled.
    InputError
        The stack does not fit the model (axes, channels, dtype) or holds NaN/inf values.

    Notes
    -----
    - A 2D model on a z-stack runs plane by plane; a 3D model on a 2D image is an error.
    - Statistics for pre- and post-processing (``scale_range`` percentiles, mean/std) are
      computed once over the whole stack (for a 2D model: over all planes together) and
      reused for every window, so tiled and untiled predictions agree. This step reads the
      whole stack into memory once; the windows are then read one at a time and written
      into one preallocated output array.
    - Post-processing that needs statistics of the output itself, or the whole output,
      runs after all windows are stitched.

    Examples
    --------
    >>> out = predict_array("isonet.zip", stack, tile={"z": 32})  # doctest: +SKIP
    >>> out.attrs["voxel_size"]["z"]  # doctest: +SKIP
    """
    from .io import check_finite

    if not (progress is None or isinstance(progress, bool) or callable(progress)):
        raise InputError(f"progress must be True, False or a callable(done, total), got "
                         f"{progress!r}")
    model = _digest(load_model(package))
    if not isinstance(data, xr.DataArray):
        raise InputError(f"predict_array needs an xarray.DataArray with named dims, got "
                         f"{type(data).__name__}; wrap arrays with sharpstack.io.as_dataarray")
    layout = _layout(model, data)
    check_finite(data, f"input stack {layout.source!r}")
    sizes = {str(d): int(n) for d, n in data.sizes.items()}
    plan = _plan(model, sizes, tile, layout.loop_z)
    proc = _processing(model)
    stats = _input_stats(data, layout, model, proc)
    adapter = _adapter(model, weight_format)
    try:
        out = _run_tiles(data, layout, model, proc, stats, plan, adapter, progress)
    finally:
        adapter.unload()
    out = _post_whole(out, model, proc, stats, layout.loop_z)
    return _attach_attrs(out, data, model)


def predict_file(package: Any, input_path: str | os.PathLike, output_path: str | os.PathLike, *,
                 tile: Mapping[str, int] | int | None = None, weight_format: str | None = None,
                 overwrite: bool = False, progress: Callable[[int, int], Any] | bool = False
                 ) -> Path:
    """Read a stack, run a model package on it and write the result (ImageJ TIFF by default).

    Parameters
    ----------
    package : str, path-like or ModelDescr
        The model package, see :func:`predict_array`.
    input_path : str or path-like
        Stack readable by :func:`sharpstack.io.read_stack` (TIFF, OME-Zarr, ``.npy``).
    output_path : str or path-like
        Where to write, format from the suffix (``.tif`` -> ImageJ TIFF whose voxel size
        accounts for any resampling by the model, ``.ome.zarr``, ``.npy``); written
        atomically by :func:`sharpstack.io.write_stack`.
    tile, weight_format, progress
        See :func:`predict_array`.
    overwrite : bool
        Replace an existing output. Checked before any computation.

    Returns
    -------
    pathlib.Path
        The written output path.

    Raises
    ------
    OutputExistsError
        ``output_path`` exists and ``overwrite`` is False (nothing is computed or written).
    InputError
        ``output_path`` is the input itself, or the input does not fit the model.
    PackageError
        See :func:`predict_array`.
    """
    from .errors import OutputExistsError
    from .io import read_stack, write_stack

    src, dst = Path(input_path), Path(output_path)
    if dst.resolve() == src.resolve():
        raise InputError(f"output {dst} is the input stack itself; choose another output path")
    if (dst.exists() or dst.is_symlink()) and not overwrite:
        raise OutputExistsError(f"{dst} already exists; pass overwrite=True (CLI: --overwrite) "
                                f"to replace it, or choose another path")
    descr = load_model(package)
    data = read_stack(src)
    result = predict_array(descr, data, tile=tile, weight_format=weight_format,
                           progress=progress)
    if dst.name.lower().endswith((".tif", ".tiff")):  # ImageJ holds uint8, uint16, float32
        if np.dtype(result.dtype) == np.float64:
            result = result.astype(np.float32)
        elif np.dtype(result.dtype) == np.bool_:
            result = result.astype(np.uint8)
    return write_stack(dst, result, overwrite=overwrite)
