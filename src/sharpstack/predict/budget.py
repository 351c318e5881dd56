"""Default windows sized to the machine's memory.

Each window costs a fixed overhead (the runtime's call, the halo computed twice) besides its
voxels, so fewer, larger windows are faster: a user measured the old fixed 64x256x256 default
3-4x slower than one window on stacks that fitted in memory many times over. When no ``tile``
is given, the window is therefore the whole stack if one window fits the memory budget, and
otherwise the largest that does (the longest axis halved until it fits), so a stack larger
than memory still streams with a bounded footprint.

The budget is ``memory`` bytes (``--memory`` in GB on the command line), by default
:data:`DEFAULT_FRACTION` of the memory available now, at most :data:`DEFAULT_CAP`; a window
never holds more than :data:`MAX_WINDOW_VOXELS`. A window's
cost is estimated from the package: its input voxels (halo included) times the bytes a voxel
costs in the network (:func:`bytes_per_voxel`: the channels of all convolution layers, in
float32, times :data:`ACTIVATION_FACTOR`, measured on the four methods' packages), plus the
float32 input and output.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from ..errors import InputError
from .tiling import SPACE, AxisGeom

__all__ = ["DEFAULT_FRACTION", "DEFAULT_CAP", "MAX_WINDOW_VOXELS", "ACTIVATION_FACTOR", "available_memory",
           "bytes_per_voxel", "halo_in", "memory_budget", "memory_tile", "window_bytes", "window_cost"]

DEFAULT_FRACTION = 0.5
"""Share of the available memory one window may use by default."""
DEFAULT_CAP = 8 << 30
"""At most this many bytes by default (8 GiB): beyond it windows are large enough that the
per-window overhead is negligible, and a larger footprint only crowds the machine."""
MAX_WINDOW_VOXELS = 1 << 24
"""At most this many input voxels per window (16 Mi: 64 MB in float32), whatever the
budget: a window is also an OME-Zarr output chunk (chunks of hundreds of MB are slow to
compress and to read back), and beyond this size the per-window overhead is a few percent
even for the networks with the largest halos (measured: a 1x1x1-convolution package on a
1 GB OME-Zarr ran at 1.9 M voxels/s with windows of 128 Mi voxels and 4.1 GB peak RSS, at
36 M voxels/s and 1.0 GB with 4 Mi)."""
ACTIVATION_FACTOR = 1.0
"""Peak bytes per window voxel / (4 bytes x the sum of the convolution layers' output
channels), measured with ``ru_maxrss`` on one-window predictions of demo packages (ONNX
Runtime, 2 threads): the 3D isotropic-restoration U-Net 0.99 (3.3 GB for an 80x256x256
window), the depth-recurrent 2D network 0.66; the largest."""
_FALLBACK_BPV = 2048
"""Bytes per voxel when the weights tell nothing (no convolution found)."""


def available_memory() -> int:
    """Bytes of memory available now (Linux: ``MemAvailable`` within the cgroup limit; other
    systems: psutil when installed, else 4 GiB)."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            import psutil

            avail = int(psutil.virtual_memory().available)
        except Exception:  # noqa: BLE001 - no psutil, or it cannot tell: a safe guess
            avail = 4 << 30
    for limit_file in ("/sys/fs/cgroup/memory.max",
                       "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(limit_file).read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < avail:
            avail = int(text)
    return avail


def memory_budget(memory_gb: float | None) -> int:
    """The window budget in bytes: ``memory_gb`` GB when given, else the default share of the
    available memory (capped)."""
    if memory_gb is None:
        return int(min(DEFAULT_FRACTION * available_memory(), DEFAULT_CAP))
    if isinstance(memory_gb, bool) or not isinstance(memory_gb, (int, float)) \
            or not math.isfinite(memory_gb) or memory_gb <= 0:
        raise InputError(f"memory must be a positive number of GB, got {memory_gb!r}; e.g. "
                         f"--memory 4")
    return int(memory_gb * (1 << 30))


def _conv_channels(shapes: list[tuple[int, ...]]) -> int:
    return sum(int(s[0]) for s in shapes if len(s) in (3, 4, 5))


def bytes_per_voxel(descr: Any) -> int:
    """Estimated peak bytes per input voxel of the package's network (see module doc). Read
    from the ONNX or TorchScript weights (neither executes Python code); a package with
    neither gets :data:`_FALLBACK_BPV`."""
    shapes: list[tuple[int, ...]] = []
    weights = getattr(descr, "weights", None)
    try:
        onnx_w = getattr(weights, "onnx", None)
        ts_w = getattr(weights, "torchscript", None)
        if onnx_w is not None:
            import onnx

            m = onnx.load_from_string(onnx_w.get_reader().read())
            shapes = [tuple(t.dims) for t in m.graph.initializer]
        elif ts_w is not None:
            import torch

            mod = torch.jit.load(io.BytesIO(ts_w.get_reader().read()), map_location="cpu")
            shapes = [tuple(p.shape) for p in mod.parameters()]
    except Exception:  # noqa: BLE001 - an unreadable file is reported by the runner itself
        shapes = []
    ch = _conv_channels(shapes)
    return int(ACTIVATION_FACTOR * 4 * ch) if ch else _FALLBACK_BPV


def halo_in(g: AxisGeom) -> int:
    """Input pixels of halo (and cropped margin) on each side of a window along ``g``."""
    if g.scale is None:
        return 0
    return math.ceil(Fraction(g.halo) / g.scale) + math.ceil(Fraction(-min(g.offset, 0), 2)
                                                              / g.scale)


def window_cost(space: Mapping[str, AxisGeom], lengths: Mapping[str, int], bpv: int,
                sizes: Mapping[str, int] | None = None) -> int:
    """Bytes of one window whose kept input lengths are ``lengths``: the network's
    activations plus the float32 input and output. Along an axis cut into windows the halo
    is added on both sides; along an axis the window covers whole (``lengths`` reaching
    ``sizes``) the window is the smallest valid length, padded by reflection only."""
    window = {}
    for a, n in lengths.items():
        g = space.get(a)
        if g is None:  # planes of a 2D model: no halo
            window[a] = n
        elif sizes is not None and n >= sizes[a]:
            window[a] = g.smallest_valid(sizes[a]) or sizes[a]
        else:
            window[a] = n + 2 * halo_in(g)
    return window_bytes(space, window, bpv)


def window_bytes(space: Mapping[str, AxisGeom], window: Mapping[str, int], bpv: int) -> int:
    """Bytes of one window of ``window`` input pixels per axis (halo and padding included):
    the network's activations plus the float32 input and output."""
    vox = math.prod(window.values())
    scale = math.prod((space[a].scale or Fraction(1) for a in window if a in space),
                      start=Fraction(1))
    return int(vox * (bpv + 4) + vox * float(scale) * 4)


def memory_tile(space: Mapping[str, AxisGeom], sizes: Mapping[str, int], loop_z: bool,
                budget: int, bpv: int) -> dict[str, int]:
    """The window request (input pixels, halo included, per axis) of the largest window that
    fits ``budget``: the whole stack when it fits, else the longest axis halved until it
    does (not below twice its halo plus 16 pixels, or the model's minimum)."""
    axes = [a for a in SPACE if a in space]
    if loop_z:
        axes = ["z"] + axes
    lengths = {a: int(sizes[a]) for a in axes}
    floor = {a: 1 if a not in space else max(space[a].min, 16) for a in axes}
    while (window_cost(space, lengths, bpv, sizes) > budget
           or math.prod(lengths.values()) > MAX_WINDOW_VOXELS):
        can = [a for a in axes if lengths[a] > floor[a]
               and not (a in space and (space[a].scale is None or space[a].blocks))]
        if not can:
            break
        a = max(can, key=lambda k: lengths[k])
        lengths[a] = max(floor[a], -(-lengths[a] // 2))
    whole = 1 << 30  # one window along an axis the stack fits into (see plan_axis_chunked)
    return {a: whole if lengths[a] >= sizes[a]
            else lengths[a] + (2 * halo_in(space[a]) if a in space else 0) for a in axes}
