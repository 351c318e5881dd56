"""Reduced-precision training: which number format a run computes in, and what stays float32.

``precision`` is a loop option of every method (``sharpstack train <m> --precision``):

- ``fp32``: float32 everywhere, contiguous (NCHW) tensors; today's numerics.
- ``bf16``: the networks' forward passes run under ``torch.autocast(dtype=bfloat16)`` (convs
  and matrix products in bf16, the rest as autocast decides) with channels-last memory format.
  bf16 has float32's range, so no loss scaling is needed.
- ``fp16``: autocast in float16 with a ``torch.amp.GradScaler`` (CUDA only; float16 needs loss
  scaling and CPUs gain nothing from it).
- ``auto`` (the default): ``bf16`` on CUDA GPUs that support it (else ``fp16``) and on CPUs
  with AMX tiles; on other CPUs float32 in channels-last memory format. Measured with
  ``benchmarks/train_speed.py`` on a 2-core Xeon with AVX-512 BF16 but no AMX: channels-last
  float32 trains a 2D U-Net 1.2x faster than NCHW, while bf16 autocast is slower for two of
  the four methods' reduced recipes (0.7-0.8x) and faster for the two others (1.1-1.3x, the
  README's table); there ``--precision bf16`` is the explicit choice.

What stays float32 whatever the setting: every network output is cast back to float32 before
the method's losses see it (:func:`autocast_models`), so losses, metrics, normalisation
statistics and GAN losses are computed in float32; modules a method names in
``TrainTask.fp32_modules()`` (DQLR's VQ codebook with its EMA) run with autocast off and float32
inputs; :func:`sharpstack.nn.losses.ssim` turns autocast off inside. Parameters, optimiser
state, checkpoints and exported weights are float32 (autocast casts copies per op), so packages
do not change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .errors import InputError

__all__ = ["PRECISIONS", "Numerics", "resolve_precision", "cpu_has_native_bf16", "cpu_has_amx",
           "autocast_models", "to_channels_last"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX-512 BF16 or AMX); emulated bf16 on
    older CPUs is much slower than float32."""
    # torch exposes the CPU's features only through these functions of torch.cpu
    checks = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported",
                                                     "_is_amx_tile_supported")]
    return any(bool(c()) for c in checks if c is not None)


def cpu_has_amx() -> bool:
    """True where the CPU has AMX tiles (Sapphire Rapids and later), whose bf16 matrix units
    make bf16 convolutions several times faster than float32; AVX-512 BF16 alone did not
    speed up the methods' 2D networks (see the module doc)."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(check()) if check is not None else False


@dataclass(frozen=True)
class Numerics:
    """How one run computes: the autocast dtype (None: float32), channels-last memory format,
    loss scaling (float16 only), and the setting it was resolved from."""

    name: str
    dtype: torch.dtype | None
    channels_last: bool
    scale_loss: bool
    requested: str = "auto"

    @property
    def reduced(self) -> bool:
        return self.dtype is not None


def resolve_precision(precision: str, device: torch.device) -> Numerics:
    """The :class:`Numerics` of ``precision`` (``auto``, ``fp32``, ``bf16``, ``fp16``) on
    ``device``. Refuses, with the fix, a format the device cannot train in."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                         f"{precision!r}")
    cuda = device.type == "cuda"
    choice = precision
    if precision == "auto":
        if cuda:
            choice = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif device.type == "cpu" and cpu_has_amx():
            choice = "bf16"
        elif device.type == "cpu":  # float32, in the faster channels-last layout
            return Numerics("fp32-channels-last", None, True, False, precision)
        else:  # mps and others: float32, the format every backend trains in
            choice = "fp32"
    if choice == "fp32":
        return Numerics("fp32", None, False, False, precision)
    if choice == "fp16" and not cuda:
        raise InputError("--precision fp16 needs a CUDA GPU (float16 training on a CPU is "
                         "slower than float32); use --precision bf16 or auto on a CPU")
    if choice == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise InputError("this GPU does not support bf16; use --precision fp16 or auto")
    if choice == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        raise InputError("this CPU has no native bf16 (AVX-512 BF16 or AMX), so bf16 training "
                         "would be slower than float32; use --precision auto or fp32")
    if choice == "bf16" and device.type not in ("cpu", "cuda"):
        raise InputError(f"--precision bf16 is supported on CPUs and CUDA GPUs, not on "
                         f"{device.type}; use --precision fp32")
    dtype = torch.bfloat16 if choice == "bf16" else torch.float16
    return Numerics(choice, dtype, True, choice == "fp16", precision)


def _floats_to_fp32(x):
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() and x.dtype != torch.float32 else x
    if isinstance(x, tuple):
        return tuple(_floats_to_fp32(v) for v in x)
    if isinstance(x, list):
        return [_floats_to_fp32(v) for v in x]
    if isinstance(x, dict):
        return {k: _floats_to_fp32(v) for k, v in x.items()}
    return x


def to_channels_last(model: nn.Module) -> None:
    """Parameters and buffers of rank 4 (2D convs) in ``channels_last``, of rank 5 (3D convs)
    in ``channels_last_3d``, in place. Values and ``state_dict`` keys are unchanged."""
    for t in list(model.parameters()) + list(model.buffers()):
        fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(t.dim())
        if fmt is not None and t.is_floating_point():
            t.data = t.data.contiguous(memory_format=fmt)


@contextlib.contextmanager
def autocast_models(models: Iterable[nn.Module], fp32_modules: Iterable[nn.Module],
                    numerics: Numerics, device: torch.device) -> Iterator[None]:
    """While active (the loop wraps each training and validation step in it): autocast in
    ``numerics.dtype``; every module of ``models`` and each of their direct children returns
    float32 tensors (so what the method computes from them, its losses and statistics, is
    float32, whether it calls the network's ``forward`` or another entry point such as
    ``encode``); every module of ``fp32_modules`` runs with autocast off on float32 inputs.
    Nothing happens for float32 numerics."""
    if not numerics.reduced:
        yield
        return
    handles = []
    island = {id(m) for m in fp32_modules}

    def cast_out(module, args, out):
        return _floats_to_fp32(out)

    def fp32_pre(module, args, kwargs):
        ctx = torch.autocast(device.type, enabled=False)
        ctx.__enter__()
        module.__dict__.setdefault("_sharpstack_fp32", []).append(ctx)
        return _floats_to_fp32(args), _floats_to_fp32(kwargs)

    def fp32_post(module, args, kwargs, out):
        module.__dict__["_sharpstack_fp32"].pop().__exit__(None, None, None)
        return out

    try:
        seen: set[int] = set()
        for m in models:
            for sub in (m, *m.children()):
                if id(sub) not in seen and id(sub) not in island:
                    seen.add(id(sub))
                    handles.append(sub.register_forward_hook(cast_out))
        for m in fp32_modules:
            handles.append(m.register_forward_pre_hook(fp32_pre, with_kwargs=True))
            handles.append(m.register_forward_hook(fp32_post, with_kwargs=True,
                                                   always_call=True))
        with torch.autocast(device.type, dtype=numerics.dtype):
            yield
    finally:
        for h in handles:
            h.remove()
