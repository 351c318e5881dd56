"""Describe a trained disentangled-deblurring model as a bioimage.io package (``deblur2d``).

The exported module is :class:`~.disentangled_arch.DisentangledDeploy`:
``D(identity(x), focus_code)`` with the in-focus blur code stored as a buffer. Axes
``batch, channel, y, x``; y and x ``min + n * 2**depth`` (the poolings), halo = the receptive
radius rounded up to ``2**depth``; output the same size (``SizeReference``, offset 0). The
module is fully convolutional, so the package passes the rules of deepImageJ, ilastik and
QuPath (2D) as well as bioimageio.core's.

Test input, sample TIFF and cover: a central crop of the user's ``sample`` (a 2D image, or the
first plane of a stack), unless the sample lies in the project's shared data folder (the
ZSE-GAN z-scans may not be redistributed): then a synthetic defocused field
(:func:`synthetic_test_input`), and the card says so.
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
from .data import is_shared_data
from .disentangled_arch import DisentangledDeploy
from .evaluate import gain_warning
from .model import DisentangledModel, deblur

__all__ = ["DEPLOYABLES", "TEST_SIZE", "disentangled_axes", "synthetic_test_input",
           "test_input_from", "card_fields", "package_request"]

DEPLOYABLES = ("deblur2d",)
TEST_SIZE = 256
"""Side of the test input (rounded to a valid size; smaller samples give smaller inputs)."""

_VARIANT_TEXT = {
    "manifold1d": "manifold model with a one-dimensional blur code (the thesis's best)",
    "manifold": "manifold model (consistency, contrastive and cross-reconstruction losses)",
    "mlvae": "ML-VAE baseline (Gaussian codes, group evidence as a product of Gaussians)",
}


def disentangled_axes(model: DisentangledModel) -> list[AxisSpec]:
    """y and x: sizes ``min + n * 2**depth``, halo covering the receptive field."""
    step = model.multiple
    halo = int(math.ceil(model.receptive_radius() / step) * step)
    # bioimageio.spec requires (minimum output size - 2 * halo) >= 1
    lat_min = step * int(math.ceil((2 * halo + 1) / step))
    return [AxisSpec(id="y", min=lat_min, step=step, halo=halo),
            AxisSpec(id="x", min=lat_min, step=step, halo=halo)]


def _valid_size(axis: AxisSpec, at_most: int) -> int | None:
    if at_most < axis.min:
        return None
    return axis.min + (at_most - axis.min) // axis.step * axis.step


def synthetic_test_input(model: DisentangledModel, *, seed: int = 0, dz_um: float = 1.5
                         ) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic widefield image ``dz_um`` out of focus and its in-focus image (float32 YX,
    the smallest valid size >= :data:`TEST_SIZE`): a nuclei + membranes field
    (:func:`sharpstack.methods.disentangled.synthetic_series`)."""
    from .synth import synthetic_series

    ax = disentangled_axes(model)[0]
    size = ax.min if ax.min >= TEST_SIZE else \
        ax.min + int(math.ceil((TEST_SIZE - ax.min) / ax.step)) * ax.step
    series, _ = synthetic_series(1, size, dz_um=(-dz_um, 0.0, dz_um), seed=seed + 4242)
    return series.images[0, 2], series.images[0, 1]


def test_input_from(model: DisentangledModel, image: np.ndarray) -> np.ndarray:
    """A central crop of a 2D image with valid sizes (at most :data:`TEST_SIZE` per side)."""
    axes = disentangled_axes(model)
    out = []
    for a, n in zip(axes, image.shape):
        s = _valid_size(a, min(n, max(TEST_SIZE, a.min)))
        if s is None:
            raise InputError(f"the sample is {image.shape[0]}x{image.shape[1]} px; this model "
                             f"needs images of at least {a.min} px per side (its halo is "
                             f"{a.halo} px); give a larger sample")
        out.append(s)
    y0, x0 = (image.shape[0] - out[0]) // 2, (image.shape[1] - out[1]) // 2
    return np.ascontiguousarray(image[y0:y0 + out[0], x0:x0 + out[1]], dtype=np.float32)


def card_fields(model: DisentangledModel, *, halo: int, min_size: int, training_data: str,
                test_input_text: str) -> dict[str, Any]:
    """The fields of ``card.md`` (beside this module) that are the method's own (the exporter
    fills name, description, version, quality and runtimes)."""
    cfg = model.config
    if cfg.variant == "mlvae":
        loss_text = (f"the ML-VAE evidence lower bound: reconstruction of every image of a "
                     f"group of {cfg.group_size} images of one field from the group's identity "
                     f"(product of the Gaussian posteriors) and its own blur code, plus "
                     f"{cfg.kl_weight} x the KL terms of both codes (thesis Eq. 4.4).")
    else:
        parts = [f"consistency x {cfg.w_consistency}", f"contrastive (margin {cfg.margin}) x "
                 f"{cfg.w_contrastive}", f"cross-reconstruction x {cfg.w_cross}"]
        loss_text = (f"L_rec + beta ({' + '.join(parts)}) (thesis Eq. 4.5; a weight 0 is an "
                     f"ablation).")
        if cfg.w_deblur > 0:
            loss_text += (f" Plus sharpstack's supervised deblurring term (not in the "
                          f"thesis), {cfg.w_deblur} x L1(D(I_a, B_b), b) wherever the partner "
                          f"b is the in-focus plane of a's field, not delayed by beta; the "
                          f"best epoch is then chosen by this L1 on validation fields (the "
                          f"SSIM of the reconstruction loss favours keeping the input's "
                          f"noise).")
        why = ("With the thesis's losses to the end, the reconstruction term (D(I_x, B_x) = x) "
               "held the deploy path at the identity on a real defocus series whose blur codes "
               "barely differ between planes (sharpstack's paired benchmark: 28.66 dB, the "
               "blurry input's, against 29.21 dB trained this way).")
        if cfg.supervised >= 1:
            loss_text = (f"sharpstack's supervised recipe, not the thesis's losses (issue 22): "
                         f"every step trains the deploy path alone, L1(D(I_a, B_f), f) with f "
                         f"the in-focus plane of a's field at the same crop; the thesis's "
                         f"network and code split are kept. {why} `--supervised 0` trains "
                         f"with the thesis's losses: " + loss_text)
        elif cfg.supervised > 0:
            loss_text += (f" Then sharpstack's supervised phase (not in the thesis): the last "
                          f"{round(100 * cfg.supervised)}% of the steps train the deploy path "
                          f"alone, L1(D(I_a, B_f), f) with f the in-focus plane of a's field, "
                          f"without the thesis's losses. {why}")
    if cfg.recon_loss == "vgg":
        recon_text = (f"VGG-16 perceptual loss (features {cfg.vgg_layers} of a user-supplied "
                      f"torchvision vgg16 state dict), as in the thesis.")
        recon_dev = "none (VGG-16 perceptual loss with user-supplied weights)."
    else:
        recon_text = (f"{cfg.ssim_alpha} (1 - SSIM) + {round(1 - cfg.ssim_alpha, 4)} L1 "
                      f"(Zhao et al. 2017).")
        recon_dev = ("SSIM + L1 instead of the thesis's VGG-16 perceptual loss, whose weights "
                     "cannot be downloaded here (`--recon-loss vgg --vgg-weights FILE` trains "
                     "with user-supplied VGG-16 weights).")
    distance_text = (
        "||a - b|| / sqrt(length of the code) (the thesis: \"Euclidean distance normalized by "
        "vector length\"; this reading keeps a meaningful distance for the 1-D blur code)."
        if cfg.distance == "rms" else
        "||a/|a| - b/|b|||, Euclidean distance of the codes scaled to unit length.")
    hist = model.result.history if model.result is not None else []
    return dict(
        variant_text=_VARIANT_TEXT[cfg.variant], n_train=len(model.split.get("train", [])),
        step=model.multiple, min_size=min_size, pmin=cfg.pmin, pmax=cfg.pmax, halo=halo,
        radius=model.receptive_radius(), channels=", ".join(str(c) for c in cfg.channels),
        id_channels=cfg.id_channels, blur_channels=cfg.code_blur_channels,
        arch_kwargs=json.dumps(model.deploy_kwargs()), loss_text=loss_text,
        recon_text=recon_text, norm_text=(
            "batch norm" if cfg.batch_norm else "a bias each (no batch norm, unlike the "
            "thesis; `--no-batch-norm`)"),
        lr=cfg.lr, lr_decay=cfg.lr_decay,
        lr_decay_every=cfg.lr_decay_every, epochs=len(hist), steps=cfg.steps_per_epoch,
        batch=cfg.batch_size, patch=cfg.patch_size,
        best_epoch=model.result.best_epoch if model.result is not None else "?",
        training_data=training_data or "not recorded", test_input_text=test_input_text,
        recon_dev=recon_dev, distance_text=distance_text, arch_text=_ARCH_TEXT[
            cfg.architecture].format(skip=cfg.skip_channels) + " " + _RESIDUAL_TEXT[
            bool(cfg.arch_kwargs()["residual"])] + " " + _ENSEMBLE_TEXT[
            bool(cfg.self_ensemble)],
        beta_rate=cfg.beta_rate, beta_full=cfg.beta_full,
        beta_full_pct=round(100 * cfg.beta_full, 2), p_focus=cfg.p_focus,
        kl_weight=cfg.kl_weight)


_ARCH_TEXT = {
    "skips": ("Architecture `skips` (sharpstack's default, not the thesis's): the identity "
              "branch has its own blocks, the blur branch its own (the thesis shares the first "
              "blocks), and the identity features of every resolution ({skip} channels each, "
              "a linear 1x1 head before each pooling) reach the decoder level of the same "
              "resolution, which also receives the blur code again. These skip features are "
              "part of the identity code: the contrastive, consistency and cross-"
              "reconstruction losses act on them too, so blur cannot pass around the blur "
              "code unpenalised. Why: the thesis's identity code at 1/8 resolution could not "
              "reconstruct its own input (20-23 dB), so every output was capped below the "
              "blurry input."),
    "thesis": ("Architecture `thesis`: shared blocks, then one identity and one blur head "
               "(the thesis's network; sharpstack's default adds multi-scale identity "
               "features)."),
}


_RESIDUAL_TEXT = {
    True: ("Residual decoder (sharpstack's default, not the thesis's): the decoder's last "
           "block also sees the input image and its output is added to it, with the last "
           "convolution starting at zero, so the untrained network returns its input and "
           "training learns the change from one defocus to another; the input is no part "
           "of the identity or blur code. Why: the thesis's decoder redraws every image "
           "through the codes and lost detail that the blurry input still had."),
    False: ("The decoder redraws the image from the codes (the thesis's decoder; "
            "sharpstack's default corrects the input instead)."),
}


_ENSEMBLE_TEXT = {
    True: ("Self-ensemble (sharpstack's default, not the thesis's): the packaged network "
           "returns the mean of its outputs for the 8 flips and 90-degree rotations of the "
           "image, each turned back (the augmentations it was trained with); 8 passes per "
           "image. Why: on the real z-scans benchmark it added 0.07 dB / 0.003 SSIM at no "
           "training cost."),
    False: "One pass per image (no self-ensemble).",
}


def _held_apart_text(gain: dict[str, Any] | None) -> str:
    if not gain:
        return "not measured (the run held no field apart)."
    verdict = ("**it does not beat its input there: its output may be worse than the image "
               "it is given**" if gain_warning(gain, "-") else "it beats its input there")
    return (f"on the {gain['fields']} field(s) training held apart, every out-of-focus plane "
            f"against its in-focus plane: PSNR {gain['psnr_input_db']:.2f} dB (input) -> "
            f"{gain['psnr_deblurred_db']:.2f} dB (this model), SSIM {gain['ssim_input']:.3f} "
            f"-> {gain['ssim_deblurred']:.3f}; {verdict}.")


def package_request(trained, sample: Path, deployable: str, *, workdir: Path) -> PackageRequest:
    """The package request of a trained disentangled run (``methods._base.Trained``).

    ``sample``: a 2D image (YX) or a stack (ZYX: its first plane is used) of the training
    kind. Its central crop becomes the test input, unless it lies in the shared data folder
    (then a synthetic defocused field is used, see the module docstring).
    """
    from ...export.covers import panels_png
    from ...io import check_finite, read_stack

    if deployable not in DEPLOYABLES:
        raise InputError(f"deployable must be one of {', '.join(DEPLOYABLES)}; got "
                         f"{deployable!r}")
    model: DisentangledModel = trained.model
    gain = trained.record.get("held_apart_gain")
    notice = gain_warning(gain, f"the {gain.get('fields') if gain else 0} field(s) its "
                          f"training held apart")
    if notice:
        import warnings

        warnings.warn(notice, stacklevel=2)
    data = read_stack(sample)
    dims = "".join(str(d) for d in data.dims).upper()
    if dims not in ("YX", "ZYX"):
        raise InputError(f"{sample} has axes {dims}; give a one-channel 2D image (YX) or "
                         f"z-stack (ZYX) of the training kind")
    check_finite(data, str(sample))
    shared = is_shared_data(sample) or bool(trained.record.get("shared_data"))
    panels, titles = [], []
    if shared:
        test_input, focused = synthetic_test_input(model)
        text = ("a synthetic widefield field (nuclei + membranes phantom) 1.5 um out of focus, "
                "not the training data: the training series may not be redistributed, so "
                "nothing of it is in this package.")
    else:
        plane = np.asarray(data.values if dims == "YX" else data.values[0], dtype=np.float32)
        test_input, focused = test_input_from(model, plane), None
        text = (f"a central crop of {Path(sample).name}"
                + ("" if dims == "YX" else " (its first plane)") + ".")
    restored = deblur(model, test_input)
    panels += [model.normalizer.before(test_input), restored]
    titles += ["input", "deblurred"]
    if focused is not None:
        panels.append(model.normalizer.before(focused))
        titles.append("in-focus (synthetic truth)")
    cover = panels_png(panels, titles, Path(workdir) / "cover.png")
    axes = disentangled_axes(model)
    kind = {"manifold1d": "1-D manifold", "manifold": "manifold", "mlvae": "ML-VAE"}[
        model.config.variant]
    training_data = trained.record.get("training_data", "")
    return PackageRequest(
        name=f"Disentangled deblurring 2D ({kind})",
        description=(
            "Removes defocus blur from 2D microscopy images: an autoencoder with separate "
            f"identity and blur codes ({kind} model) decodes the image's identity with the blur "
            "code of in-focus images."),
        module=model.deploy(), arch_source=Path(inspect.getfile(DisentangledDeploy)),
        arch_callable=DisentangledDeploy.__name__, arch_kwargs=model.deploy_kwargs(),
        axes=axes, test_input=test_input, normalizer=model.normalizer,
        card_template=resources.files(__package__).joinpath("card.md").read_text("utf-8"),
        card_fields={**card_fields(model, halo=axes[0].halo, min_size=axes[0].min,
                                   training_data=training_data, test_input_text=text),
                     "held_apart": _held_apart_text(gain)},
        covers=[cover],
        tags=["deblurring", "defocus", "disentangled-representation", "autoencoder",
              "restoration", "pytorch", "sharpstack", "2d"],
        input_description="2D image (one channel), out of focus",
        output_description="deblurred image, normalised intensities",
        training_data=training_data,
        stats_data=np.asarray(data.values, dtype=np.float32),
        stats_source=f"{Path(sample).name} (the export sample), shape {tuple(data.shape)}")
