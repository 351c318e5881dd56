"""Disentangled-representation deblurring networks and deploy module, in one self-contained file.

This file imports nothing but ``torch``: the exporter ships it verbatim as the architecture
source of the ``pytorch_state_dict`` weights, so that bioimageio.core (and ilastik) can rebuild
the network from JSON keyword arguments without sharpstack installed. Keep it that way.

Architecture (Ritsema, MSc thesis, University of Twente 2023, section 5.1.2), with the sizes as
arguments: 3x3 convolutions with stride 1, each followed by batch normalisation and a ReLU;
a *block* is two such convolutions and a 2x2 max pooling. ``depth - 1`` shared blocks, then the
encoder splits into an identity head and a blur head of one block each (the thesis: three
shared blocks and one block per head, 512 x 8 x 8 codes for a 128 x 128 input). The decoder
concatenates both codes and applies ``depth`` blocks of bilinear x2 upsampling and two
convolutions; its last convolution is linear and gives the one-channel image.

Two choices that the thesis leaves open or that sharpstack needs:

- Each head ends in a linear 1x1 convolution (no batch norm, no ReLU), so a code can take any
  sign: a ReLU'd one-dimensional blur code could only be >= 0 and dies easily.
- The blur code is the spatial mean of the blur head's map: one vector per image (the
  thesis flattens an 8 x 8 map; its best model has a single number). A defocus blur is one
  property of the whole field, and a vector code is what makes the deployed module fully
  convolutional: :class:`DisentangledDeploy` broadcasts a stored in-focus blur code over the
  identity map of an image of any size, so tiles of an image give the same result as the
  whole image. The identity code stays a spatial map (``id_channels`` x H/2^depth x
  W/2^depth).

``variational=True`` makes every code a Gaussian (the heads output mean and log-variance, the
ML-VAE baseline of Bouchacourt et al. 2018); the deploy module then uses the means.

Shapes: images ``(N, 1, H, W)`` with H and W multiples of ``2**depth``; identity code
``(N, id_channels, H / 2**depth, W / 2**depth)``; blur code ``(N, blur_channels)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ConvBNReLU", "Encoder", "Decoder", "DisentangledAE", "DisentangledDeploy",
           "build_network", "receptive_radius"]


class ConvBNReLU(nn.Sequential):
    """3x3 convolution (stride 1, zero padding 1), batch normalisation, ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(ConvBNReLU(cin, cout), ConvBNReLU(cout, cout), nn.MaxPool2d(2))


def _check_channels(channels: Sequence[int]) -> list[int]:
    ch = [int(c) for c in channels]
    if len(ch) < 1 or any(c < 1 for c in ch):
        raise ValueError(f"channels must be a non-empty list of positive ints, got {channels!r}")
    return ch


class Encoder(nn.Module):
    """Shared blocks, then an identity head and a blur head (one block each).

    Parameters
    ----------
    channels : sequence of int
        Output channels of each block; ``len(channels)`` is the number of poolings (``depth``).
        The shared blocks use ``channels[:-1]``, both heads ``channels[-1]``.
    id_channels, blur_channels : int
        Size of the identity code (channels of its map) and of the blur code (a vector).
    variational : bool
        Heads output a mean and a log-variance per code entry (twice the channels).

    ``forward(x)`` returns ``(identity, blur)``: ``(N, k*id_channels, h, w)`` and
    ``(N, k*blur_channels)`` with ``k = 2`` if variational (means first), else 1.
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64), id_channels: int = 64,
                 blur_channels: int = 64, in_channels: int = 1, variational: bool = False) -> None:
        super().__init__()
        ch = _check_channels(channels)
        k = 2 if variational else 1
        layers, cin = [], int(in_channels)
        for c in ch[:-1]:
            layers.append(_block(cin, c))
            cin = c
        self.shared = nn.Sequential(*layers)
        self.id_head = nn.Sequential(_block(cin, ch[-1]), nn.Conv2d(ch[-1], k * id_channels, 1))
        self.blur_head = nn.Sequential(_block(cin, ch[-1]),
                                       nn.Conv2d(ch[-1], k * blur_channels, 1))

    def identity(self, x: torch.Tensor) -> torch.Tensor:
        """The identity code only (what the deploy module needs)."""
        return self.id_head(self.shared(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.shared(x)
        return self.id_head(h), self.blur_head(h).mean(dim=(2, 3))


class Decoder(nn.Module):
    """Identity map + blur vector (broadcast over the map) -> image.

    ``depth = len(channels)`` blocks of bilinear x2 upsampling and two 3x3 convolutions with
    ``channels[::-1]`` channels; the very last convolution is linear with one output channel.
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64), id_channels: int = 64,
                 blur_channels: int = 64, out_channels: int = 1) -> None:
        super().__init__()
        ch = _check_channels(channels)[::-1]
        self.blocks = nn.ModuleList()
        cin = int(id_channels) + int(blur_channels)
        for i, c in enumerate(ch):
            last = i == len(ch) - 1
            second = (nn.Conv2d(c, out_channels, 3, padding=1) if last else ConvBNReLU(c, c))
            self.blocks.append(nn.Sequential(ConvBNReLU(cin, c), second))
            cin = c

    def forward(self, identity: torch.Tensor, blur: torch.Tensor) -> torch.Tensor:
        # the blur vector broadcast over the identity map by a product with ones (no size
        # arithmetic, so the traced graph and the ONNX graph work for any input size)
        b = blur[:, :, None, None] * torch.ones_like(identity[:, :1])
        h = torch.cat([identity, b], dim=1)
        for blk in self.blocks:
            h = F.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False)
            h = blk(h)
        return h


class DisentangledAE(nn.Module):
    """Encoder and decoder of the manifold model (or, ``variational=True``, of ML-VAE).

    ``forward(x)`` is the plain reconstruction ``D(E(x))`` (means of the codes if variational).
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64), id_channels: int = 64,
                 blur_channels: int = 64, variational: bool = False) -> None:
        super().__init__()
        self.depth = len(_check_channels(channels))
        self.variational = bool(variational)
        self.id_channels, self.blur_channels = int(id_channels), int(blur_channels)
        self.encoder = Encoder(channels, id_channels, blur_channels, variational=variational)
        self.decoder = Decoder(channels, id_channels, blur_channels)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(identity, blur)`` codes; their means if variational."""
        idc, blur = self.encoder(x)
        if self.variational:
            return idc[:, : self.id_channels], blur[:, : self.blur_channels]
        return idc, blur

    def decode(self, identity: torch.Tensor, blur: torch.Tensor) -> torch.Tensor:
        return self.decoder(identity, blur)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(*self.encode(x))


class DisentangledDeploy(nn.Module):
    """The exported deblurring model: ``D(identity(x), b_focus)``, 2D in, 2D out, same shape.

    ``b_focus`` (buffer ``focus_code``, ``(blur_channels,)``) is the blur code of in-focus
    images, stored at export; the identity of the input is kept and its blur replaced by it.
    Fully convolutional: H and W any multiples of ``2**depth``.

    Shapes: ``(B, 1, H, W) -> (B, 1, H, W)``.
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64), id_channels: int = 64,
                 blur_channels: int = 64, variational: bool = False) -> None:
        super().__init__()
        self.ae = DisentangledAE(channels, id_channels, blur_channels, variational)
        self.register_buffer("focus_code", torch.zeros(int(blur_channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idc = self.ae.encoder.identity(x)
        if self.ae.variational:
            idc = idc[:, : self.ae.id_channels]
        return self.ae.decode(idc, self.focus_code[None, :])


def build_network(**kwargs) -> DisentangledAE:
    """:class:`DisentangledAE` from JSON-serialisable kwargs (``channels`` as a list)."""
    return DisentangledAE(**kwargs)


def receptive_radius(channels: Sequence[int] = (16, 32, 64), **_: object) -> int:
    """Radius (input pixels) of the receptive field of the deploy module.

    Encoder level ``l`` (pixels of size ``2**l``): two 3x3 convolutions and a 2x2 pooling,
    ``3 * 2**l``; decoder level ``l``: a bilinear upsampling from level ``l + 1`` (one coarse
    pixel, ``2 * 2**l``) and two 3x3 convolutions (``2 * 2**l``). In all
    ``7 * (2**depth - 1)``. The blur code of the input is not used by the deploy module, so its
    global mean does not widen the field.
    """
    depth = len(_check_channels(channels))
    return 7 * (2 ** depth - 1)
