"""Describe a trained DQLR as a bioimage.io package.

One deployable, ``stack``: a z-stack in, the restored stack of the same shape out, with the
whole method inside the exported network (:class:`~.dqlr_arch.DQLRDeploy`:
encoder per slice, recurrence over the ``window`` slices ending at each slice, nearest-codeword
lookup, generator). Its axes:

- ``z``: any number of slices (``min = 2 h + 1``, step 1), halo ``h = window - 1 +
  ensemble_predictions``: every output slice depends on itself and the ``h`` shallower
  slices only, so
  tiles along z that carry that halo reproduce the untiled result;
- ``y``, ``x``: multiples of ``max(2**n_down, 8)``, halo = the lateral receptive radius
  rounded up to ``2**n_down`` (:func:`~.dqlr_arch.halo_for`).

It claims bioimage.io, deepImageJ and ilastik (same shape in and out, standard
``scale_range``). QuPath is not claimed: it runs 2D models on image tiles, and DQLR needs
consecutive slices (its recurrence over z is the method; a per-slice model would drop it).
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ...export.package import AxisSpec, PackageRequest
from .selfcheck import gain_text, gain_warning
from .task import DQLRModel, restore

__all__ = ["DEPLOYABLES", "dqlr_axes", "card_fields", "package_request", "test_input_from"]

DEPLOYABLES = ("stack",)
"""The deployables (their consumer claims are declared by :class:`.plugin.DQLR`)."""

ARCH_SOURCE = Path(__file__).with_name("dqlr_arch.py")
"""The architecture file every package ships (it imports only torch; the name is kept so
that packages hold the same ``dqlr_arch.py`` as before)."""


def dqlr_axes(model: DQLRModel) -> list[AxisSpec]:
    """Space axes (z, y, x) with sizes and halos of the ``stack`` deployable."""
    lat_halo, z_halo = model.halo()
    step = max(model.lateral_multiple(), 8)
    # bioimageio.spec requires (minimum output size - 2 * halo) >= 1
    lat_min = step * int(math.ceil((2 * lat_halo + 1) / step))
    z_min = 2 * z_halo + 1
    return [AxisSpec(id="z", min=z_min, step=1, halo=z_halo),
            AxisSpec(id="y", min=lat_min, step=step, halo=lat_halo),
            AxisSpec(id="x", min=lat_min, step=step, halo=lat_halo)]


def test_input_from(stack: np.ndarray, axes: list[AxisSpec], *, lateral: int = 128,
                    z_extra: int = 4) -> np.ndarray:
    """A crop of ``stack`` of a valid input size: about ``lateral`` px (at least the minimum)
    around the centre, ``min + z_extra`` slices from the middle of the stack (the shallow
    and deep ends both matter; the middle holds both kinds of context). Axes shorter than
    ``min`` are padded by reflection."""
    pads = [(0, max(0, a.min - s)) for s, a in zip(stack.shape, axes)]
    if any(p[1] for p in pads):
        stack = np.pad(stack, pads, mode="reflect" if all(s > 1 for s in stack.shape)
                       else "edge")
    sl = []
    for s, a in zip(stack.shape, axes):
        target = min(s, max(a.min, a.min + z_extra if a.id == "z" else lateral))
        size = a.min + (target - a.min) // a.step * a.step
        start = (s - size) // 2
        sl.append(slice(start, start + size))
    return np.ascontiguousarray(stack[tuple(sl)])


def card_fields(model: DQLRModel, *, axes: list[AxisSpec], training_data: str,
                codebook: dict[str, float] | None = None,
                depth_model: dict[str, float] | None = None,
                input_gain: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fields of ``card.md`` (beside this module) that are DQLR's own (the exporter fills
    name, description, version, quality and runtimes)."""
    cfg = model.config
    z, y = axes[0], axes[1]
    hist = model.result.history
    if codebook:
        usage = (f"{codebook.get('train_codes_used', float('nan')):.0f} of {cfg.num_codes} "
                 f"codewords used per training batch in the last epoch, perplexity "
                 f"{codebook.get('train_perplexity', float('nan')):.1f} (validation: "
                 f"{codebook.get('val_perplexity', float('nan')):.1f})")
    else:
        usage = "not recorded" if cfg.quantize else "no codebook (ablation without quantisation)"
    direction = ("slice 0 is the shallowest (depth grows with z)" if cfg.depth_increases_with_z
                 else "the last slice is the shallowest (depth grows towards slice 0)")
    if cfg.ensemble_predictions:
        output_text = (f"the mean of the reconstruction of each slice (from the window of "
                       f"{cfg.window} slices ending at it) and its {cfg.ensemble_predictions} "
                       f"prediction(s) from the windows ending 1..{cfg.ensemble_predictions} "
                       f"slice(s) before it")
    else:
        output_text = (f"the reconstruction of each slice from the window of {cfg.window} "
                       f"slices ending at it")
    if cfg.pairs == "shallow_to_deep":
        pairs_text = (
            f"shallow-to-deep pairs: the depth degradation of every training stack was "
            f"measured (signal level, extra lateral blur and noise per slice, from the "
            f"slice means and power spectra), clips from the shallowest "
            f"{cfg.shallow_fraction:.0%} of a stack were degraded to the measured look of a "
            f"random deeper depth (lateral blur, {cfg.axial_ratio:g} x that along z, "
            f"attenuation, Gaussian noise up to the deep noise level) and the network learned "
            f"to return the clip as acquired")
        if depth_model:
            pairs_text += (f"; measured: signal at the deepest slice "
                           f"{depth_model.get('signal_deep', float('nan')):.2f} x the shallow "
                           f"one, extra blur sigma {depth_model.get('sigma_deep_px', 0.0):.2f}"
                           f" px")
    else:
        pairs_text = ("the paper's self-reconstruction: the targets are the acquired slices "
                      "themselves")
    return dict(
        pairs_text=pairs_text, self_check=gain_text(input_gain), upsample=cfg.upsample,
        output_text=output_text, window=cfg.window, z_halo=z.halo, z_min=z.min,
        lat_halo=y.halo, lat_min=y.min,
        lat_step=y.step, direction=direction, pmin=cfg.pmin, pmax=cfg.pmax,
        net_kwargs=json.dumps(cfg.net_kwargs()), hidden=cfg.hidden, n_down=cfg.n_down,
        down_factor=2 ** cfg.n_down, res_blocks=cfg.res_blocks, code_dim=cfg.code_dim,
        num_codes=cfg.num_codes, rnn_cell="ConvLSTM" if cfg.rnn_cell == "lstm" else "ConvGRU",
        rnn_hidden=cfg.rnn_hidden, decay=cfg.decay, eps=cfg.eps, commitment=cfg.commitment,
        restart_threshold=cfg.restart_threshold, n_predict=cfg.n_predict,
        lambda_ssim=cfg.lambda_ssim, lambda_vq=cfg.lambda_vq, ssim_sigma=cfg.ssim_sigma,
        lr=cfg.lr, batch_size=cfg.batch_size, patch_size=cfg.patch_size,
        epochs=len(hist), best_epoch=model.result.best_epoch,
        steps=(cfg.steps_per_epoch or "all clips once"), n_clips=cfg.n_clips,
        quantize_text=("yes (DQLR)" if cfg.quantize else
                       "no: this is the ablation without quantisation"),
        codebook=usage, training_data=training_data or "not recorded")


def package_request(trained, sample: Path, deployable: str, *, workdir: Path) -> PackageRequest:
    """The package request of a trained DQLR run (``methods._base.Trained``).

    The test input (and sample TIFF) is a crop of ``sample`` (a raw z-stack of the training
    kind, or a folder of them: its first stack); the cover (written into ``workdir``) shows
    the deepest slice and an xz section of the crop before and after restoration.
    """
    from ...io import check_finite, read_stack

    if deployable not in DEPLOYABLES:
        raise InputError(f"deployable must be one of {', '.join(DEPLOYABLES)}; got "
                         f"{deployable!r}")
    model: DQLRModel = trained.model
    sample = Path(sample)
    if sample.is_dir() and sample.suffix.lower() not in (".zarr",):
        files = sorted(f for f in sample.iterdir()
                       if f.suffix.lower() in (".tif", ".tiff", ".npy"))
        if not files:
            raise InputError(f"sample folder {sample} holds no .tif/.npy stack; give a z-stack")
        sample = files[0]
    data = read_stack(sample)
    if tuple(data.dims) != ("z", "y", "x"):
        raise InputError(f"{sample} must be a one-channel ZYX stack, got "
                         f"{''.join(data.dims).upper()}; give a z-stack of the training kind")
    check_finite(data, str(sample))
    raw = np.asarray(data.values, dtype=np.float32)
    axes = dqlr_axes(model)
    test_input = test_input_from(raw, axes)
    restored = restore(model, test_input)
    shown_in = model.normalizer.before(test_input)
    deep = -1 if model.config.depth_increases_with_z else 0
    cover = _cover(shown_in, restored, deep, Path(workdir) / "cover.png")
    kind = "DQLR" if model.config.quantize else "DQLR without quantisation (ablation)"
    training_data = trained.record.get("training_data", "")
    gain = trained.record.get("input_gain")
    notice = gain_warning(gain)
    if notice:
        import warnings

        warnings.warn(notice, stacklevel=2)
    return PackageRequest(
        name=f"{kind} deep z-stack enhancement",
        description=(
            f"{kind}: restores contrast and sharpness of the deeper slices of fluorescence "
            "z-stacks (quantised latent codes of consecutive slices); input and output are "
            "z-stacks of the same shape."),
        module=model.deploy(), arch_source=ARCH_SOURCE, arch_callable="DQLRDeploy",
        arch_kwargs=model.deploy_kwargs(), axes=axes, test_input=test_input,
        normalizer=model.normalizer,
        card_template=resources.files(__package__).joinpath("card.md").read_text("utf-8"),
        card_fields=card_fields(model, axes=axes, training_data=training_data,
                                codebook=trained.record.get("codebook"),
                                depth_model=trained.record.get("depth_model"),
                                input_gain=gain),
        covers=[cover],
        tags=["dqlr", "deblurring", "denoising", "restoration", "vector-quantization",
              "confocal", "fluorescence-light-microscopy", "pytorch", "sharpstack", "3d"],
        input_description="fluorescence z-stack, as acquired (one channel)",
        output_description="restored stack, normalised intensities (about 0 background, "
                           "1 bright structures)",
        training_data=training_data, quality_format=".3f",
        stats_data=raw, stats_source=f"{sample.name} (the export sample), shape {raw.shape}")


def _cover(stack_in: np.ndarray, stack_out: np.ndarray, deep: int, path: Path) -> Path:
    """A 2:1 PNG: the deepest slice before/after (top) and the central xz section (bottom)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...io import write_file_atomic

    def clip01(a):
        lo, hi = np.percentile(a, [0.5, 99.8])
        return np.clip((a - lo) / (hi - lo + 1e-12), 0, 1)

    fig, axs = plt.subplots(2, 2, figsize=(8.0, 4.0), dpi=100,
                            gridspec_kw={"height_ratios": [3, 1]})
    y = stack_in.shape[1] // 2
    for j, (s, title) in enumerate(((stack_in, "input"), (stack_out, "DQLR"))):
        axs[0, j].imshow(clip01(s[deep]), cmap="magma", interpolation="nearest")
        axs[0, j].set_title(f"{title}: deepest slice", fontsize=9)
        axs[1, j].imshow(clip01(s[:, y, :]), cmap="magma", interpolation="nearest",
                         aspect="auto")
        axs[1, j].set_title("xz", fontsize=8)
        for a in axs[:, j]:
            a.set_xticks([])
            a.set_yticks([])
    fig.tight_layout()
    out = write_file_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return out
