"""DQLR: deep quantized latent representation for enhancing deep z-stack slices.

Gupta, Aich, Rodriguez, Reddy & Roy-Chowdhury, "Deep quantized representation for enhanced
reconstruction", ISBI 2020 (arXiv:2107.14368). Deeper slices of confocal z-stacks lose contrast
and sharpness. DQLR encodes every slice to a latent map (encoder ``E``), runs a convolutional
recurrent network ``R`` over consecutive slices from shallow to deep, replaces every code by
its nearest codeword of a learned dictionary of ``k = 128`` codewords (``Q``, VQ-VAE) and
decodes (generator ``G``) the current slice and the following ones. There is no clean ground
truth: the targets are the acquired slices themselves; the quantisation is what removes the
noise (and, the paper argues, the blur) component, because one dictionary learned over all
depths serves the deep slices too. Loss = MSE + λ_s (1 - SSIM, Gaussian window) + λ_q VQ
loss. The ablation is the same model with ``Q`` bypassed (``quantize=False``).

Training samples are clips of ``window + n_predict`` consecutive slices (random lateral
patches, any of the user's stacks, flips and 90° rotations): the recurrence runs over the
first ``window`` slices, the code of the last one reconstructs it and ``n_predict`` further
recurrent steps predict the next slices. The exported module
(:class:`~.dqlr_arch.DQLRDeploy`) restores every slice from the ``window``
slices ending at it (optionally averaged with the predictions of that slice from the
``ensemble_predictions`` preceding windows), so its z halo is ``window - 1`` (plus
``ensemble_predictions``).

This module declares the method (inputs, options, deployables, demo) and reads the user's
files; settings, data, task, network, package, synthetic protocol, measures and benchmark are
its siblings in this folder. It never writes files other than through the training loop's
``out_dir`` and never parses CLI arguments (DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ...normalize import PercentileNormalizer
from .._base import (Demo, Deployable, Input, Method, Option, SynthResult, Trained,
                     loop_options)
from .data import read_training_stacks
from .dqlr_arch import DQLRNet
from .evaluate import DEPTH_BINS, score_depth_bins
from .settings import DQLRConfig
from .synth import DQLRSynth, synthesize
from .task import DQLRModel, restore, train_dqlr

__all__ = ["DQLR"]


def _parse_shape(text: str) -> tuple[int, int, int]:
    try:
        vals = tuple(int(v) for v in str(text).replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise InputError(f"--shape must be integers like 48,128,128; got {text!r}") from None
    if len(vals) != 3:
        raise InputError(f"--shape needs 3 integers (Z,Y,X), got {text!r}")
    return vals  # type: ignore[return-value]


def _parse_kinds(values) -> tuple[str, ...]:
    return tuple(k.strip() for v in values for k in str(v).split(",") if k.strip())


class DQLR(Method):
    """DQLR behind the method interface."""

    name = "dqlr"
    title = "DQLR (Gupta et al., ISBI 2020)"
    summary = ("enhancement of the deeper slices of z-stacks (contrast and sharpness lost with "
               "depth) through quantised latent codes of consecutive slices; no ground truth")
    citations = ({"text": "Gupta, Aich, Rodriguez, Reddy & Roy-Chowdhury. Deep quantized "
                          "representation for enhanced reconstruction. IEEE ISBI 2020.",
                  "doi": "10.48550/arXiv.2107.14368"},
                 {"text": "van den Oord, Vinyals & Kavukcuoglu. Neural discrete representation "
                          "learning. NeurIPS 2017.", "doi": "10.48550/arXiv.1711.00937"})
    settings_model = DQLRConfig
    # runs recorded before the bilinear generator existed were trained with nearest upsampling
    # (and, before shallow-to-deep pairs, on the paper's self-reconstruction pairs)
    recorded_before = {"upsample": "nearest", "pairs": "self"}
    inputs = (Input("stacks", "One z-stack (TIFF, OME-Zarr, .npy; axes ZYX) or a folder of "
                    "z-stacks of the same kind.", kind="file_or_folder"),)
    options = (
        Option("window", "window", int, "Slices the recurrence sees per output slice (z halo "
               "= window - 1)."),
        Option("n-predict", "n_predict", int, "Following slices predicted from each clip."),
        Option("ensemble", "ensemble_predictions", int, "Average each slice's reconstruction "
               "with its N predictions from shallower windows (0: reconstruction only)."),
        Option("deep-first", "depth_increases_with_z", bool, "--deep-first: the LAST slice "
               "is the shallowest (depth grows towards slice 0); --no-deep-first: slice 0 is "
               "the shallowest (depth_increases_with_z).", parse=lambda v: not v),
        Option("pairs", "pairs", str, "Training pairs: shallow_to_deep (default: shallow "
               "clips degraded to the measured look of deeper slices, the clip itself the "
               "target) or self (the paper: reproduce the acquired slices)."),
        Option("shallow-fraction", "shallow_fraction", float, "shallow_to_deep: fraction of "
               "the stack (shallow end) the clean clips come from (default 1/3)."),
        Option("axial-ratio", "axial_ratio", float, "shallow_to_deep: extra axial blur "
               "(slices) per px of extra lateral blur (default 1)."),
        Option("upsample", "upsample", str, "Generator resize: bilinear (default) or nearest "
               "(the first version; leaves a texture on the latent grid)."),
        Option("quantize", "quantize", bool, "Vector-quantise the latent codes (the paper); "
               "--no-quantize trains the paper's ablation without quantisation."),
        Option("codes", "num_codes", int, "Codebook size k (the paper: 128)."),
        Option("code-dim", "code_dim", int, "Codeword dimension (the public code: 64)."),
        Option("hidden", "hidden", int, "Encoder/generator channels at the latent level."),
        Option("down", "n_down", int, "Stride-2 stages: the latent has 1/2**DOWN of the "
               "lateral resolution."),
        Option("res-blocks", "res_blocks", int, "Residual blocks in the encoder and in the "
               "generator."),
        Option("res-hidden", "res_hidden", int, "Bottleneck channels of a residual block."),
        Option("rnn", "rnn_cell", str, "lstm (ConvLSTM) or gru (ConvGRU)."),
        Option("rnn-hidden", "rnn_hidden", int, "Hidden channels of the recurrent cell."),
        Option("lambda-ssim", "lambda_ssim", float, "Weight of 1 - SSIM."),
        Option("lambda-vq", "lambda_vq", float, "Weight of the VQ loss."),
        Option("clips", "n_clips", int, "Distinct training clips."),
        Option("patch-size", "patch_size", int, "Lateral clip size (multiple of 2**n_down)."),
        *loop_options(DQLRConfig, steps_per_epoch="Batches per epoch (default: every clip "
                      "once).", batch_size="Clips per batch.",
                      lr="Adam learning rate (the public code: 3e-4)."),
    )
    deployables = (
        Deployable("stack", "z-stack in, restored z-stack of the same shape out "
                   "(bioimageio.core, sharpstack predict, Fiji/deepImageJ, ilastik)",
                   ("bioimageio", "deepimagej", "ilastik")),
    )
    synth_model = DQLRSynth
    synth_options = (
        Option("kind", "kind", str, "membranes or nuclei."),
        Option("shape", "shape", str, "Stack size Z,Y,X (voxels).", parse=_parse_shape),
        Option("stacks", "n_stacks", int, "Training stacks."),
        Option("sigma-xy", "sigma_xy_deep", float, "Lateral PSF sigma of the deepest slice (px)."),
        Option("sigma-z", "sigma_z_deep", float, "Axial PSF sigma of the deepest slice (px)."),
        Option("attenuation", "attenuation", float, "Deepest/shallowest intensity."),
        Option("photons", "photons", float, "Photons at the brightest voxel."),
        Option("seed", "seed", int, "Seed of the test stack."),
    )
    demo = Demo(
        synth={"kind": "membranes", "shape": (48, 128, 128), "n_stacks": 2, "seed": 0},
        settings={"hidden": 32, "rnn_hidden": 32, "res_hidden": 16, "patch_size": 48,
                  "batch_size": 16, "epochs": 20, "steps_per_epoch": 50, "n_clips": 4096,
                  "val_clips": 32, "lr": 1e-3, "lr_schedule": "cosine", "patience": None,
                  "seed": 0},
        predict_with="stack",
        about=("Membrane phantoms 48x128x128 imaged with blur growing with depth (sigma_xy "
               "1 -> 3 px, sigma_z 1.5 -> 4 px), attenuation to 0.3 and Poisson (50 photons) + "
               "Gaussian noise; DQLR (ConvLSTM window 3, k = 128 codewords of dim 64) trained "
               "on two stacks for 20 epochs x 50 batches of 16 clips (48 px, Adam 1e-3 "
               "cosine), restoring a third; PSNR/SSIM against the shallow-quality ground truth per depth third."),
    )
    bench_options = (
        Option("steps", "steps", int, "Training steps per network (default 1500)."),
        Option("epochs", "epochs", int, "Epochs per network; the steps are split over them "
               "(default 20)."),
        Option("stacks", "n_stacks", int, "Synthetic training stacks per phantom kind "
               "(default 2; the paper: 4 plants)."),
        Option("kind", "kinds", list[str], "membranes, nuclei (repeat or comma-separated; "
               "default both; --kind '' runs the real stacks only).", parse=_parse_kinds),
        Option("real", "real", bool, "Also the two real confocal stacks (--no-real skips "
               "them).", default=True),
        Option("real-data", "real_data", str, "Folder of the real stacks (default "
               "../shared/data beside the repository)."),
        Option("shape", "shape", str, "Synthetic stack size Z,Y,X (default 48,128,128).",
               parse=_parse_shape),
        Option("photons", "photons", float, "Photons at the brightest voxel (default 50)."),
        Option("hidden", "settings.hidden", int, "Encoder/generator channels (default 32)."),
        Option("rnn-hidden", "settings.rnn_hidden", int, "ConvLSTM hidden channels "
               "(default 32)."),
        Option("res-hidden", "settings.res_hidden", int, "Residual bottleneck (default 16)."),
        Option("patch", "settings.patch_size", int, "Clip size in px (default 48)."),
        Option("batch", "settings.batch_size", int, "Clips per batch (default 16)."),
        Option("lr", "settings.lr", float, "Adam learning rate (default 1e-3)."),
        Option("lr-schedule", "settings.lr_schedule", str, "constant or cosine (default "
               "cosine)."),
        Option("codes", "settings.num_codes", int, "Codebook size (default 128)."),
        Option("window", "settings.window", int, "Recurrence window (default 3)."),
        Option("variant", "variants", list[str], "Trained columns: paper (the paper's self "
               "pairs), dqlr (shallow-to-deep), novq (paper without quantisation); repeat or "
               "comma-separate (default paper,dqlr).", parse=_parse_kinds),
        Option("jobs", "jobs", int, "Trainings at once in worker processes (default 1; 2 "
               "with --threads 1 uses a 2-core CPU best; results do not depend on it)."),
        Option("device", "device", str, "cpu or cuda; default GPU if present."),
        Option("seed", "seed", int, "Random seed (default 0)."),
    )

    # ------------------------------------------------------------------ training
    def train(self, inputs: Sequence[Path], settings: DQLRConfig, *, out_dir: Path,
              resume: bool = False, progress: bool = False,
              voxel_size: Mapping[str, float] | None = None) -> Trained:
        from ...io import describe_voxel_size, with_voxel_size

        (path,) = inputs
        stacks, names = read_training_stacks(path)
        stacks = [with_voxel_size(s, voxel_size) for s in stacks]  # refuses broken sizes
        short = [Path(n).name for n in names]
        model = train_dqlr([np.asarray(s.values) for s in stacks], settings, names=short,
                           out_dir=out_dir, resume=resume, progress=progress,
                           record={"dqlr": settings.model_dump(mode="json"),
                                   "data": {"names": short,
                                            "shapes": [list(s.shape) for s in stacks]}})
        from .selfcheck import gain_warning, input_gain

        # does the model beat its input on its stacks? (said to the user, kept for the card)
        gain = input_gain(model, [np.asarray(s.values) for s in stacks], short)
        notice = gain_warning(gain)
        if notice:
            import warnings

            warnings.warn(notice, stacklevel=2)
        desc = "; ".join(f"{n}, shape {tuple(s.shape)}, voxel size {describe_voxel_size(s)}"
                         for n, s in zip(short, stacks))
        record = {
            "normalizer": {"pmin": model.normalizer.pmin, "pmax": model.normalizer.pmax,
                           "eps": model.normalizer.eps},
            "input_gain": gain,
            "training_data": f"{len(stacks)} stack(s): {desc}",
            "voxel_size": dict(stacks[0].attrs.get("voxel_size") or {}),
            "codebook": model.codebook_usage(),
        }
        if model.depth_models:  # the depth degradation measured on the first stack
            record["depth_model"] = model.depth_models[0]
            record["depth_models"] = model.depth_models
        return Trained(settings=settings, model=model, result=model.result, record=record,
                       tensors={"net": model.net.state_dict()})

    def load(self, settings: DQLRConfig, record, tensors, result) -> Trained:
        net = DQLRNet(**settings.net_kwargs())
        try:
            net.load_state_dict(tensors["net"])
        except (KeyError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"the run's weights do not fit its DQLR settings ({first}); the "
                             "run folder is damaged: train again") from None
        net.eval()
        model = DQLRModel(net=net, config=settings,
                          normalizer=PercentileNormalizer(**record["normalizer"]), result=result)
        return Trained(settings=settings, model=model, result=result, record=record,
                       tensors=tensors)

    # ------------------------------------------------------------------ synthetic data, demo
    def package_request(self, trained: Trained, sample: Path, deployable: str, *,
                        workdir: Path):
        from .package import package_request

        return package_request(trained, sample, deployable, workdir=workdir)

    def synthesize(self, options: DQLRSynth) -> SynthResult:
        return synthesize(options)

    def evaluate(self, trained: Trained, synth: SynthResult) -> dict[str, Any]:
        gt, test = synth.references["gt"], synth.references["test"]
        out = restore(trained.model, test)
        norm = trained.model.normalizer.before(test)
        res = score_depth_bins(gt, {"input": norm, "dqlr": out})
        q: dict[str, Any] = {}
        for b in DEPTH_BINS:
            q[f"PSNR {b} third, input (dB)"] = res["input"][f"psnr_{b}"]
            q[f"PSNR {b} third, DQLR (dB)"] = res["dqlr"][f"psnr_{b}"]
        q["data"] = synth.info.get("protocol", "")
        for k, v in trained.model.codebook_usage().items():
            q[f"codebook {k.replace('_', ' ')}"] = v
        return q

    def score(self, synth: SynthResult, restored) -> dict[str, float]:
        gt, test = synth.references["gt"], synth.references["test"]
        res = score_depth_bins(gt, {"input": test, "restored": np.asarray(restored)})
        out = {}
        for b in DEPTH_BINS:
            for name in ("input", "restored"):
                out[f"psnr_{name}_{b}_db"] = res[name][f"psnr_{b}"]
                out[f"ssim_{name}_{b}"] = res[name][f"ssim_{b}"]
        return out

    def figure(self, synth: SynthResult, restored) -> list[tuple[str, Any]]:
        gt, test = synth.references["gt"], synth.references["test"]
        z = gt.shape[0] - 1 - gt.shape[0] // 12  # a deep slice
        return [("input (deep slice)", test[z]), ("DQLR (package)", np.asarray(restored)[z]),
                ("shallow-quality GT", gt[z])]

    # ------------------------------------------------------------------ benchmark
    def bench(self, out_dir: Path, *, progress: bool = False, **options: Any) -> dict[str, Any]:
        from .bench import run_dqlr_bench

        settings = {k.split(".", 1)[1]: options.pop(k) for k in list(options)
                    if k.startswith("settings.")}
        return run_dqlr_bench(out_dir, progress=progress, settings=settings or None, **options)
