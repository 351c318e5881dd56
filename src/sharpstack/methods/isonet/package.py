"""Describe a trained IsoNet as a bioimage.io package (both deployables of DESIGN.md).

- ``upsample=False``: input already resampled to isotropic voxels; output the same shape.
  Safe for every 3D consumer.
- ``upsample=True``: raw anisotropic input; z upsampled by the factor inside the module, so the
  output has ``factor`` times more slices (output z axis scale = input z scale / factor).
  bioimageio.core and ``sharpstack predict`` run it; deepImageJ and ilastik cannot (their
  output-size rules ignore the scale; ``sharpstack check`` says why).
- ``slice2d``: the bare 2D network on one axial (xz or yz) slice already resampled to isotropic
  pixels, rows = z. The only deployable QuPath (2D only) can open.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ...export.package import AxisSpec, PackageRequest
from .isonet_arch import fraction_of
from .task import IsoNetModel, restore
from .selfcheck import gain_text, gain_warning

__all__ = ["isonet_axes", "card_fields", "package_request", "DEPLOYABLES"]

DEPLOYABLES = ("upsample", "isotropic", "slice2d")
"""The deployables (their consumer claims are declared by :class:`.plugin.IsoNet`)."""

ARCH_SOURCE = Path(__file__).with_name("isonet_arch.py")
"""The architecture file every package ships (it imports only torch; the name is kept so
that packages hold the same ``isonet_arch.py`` as before)."""


def isonet_axes(model: IsoNetModel, *, deployable: str) -> list[AxisSpec]:
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
    if deployable == "slice2d":
        return lat
    if deployable == "isotropic":
        return [AxisSpec(id="z", min=lat_min, step=lat_step, halo=halo)] + lat
    # the module upsamples z by p/q (q = 1 for an integer factor, see ZUpsampleLinear)
    p, q = fraction_of(cfg.factor)
    f = Fraction(p, q)
    # input z slices n: a multiple of q (n*p/q whole), and n*p/q a multiple of mult
    z_step = q * (mult // math.gcd(mult, p))
    # output halo: whole groups of q input slices (p output slices) covering the receptive
    # field plus one input slice for the interpolation. Runners that pad the input by the
    # halo on both sides (bioimageio.core's default) must land on a valid size again, so the
    # input halo is also a multiple of z_step / 2 (of z_step when it is odd): with factor 3 or
    # 9/4 a halo of 13 or 20 input slices padded a valid stack to an invalid one
    group = math.lcm(q, z_step // 2 if z_step % 2 == 0 else z_step)
    h_in = int(math.ceil((radius / f + 1) / group)) * group
    z_halo = int(h_in * f)
    z_min = z_step * int(math.ceil((2 * z_halo + 1) / (f * z_step)))
    return [AxisSpec(id="z", min=z_min, step=z_step, halo=z_halo,
                     in_scale=float(f), out_scale=1.0)] + lat


def card_fields(model: IsoNetModel, *, deployable: str, halo: int, psf_text: str,
                training_data: str, input_gain: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """The fields of ``card.md`` that are IsoNet's own (the exporter fills name, description,
    version, quality and runtimes)."""
    cfg = model.config
    f = cfg.factor
    resample = (f"Resample z to isotropic voxels first: `sharpstack resample raw.tif iso.tif` "
                f"(or `sharpstack predict --resample`), or in Fiji Image > Scale with z scale "
                f"{f} and bilinear interpolation.")
    if deployable == "upsample":
        p, q = fraction_of(f)
        done = f"{f}" if q == 1 or abs(p / q - f) <= 1e-6 * f else f"{p}/{q} = {p / q:.4g}"
        deploy_text = ("this package takes the raw anisotropic stack and returns it with "
                       f"{done}x more z slices (z is upsampled inside the network).")
        input_text = f"Give the stack as acquired; its z spacing should be {f}x its pixel size."
        output_text = f"{done}x the input's z slices; z spacing divided by {done}."
        dij = ("Not supported: deepImageJ computes the output size without the z scale; use "
               "the `isotropic` package of the same model in Fiji.")
        ilastik = "Not supported (ilastik needs the output shaped like the input); use the `isotropic` package."
        axes = "batch, channel, z, y, x"
    elif deployable == "isotropic":
        deploy_text = ("this package takes a stack already resampled to isotropic voxels (z "
                       "interpolated to the pixel size) and returns the restored stack of the "
                       "same shape.")
        input_text = resample
        output_text = "same shape and voxel size as the input."
        dij = resample
        ilastik = "Load the z-resampled stack as a 3D volume. " + \
            "ilastik shows a single-channel output as channel 0."
        axes = "batch, channel, z, y, x"
    else:
        deploy_text = ("this package restores ONE axial slice (xz or yz) of a stack that was "
                       "resampled to isotropic voxels; rows are the z direction.")
        input_text = ("A 2D axial slice (rows = z), after resampling z to isotropic voxels. "
                      "For whole stacks use the 3D packages.")
        output_text = "the restored slice, same shape."
        dij = "Open an axial slice (Image > Stacks > Reslice, then resample rows to the pixel size)."
        ilastik = "Runs as a 2D model on 2D images."
        axes = "batch, channel, y, x"
    qupath = ("open the unzipped folder with Extensions > Bioimage Model Zoo (2D images only; "
              "rows must be z)." if deployable == "slice2d" else
              "not supported: QuPath runs 2D models on image tiles and this model is 3D.")
    arch_text = ("IsoNet-2: 2D U-Net C16,7x7-M2-C32,7x7-M2-C64,7x7-U2-C32,7x7-U2-C16,7x7-C1,1x1 "
                 "with skip connections, predicting the residual"
                 + ("; bias-free (no additive biases: scale-equivariant, so dim and bright "
                    "structures are restored alike and a spot keeps its intensity; the "
                    "paper's network has biases)" if not cfg.bias else
                    "; with additive biases (the paper's)") if cfg.arch == "unet" else
                 "IsoNet-1: SRCNN-like C64,9x9-C32,5x5-C1,5x5-C1,1x1")
    psf_mode_text = {"full": "the PSF rotated into the lateral plane",
                     "split": "only the anisotropic part h_split of the PSF, h_rot = h_iso * h_split",
                     "none": "no PSF (SRCNN baseline)"}[cfg.psf_mode]
    pairs_text = ("the paper's: the noisy lateral slice as target, its blurred and subsampled "
                  "copy as input" if cfg.pairs == "paper" else
                  "noise-aware: the stack's noise fitted from the stack (var = a * mean + b), "
                  "inputs given noise of that model, targets "
                  + ("denoised by non-local means" if cfg.noise_target == "denoised" else
                     "the noisy slices with Noise2Void blind spots (loss on those only)"))
    return dict(
        deploy_text=deploy_text, pairs_text=pairs_text, self_check=gain_text(input_gain),
        factor=f, axes=axes, input_text=input_text, pmin=cfg.pmin, pmax=cfg.pmax,
        output_text=output_text, halo=halo, arch_text=arch_text,
        arch_kwargs=json.dumps(cfg.arch_kwargs()), psf_text=psf_text, psf_mode=cfg.psf_mode,
        psf_mode_text=psf_mode_text, lr=cfg.lr, epochs=len(model.result.history),
        best_epoch=model.result.best_epoch, n_patches=cfg.n_patches,
        patch_size=cfg.patch_size, dropout=cfg.dropout, training_data=training_data,
        dij_text=dij, ilastik_text=ilastik, qupath_text=qupath,
    )


def _test_input_from(stack: np.ndarray, axes: list[AxisSpec]) -> np.ndarray:
    """A central crop of ``stack`` of a valid input size (``min + n*step``) near 96 px
    laterally; axes shorter than ``min`` are padded by reflection."""
    pads = [(0, max(0, a.min - s)) for s, a in zip(stack.shape, axes)]
    if any(p[1] for p in pads):
        stack = np.pad(stack, pads, mode="reflect")
    sl = []
    for s, a in zip(stack.shape, axes):
        target = min(s, max(a.min, 96 if a.id != "z" else a.min + 4 * a.step))
        size = a.min + (target - a.min) // a.step * a.step
        start = (s - size) // 2
        sl.append(slice(start, start + size))
    return stack[tuple(sl)]


def consumer_input(factor: float, stack, deployable: str):
    """The stack the ``isotropic`` package takes, made from a raw anisotropic ``stack`` (a ZYX
    DataArray): z interpolated linearly by ``factor`` (as the package's test input is), z
    spacing divided by it; None for the other deployables (``upsample`` takes the raw stack;
    ``slice2d`` one axial slice of the isotropic one, chosen by the user)."""
    from ...io import as_dataarray
    from ...resample import upsample

    if deployable != "isotropic":
        return None
    up = upsample(np.asarray(stack.values, dtype=np.float32), factor, axis=0)
    vs = dict(stack.attrs.get("voxel_size") or {})
    if vs.get("z") is not None:
        vs["z"] = vs["z"] / factor
    return as_dataarray(up, "ZYX", vs)


def package_request(trained, sample: Path, deployable: str, *, workdir: Path) -> PackageRequest:
    """The package request of one deployable of a trained IsoNet run
    (``methods._base.Trained``).

    The test input (and sample TIFF) is a central crop of ``sample`` (a raw anisotropic
    stack) in the form the deployable expects: of the raw stack (``upsample``), of the
    isotropically resampled stack (``isotropic``), or one axial slice of the latter with rows
    = z (``slice2d``). The cover (written into ``workdir``) shows orthogonal views
    before/after.
    """
    from ...errors import InputError
    from ...export.covers import orthoviews_png
    from ...io import check_finite, read_stack
    from ...resample import upsample

    if deployable not in DEPLOYABLES:
        raise InputError(f"deployable must be one of {', '.join(DEPLOYABLES)}; got {deployable!r}")
    model: IsoNetModel = trained.model
    data = read_stack(sample)
    if tuple(data.dims) != ("z", "y", "x"):
        raise InputError(f"{sample} must be a one-channel ZYX stack, got "
                         f"{''.join(data.dims).upper()}; give a stack of the training kind")
    check_finite(data, str(sample))
    raw = np.asarray(data.values, dtype=np.float32)
    cfg = model.config
    f = cfg.factor
    up = upsample(raw, f, axis=0)
    axes = isonet_axes(model, deployable=deployable)
    if deployable == "upsample":
        test_input = _test_input_from(raw, axes)
    elif deployable == "isotropic":
        test_input = _test_input_from(up, axes)
    else:  # one xz slice through the middle, rows = z
        test_input = _test_input_from(np.ascontiguousarray(up[:, up.shape[1] // 2, :]), axes)
    shown = _test_input_from(up, isonet_axes(model, deployable="isotropic"))
    restored = restore(model, shown, factor=f, upsampled=True)
    cover = orthoviews_png([model.normalizer.before(shown), restored],
                           ["input (z interpolated)", "IsoNet"], Path(workdir) / "cover.png")

    kind = "IsoNet-2" if cfg.arch == "unet" else "IsoNet-1"
    suffix = {"upsample": " (raw stack - z upsampling)", "isotropic": " (z-resampled stack)",
              "slice2d": " (2D axial slice)"}[deployable]
    description = (
        f"{kind} restores isotropic resolution of fluorescence z-stacks with {cfg.factor}x "
        "coarser axial than lateral sampling" + {
            "upsample": "; input the raw stack, z is upsampled inside.",
            "isotropic": "; input the stack resampled to isotropic voxels.",
            "slice2d": "; input one axial slice (rows = z) resampled to isotropic pixels."}[
                deployable])
    if deployable == "slice2d":
        module, callable_, kwargs = model.net.eval(), ("UNet2D" if cfg.arch == "unet"
                                                        else "SRCNN2D"), cfg.arch_kwargs()
    else:
        upsample = deployable == "upsample"
        module, callable_, kwargs = (model.deploy(upsample=upsample), "IsoNetDeploy",
                                     model.deploy_kwargs(upsample=upsample))
    training_data = trained.record.get("training_data", "")
    gain = trained.record.get("input_gain")
    notice = gain_warning(gain)
    if notice:
        import warnings

        warnings.warn(notice, stacklevel=2)
    # bioimageio names allow letters, digits, _+- () only: no decimal point, so a
    # non-integer factor is said in the description alone
    times = f" x{int(f)}" if float(f).is_integer() else ""
    return PackageRequest(
        name=f"{kind} isotropic reconstruction{times}{suffix}", description=description,
        module=module, arch_source=ARCH_SOURCE, arch_callable=callable_, arch_kwargs=kwargs,
        axes=axes, test_input=test_input, normalizer=model.normalizer,
        card_template=resources.files(__package__).joinpath("card.md").read_text("utf-8"),
        card_fields=card_fields(model, deployable=deployable, halo=axes[-1].halo,
                                psf_text=trained.record.get("psf_text", ""),
                                training_data=training_data, input_gain=gain),
        covers=[cover],
        tags=["isotropic-reconstruction", "isonet", "fluorescence-light-microscopy",
              "restoration", "pytorch", "sharpstack", "2d" if deployable == "slice2d" else "3d"],
        input_description={
            "upsample": "anisotropic fluorescence stack, as acquired",
            "isotropic": "fluorescence stack resampled to isotropic voxels",
            "slice2d": "axial slice (rows = z) resampled to isotropic pixels"}[deployable],
        output_description="restored, normalised intensities",
        training_data=training_data, quality_format=".2f",
        # the statistics of the whole sample in the deployable's input form (slice2d: xz)
        stats_data={"upsample": raw, "isotropic": up}.get(deployable, np.moveaxis(up, 1, 0)),
        stats_source=f"{Path(sample).name} (the export sample), shape {raw.shape}")
