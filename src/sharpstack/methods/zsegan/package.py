"""Describe a trained ZSE-GAN as a bioimage.io package (the ``zscan`` deployable).

The exported module is the sharpening generator G_S alone (``zsegan_arch.ZSEGANDeploy``):
a z-scan normalised by ``scale_range`` (percentiles of the whole stack) in, the sharpened
z-scan in [0, 1] of the same shape out. Axes ``batch, channel, z, y, x``:

- z: ``n_planes + n * n_planes`` (a stack of k z-scans along z is sharpened scan by scan),
  no halo (each z-scan is processed whole);
- y, x: ``min + n * 4`` (two stride-2 layers), halo = the generator's receptive radius
  rounded up to 4, so that ``sharpstack predict`` / deepImageJ / ilastik tile laterally
  without seams (the generator's instance norms use stored statistics in the package, see
  ``zsegan_arch``).

The test input and the cover are a synthetic z-scan (:func:`.phantom.zscan`):
the paper's z-scans may not be redistributed, so nothing of the training data goes into a
package.
"""

from __future__ import annotations

import inspect
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ...export.package import AxisSpec, PackageRequest
from .model import ZSEGANModel, restore
from .zsegan_arch import ZSEGANDeploy, final_z_kernel

__all__ = ["DEPLOYABLES", "zsegan_axes", "synthetic_test_input", "card_fields",
           "package_request"]

DEPLOYABLES = ("zscan",)
TEST_LATERAL = 128
"""Lateral size of the synthetic test input (rounded up to a valid size)."""


def zsegan_axes(model: ZSEGANModel) -> list[AxisSpec]:
    """z (whole z-scans, no halo) and the tiled lateral axes y, x with their halo."""
    n = model.config.n_planes
    step = 4
    halo = int(math.ceil(model.receptive_radius() / step) * step)
    # bioimageio.spec requires (minimum output size - 2 * halo) >= 1
    lat_min = step * int(math.ceil((2 * halo + 1) / step))
    return [AxisSpec(id="z", min=n, step=n, halo=0, blocks=True),
            AxisSpec(id="y", min=lat_min, step=step, halo=halo),
            AxisSpec(id="x", min=lat_min, step=step, halo=halo)]


def synthetic_test_input(model: ZSEGANModel, *, seed: int = 0) -> np.ndarray:
    """A synthetic z-scan (float32, ZYX) of the model's planes and focal plane, lateral size
    the smallest valid one >= :data:`TEST_LATERAL` (see :func:`.phantom.zscan`)."""
    from .phantom import zscan

    ax = zsegan_axes(model)
    lat = ax[1]
    size = lat.min if lat.min >= TEST_LATERAL else \
        lat.min + int(math.ceil((TEST_LATERAL - lat.min) / lat.step)) * lat.step
    return zscan((model.config.n_planes, size, size), seed=seed,
                 focal_plane=model.config.focal_index, sigma_max=4.0)


def _variant_text(cfg, defocus: dict[str, Any] | None = None) -> str:
    lines = []
    if cfg.warm_start_steps > 0 and defocus:
        from .warmstart import DefocusModel

        lines.append(
            f"- Physics warm start (not in the paper; `warm_start_steps: 0` is the paper's "
            f"recipe): a defocus PSF per plane (a disk convolved with a Gaussian, with gain, "
            f"offset and the noise the plane carries) was fitted on the training z-scans, "
            f"z-scans were synthesised from the in-focus images with it, and G_S (synthetic "
            f"z-scan -> the in-focus image on every plane) and G_B (the reverse) were "
            f"pretrained on these pairs for {cfg.warm_start_steps} steps (L1) before the "
            f"adversarial training. Without it, the generators stay close to the identity "
            f"within a CPU budget. Fitted model: "
            f"{DefocusModel.from_record(defocus).summary()}")
    if cfg.adversarial == "anchored":
        lines.append(
            f"- Adversarial phase anchored to the physics (not in the paper; `adversarial: "
            f"paper` is the paper's losses): the focal-weighted adversarial terms plus the "
            f"synthetic-pair L1 (weight {cfg.synthetic_weight}), without the cycle and "
            f"identity terms. Measured on the paper's z-scans, the cycle term pulled both "
            f"generators back to the identity within 50 steps of the warm start (the real "
            f"far planes hold structure the fitted defocus model does not explain), while "
            f"the anchored phase kept flattening FM and lowered the outer planes' PIQE.")
    if cfg.fidelity_weight > 0:
        lines.append(f"- Data fidelity (not in the paper): in the adversarial phase G_S's "
                     f"output, blurred plane by plane with the fitted defocus PSFs, was held "
                     f"to the real z-scan it came from (L1, weight {cfg.fidelity_weight}), "
                     f"so the adversarial terms only fill in what the blur removed.")
    if cfg.focal_anchor > 0:
        lines.append(f"- Focal-plane anchor (not in the paper): L1 between G_S's output and "
                     f"its input at the focal plane of the real training z-scans, weight "
                     f"{cfg.focal_anchor}, in the adversarial phase; that plane is in focus "
                     f"already, and without it the adversarial phase rewrote it in long runs.")
    if cfg.adversarial_lr is not None:
        lines.append(f"- Learning rate {cfg.adversarial_lr} in the adversarial phase "
                     f"(warm start: {cfg.lr}).")
    if cfg.warm_start_steps > 0 and defocus and cfg.warm_start_noise == "residual":
        lines.append("- The synthetic z-scans carried crops of the real residual (what the "
                     "fitted defocus model leaves unexplained on the training z-scans) "
                     "instead of white noise.")
    if cfg.synthetic_weight > 0 and cfg.adversarial != "anchored":
        lines.append(f"- The synthetic-pair L1 stays in the adversarial phase with weight "
                     f"{cfg.synthetic_weight}.")
    if cfg.residual:
        lines.append("- Residual generators (x + net(x), last convolution initialised to zero; "
                     "not in the notebook, whose generators end in tanh): they start as the "
                     "identity, which short trainings need to keep the focal plane intact.")
    if cfg.upsample == "resize":
        lines.append("- Decoder upsampling by nearest x2 + convolution instead of the "
                     "notebook's transposed convolutions (which leave checkerboard patterns "
                     "after short trainings).")
    if cfg.upsample == "linear":
        lines.append("- Decoder upsampling by trilinear x2 + convolution instead of the "
                     "notebook's transposed convolutions: no checkerboard and no 2x2 block "
                     "phase (on the brain z-scans the adversarial training drew an oblique "
                     "2-3 pixel hatching instead of the nearest decoder's 4-pixel grid).")
    if cfg.d_blur > 0:
        lines.append(f"- D_S saw every section (real and generated) through a Gaussian blur of "
                     f"sigma {cfg.d_blur} px, so the adversarial loss does not reward a "
                     f"periodic 2-3 pixel texture in the generated planes.")
    if cfg.lr_schedule == "cosine":
        lines.append("- Learning rate decayed to 0 over the epochs by a cosine (the notebook "
                     "keeps it constant for the paper's recipe), to damp the epoch-to-epoch "
                     "swings of the adversarial phase in the last epochs.")
    if cfg.z_padding == "replicate":
        lines.append("- The generators' convolutions repeat the first and last focal planes "
                     "as their z padding (the notebook pads with zeros, which the outermost "
                     "planes see as mid-grey).")
    if cfg.self_ensemble:
        lines.append("- Self-ensemble (not in the paper): the packaged G_S returns the mean of "
                     "its outputs for the 8 lateral flips and 90-degree rotations of the "
                     "z-scan, each turned back; 8 passes per z-scan. It removes the "
                     "generator's 4-pixel grid and part of the far planes' noise, and lowers "
                     "the no-reference sharpness scores (FM, PIQE) that this texture raised.")
    return "\n".join(lines)


def card_fields(model: ZSEGANModel, *, halo: int, training_data: str) -> dict[str, Any]:
    """The fields of ``card.md`` (beside this module) that are ZSE-GAN's own (the exporter
    fills name, description, version, quality and runtimes)."""
    cfg = model.config
    hist = model.result.history
    steps = cfg.steps_per_epoch or len(model.split.get("train", [])) or 0
    return dict(
        n=cfg.n_planes,
        n2=2 * cfg.n_planes, focal=cfg.focal_index + 1, pmin=cfg.pmin, pmax=cfg.pmax,
        halo=halo, ngf=cfg.ngf, ngf2=2 * cfg.ngf, ngf4=4 * cfg.ngf, n_res=cfg.n_res,
        first_kernel=cfg.first_kernel, kz=final_z_kernel(cfg.n_planes),
        ndf=cfg.ndf, d_layers=cfg.d_layers, p=cfg.p_vertical, p1=round(1 - cfg.p_vertical, 4),
        lambda_cycle=cfg.lambda_cycle, lambda_identity=cfg.lambda_identity,
        cycle_weighting=cfg.cycle_weighting, cycle_reduce=cfg.cycle_reduce,
        alpha_on_ds="yes" if cfg.alpha_on_ds else "no (the paper's Eq. 2-3)",
        sections=cfg.sections, pool=cfg.pool_size, lr=cfg.lr, lr_d=cfg.lr_d or cfg.lr,
        beta1=cfg.beta1,
        beta2=cfg.beta2, crop=cfg.crop, epochs=len(hist), steps=steps,
        batch=cfg.batch_size, select=cfg.select, calib=cfg.calib_crops,
        up_text={"transposed": "two stride-2 transposed Conv3d",
                 "resize": "two nearest x2 upsamplings each followed by Conv3d k3",
                 "linear": "two trilinear x2 upsamplings each followed by Conv3d k3"
                 }[cfg.upsample],
        out_text=("added to the input (residual: the generator starts as the identity)"
                  if cfg.residual else "+ tanh"),
        variant_text=_variant_text(cfg, model.defocus),
        kwargs=json.dumps(cfg.generator_kwargs()), training_data=training_data or "not recorded")


def package_request(trained, sample: Path, deployable: str, *, workdir: Path) -> PackageRequest:
    """The package request of a trained ZSE-GAN run (``methods._base.Trained``).

    ``sample`` must be a z-scan the model takes (checked: ZYX, the model's plane count); its
    content is not put into the package. The test input, the sample TIFF and the cover come
    from a synthetic z-scan (:func:`synthetic_test_input`).
    """
    from ...export.covers import panels_png
    from ...io import check_finite, read_stack

    if deployable not in DEPLOYABLES:
        raise InputError(f"deployable must be one of {', '.join(DEPLOYABLES)}; got "
                         f"{deployable!r}")
    model: ZSEGANModel = trained.model
    n = model.config.n_planes
    data = read_stack(sample)
    if tuple(data.dims) != ("z", "y", "x"):
        raise InputError(f"{sample} must be a one-channel ZYX z-scan, got "
                         f"{''.join(data.dims).upper()} {tuple(data.shape)}; give a z-scan of "
                         f"{n} planes")
    if data.shape[0] % n:
        raise InputError(f"{sample} has {data.shape[0]} focal planes; this model takes z-scans "
                         f"of {n} planes (or k*{n}: k scans stacked); give such a z-scan")
    check_finite(data, str(sample))
    test_input = synthetic_test_input(model)
    restored = restore(model, test_input)
    shown = np.clip(model.normalizer.before(test_input), 0, 1)
    r = shown.shape[1] // 2
    f = model.config.focal_index
    cover = panels_png([shown[0], restored[0], shown[f], restored[f]],
                       ["synthetic z-scan, plane 1", "ZSE-GAN, plane 1",
                        f"input, focal plane {f + 1}", "ZSE-GAN, focal plane"],
                       Path(workdir) / "cover.png")
    vertical = panels_png([shown[:, r, :].T, restored[:, r, :].T],
                          ["input, vertical section (x, z)", "ZSE-GAN, vertical section"],
                          Path(workdir) / "cover_vertical.png")
    axes = zsegan_axes(model)
    training_data = trained.record.get("training_data", "")
    return PackageRequest(
        name=f"ZSE-GAN z-scan sharpening ({n} planes)",
        description=(
            f"ZSE-GAN sharpens z-scans of {n} focal planes through a thin section: every plane "
            "and every vertical section as sharp as the focal plane (generator G_S of a "
            "focal-length weighted GAN, trained without 3D ground truth)."),
        module=model.deploy(), arch_source=Path(inspect.getfile(ZSEGANDeploy)),
        arch_callable=ZSEGANDeploy.__name__, arch_kwargs=model.deploy_kwargs(), axes=axes,
        test_input=test_input, normalizer=model.normalizer,
        card_template=resources.files(__package__).joinpath("card.md").read_text("utf-8"),
        card_fields=card_fields(model, halo=axes[1].halo, training_data=training_data),
        covers=[cover, vertical],
        tags=["z-stack", "deblurring", "zsegan", "gan", "brightfield", "histology",
              "restoration", "pytorch", "sharpstack", "3d"],
        input_description=f"z-scan of {n} focal planes (or k*{n}: k scans along z)",
        output_description="sharpened z-scan, normalised intensities in [0, 1]",
        training_data=training_data,
        stats_data=np.asarray(data.values, dtype=np.float32),
        stats_source=f"{Path(sample).name} (the export sample), shape {tuple(data.shape)}")
