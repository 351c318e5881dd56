"""Disentangled-representation deblurring networks and deploy module, in one self-contained file.

This file imports nothing but ``torch``: the exporter ships it verbatim as the architecture
source of the ``pytorch_state_dict`` weights, so that bioimageio.core (and ilastik) can rebuild
the network from JSON keyword arguments without sharpstack installed. Keep it that way.

Architecture (Ritsema, MSc thesis, University of Twente 2023, section 5.1.2), with the sizes as
arguments: 3x3 convolutions with stride 1, each followed by batch normalisation and a ReLU;
a *block* is two such convolutions and a 2x2 max pooling. ``depth - 1`` shared blocks, then the
encoder splits into an identity head and a blur head of one block each (the thesis: three
shared blocks and one block per head, 512 x 8 x 8 codes for a 128 x 128 input;
``batch_norm=False`` gives every convolution a bias instead of the batch norm). The decoder
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

``skip_channels > 0`` (sharpstack's default, issue 22) gives the decoder multi-scale identity
features: the identity branch then has its own blocks (the blur branch keeps the thesis's
layout in its own blocks, so nothing the decoder sees comes from the blur branch), and the
features of every identity block before its pooling pass a linear 1x1 head of
``skip_channels`` channels and are concatenated to the decoder level of the same resolution
(U-Net skips). The decoder also receives the blur code at every level. The multi-scale
features *are* part of the identity code: :meth:`DisentangledAE.encode` packs them into one
map at the code's resolution (space-to-depth, ``pixel_unshuffle``), so the thesis's
contrastive, consistency and cross-reconstruction losses act on all of them and blur cannot
pass around the blur code unpenalised. ``skip_channels = 0`` is the thesis's architecture
(the identity code at 1/2^depth resolution only; kept for the ablation).

``residual=True`` (sharpstack's default for the manifold models, issue 22) makes the decoder
predict a correction of a *base image*: the image whose identity code is decoded (the input
of the deploy module; in training, the image each identity code came from). The base enters
the decoder's last block as one more channel and is added to its output, whose last
convolution starts at zero, so the untrained network is the identity and training learns only
what changes between defocus levels. The base is no part of either code (the codes and their
losses are unchanged); it only lets the decoder keep the detail that the input still has
instead of redrawing it through the bottleneck. ``residual=False`` is the thesis's decoder.

``variational=True`` makes every code a Gaussian (the heads output mean and log-variance, the
ML-VAE baseline of Bouchacourt et al. 2018); the deploy module then uses the means.

Shapes: images ``(N, 1, H, W)`` with H and W multiples of ``2**depth``; packed identity code
``(N, code_channels, H / 2**depth, W / 2**depth)`` with ``code_channels = id_channels +
skip_channels * sum(4**(depth - l) for l in range(depth))`` (``id_channels`` without skips);
blur code ``(N, blur_channels)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ConvBNReLU", "Encoder", "Decoder", "DisentangledAE", "DisentangledDeploy",
           "build_network", "receptive_radius"]


class ConvBNReLU(nn.Sequential):
    """3x3 convolution (stride 1, zero padding 1), batch normalisation, ReLU; without batch
    norm (``batch_norm=False``) the convolution has a bias instead."""

    def __init__(self, cin: int, cout: int, batch_norm: bool = True) -> None:
        if batch_norm:
            super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
        else:
            super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True))


def _block(cin: int, cout: int, bn: bool = True) -> nn.Sequential:
    return nn.Sequential(ConvBNReLU(cin, cout, bn), ConvBNReLU(cout, cout, bn), nn.MaxPool2d(2))


def _check_channels(channels: Sequence[int]) -> list[int]:
    ch = [int(c) for c in channels]
    if len(ch) < 1 or any(c < 1 for c in ch):
        raise ValueError(f"channels must be a non-empty list of positive ints, got {channels!r}")
    return ch


class Encoder(nn.Module):
    """Shared blocks, then an identity head and a blur head (one block each); or, with
    ``skip_channels``, separate identity and blur branches and multi-scale identity features.

    Parameters
    ----------
    channels : sequence of int
        Output channels of each block; ``len(channels)`` is the number of poolings (``depth``).
        The shared blocks use ``channels[:-1]``, both heads ``channels[-1]``.
    id_channels, blur_channels : int
        Size of the identity code (channels of its map) and of the blur code (a vector).
    variational : bool
        Heads output a mean and a log-variance per code entry (twice the channels).
    skip_channels : int
        0: the thesis's encoder. ``> 0``: the identity branch has its own ``depth`` blocks and
        a linear 1x1 head of ``skip_channels`` (x2 if variational) on the features of every
        block before its pooling; the blur branch has its own ``depth`` blocks.

    ``forward(x)`` returns ``(identity, blur)``: ``(N, k*id_channels, h, w)`` and
    ``(N, k*blur_channels)`` with ``k = 2`` if variational (means first), else 1;
    :meth:`identity_features` returns the skip features too.
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64), id_channels: int = 64,
                 blur_channels: int = 64, in_channels: int = 1, variational: bool = False,
                 skip_channels: int = 0, batch_norm: bool = True) -> None:
        super().__init__()
        ch = _check_channels(channels)
        bn = bool(batch_norm)
        k = 2 if variational else 1
        self.skip_channels = int(skip_channels)
        if self.skip_channels > 0:
            self.shared = nn.Sequential()
            convs, cin = [], int(in_channels)
            for c in ch:
                convs.append(nn.Sequential(ConvBNReLU(cin, c, bn), ConvBNReLU(c, c, bn)))
                cin = c
            self.id_convs = nn.ModuleList(convs)
            self.pool = nn.MaxPool2d(2)
            self.skip_heads = nn.ModuleList(nn.Conv2d(c, k * self.skip_channels, 1) for c in ch)
            self.id_head = nn.Conv2d(ch[-1], k * id_channels, 1)
            blocks, cin = [], int(in_channels)
            for c in ch:
                blocks.append(_block(cin, c, bn))
                cin = c
            self.blur_head = nn.Sequential(*blocks, nn.Conv2d(ch[-1], k * blur_channels, 1))
            return
        layers, cin = [], int(in_channels)
        for c in ch[:-1]:
            layers.append(_block(cin, c, bn))
            cin = c
        self.shared = nn.Sequential(*layers)
        self.id_head = nn.Sequential(_block(cin, ch[-1], bn),
                                     nn.Conv2d(ch[-1], k * id_channels, 1))
        self.blur_head = nn.Sequential(_block(cin, ch[-1], bn),
                                       nn.Conv2d(ch[-1], k * blur_channels, 1))

    def identity_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[skip_0, ..., skip_{depth-1}, code]``: the skip features at full, 1/2, ...
        resolution (none without skips) and the identity code map at 1/2^depth."""
        if self.skip_channels <= 0:
            return [self.id_head(self.shared(x))]
        feats, h = [], x
        for conv, head in zip(self.id_convs, self.skip_heads):
            h = conv(h)
            feats.append(head(h))
            h = self.pool(h)
        feats.append(self.id_head(h))
        return feats

    def identity(self, x: torch.Tensor) -> torch.Tensor:
        """The identity code map only (the bottom of :meth:`identity_features`)."""
        return self.identity_features(x)[-1]

    def features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``(identity_features(x), blur code)`` in one pass."""
        if self.skip_channels > 0:
            return self.identity_features(x), self.blur_head(x).mean(dim=(2, 3))
        h = self.shared(x)
        return [self.id_head(h)], self.blur_head(h).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, blur = self.features(x)
        return feats[-1], blur


class Decoder(nn.Module):
    """Identity map + blur vector (broadcast over the map) -> image.

    ``depth = len(channels)`` blocks of bilinear x2 upsampling and two 3x3 convolutions with
    ``channels[::-1]`` channels; the very last convolution is linear with one output channel.
    With ``skip_channels``, every block also takes the identity skip features of its
    resolution and the blur vector broadcast again.
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64), id_channels: int = 64,
                 blur_channels: int = 64, out_channels: int = 1, skip_channels: int = 0,
                 residual: bool = False, batch_norm: bool = True) -> None:
        super().__init__()
        ch = _check_channels(channels)[::-1]
        self.skip_channels = int(skip_channels)
        self.residual = bool(residual)
        extra = self.skip_channels + int(blur_channels) if self.skip_channels > 0 else 0
        self.blocks = nn.ModuleList()
        cin = int(id_channels) + int(blur_channels)
        for i, c in enumerate(ch):
            last = i == len(ch) - 1
            second = (nn.Conv2d(c, out_channels, 3, padding=1) if last
                      else ConvBNReLU(c, c, batch_norm))
            if last and self.residual:  # the correction starts at zero: identity at init
                nn.init.zeros_(second.weight)
                nn.init.zeros_(second.bias)
            base_in = out_channels if last and self.residual else 0
            self.blocks.append(nn.Sequential(ConvBNReLU(cin + extra + base_in, c, batch_norm),
                                             second))
            cin = c

    def forward(self, identity: torch.Tensor, blur: torch.Tensor,
                skips: list[torch.Tensor] | None = None,
                base: torch.Tensor | None = None) -> torch.Tensor:
        # the blur vector broadcast over the identity map by a product with ones (no size
        # arithmetic, so the traced graph and the ONNX graph work for any input size)
        b = blur[:, :, None, None] * torch.ones_like(identity[:, :1])
        h = torch.cat([identity, b], dim=1)
        n = len(self.blocks)
        for i, blk in enumerate(self.blocks):
            h = F.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False)
            if skips is not None and self.skip_channels > 0:
                s = skips[n - 1 - i]
                h = torch.cat([h, s, blur[:, :, None, None] * torch.ones_like(s[:, :1])], dim=1)
            if self.residual and i == n - 1:
                if base is None:
                    raise ValueError("a residual decoder needs the base image")
                h = blk(torch.cat([h, base], dim=1)) + base
            else:
                h = blk(h)
        return h


class DisentangledAE(nn.Module):
    """Encoder and decoder of the manifold model (or, ``variational=True``, of ML-VAE).

    ``forward(x)`` is the plain reconstruction ``D(E(x))`` (means of the codes if variational).
    With ``skip_channels`` the identity code is packed: every skip map moved to the code's
    resolution by ``pixel_unshuffle`` and concatenated before the bottom map (means of all
    levels first, then, if variational, their log-variances); ``code_channels`` is its size.
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64), id_channels: int = 64,
                 blur_channels: int = 64, variational: bool = False,
                 skip_channels: int = 0, residual: bool = False,
                 batch_norm: bool = True) -> None:
        super().__init__()
        self.depth = len(_check_channels(channels))
        self.residual = bool(residual)
        self.variational = bool(variational)
        self.id_channels, self.blur_channels = int(id_channels), int(blur_channels)
        self.skip_channels = max(int(skip_channels), 0)
        self.code_channels = self.id_channels + self.skip_channels * sum(
            4 ** (self.depth - lv) for lv in range(self.depth) if self.skip_channels)
        self.encoder = Encoder(channels, id_channels, blur_channels, variational=variational,
                               skip_channels=self.skip_channels, batch_norm=batch_norm)
        self.decoder = Decoder(channels, id_channels, blur_channels,
                               skip_channels=self.skip_channels, residual=self.residual,
                               batch_norm=batch_norm)

    def pack(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Identity features ``[skip_0, ..., code]`` -> one map at the code's resolution."""
        if len(feats) == 1:
            return feats[0]
        k = 2 if self.variational else 1
        parts: list[list[torch.Tensor]] = [[] for _ in range(k)]
        for lv, f in enumerate(feats):
            f = F.pixel_unshuffle(f, 2 ** (self.depth - lv)) if lv < self.depth else f
            for j, chunk in enumerate(f.chunk(k, dim=1)):
                parts[j].append(chunk)
        return torch.cat([t for p in parts for t in p], dim=1)

    def unpack(self, code: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """A packed identity code (means) -> ``(code map, skips or None)``."""
        if self.skip_channels <= 0:
            return code, None
        sizes = [self.skip_channels * 4 ** (self.depth - lv) for lv in range(self.depth)]
        parts = code.split(sizes + [self.id_channels], dim=1)
        skips = [F.pixel_shuffle(p, 2 ** (self.depth - lv)) for lv, p in enumerate(parts[:-1])]
        return parts[-1], skips

    def encode_full(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(packed identity, blur)`` codes with the log-variances if variational."""
        feats, blur = self.encoder.features(x)
        return self.pack(feats), blur

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(identity, blur)`` codes; their means if variational."""
        idc, blur = self.encode_full(x)
        if self.variational:
            return idc[:, : self.code_channels], blur[:, : self.blur_channels]
        return idc, blur

    def decode(self, identity: torch.Tensor, blur: torch.Tensor,
               base: torch.Tensor | None = None) -> torch.Tensor:
        """Image from codes; ``base`` ``(N, 1, H, W)``: the image the identity code came from
        (needed, and only used, by a residual decoder)."""
        code, skips = self.unpack(identity)
        return self.decoder(code, blur, skips, base if self.residual else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(*self.encode(x), base=x)


class DisentangledDeploy(nn.Module):
    """The exported deblurring model: ``D(identity(x), b_focus)``, 2D in, 2D out, same shape.

    ``b_focus`` (buffer ``focus_code``, ``(blur_channels,)``) is the blur code of in-focus
    images, stored at export; the identity of the input is kept and its blur replaced by it.
    Fully convolutional: H and W any multiples of ``2**depth``.

    Shapes: ``(B, 1, H, W) -> (B, 1, H, W)``. The multi-scale identity features go to the
    decoder directly (no packing in the exported graph); a residual decoder corrects ``x``.
    With ``self_ensemble`` the output is the mean over the 8 flips and transpositions of
    ``x`` (each transformed back): the dihedral group the training augments with, so every
    member is an image the network was trained on; plain flips and transposes, which
    TorchScript and ONNX (opset 11+) export. The receptive field is unchanged.
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64), id_channels: int = 64,
                 blur_channels: int = 64, variational: bool = False,
                 skip_channels: int = 0, residual: bool = False,
                 batch_norm: bool = True, self_ensemble: bool = False) -> None:
        super().__init__()
        self.ae = DisentangledAE(channels, id_channels, blur_channels, variational,
                                 skip_channels, residual, batch_norm)
        self.self_ensemble = bool(self_ensemble)
        self.register_buffer("focus_code", torch.zeros(int(blur_channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.self_ensemble:
            return self._deblur(x)
        acc = torch.zeros_like(x)
        for transpose in (False, True):
            a = x.transpose(2, 3) if transpose else x
            for dims in ([2], [3], [2, 3]):
                o = torch.flip(self._deblur(torch.flip(a, dims)), dims)
                acc = acc + (o.transpose(2, 3) if transpose else o)
            o = self._deblur(a)
            acc = acc + (o.transpose(2, 3) if transpose else o)
        return acc / 8.0

    def _deblur(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.ae.encoder.identity_features(x)
        if self.ae.variational:  # the means of every level
            feats = [f[:, : f.shape[1] // 2] for f in feats]
        skips = feats[:-1] if self.ae.skip_channels > 0 else None
        base = x if self.ae.residual else None
        return self.ae.decoder(feats[-1], self.focus_code[None, :], skips, base)


def build_network(**kwargs) -> DisentangledAE:
    """:class:`DisentangledAE` from JSON-serialisable kwargs (``channels`` as a list)."""
    return DisentangledAE(**kwargs)


def receptive_radius(channels: Sequence[int] = (16, 32, 64), **_: object) -> int:
    """Radius (input pixels) of the receptive field of the deploy module.

    Encoder level ``l`` (pixels of size ``2**l``): two 3x3 convolutions and a 2x2 pooling,
    ``3 * 2**l``; decoder level ``l``: a bilinear upsampling from level ``l + 1`` (one coarse
    pixel, ``2 * 2**l``) and two 3x3 convolutions (``2 * 2**l``). In all
    ``7 * (2**depth - 1)``. The blur code of the input is not used by the deploy module, so its
    global mean does not widen the field; skip connections only add shorter paths.
    """
    depth = len(_check_channels(channels))
    return 7 * (2 ** depth - 1)
