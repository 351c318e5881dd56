"""IsoNet networks and deploy modules, in one self-contained file.

This file imports nothing but ``torch``: the exporter ships it verbatim as the architecture
source of the ``pytorch_state_dict`` weights, so that bioimageio.core (and ilastik) can rebuild
the network from JSON keyword arguments without sharpstack installed. Keep it that way.

Networks (Weigert et al., MICCAI 2017, doi:10.1007/978-3-319-66185-8_15):

- :class:`SRCNN2D` (IsoNet-1): C64,9x9 - C32,5x5 - C1,5x5 - C1,1x1.
- :class:`UNet2D` (IsoNet-2): C16,7x7 - M2 - C32,7x7 - M2 - C64,7x7 - U2 - C32,7x7 - U2 -
  C16,7x7 - C1,1x1 with skip connections, predicting the residual to its input.

Both map a 2D image ``(N, 1, H, W)`` to ``(N, 1, H, W)``; the anisotropic (axial) direction is
``H`` (rows). :class:`IsoNetDeploy` applies the 2D network to every xz and every yz plane of a
``(B, 1, Z, Y, X)`` stack and fuses the two views by the geometric mean of the clamped outputs
(as CSBDeep does), optionally after upsampling z by the factor inside the module.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["SRCNN2D", "UNet2D", "ZUpsampleLinear", "IsoNetDeploy", "build_network",
           "receptive_radius", "fraction_of"]


class SRCNN2D(nn.Module):
    """IsoNet-1 / SRCNN: C64,9x9 - C32,5x5 - C1,5x5 - C1,1x1.

    The paper puts a ReLU after each convolution. Here the two one-channel layers (C1,5x5 and
    C1,1x1) are linear: a ReLU on a single channel dies easily at the paper's learning rate
    (5e-3), after which the network outputs a constant (seen in our Table 1 runs).

    Shapes: ``(N, 1, H, W) -> (N, 1, H, W)``.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, dropout: float = 0.2,
                 residual: bool = False) -> None:
        super().__init__()
        self.residual = bool(residual)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 64, 9, padding=4), nn.ReLU(), nn.Dropout(dropout),
            nn.Conv2d(64, 32, 5, padding=2), nn.ReLU(), nn.Dropout(dropout),
            nn.Conv2d(32, out_channels, 5, padding=2),
            nn.Conv2d(out_channels, out_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, dropout: float,
                 bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(F.relu(self.conv(x)))


class UNet2D(nn.Module):
    """IsoNet-2 U-Net with ``depth`` poolings, predicting the residual to its input.

    Parameters
    ----------
    base : int
        Channels at the first level (16 in the paper), doubled at each level.
    depth : int
        Number of 2x2 max-poolings (2 in the paper). Input H and W must be multiples of
        ``2**depth``.
    kernel : int
        Convolution size (7 in the paper).
    dropout : float
        Dropout after every convolution (0.2 in the paper).
    residual : bool
        Add the input to the output (IsoNet-2 predicts the residual).
    bias : bool
        Additive biases in the convolutions (the paper's). Without them (and with ReLU,
        max-pooling and nearest upsampling, all positively homogeneous) the network is
        scale-equivariant, ``f(a x) = a f(x)`` for ``a > 0`` (Mohan et al., ICLR 2020,
        bias-free CNNs): a dim and a bright copy of one structure are restored alike.

    Shapes: ``(N, 1, H, W) -> (N, 1, H, W)``, H and W multiples of ``2**depth``.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base: int = 16,
                 depth: int = 2, kernel: int = 7, dropout: float = 0.2,
                 residual: bool = True, bias: bool = True) -> None:
        super().__init__()
        self.depth = int(depth)
        self.residual = bool(residual)
        chans = [base * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = in_channels
        for c in chans[:-1]:
            self.down.append(_Block(cin, c, kernel, dropout, bias))
            cin = c
        self.bottom = _Block(chans[-2], chans[-1], kernel, dropout, bias)
        self.up = nn.ModuleList()
        for i in reversed(range(depth)):
            self.up.append(_Block(chans[i + 1] + chans[i], chans[i], kernel, dropout, bias))
        self.head = nn.Conv2d(chans[0], out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for blk in self.down:
            h = blk(h)
            skips.append(h)
            h = F.max_pool2d(h, 2)
        h = self.bottom(h)
        for blk, skip in zip(self.up, reversed(skips)):
            # nearest-neighbour upsampling by an integer factor (ONNX Resize, opset >= 11)
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = blk(torch.cat([h, skip], dim=1))
        y = self.head(h)
        return x + y if self.residual else y


def build_network(arch: str, **kwargs: Any) -> nn.Module:
    """Build ``"unet"`` (IsoNet-2) or ``"srcnn"`` (IsoNet-1) from JSON-serialisable kwargs."""
    if arch == "unet":
        return UNet2D(**kwargs)
    if arch == "srcnn":
        return SRCNN2D(**kwargs)
    raise ValueError(f"unknown IsoNet architecture {arch!r}; use 'unet' (IsoNet-2) or 'srcnn' (IsoNet-1)")


def receptive_radius(arch: str, **kwargs: Any) -> int:
    """Radius (pixels) of the receptive field of :func:`build_network` ``(arch, **kwargs)``.

    Every output pixel depends only on inputs within this distance, which is what a tiling halo
    must cover for tiled and untiled predictions to agree.
    """
    if arch == "srcnn":
        return 4 + 2 + 2
    depth = int(kwargs.get("depth", 2))
    k = int(kwargs.get("kernel", 7)) // 2
    r = 0
    for level in range(depth):  # encoder convs, then pooling
        r += k * 2 ** level + 2 ** level
    r += k * 2 ** depth  # bottom
    for level in reversed(range(depth)):  # nearest upsampling + decoder convs
        r += 2 ** level + k * 2 ** level
    return r


class ZUpsampleLinear(nn.Module):
    """Linear upsampling along z by ``factor``: output slice ``i`` sits at input coordinate
    ``i / factor`` (so ``out[0] == in[0]``); beyond the last input slice the value is held
    constant. Same convention as ``sharpstack.degrade.upsample_linear`` (integer factors) and
    ``sharpstack.resample.upsample`` (any factor).

    An integer factor ``f`` is a fixed transposed convolution with stride ``f`` (plus an edge
    pad) rather than ``F.interpolate``, so that the exact sampling convention survives
    TorchScript and ONNX export in old runtimes. A non-integer factor is realised as the
    fraction ``p/q`` (``q <= 8``) nearest to it: upsampling by ``p``, then every ``q``-th
    slice; ``ratio()`` gives the factor actually applied (exact for 2.5 = 5/2, 1.75 = 7/4 ...).

    Shapes: ``(B, C, Z, Y, X) -> (B, C, ceil(Z*p/q), Y, X)``.
    """

    def __init__(self, factor: float) -> None:
        super().__init__()
        p, q = fraction_of(factor)
        self.factor = p
        self.keep = q
        f = p
        taps = torch.tensor([1.0 - abs(j) / f for j in range(-(f - 1), f)], dtype=torch.float32)
        self.register_buffer("weight", taps.reshape(1, 1, 2 * f - 1, 1, 1))

    def ratio(self) -> float:
        return self.factor / self.keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return x
        b, c, z, y, xx = x.shape
        h = x.reshape(b * c, 1, z, y, xx)
        h = F.pad(h, (0, 0, 0, 0, 0, 1), mode="replicate")
        h = F.conv_transpose3d(h, self.weight, stride=(self.factor, 1, 1),
                               padding=(self.factor - 1, 0, 0))
        h = h[:, :, : z * self.factor]
        if self.keep > 1:
            h = h[:, :, :: self.keep]
            return h.reshape(b, c, h.shape[2], y, xx)
        return h.reshape(b, c, z * self.factor, y, xx)


def fraction_of(factor: float, max_denominator: int = 8) -> tuple[int, int]:
    """``(p, q)``: the fraction with ``q <= max_denominator`` nearest to ``factor`` (>= 1),
    e.g. ``2.5 -> (5, 2)``, ``4 -> (4, 1)``."""
    f = float(factor)
    if not f >= 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    best = (int(round(f)), 1)
    for q in range(1, max_denominator + 1):
        p = int(round(f * q))
        if abs(p / q - f) < abs(best[0] / best[1] - f) - 1e-12:
            best = (p, q)
    return best


class IsoNetDeploy(nn.Module):
    """The exported IsoNet model: 3D in, 3D out, both axial views fused inside.

    Parameters
    ----------
    arch, arch_kwargs
        The 2D network (see :func:`build_network`).
    factor : float
        Axial subsampling factor of the data (a non-integer one as the nearest ``p/q``,
        ``q <= 8``, see :class:`ZUpsampleLinear`).
    upsample : bool
        ``False``: input already resampled to isotropic voxels, output the same shape.
        ``True``: raw anisotropic input; z is upsampled by ``factor`` inside the module.
    fuse : str
        ``"geometric"`` (CSBDeep: sqrt of the product of the clamped views) or ``"mean"``.

    Shapes: ``(B, 1, Z, Y, X) -> (B, 1, Z, Y, X)`` or ``(B, 1, Z*factor, Y, X)``.
    """

    def __init__(self, arch: str = "unet", arch_kwargs: dict | None = None, factor: float = 1,
                 upsample: bool = False, fuse: str = "geometric") -> None:
        super().__init__()
        if fuse not in ("geometric", "mean"):
            raise ValueError(f"fuse must be 'geometric' or 'mean', got {fuse!r}")
        self.net = build_network(arch, **(arch_kwargs or {}))
        self.upsampler = ZUpsampleLinear(factor if upsample else 1)
        self.geometric = fuse == "geometric"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.upsampler(x)
        b, c, z, y, xx = x.shape
        # xz planes: one 2D image (Z, X) per y
        v1 = x.permute(0, 3, 1, 2, 4).reshape(b * y, c, z, xx)
        v1 = self.net(v1).reshape(b, y, c, z, xx).permute(0, 2, 3, 1, 4)
        # yz planes: one 2D image (Z, Y) per x
        v2 = x.permute(0, 4, 1, 2, 3).reshape(b * xx, c, z, y)
        v2 = self.net(v2).reshape(b, xx, c, z, y).permute(0, 2, 3, 4, 1)
        if self.geometric:
            return torch.sqrt(torch.clamp(v1, min=0.0) * torch.clamp(v2, min=0.0))
        return 0.5 * (v1 + v2)
