"""What predict needs to know about a model package: loading it, and its digest.

- :func:`load_model`: a local package (zip, folder, rdf.yaml; format 0.4 or 0.5) as a spec
  0.5 description, offline, with the package's weights checked (see :mod:`sharpstack._trust`);
- :func:`digest`: the geometry of a (single input, single output) model as :class:`Model`;
- :func:`layout_of`: how a stack's dims map onto the model's axes (:class:`Layout`);
- :func:`processing_of`: the package's pre- and post-processing, split into what runs window
  by window and what needs the whole output (:class:`Processing`);
- :func:`output_attrs`: the output's calibration from the input's and the model's scaling.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .._axes import check_axes
from ..errors import InputError, PackageError
from .tiling import SPACE, AxisGeom

__all__ = ["Layout", "Model", "Processing", "attach_attrs", "digest", "layout_of", "load_model",
           "output_attrs", "processing_of"]


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
class Model:
    """What predict needs to know about a (single input, single output) model."""

    descr: Any
    name: str
    in_id: str
    out_id: str
    in_dims: tuple[str, ...]   # model input axis ids in order, e.g. batch channel z y x
    out_dims: tuple[str, ...]
    space: dict[str, AxisGeom]  # input spatial axes by id
    in_channels: int | None      # None: no channel axis
    out_channels: int | None
    in_dtype: str
    out_dtype: str = "float32"
    batch: int | None = 0        # None: no batch axis; 0: any batch size; 1: fixed to 1


def _axis_scale(axis: Any) -> float:
    return float(getattr(axis, "scale", 1.0) or 1.0)


def _input_axis(axis: Any, tensor_id: str, name: str, axes: Mapping[str, Any]) -> AxisGeom:
    from bioimageio.spec.model import v0_5

    size = axis.size
    blocks = bool(getattr(axis, "concatenable", False))
    if isinstance(size, int):
        return AxisGeom(axis.id, min=size, step=0, blocks=blocks)
    if isinstance(size, v0_5.ParameterizedSize):
        return AxisGeom(axis.id, min=size.min, step=size.step, blocks=blocks)
    if isinstance(size, v0_5.SizeReference) and size.tensor_id == tensor_id \
            and size.axis_id in axes and size.axis_id != axis.id:
        factor = Fraction(_axis_scale(axes[size.axis_id]) / _axis_scale(axis)).limit_denominator(1000)
        return AxisGeom(axis.id, min=1, step=1, ref=(size.axis_id, factor, size.offset))
    raise PackageError(f"model {name!r}: input axis {axis.id!r} has a size ({size!r}) that "
                       f"sharpstack predict cannot tile; it supports fixed, parameterised "
                       f"(min + n*step) and same-tensor referenced input sizes")


def _output_axis(axis: Any, geom: AxisGeom, in_axis: Any, in_id: str, name: str) -> AxisGeom:
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


def digest(descr: Any) -> Model:
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
    space: dict[str, AxisGeom] = {}
    in_channels = None
    for a in ipt.axes:
        if isinstance(a, v0_5.BatchAxis):
            continue
        if isinstance(a, v0_5.ChannelAxis):
            in_channels = len(a.channel_names)
        elif isinstance(a, v0_5.SpaceInputAxis) and str(a.id) in SPACE:
            space[str(a.id)] = _input_axis(a, ipt.id, name, in_axes)
        elif a.size != 1:
            raise PackageError(f"model {name!r}: input axis {a.id!r} ({a.type}) is not "
                               f"supported; sharpstack predict maps stacks onto batch, "
                               f"channel, z, y and x axes")
    if not {"y", "x"} <= set(space):
        raise PackageError(f"model {name!r}: input has spatial axes {sorted(space)}; "
                           f"sharpstack predict needs at least y and x")
    out_channels = None
    out_space: dict[str, AxisGeom] = {}
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
    return Model(descr=descr, name=name, in_id=str(ipt.id), out_id=str(opt.id),
                  in_dims=tuple(str(a.id) for a in ipt.axes),
                  out_dims=tuple(str(a.id) for a in opt.axes), space=space,
                  in_channels=in_channels, out_channels=out_channels, in_dtype=str(data.type),
                  out_dtype=str(out_data.type), batch=batch)



# --------------------------------------------------------------------------------------------
# data <-> model layout
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """How the input's dims map onto the model's axes."""

    dims: tuple[str, ...]   # data dims, e.g. ('z', 'y', 'x') or ('c', 'z', 'y', 'x')
    loop_z: bool            # 2D model on a z-stack: one plane at a time, z as batch
    source: str


def layout_of(model: Model, data: xr.DataArray) -> Layout:
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
    return Layout(dims=dims, loop_z="z" in dims and "z" not in model.space, source=source)



# --------------------------------------------------------------------------------------------
# processing and its statistics
# --------------------------------------------------------------------------------------------

@dataclass
class Processing:
    pre: list[Any]
    post_tile: list[Any]    # applied to every window's output
    post_whole: list[Any]   # need the whole output (sample-wise ops, output statistics)
    input_measures: set[Any]


def processing_of(model: Model) -> Processing:
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
    return Processing(pre=pre, post_tile=post[:split], post_whole=post[split:],
                       input_measures=measures)



# --------------------------------------------------------------------------------------------
# output attrs
# --------------------------------------------------------------------------------------------

def output_attrs(in_attrs: Mapping[str, Any], model: Model) -> dict[str, Any]:
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
    for d in SPACE:
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



def attach_attrs(out: xr.DataArray, data: xr.DataArray, model: Model) -> xr.DataArray:
    attrs = output_attrs(data.attrs, model)
    attrs["voxel_size"] = {d: v for d, v in attrs["voxel_size"].items() if d in out.dims}
    out.attrs = attrs
    return out
