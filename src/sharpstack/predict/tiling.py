"""Windows for tiled prediction: valid model input sizes, the package's halo, chunk-aligned cores.

Per spatial axis of the model input (all sizes in input pixels unless said otherwise):

- Window sizes are valid for the model: ``min + n*step`` for a parameterised axis, the
  fixed size otherwise. The requested tile is rounded down to a valid size (and up when it
  is too small to keep anything after removing the halo).
- The axis is cut into equal **cores** of ``C`` pixels (the last one shorter), ``C`` a
  multiple of the step grid, so that the cores are the chunks of a zarr output (each
  window writes whole chunks: no two windows touch the same chunk, which is what makes
  parallel writes safe). The cores are balanced: as many as the requested tile needs, each
  as short as that count allows.
- A window is its core plus the halo (rounded up to the step grid) on both sides; window
  starts lie on the step grid (multiples of ``step`` from the volume start), so
  down-sampling networks see the same pixel grid as an untiled run. A window that would
  reach past the volume is shifted inward to end at the border (only there may a start be
  off the grid); two cores whose windows coincide share one window. That border window
  ends where a single window over the whole axis would end (the smallest valid length, the
  part beyond the data reflect-padded), so that tiled and one-window outputs agree there too.
- Each window's output is cropped to its core; the sides on the volume border keep
  everything, exactly as an untiled run would.
- Padding (reflect) happens only when the whole axis fits into one window and its length
  is not a valid size (e.g. the stack is smaller than the model's minimum); the padded part
  is cropped from the output. Models whose output is smaller than their input (a negative
  ``SizeReference`` offset, i.e. a halo already cropped by the model) get that margin padded
  at the volume borders.
- Output geometry follows the output axes' ``scale``: an output axis whose pixels are 4x
  smaller than the input's (z upsampled 4x) gets 4 output pixels per input pixel.

A 2D model on a z-stack runs plane by plane: its z "windows" are groups of planes, fed to
the model as a batch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import numpy as np

from ..errors import InputError, PackageError

DEFAULT_TILE: dict[str, int] = {"z": 64, "y": 256, "x": 256}
"""Requested window size (input pixels, halo included) per axis when ``tile`` is not given.
For a 2D model run plane by plane, the z entry is the number of planes per window."""

SPACE = ("z", "y", "x")


@dataclass(frozen=True)
class AxisGeom:
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
    blocks: bool = False  # ``concatenable``: independent blocks of ``min``, never padded

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
class Win:
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


@dataclass(frozen=True)
class Plan:
    """Windows per data axis (z outermost) and the output chunk length per output axis."""

    axes: dict[str, list[Win]]
    chunks: dict[str, int]

    def windows(self) -> Iterator[dict[str, Win]]:
        """Every window, as axis -> :class:`Win`, z outermost (the order they are read)."""
        keys = list(self.axes)
        for combo in itertools.product(*(self.axes[k] for k in keys)):
            yield dict(zip(keys, combo))

    def __len__(self) -> int:
        return math.prod(len(v) for v in self.axes.values())


def _ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def plan_axis(n: int, g: AxisGeom, tile: int) -> list[Win]:
    """Cut an axis of ``n`` input pixels into windows valid for the model (see module doc)."""
    return plan_axis_chunked(n, g, tile)[0]


def plan_axis_chunked(n: int, g: AxisGeom, tile: int) -> tuple[list[Win], int]:
    """:func:`plan_axis` and the output chunk length (one core, in output pixels; 0 when the
    axis is not in the output)."""
    if g.scale is None:  # not in the output: the whole axis must go into one window
        size = g.smallest_valid(n)
        if size is None:
            raise InputError(f"the model takes exactly {g.min} pixels along {g.name!r} and does "
                             f"not return that axis, but the input has {n}; crop it to {g.min}")
        return [Win(start=0, size=size)], 0
    if g.blocks and g.step in (0, g.min) and g.halo == 0 and g.offset == 0:
        return _plan_blocks(n, g, tile)
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
    hg = _ceil_to(h, grid)  # the halo on the grid, so that window starts stay on it
    size = g.largest_valid(tile)
    if size - 2 * (m + hg) < grid:
        bigger = g.smallest_valid(2 * (m + hg) + grid)
        if bigger is None:
            raise PackageError(f"model input size {g.min} along {g.name!r} is too small for "
                               f"its own halo ({g.halo} output pixels); the package is faulty")
        size = bigger
    if need <= size:
        one = g.smallest_valid(need)
        assert one is not None  # need <= size, a valid size
        return [Win(start=-m, size=one, src=0, dst=slice(0, out_n))], max(out_n, 1)
    core_max = (size - 2 * (m + hg)) // grid * grid
    count = -(-n_pad // core_max)
    core = _ceil_to(-(-n_pad // count), grid)  # balanced cores: as short as the count allows
    count = -(-n_pad // core)
    valid = g.smallest_valid(core + 2 * (m + hg))
    assert valid is not None and valid <= size
    size = valid
    # the window that ends on the far border ends where one window over the whole axis
    # would: at the smallest valid length >= the axis, reflect-padded beyond it. Ending the
    # last window at the data's end instead changed the outputs within the network's reach
    # of that end (a stack whose length is not a valid size came out different tiled)
    full = g.smallest_valid(need) or need
    last = _ceil_to(full - size, q)  # start of that window
    wins: list[Win] = []
    for k in range(count):
        lo, hi = k * core, min((k + 1) * core, n_pad)
        u = last if k == count - 1 else min(max(lo - hg, 0), last)
        dst = slice(min(int(lo * s), out_n), min(int(hi * s), out_n))
        if wins and wins[-1].start == u - m:  # the same window as the previous core's
            prev = wins.pop()
            assert prev.dst is not None
            wins.append(replace(prev, dst=slice(prev.dst.start, dst.stop)))
            continue
        wins.append(Win(start=u - m, size=size, src=int((lo - u) * s), dst=dst))
    return wins, int(core * s)


def _plan_blocks(n: int, g: AxisGeom, tile: int) -> tuple[list[Win], int]:
    """A ``concatenable`` axis: the input is a stack of independent blocks of ``g.min``
    (ZSE-GAN: k z-scans of 29 focal planes). Padding or shifting a window would mix planes of
    two blocks, so the length must be a valid size and windows hold whole blocks."""
    block = g.min
    if n < block or n % block:
        raise InputError(f"the model takes {g.name!r} in blocks of {block} pixels (a length "
                         f"of k*{block}), but the input has {n}; crop or complete the stack "
                         f"to such a length (e.g. {max(block, n // block * block)})")
    assert g.scale is not None
    per = 1 if g.step == 0 else max(1, min(n, tile) // block)  # whole blocks per window
    wins: list[Win] = []
    for k in range(0, n // block, per):
        lo, hi = k * block, min(n, (k + per) * block)
        wins.append(Win(start=lo, size=hi - lo, src=0,
                        dst=slice(int(lo * g.scale), int(hi * g.scale))))
    return wins, int(per * block * g.scale)


def resolve_refs(space: Mapping[str, AxisGeom], sizes: Mapping[str, int]) -> dict[str, AxisGeom]:
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


def tile_request(tile: Any, axes: Sequence[str], extra: Sequence[str] = ()) -> dict[str, int]:
    """Normalise ``tile`` (None, int or dict axis -> int) to a size for each axis.

    ``axes`` are the model's tiled axes; ``extra`` axes (z for a 2D model run plane by
    plane: planes per window) are accepted too and get their default when not given.
    """
    every = list(axes) + [a for a in extra if a not in axes]
    req = {a: DEFAULT_TILE.get(a, 256) for a in every}
    if tile is None:
        return req
    if isinstance(tile, (int, np.integer)) and not isinstance(tile, bool):
        items = {a: int(tile) for a in axes}
    elif isinstance(tile, Mapping):
        items = {}
        for k, v in tile.items():
            key = str(k).lower()
            if key not in every:
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


def plan(space: Mapping[str, AxisGeom], sizes: Mapping[str, int], tile: Any,
         loop_z: bool) -> Plan:
    """Windows per data axis (z as groups of planes when a 2D model loops over z)."""
    axes = [a for a in SPACE if a in space]
    req = tile_request(tile, axes, extra=("z",) if loop_z else ())
    per_axis: dict[str, list[Win]] = {}
    chunks: dict[str, int] = {}
    for k in axes:  # axes with their own size first, then those sized by reference
        if space[k].ref is None:
            per_axis[k], chunks[k] = plan_axis_chunked(sizes[k], space[k], req[k])
    resolved = resolve_refs(space, {k: wins[0].size for k, wins in per_axis.items()})
    for k in axes:
        if k not in per_axis:
            per_axis[k], chunks[k] = plan_axis_chunked(sizes[k], resolved[k], req[k])
    chunks = {k: c for k, c in chunks.items() if resolved[k].scale is not None}
    if loop_z:
        nz, zb = sizes["z"], max(1, min(req["z"], sizes["z"]))
        per_axis["z"] = [Win(start=k, size=min(zb, nz - k), src=0, dst=slice(k, min(k + zb, nz)))
                         for k in range(0, nz, zb)]
        chunks["z"] = zb
    return Plan(axes={k: per_axis[k] for k in SPACE if k in per_axis},
                chunks={k: chunks[k] for k in SPACE if k in chunks})
