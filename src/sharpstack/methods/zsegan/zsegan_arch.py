"""ZSE-GAN networks and the deploy module, in one self-contained file.

This file imports nothing but ``torch``: the exporter ships it verbatim as the architecture
source of the ``pytorch_state_dict`` weights, so that bioimageio.core (and ilastik) can rebuild
the network from JSON keyword arguments without sharpstack installed. Keep it that way.

ZSE-GAN (focal-length weighted GANs for z-scan stacks; networks after the paper's reference
notebook, keerfish/ZSE-GAN, where the paper gives no sizes):

- :class:`ResnetGenerator3D` (G_S sharpen, G_B blur): Conv3d k5 (``ngf``) -> two stride-2
  Conv3d k3 (2 ``ngf``, 4 ``ngf``) with instance norm + ReLU -> ``n_res`` residual blocks
  (conv-norm-LeakyReLU(0.2)-conv-norm, skip, LeakyReLU(0.2)) -> two stride-2 transposed
  Conv3d k3 (norm + ReLU) -> Conv3d k(kz, 5, 5) + tanh, where kz is chosen so that the output
  has exactly ``n_planes`` planes again (the notebook's (5, 5, 6) kernel for 29 planes).
  ``(B, 1, n_planes, Y, X) -> (B, 1, n_planes, Y, X)``, Y and X multiples of 4, values in
  [-1, 1]. Options (not in the notebook): a residual output ``x + net(x)``,
  nearest-neighbour or trilinear + convolution upsampling instead of transposed
  convolutions, and z padding that repeats the first and last planes instead of zeros.
- :class:`PatchDiscriminator2D` (D_S, D_B): PatchGAN, ``n_layers`` Conv2d k4 s2 (``ndf``,
  doubling; instance norm after all but the first, LeakyReLU 0.2) -> Conv2d k2 (1 channel),
  a map of real/fake scores. Takes horizontal (Y, X) and vertical (lateral, Z) sections.
  ``norm="none"`` drops the instance norms: on small sections (a 48-pixel crop leaves 3x3
  maps after four layers) instance norm rescales every channel to unit variance and so
  erases the edge energy that tells a blurred plane from a sharp one.
- :class:`ZSEGANDeploy`: G_S alone, taking the scale_range-normalised stack in [0, 1] and
  returning the sharpened stack in [0, 1] (the [-1, 1] mapping of training happens inside).

Normalisation and tiling. Instance norm computes its statistics over the whole window, so a
tiled prediction would differ from an untiled one, and both from training (which saw crops).
:class:`StoredInstanceNorm3d` therefore normalises with each instance's own statistics in
training mode, as the reference notebook does, and with stored statistics in eval mode: the
mean and variance per channel averaged over training crops, measured after training by
:func:`calibrate_norms` (with the networks' final weights). An eval-mode generator is then a
plain convolutional network: each output voxel depends only on inputs within
:func:`receptive_radius`, and a tiled prediction with that halo equals the untiled one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["StoredInstanceNorm3d", "ResnetGenerator3D", "PatchDiscriminator2D",
           "ZSEGANDeploy", "calibrate_norms", "receptive_radius", "final_z_kernel"]


class StoredInstanceNorm3d(nn.Module):
    """Instance norm in training, stored per-channel statistics in eval mode.

    Training mode: ``(x - mean) / sqrt(var + eps)`` with the mean and (biased) variance of
    each sample and channel over (Z, Y, X), exactly ``F.instance_norm`` without affine
    parameters. Eval mode: the same with the buffers ``mean`` and ``var`` (one value per
    channel), i.e. a fixed per-channel affine map, independent of the window.

    Inside :func:`calibrate_norms` the training-mode statistics are also accumulated, so the
    buffers become their average over the calibration data.

    Shapes: ``(B, C, Z, Y, X) -> (B, C, Z, Y, X)``.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = float(eps)
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("var", torch.ones(channels))
        self._collect: list[torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            m = x.mean(dim=(2, 3, 4), keepdim=True)
            v = x.var(dim=(2, 3, 4), keepdim=True, unbiased=False)
            if self._collect is not None:
                self._collect.append(torch.stack([m.detach().flatten(2).squeeze(2),
                                                  v.detach().flatten(2).squeeze(2)]))
            return (x - m) / torch.sqrt(v + self.eps)
        shape = (1, -1, 1, 1, 1)
        return (x - self.mean.reshape(shape)) * torch.rsqrt(self.var.reshape(shape) + self.eps)


@contextlib.contextmanager
def _collecting(modules: list[StoredInstanceNorm3d]) -> Iterator[None]:
    for m in modules:
        m._collect = []
    try:
        yield
    finally:
        for m in modules:
            m._collect = None


@torch.no_grad()
def calibrate_norms(net: nn.Module, batches) -> int:
    """Set the stored statistics of every :class:`StoredInstanceNorm3d` in ``net``.

    ``batches`` is an iterable of input tensors ``(B, 1, Z, Y, X)``; each is run through
    ``net`` in training mode (instance statistics, no gradients) and every norm layer's
    stored mean and variance become the average of the per-sample statistics it saw. The
    network's mode is restored afterwards. Returns the number of samples used.
    """
    norms = [m for m in net.modules() if isinstance(m, StoredInstanceNorm3d)]
    was_training = net.training
    n = 0
    net.train()
    try:
        with _collecting(norms):
            for x in batches:
                net(x)
                n += int(x.shape[0])
            if n:
                for m in norms:
                    stats = torch.cat(m._collect, dim=1)  # (2, N, C)
                    m.mean.copy_(stats[0].mean(dim=0))
                    m.var.copy_(stats[1].mean(dim=0))
    finally:
        net.train(was_training)
    return n


def final_z_kernel(n_planes: int) -> int:
    """Depth of the last convolution (padding 1) that maps the decoder's
    ``4 * ceil(ceil(n/2)/2)`` planes back to ``n`` planes (6 for the paper's 29)."""
    n = int(n_planes)
    if n < 5:
        raise ValueError(f"n_planes must be >= 5, got {n_planes}")
    up = 4 * (-(-(-(-n // 2)) // 2))
    return up + 2 - n + 1


class _Conv3d(nn.Conv3d):
    """``nn.Conv3d`` whose z border is padded with ``z_padding``: ``"zeros"`` (the
    notebook) or ``"replicate"`` (the first and last planes repeated; the outermost focal
    planes then see defocused content beyond them rather than mid-grey). The lateral
    padding stays zeros either way, so tiling and the receptive radius are unchanged; the
    parameters (``weight``, ``bias``) are those of ``nn.Conv3d``."""

    def __init__(self, cin: int, cout: int, kernel: Any, stride: Any, padding: Any,
                 z_padding: str = "zeros") -> None:
        if z_padding not in ("zeros", "replicate"):
            raise ValueError(f"z_padding must be 'zeros' or 'replicate', got {z_padding!r}")
        super().__init__(cin, cout, kernel, stride, padding)
        pz, py, px = self.padding  # as nn.Conv3d normalised it
        self.z_pad = pz if z_padding == "replicate" else 0
        self.padding = (pz - self.z_pad, py, px)  # z done in forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.z_pad:
            x = F.pad(x, (0, 0, 0, 0, self.z_pad, self.z_pad), mode="replicate")
        return super().forward(x)


class _ConvNormAct(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int,
                 act: str, transposed: bool = False, z_padding: str = "zeros") -> None:
        super().__init__()
        if transposed:
            self.conv: nn.Module = nn.ConvTranspose3d(cin, cout, kernel, stride, padding,
                                                      output_padding=stride - 1)
        else:
            self.conv = _Conv3d(cin, cout, kernel, stride, padding, z_padding)
        self.norm = StoredInstanceNorm3d(cout)
        self.act = nn.ReLU() if act == "relu" else nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class _UpConvNormAct(nn.Module):
    """x2 upsampling then Conv3d k3 + norm + ReLU (Odena et al. 2016, "Deconvolution and
    checkerboard artifacts"): the same shapes as the stride-2 transposed convolution, without
    its checkerboard pattern. ``mode``: ``"nearest"`` copies each voxel into a 2x2x2 block
    (the convolution after it sees a different neighbourhood at each of the block's
    positions, so an adversarially trained decoder can draw a texture on the 4-px grid of
    the two upsamplings); ``"trilinear"`` interpolates (half-pixel centres), with no block
    phase (measured on the brain z-scans: the adversarial training then drew an oblique
    2-3 px hatching instead; README)."""

    def __init__(self, cin: int, cout: int, z_padding: str = "zeros",
                 mode: str = "nearest") -> None:
        super().__init__()
        self.conv = _Conv3d(cin, cout, 3, 1, 1, z_padding)
        self.norm = StoredInstanceNorm3d(cout)
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "trilinear":
            x = F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=False)
        else:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return F.relu(self.norm(self.conv(x)))


class _ResBlock(nn.Module):
    """conv-norm-LeakyReLU-conv-norm, plus the input, then LeakyReLU (reference notebook)."""

    def __init__(self, c: int, z_padding: str = "zeros") -> None:
        super().__init__()
        self.conv1 = _Conv3d(c, c, 3, 1, 1, z_padding)
        self.norm1 = StoredInstanceNorm3d(c)
        self.conv2 = _Conv3d(c, c, 3, 1, 1, z_padding)
        self.norm2 = StoredInstanceNorm3d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.norm1(self.conv1(x)), 0.2)
        h = self.norm2(self.conv2(h))
        return F.leaky_relu(h + x, 0.2)


class ResnetGenerator3D(nn.Module):
    """3D ResNet generator of ZSE-GAN (G_S and G_B share the architecture).

    Parameters
    ----------
    ngf : int
        Filters of the first convolution (16 in the notebook); 2x and 4x after the two
        stride-2 convolutions.
    n_res : int
        Residual blocks at 1/4 resolution (6 in the notebook).
    n_planes : int
        Focal planes of the z-scans (29 in the paper); the output has as many.
    first_kernel : int
        Size of the first convolution (5 in the notebook; odd).
    residual : bool
        ``False`` (the notebook): ``tanh(net(x))``. ``True``: ``x + net(x)`` with the last
        convolution initialised to zero, so the generator starts as the identity and learns
        only the change (converges in far fewer steps; a sharpstack option for short
        trainings, not in the paper).
    upsample : {"transposed", "resize", "linear"}
        Decoder upsampling: stride-2 transposed convolutions (the notebook), nearest x2
        + convolution (no checkerboard artefacts), or trilinear x2 + convolution (no block
        phase; see :class:`_UpConvNormAct` for what adversarial training drew with it).
    z_padding : {"zeros", "replicate"}
        Padding of the convolutions at the first and last focal planes: zeros (the
        notebook) or the outermost planes repeated (a sharpstack option; the transposed
        convolutions of ``upsample="transposed"`` keep zeros).

    Shapes: ``(B, 1, n_planes, Y, X) -> (B, 1, n_planes, Y, X)``, Y and X multiples of 4;
    output in [-1, 1] (tanh) unless ``residual``.
    """

    def __init__(self, ngf: int = 16, n_res: int = 6, n_planes: int = 29,
                 first_kernel: int = 5, residual: bool = False,
                 upsample: str = "transposed", z_padding: str = "zeros") -> None:
        super().__init__()
        if first_kernel % 2 == 0:
            raise ValueError(f"first_kernel must be odd, got {first_kernel}")
        if upsample not in ("transposed", "resize", "linear"):
            raise ValueError("upsample must be 'transposed', 'resize' or 'linear', got "
                             f"{upsample!r}")
        self.n_planes = int(n_planes)
        self.residual = bool(residual)
        kz = final_z_kernel(n_planes)
        zp = z_padding
        self.enc = nn.Sequential(
            _ConvNormAct(1, ngf, first_kernel, 1, first_kernel // 2, "relu", z_padding=zp),
            _ConvNormAct(ngf, 2 * ngf, 3, 2, 1, "relu", z_padding=zp),
            _ConvNormAct(2 * ngf, 4 * ngf, 3, 2, 1, "relu", z_padding=zp))
        self.res = nn.Sequential(*[_ResBlock(4 * ngf, zp) for _ in range(int(n_res))])
        if upsample == "transposed":
            self.dec = nn.Sequential(
                _ConvNormAct(4 * ngf, 2 * ngf, 3, 2, 1, "relu", transposed=True),
                _ConvNormAct(2 * ngf, ngf, 3, 2, 1, "relu", transposed=True))
        else:
            mode = "trilinear" if upsample == "linear" else "nearest"
            self.dec = nn.Sequential(_UpConvNormAct(4 * ngf, 2 * ngf, zp, mode),
                                     _UpConvNormAct(2 * ngf, ngf, zp, mode))
        self.out = _Conv3d(ngf, 1, (kz, 5, 5), 1, (1, 2, 2), zp)
        if self.residual:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.out(self.dec(self.res(self.enc(x))))
        return x + h if self.residual else torch.tanh(h)


class PatchDiscriminator2D(nn.Module):
    """PatchGAN discriminator on 2D sections (horizontal or vertical).

    ``n_layers`` Conv2d k4 s2 p1 with ``ndf * 2**i`` filters (instance norm after all but
    the first; LeakyReLU 0.2), then Conv2d k2 s1 p1 to one channel of scores.

    ``norm``: ``"instance"`` (the notebook) or ``"none"``. Instance norm makes every channel
    of a section zero-mean and unit-variance, which removes how strong its edges are; on
    small maps (3x3 after four layers on a 48-pixel crop) a discriminator with it cannot
    tell a defocused plane from an in-focus image (measured: equal scores after 600 steps),
    one without it can within 100 steps.

    Shapes: ``(N, 1, H, W) -> (N, 1, h, w)``.
    """

    def __init__(self, ndf: int = 32, n_layers: int = 4, norm: str = "instance") -> None:
        super().__init__()
        if norm not in ("instance", "none"):
            raise ValueError(f"norm must be 'instance' or 'none', got {norm!r}")
        layers: list[nn.Module] = []
        cin = 1
        for i in range(int(n_layers)):
            cout = ndf * 2 ** i
            layers.append(nn.Conv2d(cin, cout, 4, 2, 1))
            if i > 0 and norm == "instance":
                layers.append(nn.InstanceNorm2d(cout))
            layers.append(nn.LeakyReLU(0.2))
            cin = cout
        layers.append(nn.Conv2d(cin, 1, 2, 1, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ZSEGANDeploy(nn.Module):
    """The exported ZSE-GAN model: the sharpening generator G_S alone.

    Input: a z-scan normalised to [0, 1] (bioimage.io ``scale_range``); it is mapped to
    [-1, 1] (the range of training), sharpened, and mapped back to [0, 1]. A stack of
    ``k * n_planes`` planes is taken as ``k`` z-scans concatenated along z and each is
    sharpened on its own (so every input size the package declares, ``n_planes`` + n *
    ``n_planes``, is meaningful).

    Parameters
    ----------
    generator : dict
        JSON-serialisable keyword arguments of :class:`ResnetGenerator3D`.
    self_ensemble : bool
        Return the mean over the 8 lateral flips and transpositions of the input, each
        transformed back (plain flips and transposes: TorchScript and ONNX export them; the
        lateral receptive field, hence the tiling halo, is unchanged).

    Shapes: ``(B, 1, k * n_planes, Y, X) -> (B, 1, k * n_planes, Y, X)``, Y and X multiples
    of 4.
    """

    def __init__(self, generator: dict[str, Any] | None = None,
                 self_ensemble: bool = False) -> None:
        super().__init__()
        self.net = ResnetGenerator3D(**(generator or {}))
        self.n_planes = self.net.n_planes
        self.self_ensemble = bool(self_ensemble)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.self_ensemble:
            return self._sharpen(x)
        acc = torch.zeros_like(x)
        for transpose in (False, True):
            a = x.transpose(3, 4) if transpose else x
            for dims in ([3], [4], [3, 4]):
                o = torch.flip(self._sharpen(torch.flip(a, dims)), dims)
                acc = acc + (o.transpose(3, 4) if transpose else o)
            o = self._sharpen(a)
            acc = acc + (o.transpose(3, 4) if transpose else o)
        return acc / 8.0

    def _sharpen(self, x: torch.Tensor) -> torch.Tensor:
        b, c, z, h, w = x.shape
        n = self.n_planes
        # z-scans as batch items: (B, C, k*n, Y, X) -> (B*k, C, n, Y, X)
        blocks = x.reshape(b, c, -1, n, h, w).permute(0, 2, 1, 3, 4, 5).reshape(-1, c, n, h, w)
        y = torch.clamp(0.5 * (self.net(2.0 * blocks - 1.0) + 1.0), 0.0, 1.0)
        return y.reshape(b, -1, c, n, h, w).permute(0, 2, 1, 3, 4, 5).reshape(b, c, z, h, w)


def receptive_radius(n_res: int = 6, first_kernel: int = 5, upsample: str = "transposed",
                     **_: Any) -> int:
    """Lateral radius (pixels) of the receptive field of an eval-mode
    :class:`ResnetGenerator3D`: every output pixel depends only on inputs within this distance,
    which is what a tiling halo must cover.

    Encoder: first conv ``k//2``, the stride-2 convs 1 and 2; each residual block 2 x 1 px at
    stride 4 = 8; the decoder and the last conv together 5 (transposed convs), 8 (nearest
    upsampling + convs) or 11 (trilinear upsampling + convs), measured over all four stride
    phases by perturbing one input pixel (``tests/test_zsegan.py`` checks it). 10 + 8
    ``n_res`` for the notebook's network.
    """
    # decoder + last conv, measured (see above)
    dec = {"transposed": 5, "resize": 8, "linear": 11}[upsample]
    return int(first_kernel) // 2 + 3 + 8 * int(n_res) + dec
