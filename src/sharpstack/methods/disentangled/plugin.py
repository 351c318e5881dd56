"""Disentangled deblurring behind the method interface
(:class:`~sharpstack.methods._base.Method`): the settings, inputs and options of
``sharpstack train disentangled``, the ``deblur2d`` deployable, the demo, the benchmark's
options and the citations; the work is done by the sibling modules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import InputError
from ...normalize import PercentileNormalizer
from .._base import (Demo, Deployable, Input, Method, Option, SynthResult, Trained,
                     loop_options)
from .data import is_shared_data, read_defocus_series
from .disentangled_arch import DisentangledAE
from .evaluate import evaluate, figure, gain_warning, score, validation_gain
from .model import DisentangledModel
from .settings import DisentangledSettings, DisentangledSynth
from .synth import synthesize
from .task import train_disentangled

__all__ = ["Disentangled"]


def _parse_ints(text) -> list[int]:
    if isinstance(text, (list, tuple)):
        return [int(v) for v in text]
    try:
        return [int(v) for v in str(text).replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise InputError(f"expected integers separated by commas, like 16,32,64; got "
                         f"{text!r}") from None


def _photons(value: float) -> float | None:
    return None if value == 0 else value


class Disentangled(Method):
    """Disentangled-representation deblurring behind the method interface."""

    name = "disentangled"
    title = "Disentangled-representation deblurring (Ritsema, MSc thesis, U. Twente 2023)"
    summary = ("deblurs 2D images: an autoencoder with separate identity and blur codes, "
               "trained on defocus series, decodes an image's identity with an in-focus blur "
               "code")
    settings_model = DisentangledSettings
    # runs recorded before the identity skips existed are the thesis's network; before the
    # residual decoder, a decoder that redraws the image; before the batch_norm option, with
    # batch norm (the thesis's); before the supervised recipe, the thesis's losses to the end;
    # before the self-ensemble, one pass of the network
    recorded_before = {"architecture": "thesis", "residual": False, "w_deblur": 0.0,
                       "batch_norm": True, "supervised": 0.0, "self_ensemble": False}
    inputs = (Input("series", "Defocus series: a folder of z-stacks (one field of view each, "
                    "ZYX, all the same shape) or one such stack.", kind="file_or_folder"),)
    options = (
        Option("variant", "variant", str, "manifold1d (1-D blur code, the thesis's best), "
               "manifold, or mlvae (the ML-VAE baseline)."),
        Option("focus-plane", "focus_plane", int, "1-based in-focus plane of every stack "
               "(default: the sharpest plane by the focus measure FM)."),
        Option("channels", "channels", str, "Channels per encoder block, e.g. 16,32,64 (the "
               "thesis: 64,128,256,512).", parse=_parse_ints),
        Option("architecture", "architecture", str, "skips (default: multi-scale identity "
               "features to the decoder) or thesis (the thesis's network, the ablation)."),
        Option("residual", "residual", bool, "--residual (default): the decoder corrects "
               "its input (identity when untrained); --no-residual: the thesis's decoder."),
        Option("batch-norm", "batch_norm", bool, "--batch-norm: batch normalisation after "
               "every convolution (the thesis's); --no-batch-norm (default): convolutions with "
               "biases."),
        Option("self-ensemble", "self_ensemble", bool, "--self-ensemble (default): the package "
               "averages over the 8 flips and rotations of the image (8x the inference "
               "time); --no-self-ensemble: one pass."),
        Option("skip-channels", "skip_channels", int, "Channels of the identity skip features "
               "per resolution (architecture skips; default 8)."),
        Option("id-channels", "id_channels", int, "Channels of the identity code (thesis 512)."),
        Option("blur-channels", "blur_channels", int, "Length of the blur code (manifold, "
               "mlvae; default: id-channels)."),
        Option("patch-size", "patch_size", int, "Training crop (multiple of 2**blocks)."),
        Option("margin", "margin", float, "Contrastive margin (the thesis: 0.6)."),
        Option("distance", "distance", str, "Code distance: rms or unit."),
        Option("beta-full", "beta_full", float, "Fraction of training at which beta reaches 1."),
        Option("w-consistency", "w_consistency", float, "Consistency-loss weight."),
        Option("w-contrastive", "w_contrastive", float, "Contrastive-loss weight (0: ablation)."),
        Option("w-cross", "w_cross", float, "Cross-reconstruction weight (0: ablation)."),
        Option("w-deblur", "w_deblur", float, "Weight of the supervised deblurring term "
               "(L1 against the in-focus plane; default 4; 0: the thesis's losses)."),
        Option("supervised", "supervised", float, "Fraction of the steps, at the end, that "
               "train the deploy path alone on the in-focus planes (default 1: the whole "
               "run; 0: the thesis's losses to the end)."),
        Option("recon-loss", "recon_loss", str, "ssim_l1 (default, no downloads) or vgg."),
        Option("vgg-weights", "vgg_weights", str, "State dict of torchvision's vgg16 "
               "features for --recon-loss vgg."),
        Option("kl-weight", "kl_weight", float, "ML-VAE KL weight."),
        Option("group-size", "group_size", int, "ML-VAE images per group."),
        Option("p-focus", "p_focus", float, "Probability that a pair's partner is in focus."),
        Option("val-fraction", "val_fraction", float, "Fraction of fields for validation."),
        Option("test-fraction", "test_fraction", float, "Fraction of fields held out."),
        *loop_options(DisentangledSettings, epochs="Epochs (the thesis: 400).",
                      batch_size="Groups per batch.",
                      lr="Initial Adam learning rate (x0.98 every 5 epochs).",
                      patience="Early stopping patience (epochs).",
                      device="cpu, cuda, ...; default: GPU if present."),
    )
    deployables = (
        Deployable("deblur2d", "one 2D image (or each plane of a stack) in, the deblurred "
                   "image of the same size out", ("bioimageio", "deepimagej", "ilastik",
                                                  "qupath")),
    )
    synth_model = DisentangledSynth
    synth_options = (
        Option("identities", "identities", int, "Fields of view of the training series."),
        Option("size", "size", int, "Lateral size (pixels)."),
        Option("dz-max", "dz_max", float, "Largest defocus (micrometres)."),
        Option("dz-step", "dz_step", float, "Plane spacing (micrometres)."),
        Option("pixel", "pixel_um", float, "Pixel size (micrometres)."),
        Option("na", "na", float, "Objective NA."),
        Option("photons", "photons", float, "Photons at the brightest pixel; 0 = no shot "
               "noise.", parse=_photons),
        Option("read-noise", "read_noise", float, "Gaussian read noise."),
        Option("sample-dz", "sample_dz", float, "Defocus of the 2D sample (micrometres)."),
        Option("seed", "seed", int, "Random seed."),
    )
    demo = Demo(
        synth={"identities": 24, "size": 128, "dz_max": 3.0, "dz_step": 0.5, "seed": 0},
        settings={"variant": "manifold1d", "channels": [8, 16, 32], "id_channels": 16,
                  "patch_size": 48, "epochs": 96, "steps_per_epoch": 40, "batch_size": 8,
                  "p_focus": 0.5, "seed": 0},
        predict_with="deblur2d",
        about=("1-D-blur-code manifold model trained on a synthetic widefield defocus series "
               "(24 nuclei + membranes fields of 128x128 px, 13 planes from -3 to +3 um, NA 1.0, "
               "Poisson + Gaussian noise), reduced network (8-16-32 channels, 48 px crops, "
               "3840 steps of the supervised recipe, about 6 minutes on one core); a "
               "held-apart field defocused by 2 um deblurred by the package; "
               "PSNR/SSIM against its in-focus plane (CARE protocol)."),
    )
    bench_options = (
        Option("dataset", "datasets", list[str], "synthetic, real (repeat; default both).",
               parse=tuple),
        Option("model", "models", list[str], "mlvae, manifold, manifold1d, no_cross, "
               "no_contrastive (the thesis's losses), supervised1d (the train command's "
               "recipe) (repeat; default all five thesis models); with "
               "--pairs: manifold1d (the train command's recipe), manifold1d_plane (the "
               "same on every plane after its plane's linear filter: told the plane, as RL "
               "is), thesis_losses, thesis_manifold1d, mlvae, manifold (manifold1d and "
               "thesis_manifold1d unless given).", parse=tuple),
        Option("epochs", "epochs", int, "Epochs per model (default 10; the thesis: 400)."),
        Option("steps", "steps_per_epoch", int, "Batches per epoch (default 45)."),
        Option("batch", "batch_size", int, "Groups per batch (default 8)."),
        Option("patch", "patch_size", int, "Training crop (default 64; the thesis: 128)."),
        Option("channels", "channels", str, "Encoder channels (default 16,32,64; the thesis: "
               "64,128,256,512).", parse=_parse_ints),
        Option("id-channels", "id_channels", int, "Identity-code channels (default 128; the "
               "thesis: 512)."),
        Option("blur-channels", "blur_channels", int, "Blur-code length of manifold and "
               "mlvae (default: id-channels)."),
        Option("synthetic-fields", "n_synthetic", int, "Fields of the synthetic series "
               "(default 48)."),
        Option("jobs", "jobs", int, "Trainings at once in worker processes (default 2: two "
               "single-thread trainings use a 2-core CPU best)."),
        Option("device", "device", str, "cpu or cuda; default GPU if present."),
        Option("seed", "seed", int, "Random seed (default 0)."),
        Option("keep-runs", "keep_runs", bool, "Keep every training folder.",
               default=False),
        Option("architecture", "architecture", str, "Network of every model: skips "
               "(default, multi-scale identity features) or thesis (the thesis's network)."),
        Option("pairs", "pairs", bool, "Instead of the thesis's tables: the real paired "
               "benchmark (defocus_pairs: train on one part of the field, score deblurring "
               "per |dz| against the in-focus plane on another, beside the blurry input, "
               "Richardson-Lucy and least-squares linear filters); --model takes manifold1d, "
               "manifold1d_plane, thesis_manifold1d, mlvae, manifold (without it: manifold1d "
               "and thesis_manifold1d).", default=False),
        Option("card", "card", str, "Instead of the benchmark: score the model that "
               "`sharpstack zoo RECIPE` built (in --built) on its held-out fields and write "
               "the quality JSON to the file --out (for `sharpstack export ... --quality`)."),
        Option("built", "built", str, "Output folder of `sharpstack zoo` (with --card; "
               "default zoo/built/<recipe id>)."),
    )
    bench_threads = 1

    citations = (
        {"text": "Ritsema, S. A Disentangled Representation Learning Approach for Deblurring "
                 "Microscopy Images. MSc thesis, University of Twente, 2023 (University of "
                 "Twente student theses repository).",
         "url": "https://essay.utwente.nl/"},
        {"text": "Fumero, Cosmo, Melzi & Rodola. Learning disentangled representations via "
                 "product manifold projection. ICML 2021.",
         "doi": "10.48550/arXiv.2103.01638"},
        {"text": "Bouchacourt, Tomioka & Nowozin. Multi-Level Variational Autoencoder: "
                 "Learning Disentangled Representations from Grouped Observations. arXiv "
                 "1705.08841, 2017 (AAAI 2018).",
         "doi": "10.48550/arXiv.1705.08841"},
    )

    # ------------------------------------------------------------------ training
    def train(self, inputs: Sequence[Path], settings: DisentangledSettings, *, out_dir: Path,
              resume: bool = False, progress: bool = False,
              voxel_size: Mapping[str, float] | None = None) -> Trained:
        (src,) = inputs
        focus = settings.focus_plane - 1 if settings.focus_plane else None
        series = read_defocus_series(src, focus=focus, voxel_size=voxel_size)
        if voxel_size and voxel_size.get("z"):
            series.plane_spacing = float(voxel_size["z"])
        model = train_disentangled(series, settings.config(), out_dir=out_dir, resume=resume,
                                   progress=progress)
        spacing = (f", plane spacing {series.plane_spacing:g} um" if series.plane_spacing
                   else "")
        held = [series.names.index(n) for n in (model.split.get("test") or
                                                 model.split.get("val") or [])]
        gain = validation_gain(model, series.images[held], series.focus[held]) if held else None
        notice = gain_warning(gain, f"its {len(held)} held-apart field(s)")
        if notice:
            import warnings

            warnings.warn(notice, stacklevel=2)
        record = {
            "normalizer": {"pmin": model.normalizer.pmin, "pmax": model.normalizer.pmax,
                           "eps": model.normalizer.eps},
            "split": model.split, "focus": [int(f) for f in series.focus],
            "focus_found": settings.focus_plane is None,
            "series_source": str(Path(src).resolve()),
            "shared_data": is_shared_data(src),
            "held_apart_gain": gain,
            "training_data": (
                f"{series.n_identities} defocus series of {series.n_planes} planes of "
                f"{series.images.shape[2]}x{series.images.shape[3]} px from "
                f"{Path(src).name}{spacing}; in-focus plane "
                + (f"{settings.focus_plane} (given)" if settings.focus_plane else
                   "found per series by the focus measure FM")
                + f"; split by field (seed {settings.seed}): {len(model.split['train'])} "
                  f"training, {len(model.split['val'])} validation, "
                  f"{len(model.split['test'])} held out"),
        }
        tensors = {"net": model.net.state_dict(),
                   "focus": {"code": torch.from_numpy(model.focus_code.copy())}}
        return Trained(settings=settings, model=model, result=model.result, record=record,
                       tensors=tensors)

    def load(self, settings: DisentangledSettings, record, tensors, result) -> Trained:
        cfg = settings.config()
        net = DisentangledAE(**cfg.arch_kwargs())
        try:
            net.load_state_dict(tensors["net"])
            code = tensors["focus"]["code"].detach().cpu().numpy().astype(np.float32)
        except (KeyError, RuntimeError) as exc:
            raise InputError(f"the run's weights do not fit its disentangled settings "
                             f"({str(exc).splitlines()[0]}); the run folder is damaged: train "
                             "again") from None
        if code.shape != (cfg.code_blur_channels,):
            raise InputError(f"the run's in-focus blur code has shape {code.shape}, expected "
                             f"({cfg.code_blur_channels},); the run folder is damaged")
        model = DisentangledModel(net=net.eval(), config=cfg,
                                  normalizer=PercentileNormalizer(**record["normalizer"]),
                                  focus_code=code, split=dict(record.get("split", {})),
                                  result=result)
        return Trained(settings=settings, model=model, result=result, record=record,
                       tensors=tensors)

    # ------------------------------------------------------------------ data, demo
    def package_request(self, trained: Trained, sample: Path, deployable: str, *,
                        workdir: Path):
        from .package import package_request

        return package_request(trained, sample, deployable, workdir=workdir)

    def synthesize(self, options: DisentangledSynth) -> SynthResult:
        return synthesize(options)

    def evaluate(self, trained: Trained, synth: SynthResult) -> dict[str, Any]:
        return evaluate(trained, synth)

    def score(self, synth: SynthResult, restored) -> dict[str, float]:
        res = score(synth, restored)
        notice = gain_warning({"psnr_input_db": res["psnr_input_db"],
                               "psnr_deblurred_db": res["psnr_restored_db"],
                               "ssim_input": res["ssim_input"],
                               "ssim_deblurred": res["ssim_restored"]}, "the demo's sample")
        if notice:
            import warnings

            warnings.warn(notice, stacklevel=2)
        return res

    def figure(self, synth: SynthResult, restored) -> list[tuple[str, Any]]:
        return figure(synth, restored)

    # ------------------------------------------------------------------ benchmark
    def bench(self, out_dir: Path, *, progress: bool = False, **options: Any) -> dict[str, Any]:
        from ...bench._jobs import card_mode, stderr_log
        from .bench import card_quality, run_disentangled_bench

        card, built = options.pop("card", None), options.pop("built", None)
        arch = options.pop("architecture", None)
        if arch is not None:
            if arch not in ("skips", "thesis"):
                raise InputError(f"--architecture must be skips or thesis, got {arch!r}")
            options["extra"] = {**options.get("extra", {}), "architecture": arch}
        if options.pop("pairs", False):
            from .pairs import run_pairs_bench

            allowed = {"models", "epochs", "steps_per_epoch", "batch_size", "patch_size",
                       "channels", "id_channels", "device", "seed", "extra"}
            bad = sorted(set(options) - allowed)
            if bad or card is not None:
                raise InputError(f"--pairs does not take {', '.join(bad) or '--card'}")
            models = options.pop("models", None) or ("manifold1d", "thesis_manifold1d")
            cfg = {**options.pop("extra", {}), **options}
            if "channels" in cfg:
                cfg["channels"] = list(cfg["channels"])
            return run_pairs_bench(out_dir, models=models, config=cfg,
                                   on_step=stderr_log() if progress else None)
        scored = card_mode(card, built, options, out_dir, card_quality)
        if scored is not None:
            return scored
        return run_disentangled_bench(out_dir, progress=progress,
                                      on_step=stderr_log() if progress else None, **options)
