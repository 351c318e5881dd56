"""The prediction engine: weights on a device, pre/post-processing, windows in and out.

One :class:`Runner` per (package, device, weight format) turns windows of the stack (numpy,
in the data's dims) into windows of the output. Every output path (in memory, streamed to
disk, one Dask task per window) goes through it, so all give the same values.

Speed (the per-window cost should be the network's):

- the weights run under ``torch.inference_mode`` (TorchScript, state dict) or in an ONNX
  Runtime session with explicit thread counts; formats bioimageio.core knows but
  sharpstack does not run itself (TensorFlow, Keras) go through bioimageio.core's adapter;
- the package's standard pre/post-processing steps (``ensure_dtype``, ``scale_range``,
  ``scale_linear``, ``clip``, ``zero_mean_unit_variance``, ``fixed_zero_mean_unit_variance``,
  ``scale_mean_variance``, ``sigmoid``, ``binarize``, ``softmax``) run as torch operations
  on the whole batch, on the device; any other step runs through bioimageio.core's own
  operator (on xarray) instead;
- several windows go into one forward call when the model's batch axis allows it;
- :func:`.windows.run_windows` reads the next windows in a reader thread and
  writes finished ones in a writer thread while the network computes (threads, not
  processes: numpy, zarr's codecs, tifffile and torch release the GIL).
"""

from __future__ import annotations

import io as _io
import os
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from ..errors import InputError, PackageError

CPU_PRIORITY: tuple[str, ...] = ("onnx", "torchscript", "pytorch_state_dict",
                                 "tensorflow_saved_model_bundle", "keras_v3", "keras_hdf5")
"""Weight formats tried in this order on a CPU (ONNX Runtime was 1.2-2.6x faster than
TorchScript on 2 cores for the IsoNet package, see benchmarks/predict_speed.py)."""

GPU_PRIORITY: tuple[str, ...] = ("torchscript", "pytorch_state_dict", "onnx",
                                 "tensorflow_saved_model_bundle", "keras_v3", "keras_hdf5")
"""Weight formats tried in this order on a GPU (onnxruntime here has no CUDA provider)."""

UNITS_PER_CALL: dict[str, int] = {"cpu": 1 << 22, "cuda": 1 << 24}
"""Default voxels per forward call (several windows or planes per call up to this)."""

_UNIT = "__unit"  # leading dim of a batch of windows (or planes) inside the engine


# --------------------------------------------------------------------------------------------
# device, threads and weights
# --------------------------------------------------------------------------------------------

def resolve_device(device: str | None) -> str:
    """``None`` -> ``"cuda"`` when a GPU is present, else ``"cpu"``; checks what was asked."""
    import torch

    if device is None or str(device).lower() == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    text = str(device).lower()
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} was asked for but torch sees no GPU; use "
                         f"--device cpu (or install a CUDA build of torch)")
    if not (text == "cpu" or text.startswith("cuda") or text == "mps"):
        raise InputError(f"device {device!r} is unknown; use cpu, cuda or cuda:N")
    return text


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (None: leave torch's choice); returns the count in use."""
    import torch

    if threads is not None:
        if isinstance(threads, bool) or int(threads) < 1:
            raise InputError(f"threads must be a positive integer, got {threads!r}")
        if torch.get_num_threads() != int(threads):
            torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def present_formats(descr: Any) -> list[str]:
    return [w for w in CPU_PRIORITY if getattr(descr.weights, w, None) is not None]


def choose_format(descr: Any, name: str, weight_format: str | None, device: str,
                  code_reason: str | None = None) -> str:
    """The weight format to run: the one asked for, or the fastest present for ``device``.

    ``code_reason``: why the package's ``pytorch_state_dict`` weights may not run (they would
    import code from the package, see :mod:`sharpstack._trust`); None when they may.
    """
    present = present_formats(descr)
    if weight_format is not None and weight_format != "auto":
        if weight_format not in CPU_PRIORITY:
            raise InputError(f"weight_format={weight_format!r} is unknown; use one of "
                             f"{', '.join(CPU_PRIORITY)}")
        if weight_format not in present:
            raise PackageError(f"model {name!r} has no {weight_format} weights; it has "
                               f"{', '.join(present) or 'none that sharpstack can run'}")
        if weight_format == "pytorch_state_dict" and code_reason:
            raise PackageError(f"model {name!r} not run: {code_reason}")
        return weight_format
    order = CPU_PRIORITY if device == "cpu" else GPU_PRIORITY
    for w in order:
        if w == "pytorch_state_dict" and code_reason:
            continue
        if w in present and (w != "onnx" or _onnx_ok(descr, device)):
            return w
    if "pytorch_state_dict" in present and code_reason:
        raise PackageError(f"model {name!r} not run: {code_reason}")
    raise PackageError(f"model {name!r} has no weights in a format sharpstack can run "
                       f"({', '.join(CPU_PRIORITY)})")


def _onnx_ok(descr: Any, device: str) -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    if device != "cpu" and "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    return True


class _TorchNet:
    def __init__(self, module: Any, device: str) -> None:
        self.module, self.device = module, device

    def __call__(self, x: Any) -> Any:
        import torch

        with torch.inference_mode():
            y = self.module(x)
        return y[0] if isinstance(y, (list, tuple)) else y


class _OrtNet:
    def __init__(self, session: Any) -> None:
        self.session = session
        self.name = session.get_inputs()[0].name

    def __call__(self, x: Any) -> Any:
        return self.session.run(None, {self.name: np.ascontiguousarray(x)})[0]


class _AdapterNet:
    """bioimageio.core's model adapter (weight formats sharpstack does not run itself)."""

    def __init__(self, adapter: Any, in_id: str, out_id: str, in_dims: Sequence[str],
                 out_dims: Sequence[str]) -> None:
        self.adapter, self.in_id, self.out_id = adapter, in_id, out_id
        self.in_dims, self.out_dims = tuple(in_dims), tuple(out_dims)

    def __call__(self, x: Any) -> Any:
        from bioimageio.core import Tensor

        out = self.adapter.forward({self.in_id: Tensor(np.asarray(x), dims=self.in_dims)})
        if self.out_id not in out:
            raise PackageError(f"the model returned no output {self.out_id!r}")
        return out[self.out_id].data.transpose(*self.out_dims).values


def load_network(model: Any, weight_format: str, device: str, threads: int | None) -> Any:
    """Load the weights of ``model`` (a :class:`.model.Model`) for ``device``."""
    descr, name = model.descr, model.name
    set_threads(threads)
    try:
        if weight_format == "torchscript" and device != "mps":
            import torch

            w = descr.weights.torchscript
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit.load is deprecated in torch 2.10+
                module = torch.jit.load(_io.BytesIO(w.get_reader().read()), map_location=device)
            module.eval()
            return _TorchNet(module, device)
        if weight_format == "pytorch_state_dict":
            from bioimageio.core.backends.pytorch_backend import load_torch_model

            module = load_torch_model(descr.weights.pytorch_state_dict, load_state=True,
                                      devices=[device])
            module.eval()
            return _TorchNet(module, device)
        if weight_format == "onnx" and getattr(descr.weights.onnx, "external_data", None) is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            n = threads or set_threads(None)
            opts.intra_op_num_threads = int(n)
            opts.inter_op_num_threads = 1
            # no busy-waiting between calls: the reader and writer threads need those cores
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            providers = ["CPUExecutionProvider"] if device == "cpu" else \
                ["CUDAExecutionProvider", "CPUExecutionProvider"]
            session = ort.InferenceSession(descr.weights.onnx.get_reader().read(), opts,
                                           providers=providers)
            return _OrtNet(session)
        from bioimageio.core.backends import create_model_adapter

        adapter = create_model_adapter(descr, devices=[device],
                                       weight_format_priority_order=[weight_format])
        return _AdapterNet(adapter, model.in_id, model.out_id, model.in_dims, model.out_dims)
    except (InputError, PackageError):
        raise
    except Exception as exc:
        raise PackageError(f"could not load the {weight_format} weights of model {name!r} "
                           f"on {device}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# statistics -> values for the operators
# --------------------------------------------------------------------------------------------

def as_bioimageio_stat(stats: Mapping[Any, np.ndarray]) -> dict[Any, Any]:
    """sharpstack's statistics (numpy, per channel or scalar) as bioimageio.core ``Stat``."""
    from bioimageio.core import Tensor

    out: dict[Any, Any] = {}
    for m, v in stats.items():
        arr = np.asarray(v, dtype=np.float64)
        out[m] = float(arr) if arr.ndim == 0 else Tensor(arr, dims=("channel",))
    return out


# --------------------------------------------------------------------------------------------
# processing: numpy (CPU) or torch (GPU) on the whole batch, or bioimageio.core's operators
# --------------------------------------------------------------------------------------------

def _torch_dtype(name: str) -> Any:
    import torch

    table = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
             "uint8": torch.uint8, "int8": torch.int8, "int16": torch.int16,
             "int32": torch.int32, "int64": torch.int64, "bool": torch.bool,
             "uint16": getattr(torch, "uint16", None), "uint32": getattr(torch, "uint32", None)}
    return table.get(str(name))


def _param(value: Any, dims: Sequence[str], xp: str) -> Any:
    """A scalar, numpy or bioimageio Tensor parameter, shaped to broadcast over ``dims``
    (None when it lies along an axis the batch does not have); ``xp`` "numpy" or "torch"."""
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    data = getattr(value, "data", value)
    if isinstance(data, xr.DataArray):
        names, arr = [str(d) for d in data.dims], np.asarray(data.values, dtype=np.float64)
    else:
        arr = np.asarray(data, dtype=np.float64)
        names = ["channel"] if arr.ndim == 1 else []
    for i in reversed(range(len(names))):  # one channel and no channel axis: a scalar
        if names[i] not in dims and arr.shape[i] == 1:
            arr = arr.reshape(arr.shape[:i] + arr.shape[i + 1:])
            del names[i]
    if arr.size == 1 and all(n in dims for n in names):
        return float(arr.reshape(()))  # a scalar: float32 arithmetic on float32 data
    if any(n not in dims for n in names):
        return None
    shape = [1] * len(dims)
    order = sorted(range(len(names)), key=lambda i: dims.index(names[i]))
    arr = np.transpose(arr, order)
    for i in order:
        shape[dims.index(names[i])] = arr.shape[order.index(i)]
    arr = np.ascontiguousarray(arr).reshape(shape)
    if xp == "torch":
        import torch

        return torch.from_numpy(arr)
    return arr


class _Xp:
    """The few array operations the processing steps need, for numpy or torch arrays.

    numpy works in place where the array is a float array owned by the engine (a window
    just read, a network output): the CPU path makes no copies and, unlike torch's
    element-wise kernels, does not share the network's thread pool (on a busy 2-core
    machine torch's OpenMP team made these steps 7x slower than single-threaded numpy)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def _own(self, x: Any) -> bool:
        return self.kind == "numpy" and x.dtype.kind == "f" and x.flags.writeable

    def sub(self, x: Any, v: Any) -> Any:
        return np.subtract(x, v, out=x, casting="same_kind") if self._own(x) else x - v

    def div(self, x: Any, v: Any) -> Any:
        return np.divide(x, v, out=x, casting="same_kind") if self._own(x) else x / v

    def mul(self, x: Any, v: Any) -> Any:
        return np.multiply(x, v, out=x, casting="same_kind") if self._own(x) else x * v

    def add(self, x: Any, v: Any) -> Any:
        return np.add(x, v, out=x, casting="same_kind") if self._own(x) else x + v

    def astype(self, x: Any, name: str) -> Any:
        if self.kind == "numpy":
            return x.astype(np.dtype(name), copy=False)
        return x.to(_torch_dtype(name))

    def clip(self, x: Any, lo: Any, hi: Any) -> Any:
        if self.kind == "numpy":
            return np.clip(x, lo, hi, out=x if self._own(x) else None)
        import torch

        if lo is not None and not isinstance(lo, float):
            x, lo = torch.maximum(x, lo.to(x.device, x.dtype)), None
        if hi is not None and not isinstance(hi, float):
            x, hi = torch.minimum(x, hi.to(x.device, x.dtype)), None
        return x if lo is None and hi is None else torch.clamp(x, lo, hi)

    def sigmoid(self, x: Any) -> Any:
        if self.kind == "numpy":  # bioimageio.core: 1 / (1 + exp(-x))
            return 1.0 / (1.0 + np.exp(-x))
        return x.sigmoid()

    def softmax(self, x: Any, axis: int) -> Any:
        if self.kind == "numpy":
            e = np.exp(x - x.max(axis=axis, keepdims=True))
            return e / e.sum(axis=axis, keepdims=True)
        import torch

        return torch.softmax(x, dim=axis)

    def on(self, v: Any, x: Any) -> Any:
        """A parameter on the device of ``x`` (torch)."""
        if self.kind == "torch" and v is not None and not isinstance(v, float):
            return v.to(x.device)
        return v


def compile_ops(ops: Sequence[Any], dims: Sequence[str], stat: Mapping[Any, Any],
                xp: str = "numpy") -> Callable[[Any], Any] | None:
    """Versions of bioimageio.core operators ``ops`` for a numpy array (``xp="numpy"``) or a
    torch tensor with ``dims``, or None if one of them has no version here (then
    bioimageio.core runs them). The arithmetic is bioimageio.core's."""
    from bioimageio.core import proc_ops as P

    dims = list(dims)
    X = _Xp(xp)
    steps: list[Callable[[Any], Any]] = []

    def value(m: Any) -> Any:
        return float(m) if isinstance(m, (int, float)) else _param(stat[m], dims, xp)

    for op in ops:
        kind = type(op)
        try:
            if kind is P.EnsureDtype:
                if xp == "torch" and _torch_dtype(op.dtype) is None:
                    return None
                steps.append(lambda x, n=str(op.dtype): X.astype(x, n))
            elif kind is P.ScaleLinear:
                gain, offset = _param(op.gain, dims, xp), _param(op.offset, dims, xp)
                if gain is None or offset is None:
                    return None
                steps.append(lambda x, g=gain, o=offset: X.add(X.mul(x, X.on(g, x)),
                                                               X.on(o, x)))
            elif kind is P.ScaleRange:
                lo, hi = value(op.lower), value(op.upper)
                if lo is None or hi is None:
                    return None
                steps.append(lambda x, lo=lo, den=hi - lo + op.eps:
                             X.div(X.sub(x, X.on(lo, x)), X.on(den, x)))
            elif kind is P.Clip:
                lo = None if op.min is None else value(op.min)
                hi = None if op.max is None else value(op.max)
                steps.append(lambda x, lo=lo, hi=hi: X.clip(x, X.on(lo, x), X.on(hi, x)))
            elif kind in (P.ZeroMeanUnitVariance, P.FixedZeroMeanUnitVariance):
                if kind is P.ZeroMeanUnitVariance:
                    mean, std = value(op.mean), value(op.std)
                else:
                    mean, std = _param(op.mean, dims, xp), _param(op.std, dims, xp)
                if mean is None or std is None:
                    return None
                steps.append(lambda x, m=mean, s=std + op.eps:
                             X.div(X.sub(x, X.on(m, x)), X.on(s, x)))
            elif kind is P.ScaleMeanVariance:
                m, s = value(op.mean), value(op.std)
                rm, rs = value(op.ref_mean), value(op.ref_std)
                if any(v is None for v in (m, s, rm, rs)):
                    return None
                steps.append(lambda x, m=m, s=s + op.eps, rm=rm, rs=rs + op.eps: X.add(
                    X.mul(X.div(X.sub(x, X.on(m, x)), X.on(s, x)), X.on(rs, x)), X.on(rm, x)))
            elif kind is P.Sigmoid:
                steps.append(X.sigmoid)
            elif kind is P.Binarize:
                t = _param(op.threshold, dims, xp)
                if t is None:
                    return None
                steps.append(lambda x, t=t: x > X.on(t, x))
            elif kind is P.Softmax:
                if str(op.axis) not in dims:
                    return None
                steps.append(lambda x, d=dims.index(str(op.axis)): X.softmax(x, d))
            else:
                return None
        except (KeyError, AttributeError):
            return None

    def run(x: Any) -> Any:
        for f in steps:
            x = f(x)
        return x

    return run


def bioimageio_ops(ops: Sequence[Any], member: str, dims: Sequence[str],
                   stat: Mapping[Any, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """``ops`` through bioimageio.core itself (a Sample of one tensor, xarray underneath)."""
    from bioimageio.core import Sample, Tensor

    def run(x: np.ndarray) -> np.ndarray:
        sample = Sample(members={member: Tensor(np.asarray(x), dims=tuple(dims))},
                        stat=dict(stat), id=None)
        for op in ops:
            op(sample)
        return sample.members[member].data.transpose(*dims).values

    return run


# --------------------------------------------------------------------------------------------
# the runner
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Options:
    """How to run: device, weight format, CPU threads, windows/planes per forward call."""

    device: str = "cpu"
    weight_format: str = "torchscript"
    threads: int | None = None
    batch: int | None = None  # units (windows, or planes of a 2D model) per forward call
    memory_budget: int = 0  # bytes one window may use (see .budget); 0: not computed
    bytes_per_voxel: int = 0  # estimated network bytes per input voxel (see .budget)


class Runner:
    """One loaded package, ready to turn input windows into output windows.

    Parameters
    ----------
    model, layout, proc
        :class:`.model.Model`, :class:`.model.Layout`, :class:`.model.Processing` of the package.
    stats : dict
        Statistics of the whole input (measure -> numpy array, scalar or per channel).
    options : Options
    """

    def __init__(self, model: Any, layout: Any, proc: Any, stats: Mapping[Any, np.ndarray],
                 options: Options) -> None:
        import torch

        self.model, self.layout, self.proc, self.options = model, layout, proc, options
        self.device = torch.device(options.device)
        self.on_cpu = self.device.type == "cpu"
        self.net = load_network(model, options.weight_format, options.device, options.threads)
        self.torch_net = isinstance(self.net, _TorchNet)
        in_dims, out_dims = list(model.in_dims), list(model.out_dims)
        self.in_batch = in_dims.index("batch") if "batch" in in_dims else None
        self.out_batch = out_dims.index("batch") if "batch" in out_dims else None
        self.in_rest = [d for d in in_dims if d != "batch"]
        self.out_rest = [d for d in out_dims if d != "batch"]
        stat = as_bioimageio_stat(stats)
        self.stat = stat
        pre_dims, post_dims = ["batch", *self.in_rest], ["batch", *self.out_rest]
        xp = "numpy" if self.on_cpu else "torch"  # processing on the CPU in numpy, else on the device
        self.pre = compile_ops(proc.pre, pre_dims, stat, xp)
        self.post = compile_ops(proc.post_tile, post_dims, stat, xp)
        self.pre_slow = None if self.pre else bioimageio_ops(proc.pre, model.in_id, pre_dims,
                                                             stat)
        self.post_slow = None if self.post else bioimageio_ops(proc.post_tile, model.out_id,
                                                               post_dims, stat)
        fixed_one = model.batch == 1 or self.in_batch is None
        self.max_units = 1 if fixed_one else options.batch
        self.lock = threading.Lock()  # one forward call at a time (shared by Dask threads)

    # -- layout -----------------------------------------------------------------------------

    def units(self, window: np.ndarray) -> np.ndarray:
        """A window in data dims -> units ``(n, *model input dims without batch)``."""
        da = xr.DataArray(window, dims=self.layout.dims)
        if self.layout.loop_z:
            da = da.rename(z=_UNIT)
        else:
            da = da.expand_dims(_UNIT)
        if "c" in da.dims:
            da = da.rename(c="channel") if "channel" in self.in_rest else \
                da.squeeze("c", drop=True)
        missing = [d for d in self.in_rest if d not in da.dims]
        if missing:
            da = da.expand_dims(missing)
        return np.ascontiguousarray(da.transpose(_UNIT, *self.in_rest).values)

    def tile(self, units: np.ndarray) -> xr.DataArray:
        """Output units of one window -> the window's output in dims from ``c z y x``."""
        da = xr.DataArray(units, dims=(_UNIT, *self.out_rest))
        da = da.rename({_UNIT: "z"}) if self.layout.loop_z else da.isel({_UNIT: 0}, drop=True)
        if "channel" in da.dims:
            da = da.rename(channel="c")
        other = [d for d in da.dims if d not in ("c", "z", "y", "x")]
        if other:
            da = da.isel({d: 0 for d in other}, drop=True)
        return da.transpose(*[d for d in ("c", "z", "y", "x") if d in da.dims])

    def units_per_call(self, units_per_window: int, unit_voxels: int) -> int:
        """Windows per forward call (batch): several when the model takes a batch."""
        if self.max_units == 1:
            return 1
        budget = self.options.batch or max(1, UNITS_PER_CALL.get(self.device.type, 1 << 22)
                                           // max(unit_voxels, 1))
        return max(1, budget // max(units_per_window, 1))

    # -- compute ----------------------------------------------------------------------------

    def prepare(self, units: np.ndarray) -> Any:
        """Pre-processing of a batch of units: numpy on the CPU (in place, in the reader
        thread); on a GPU the raw units go to the device and are processed there."""
        if self.pre is None:
            assert self.pre_slow is not None
            return self.pre_slow(units)
        return self.pre(units) if self.on_cpu else units

    def forward(self, x: Any) -> Any:
        """Network on a prepared batch, ``max_units`` units per call. Returns numpy on the
        CPU, a device tensor (post-processed there) on a GPU."""
        import torch

        if not self.on_cpu:
            x = torch.from_numpy(np.ascontiguousarray(x)).to(self.device, non_blocking=True)
            if self.pre is not None:
                x = self.pre(x)
        n = x.shape[0]
        step = n if self.max_units is None else max(1, self.max_units)
        outs = []
        with self.lock:
            for i in range(0, n, step):
                part = x[i:i + step]
                if self.in_batch is None:
                    part = part[0]
                elif self.in_batch:
                    part = _moveaxis(part, 0, self.in_batch)
                if self.torch_net and not isinstance(part, torch.Tensor):
                    part = torch.from_numpy(np.ascontiguousarray(part))
                elif not self.torch_net and isinstance(part, torch.Tensor):
                    part = part.cpu().numpy()
                y = self.net(part)
                if self.on_cpu and isinstance(y, torch.Tensor):
                    y = y.numpy()
                if self.out_batch is None:
                    y = y[None]
                elif self.out_batch:
                    y = _moveaxis(y, self.out_batch, 0)
                outs.append(y)
        if isinstance(outs[0], torch.Tensor):
            y = outs[0] if len(outs) == 1 else torch.cat(outs)
            return self.post(y) if self.post is not None else y
        if not self.on_cpu:  # a numpy network (ONNX Runtime) on a GPU machine
            y = outs[0] if len(outs) == 1 else np.concatenate(outs)
            y = torch.from_numpy(y).to(self.device)
            return self.post(y) if self.post is not None else y
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def finish(self, y: Any) -> np.ndarray:
        """Post-processing of a batch (on the CPU: numpy, in the writer thread) -> numpy."""
        import torch

        if isinstance(y, torch.Tensor):  # already post-processed on the device
            y = y.cpu().numpy()
            return y if self.post_slow is None else self.post_slow(y)
        if self.post is not None:
            return self.post(y)
        assert self.post_slow is not None
        return self.post_slow(y)

    def close(self) -> None:
        adapter = getattr(self.net, "adapter", None)
        if adapter is not None:
            adapter.unload()
        self.net = None


def _moveaxis(x: Any, a: int, b: int) -> Any:
    import torch

    return torch.movedim(x, a, b) if isinstance(x, torch.Tensor) else np.moveaxis(x, a, b)


def default_threads() -> int:
    """CPU threads torch would use (all cores this process may run on)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
