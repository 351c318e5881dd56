"""Describe a trained IsoNet as a bioimage.io package (both deployables of DESIGN.md).

- ``upsample=False``: input already resampled to isotropic voxels; output the same shape.
  Safe for every 3D consumer.
- ``upsample=True``: raw anisotropic input; z upsampled by the factor inside the module, so the
  output has ``factor`` times more slices (output z axis scale = input z scale / factor).
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..methods.isonet import IsoNetModel
from ..nn import isonet_arch
from .package import AxisSpec, PackageSpec

__all__ = ["isonet_package_spec", "isonet_axes", "ISONET_CITATION"]

ISONET_CITATION = {
    "text": "Weigert, Royer, Jug & Myers. Isotropic reconstruction of 3D fluorescence microscopy "
            "images using convolutional neural networks. MICCAI 2017.",
    "doi": "10.1007/978-3-319-66185-8_15",
}
DEFAULT_AUTHORS = [{"name": "sharpstack developers"}]


def isonet_axes(model: IsoNetModel, *, upsample: bool) -> list[AxisSpec]:
    """Space axes (z, y, x) with sizes, scales and halos for a deployable of ``model``.

    Every axis of the 3D module is a row or column axis of the 2D network, so all sizes must be
    multiples of ``2**depth``; the halo covers the network's receptive field (plus, along z of
    the upsampling deployable, one input slice for the linear interpolation).
    """
    cfg = model.config
    mult = 2 ** cfg.depth if cfg.arch == "unet" else 1
    radius = model.receptive_radius()
    halo = int(math.ceil(radius / mult) * mult)
    lat_step = max(mult, 8)
    # bioimageio.spec requires (minimum output size - 2 * halo) >= 1
    lat_min = lat_step * int(math.ceil((2 * halo + 1) / lat_step))
    lat = [AxisSpec(id=a, min=lat_min, step=lat_step, halo=halo) for a in ("y", "x")]
    if not upsample:
        return [AxisSpec(id="z", min=lat_min, step=lat_step, halo=halo)] + lat
    f = cfg.factor
    # input z slices n must give n*f a multiple of mult
    z_step = mult // math.gcd(mult, f)
    z_halo = (int(math.ceil(radius / f)) + 1) * f  # output slices; +1 input slice: interpolation
    z_min = z_step * int(math.ceil((2 * z_halo + 1) / (f * z_step)))
    return [AxisSpec(id="z", min=z_min, step=z_step, halo=z_halo,
                     in_scale=float(f), out_scale=1.0)] + lat


def _fmt_quality(quality: dict[str, Any] | None) -> str:
    if not quality:
        return "Not measured for this package."
    lines = ["| measure | value |", "|---|---|"]
    for k, v in quality.items():
        lines.append(f"| {k} | {v:.2f} |" if isinstance(v, float) else f"| {k} | {v} |")
    return "\n".join(lines)


def render_card(model: IsoNetModel, *, name: str, description: str, upsample: bool,
                halo: int, psf_text: str, training_data: str,
                quality: dict[str, Any] | None, compat_text: str = "") -> str:
    from .. import __version__

    cfg = model.config
    tmpl = resources.files("sharpstack.export").joinpath("templates/isonet.md").read_text("utf-8")
    if upsample:
        deploy_text = ("this package takes the raw anisotropic stack and returns it with "
                       f"{cfg.factor}x more z slices (z is upsampled inside the network).")
        input_text = ("Give the stack as acquired (no resampling). Its z spacing should be "
                      f"{cfg.factor}x its pixel size.")
        output_text = f"{cfg.factor}x the input's z slices; z spacing divided by {cfg.factor}."
        dij = ("deepImageJ must compute an output size from the z `scale` of the output axis; "
               "see the compatibility table below.")
    else:
        deploy_text = ("this package takes a stack already resampled to isotropic voxels (z "
                       "interpolated to the pixel size) and returns the restored stack of the "
                       "same shape.")
        input_text = (f"Resample z to isotropic voxels first (e.g. Fiji Image > Scale, z factor "
                      f"{cfg.factor}, bilinear).")
        output_text = "same shape and voxel size as the input."
        dij = "Resample z to isotropic voxels before running."
    arch_text = ("IsoNet-2: 2D U-Net C16,7x7-M2-C32,7x7-M2-C64,7x7-U2-C32,7x7-U2-C16,7x7-C1,1x1 "
                 "with skip connections, predicting the residual" if cfg.arch == "unet" else
                 "IsoNet-1: SRCNN-like C64,9x9-C32,5x5-C1,5x5-C1,1x1")
    psf_mode_text = {"full": "the PSF rotated into the lateral plane",
                     "split": "only the anisotropic part h_split of the PSF, h_rot = h_iso * h_split",
                     "none": "no PSF (SRCNN baseline)"}[cfg.psf_mode]
    return tmpl.format(
        name=name, description=description, version=__version__, deploy_text=deploy_text,
        factor=cfg.factor, axes="batch, channel, z, y, x", input_text=input_text,
        pmin=cfg.pmin, pmax=cfg.pmax, output_text=output_text, halo=halo,
        arch_text=arch_text, arch_kwargs=json.dumps(cfg.arch_kwargs()), psf_text=psf_text,
        psf_mode=cfg.psf_mode, psf_mode_text=psf_mode_text, lr=cfg.lr,
        epochs=len(model.result.history), best_epoch=model.result.best_epoch,
        n_patches=cfg.n_patches, patch_size=cfg.patch_size, dropout=cfg.dropout,
        training_data=training_data, quality=_fmt_quality(quality), dij_text=dij,
        ilastik_text=("ilastik runs 3D models on 3D data; give the stack "
                      + ("as acquired." if upsample else "resampled to isotropic voxels.")),
        qupath_text=("not supported: QuPath runs 2D models on image tiles, and this is a 3D "
                     "model."),
        compat=compat_text,
    )


def isonet_package_spec(model: IsoNetModel, test_input: np.ndarray, *, upsample: bool,
                        covers: list[Path], name: str | None = None,
                        description: str | None = None, psf_text: str = "",
                        training_data: str = "", quality: dict[str, Any] | None = None,
                        authors: list[dict[str, str]] | None = None, license: str = "MIT",
                        compat_text: str = "", attachments: list[Path] | None = None
                        ) -> PackageSpec:
    """A :class:`PackageSpec` for one deployable of a trained IsoNet.

    ``test_input`` is raw data with axes ZYX: the raw anisotropic stack crop when
    ``upsample``, a crop of the isotropically resampled stack otherwise; its shape must be a
    valid size (``min + n*step``) on every axis.
    """
    cfg = model.config
    axes = isonet_axes(model, upsample=upsample)
    for a, s in zip(axes, test_input.shape):
        if s < a.min or (s - a.min) % a.step:
            raise ValueError(f"test input size {s} along {a.id} is not min {a.min} + n*{a.step}")
    kind = "IsoNet-2" if cfg.arch == "unet" else "IsoNet-1"
    name = name or f"{kind} isotropic reconstruction x{cfg.factor}" + (
        " (z-upsampling)" if upsample else "")
    description = description or (
        f"{kind} restores isotropic resolution of fluorescence z-stacks with {cfg.factor}x "
        "coarser axial than lateral sampling" + (
            "; input the raw stack, z is upsampled inside." if upsample else
            "; input the stack resampled to isotropic voxels."))
    card = render_card(model, name=name, description=description, upsample=upsample,
                       halo=axes[1].halo, psf_text=psf_text, training_data=training_data,
                       quality=quality, compat_text=compat_text)
    return PackageSpec(
        name=name, description=description, module=model.deploy(upsample=upsample),
        arch_source=Path(isonet_arch.__file__), arch_callable="IsoNetDeploy",
        arch_kwargs=model.deploy_kwargs(upsample=upsample), axes=axes,
        test_input=np.asarray(test_input, dtype=np.float32), normalizer=model.normalizer,
        documentation=card, covers=covers, authors=authors or DEFAULT_AUTHORS,
        cite=[ISONET_CITATION], license=license,
        tags=["isotropic-reconstruction", "isonet", "3d", "fluorescence-light-microscopy",
              "restoration", "pytorch", "sharpstack"],
        input_description="anisotropic fluorescence stack" if upsample else
        "fluorescence stack resampled to isotropic voxels",
        output_description="restored isotropic stack (normalised intensities)",
        training_data=training_data, attachments=attachments or [],
    )
