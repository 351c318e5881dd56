"""Losses of disentangled deblurring: code distances, the product of Gaussians (ML-VAE), the
beta schedule, and the reconstruction losses (SSIM + L1, or VGG16 perceptual)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import InputError
from ...nn.losses import ssim_l1_loss
from .settings import DisentangledConfig

__all__ = ["code_distance", "product_of_gaussians", "beta_schedule", "VGG16Features",
           "load_vgg16_features", "VGGPerceptualLoss", "recon_loss_for"]


def code_distance(a: torch.Tensor, b: torch.Tensor, kind: str = "rms") -> torch.Tensor:
    """The normalised Euclidean distance ``delta`` between codes (one value per sample).

    ``rms``: ``||a - b|| / sqrt(d)`` with ``d`` the code length (the thesis: "Euclidean distance
    normalized by vector length"; this reading is the one under which a 1-D blur code keeps a
    meaningful distance). ``unit``: ``|| a/|a| - b/|b| ||`` (codes scaled to unit length first;
    a 1-D code then keeps only its sign).
    """
    a, b = a.flatten(1), b.flatten(1)
    if kind == "unit":
        return (F.normalize(a, dim=1) - F.normalize(b, dim=1)).norm(dim=1)
    if kind != "rms":
        raise ValueError(f"kind must be 'rms' or 'unit', got {kind!r}")
    # the small constant keeps the gradient of sqrt finite for identical codes
    return torch.sqrt(torch.mean((a - b) ** 2, dim=1) + 1e-12)


def product_of_gaussians(mu: torch.Tensor, logvar: torch.Tensor, dim: int = 1
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """ML-VAE's accumulated group evidence: the normalised product of Gaussians
    ``N(mu_k, exp(logvar_k))`` over ``dim`` (thesis Eq. 4.1): precisions add and the mean is
    the precision-weighted mean. Returns ``(mean, variance)`` with ``dim`` removed."""
    prec = torch.exp(-logvar)
    total = prec.sum(dim=dim)
    return (mu * prec).sum(dim=dim) / total, 1.0 / total


def beta_schedule(progress: float, *, full: float = 0.075, rate: float = 25.0) -> float:
    """Delay of the distance losses: ``min(exp(rate * (progress - full)), 1)``.

    ``progress`` is the fraction of training done (0..1). With ``rate = 25`` (Fumero et al.'s
    code, per fraction of training) beta rises exponentially and reaches 1 at ``full`` (the
    thesis: about 30 of 400 epochs).
    """
    return float(min(math.exp(rate * (float(progress) - full)), 1.0))


# torchvision's vgg16 "features" layout: channels of each 3x3 convolution, "M" = 2x2 max pool;
# every convolution is followed by a ReLU, so layer indices match torchvision's state dict keys
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16Features(nn.Module):
    """The first layers of VGG-16 (Simonyan & Zisserman 2015), laid out as torchvision's
    ``vgg16().features`` (so its state dict loads unchanged), up to layer ``last``.

    Built here because torchvision is not a dependency of sharpstack (and its weights could not
    be downloaded anyway); the user supplies the weights (:func:`load_vgg16_features`).
    """

    def __init__(self, last: int = 15) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                cin = int(v)
            if len(layers) > last:
                break
        self.features = nn.Sequential(*layers[: last + 1])

    def forward(self, x: torch.Tensor, taps: Sequence[int]) -> list[torch.Tensor]:
        out, want = [], set(int(t) for t in taps)
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in want:
                out.append(x)
        return out


def load_vgg16_features(path: str | os.PathLike, layers: Sequence[int] = (3, 8, 15)
                        ) -> VGG16Features:
    """VGG-16 feature layers up to ``max(layers)`` with weights from a user's file.

    The file is a state dict of torchvision's ``vgg16().features`` (keys ``"0.weight"``,
    ``"0.bias"``, ``"2.weight"``, ...) or of the whole ``vgg16()`` (keys ``"features.0.weight"``
    ...; the classifier is ignored), read with ``torch.load(weights_only=True)`` (no code runs).
    Layers beyond ``max(layers)`` may be missing. A file that cannot be read, lacks a needed
    layer or holds a tensor of another shape is an :class:`~sharpstack.errors.InputError`.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"VGG-16 weights file {p} does not exist; give a state dict of "
                         f"torchvision's vgg16 features")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
        raise InputError(f"{p} is not a readable PyTorch state dict ({type(exc).__name__}); "
                         f"save one with torch.save(torchvision.models.vgg16(weights=...)"
                         f".features.state_dict(), path)") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise InputError(f"{p} does not hold a state dict (a mapping of names to tensors); "
                         f"save vgg16().features.state_dict()")
    if any(str(k).startswith("features.") for k in state):
        state = {str(k)[len("features."):]: v for k, v in state.items()
                 if str(k).startswith("features.")}
    last = max(int(i) for i in layers)
    net = VGG16Features(last)
    expected = net.features.state_dict()
    for key, ref in expected.items():
        if key not in state:
            raise InputError(f"VGG-16 weights file {p} lacks {key!r} (layer {key.split('.')[0]} "
                             f"of vgg16.features), needed for vgg_layers {list(layers)}; give "
                             f"the state dict of torchvision's vgg16 features")
        got = tuple(state[key].shape)
        if got != tuple(ref.shape):
            raise InputError(f"VGG-16 weights file {p}: {key!r} has shape {got} but vgg16."
                             f"features needs {tuple(ref.shape)}; this is not a VGG-16 features "
                             f"state dict (torchvision's vgg16, 3-channel input)")
    net.features.load_state_dict({k: state[k].float() for k in expected})
    for prm in net.parameters():
        prm.requires_grad_(False)
    for i in layers:
        if not isinstance(net.features[int(i)], nn.ReLU):
            raise InputError(f"vgg_layers must name ReLU layers of vgg16.features (odd indices "
                             f"before a pooling, e.g. 3, 8, 15), got {int(i)}")
    return net.eval()


class VGGPerceptualLoss(nn.Module):
    """Perceptual loss on VGG-16 features (Johnson et al. 2016): mean squared difference of
    the feature maps at ``layers``, summed over layers. One-channel images are repeated to
    three channels and standardised with the ImageNet mean and standard deviation."""

    def __init__(self, features: VGG16Features, layers: Sequence[int]) -> None:
        super().__init__()
        self.features, self.layers = features, [int(i) for i in layers]
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> "VGGPerceptualLoss":
        super().train(False)  # frozen, always in inference mode
        return self

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        a = (pred.repeat(1, 3, 1, 1) - self.mean) / self.std
        b = (target.repeat(1, 3, 1, 1) - self.mean) / self.std
        fa, fb = self.features(a, self.layers), self.features(b, self.layers)
        return sum(torch.mean((x - y) ** 2) for x, y in zip(fa, fb))


def recon_loss_for(config: DisentangledConfig):
    if config.recon_loss == "vgg":
        return VGGPerceptualLoss(load_vgg16_features(config.vgg_weights, config.vgg_layers),
                                 config.vgg_layers)
    alpha = config.ssim_alpha
    return lambda p, t: ssim_l1_loss(p, t, alpha=alpha)
