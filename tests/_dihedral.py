"""The reference of the self-ensembles: a function averaged over the 8 flips and 90-degree
rotations of the last two axes of its input, each turned back (written with ``rot90``, not
the transposes the deploy modules use, so that it checks them independently)."""

from __future__ import annotations

import torch


def dihedral_mean(fn, x: torch.Tensor) -> torch.Tensor:
    h, w = x.dim() - 2, x.dim() - 1
    total = 0
    for k in range(4):
        for flip in (False, True):
            a = torch.flip(x, [w]) if flip else x
            o = torch.rot90(fn(torch.rot90(a, k, [h, w])), -k, [h, w])
            total = total + (torch.flip(o, [w]) if flip else o)
    return total / 8
