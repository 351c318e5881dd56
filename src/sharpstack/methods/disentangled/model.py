"""A trained disentangled-deblurring model: :class:`DisentangledModel` (the autoencoder, its
normaliser and the in-focus blur code; the deploy module) and its use in-process: encode,
decode, :func:`deblur`, reconstruct."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..._axes import check_axes
from ...errors import InputError
from ...normalize import PercentileNormalizer
from ...training import TrainResult
from .data import normalise_images
from .disentangled_arch import DisentangledAE, DisentangledDeploy, receptive_radius
from .settings import DisentangledConfig

__all__ = ["DisentangledModel", "encode_images", "decode_codes", "prepare_images", "deblur",
           "reconstruct"]


@dataclass
class DisentangledModel:
    """A trained model: the network plus what is needed to deploy it.

    ``focus_code`` is the mean blur code of the in-focus images of the training identities
    (the buffer of the deploy module); ``split`` names the identities of each set.
    """

    net: DisentangledAE
    config: DisentangledConfig
    normalizer: PercentileNormalizer
    focus_code: np.ndarray
    split: dict[str, list[str]]
    result: TrainResult | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def multiple(self) -> int:
        return self.config.multiple

    def deploy(self) -> DisentangledDeploy:
        """The exported module: ``D(identity(x), focus_code)``, 2D -> 2D, same shape."""
        mod = DisentangledDeploy(**self.deploy_kwargs())
        mod.ae.load_state_dict(self.net.state_dict())
        mod.focus_code.copy_(torch.as_tensor(self.focus_code, dtype=torch.float32))
        return mod.eval()

    def deploy_kwargs(self) -> dict[str, Any]:
        return {**self.config.arch_kwargs(), "self_ensemble": bool(self.config.self_ensemble)}

    def receptive_radius(self) -> int:
        return receptive_radius(**self.config.arch_kwargs())


def _device(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


def _pad_to(x: np.ndarray, mult: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad the last two axes at their ends to multiples of ``mult``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % mult, (-w) % mult
    if ph or pw:
        pad = [(0, 0)] * (x.ndim - 2) + [(0, ph), (0, pw)]
        x = np.pad(x, pad, mode="reflect" if min(h, w) > max(ph, pw) else "edge")
    return x, (h, w)


@torch.no_grad()
def encode_images(model: DisentangledModel, images: np.ndarray, *, batch: int = 16,
                  normalized: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Identity and blur codes (means for ML-VAE) of 2D images ``(M, Y, X)``.

    Images are normalised one by one with the model's percentiles (unless ``normalized``) and
    padded to a multiple of the network's downsampling. Returns ``(M, C_i, h, w)`` and
    ``(M, C_b)``.
    """
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 3:
        raise InputError(f"images must be (M, Y, X), got shape {x.shape}")
    if not normalized:
        x = normalise_images(x, model.normalizer)
    x, _ = _pad_to(x, model.multiple)
    net = model.net.eval()
    dev = _device(net)
    ids, blurs = [], []
    for s in range(0, len(x), batch):
        i, b = net.encode(torch.from_numpy(x[s:s + batch, None]).to(dev))
        ids.append(i.cpu().numpy())
        blurs.append(b.cpu().numpy())
    return np.concatenate(ids), np.concatenate(blurs)


def prepare_images(model: DisentangledModel, images: np.ndarray) -> np.ndarray:
    """2D images ``(M, Y, X)`` as the network sees them: each normalised with the model's
    percentiles and padded to a multiple of the downsampling (the ``base`` of
    :func:`decode_codes`)."""
    x = normalise_images(np.asarray(images, dtype=np.float32), model.normalizer)
    return _pad_to(x, model.multiple)[0]


@torch.no_grad()
def decode_codes(model: DisentangledModel, identity: np.ndarray, blur: np.ndarray, *,
                 base: np.ndarray | None = None, batch: int = 16) -> np.ndarray:
    """Decode identity maps ``(M, C_i, h, w)`` with blur codes ``(M, C_b)`` (or one ``(C_b,)``
    for all) to normalised images ``(M, h * 2**depth, w * 2**depth)``.

    ``base``: the images ``(M, h * 2**depth, w * 2**depth)`` the identity codes came from
    (:func:`prepare_images`), which a residual decoder corrects (needed by one)."""
    net = model.net.eval()
    dev = _device(net)
    idc = torch.as_tensor(np.asarray(identity, dtype=np.float32))
    bl = torch.as_tensor(np.asarray(blur, dtype=np.float32))
    if bl.ndim == 1:
        bl = bl[None].expand(len(idc), -1)
    if net.residual and base is None:
        raise InputError("this model's decoder corrects the image the identity code came "
                         "from: give base=prepare_images(model, images)")
    bs = None if base is None else torch.as_tensor(np.asarray(base, dtype=np.float32))[:, None]
    out = [net.decode(idc[s:s + batch].to(dev), bl[s:s + batch].to(dev),
                      None if bs is None else bs[s:s + batch].to(dev))[:, 0].cpu().numpy()
           for s in range(0, len(idc), batch)]
    return np.concatenate(out)


@torch.no_grad()
def deblur(model: DisentangledModel | DisentangledDeploy, image, *, axes: str = "YX",
           normalizer: PercentileNormalizer | None = None, batch: int = 8) -> np.ndarray:
    """Deblur a 2D image (``"YX"``) or every plane of a stack (``"ZYX"``) in-process, exactly as
    the exported package does (for benchmarks and tests; users run the package).

    The whole array is normalised with one pair of percentiles (``sharpstack predict``'s
    statistics over the whole input), padded to a multiple of the downsampling, run through the
    deploy module and cropped. Returns normalised intensities (float32, same shape).
    """
    ax = check_axes(axes, np.ndim(image), allowed=("YX", "ZYX"))
    if isinstance(model, DisentangledModel):
        normalizer = normalizer or model.normalizer
        mod, mult = model.deploy(), model.multiple
    else:
        mod, mult = model.eval(), 2 ** model.ae.depth
    normalizer = normalizer or PercentileNormalizer()
    arr = np.asarray(image)
    if not np.all(np.isfinite(arr)):
        raise InputError("the image contains NaN or infinite values; remove them first")
    x = normalizer.before(arr)
    planes = x[None] if ax == "YX" else x
    xp, (h, w) = _pad_to(planes, mult)
    dev = next(mod.parameters()).device
    out = np.empty(xp.shape, dtype=np.float32)
    for s in range(0, len(xp), batch):
        out[s:s + batch] = mod(torch.from_numpy(
            np.ascontiguousarray(xp[s:s + batch, None])).to(dev))[:, 0].cpu().numpy()
    out = out[:, :h, :w]
    return out[0] if ax == "YX" else out


def reconstruct(model: DisentangledModel, images: np.ndarray) -> np.ndarray:
    """``D(E(x))`` of 2D images ``(M, Y, X)`` (each normalised by its own percentiles);
    normalised output of the same shape."""
    x = np.asarray(images, dtype=np.float32)
    idc, bl = encode_images(model, x)
    return decode_codes(model, idc, bl, base=prepare_images(model, x))[
        :, : x.shape[1], : x.shape[2]]
