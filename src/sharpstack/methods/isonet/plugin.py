"""IsoNet: self-supervised isotropic reconstruction (Weigert et al., MICCAI 2017), plugged
into sharpstack through the method interface (:mod:`sharpstack.methods._base`).

Training pairs come from the lateral (xy) slices of the anisotropic stack itself: each slice is
blurred with a 2D kernel that makes it look like an axial slice (the PSF rotated into the
lateral plane, ``full``, or only its anisotropic part, ``split``), subsampled along one lateral
axis by the axial factor and linearly upsampled back (:mod:`.data`). A 2D network learns
degraded -> original (:mod:`.task`). At inference it is applied to every xz and yz plane of the
z-upsampled stack and the two views are fused (inside
:class:`~.isonet_arch.IsoNetDeploy`, the exported module; packages: :mod:`.package`).

This module declares the method (inputs, options, deployables, demo) and reads the user's
files; it never writes files other than through the training loop's ``out_dir`` and never
parses CLI arguments (DESIGN.md).
"""

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
from .acquisition import upsample_linear
from .isonet_arch import build_network
from .settings import IsoNetSettings
from .synth import IsoNetSynth, synthesize
from .task import IsoNetModel, restore, train_isonet

__all__ = ["IsoNet"]


def _parse_shape(text: str) -> tuple[int, int, int]:
    try:
        vals = tuple(int(v) for v in str(text).replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise InputError(f"--shape must be integers like 128,128,128; got {text!r}") from None
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3:
        raise InputError(f"--shape needs 1 or 3 integers (Z,Y,X), got {text!r}")
    return vals  # type: ignore[return-value]


def _photons(value: float) -> float | None:
    return None if value == 0 else value


_PSF_OPTIONS = (
    Option("psf", "psf.kind", str, "PSF of the microscope: gaussian, confocal, lightsheet or file."),
    Option("sigma-xy", "psf.sigma_xy", float, "Gaussian PSF lateral sigma, in lateral pixels."),
    Option("sigma-z", "psf.sigma_z", float, "Gaussian PSF axial sigma, in lateral pixels (not "
           "z slices: sigma_z in um / the pixel size in um)."),
    Option("na", "psf.na", float, "Detection NA (confocal/light-sheet)."),
    Option("na-illum", "psf.na_illum", float, "Illumination NA (light-sheet)."),
)


def _factor_from(data, factor: float | None) -> int | float:
    """IsoNet's factor: given, or z spacing / lateral pixel size from known sizes only; used
    exactly (2.5 stays 2.5). Below 1.5 the stack is (nearly) isotropic: refused the same way
    whether the factor was given or came from the voxel size."""
    from ...resample import MIN_FACTOR, exact_factor, isotropic_factor

    if factor is not None:
        f, source = exact_factor(factor, what="--factor"), f"--factor {factor:g}"
    else:
        from ...io import require_voxel_size

        vs = require_voxel_size(data, "zyx", purpose="IsoNet's axial factor (z spacing / "
                                "pixel size)", alternative="give the factor with --factor F")
        f = isotropic_factor(vs)
        source = (f"voxel size {vs['z']:g},{vs['y']:g},{vs['x']:g} um: z spacing / pixel "
                  f"size = {f:g}")
    if f < MIN_FACTOR:
        raise InputError(f"{source}: the stack is already (nearly) isotropic (factor < "
                         f"{MIN_FACTOR}), so IsoNet has no axial resolution to restore; give "
                         "an anisotropic stack (z spacing at least 1.5x the pixel size), or "
                         "correct --voxel-size / --factor")
    return f


def factor_notice(factor: float) -> str | None:
    """What the ``upsample`` package does with a factor its integer-stride network cannot take
    exactly (None when it can): said at the start of training."""
    from .isonet_arch import fraction_of

    p, q = fraction_of(factor)
    if abs(p / q - factor) <= 1e-6 * factor:
        return None
    return (f"factor {factor:g} is used exactly for training, by the `isotropic` package "
            f"and by `sharpstack resample`; the `upsample` package (z upsampled inside the "
            f"network) can only realise fractions p/q with q <= 8 and will upsample z by "
            f"{p}/{q} = {p / q:.4g} (its output z spacing = input z spacing / {p / q:.4g}). "
            f"For exact isotropic voxels export --deployable isotropic and give it a stack "
            f"from `sharpstack resample`.")


def default_psf_notice(spec) -> str:
    """What the default PSF assumes (said in the training log when no PSF was given)."""
    return (f"no PSF given: the default is used, a Gaussian with sigma_xy = {spec.sigma_xy:g} "
            f"and sigma_z = {spec.sigma_z:g} lateral pixels (FWHM {2.3548 * spec.sigma_xy:.1f}"
            f" px lateral, {2.3548 * spec.sigma_z:.1f} px axial: z resolution "
            f"{spec.sigma_z / spec.sigma_xy:g}x worse than lateral). If your microscope "
            "differs, measure it: `sharpstack psf beads.tif psf.tif`, then --psf file "
            "--psf-file psf.tif (or give --sigma-xy/--sigma-z, or --psf confocal/lightsheet "
            "with --na)")


def _parse_datasets(values) -> tuple[str, ...]:
    return tuple(d.strip() for v in values for d in str(v).split(",") if d.strip())


class IsoNet(Method):
    """IsoNet isotropic reconstruction behind the method interface."""

    name = "isonet"
    title = "IsoNet (Weigert et al., MICCAI 2017)"
    summary = ("isotropic reconstruction of anisotropic z-stacks, self-supervised from the "
               "lateral slices of the stack itself")
    settings_model = IsoNetSettings
    # runs recorded before the noise-aware pairs existed trained on the paper's pairs, and
    # before the bias-free U-Net with the paper's convolutions
    recorded_before = {"pairs": "paper", "bias": True}
    inputs = (Input("stack", "Anisotropic stack (TIFF, OME-Zarr, .npy) with axes ZYX."),)
    options = (
        Option("factor", "factor", float, "z spacing / pixel size, any number >= 1.5, used "
               "exactly (e.g. 2.5); default from the file's calibration (or --voxel-size)."),
        *_PSF_OPTIONS,
        Option("psf-file", "psf.path", str, "Measured PSF (ZYX) for --psf file, on any grid: "
               "with its calibration it is resampled to isotropic voxels of the stack's pixel "
               "size (e.g. the output of `sharpstack psf beads.tif psf.tif`)."),
        Option("pairs", "pairs", str, "Training pairs: noise-aware (default: the stack's own "
               "noise model, inputs as noisy as real axial planes, denoised targets) or paper "
               "(the paper's; Table 1 protocol; amplifies noise on real stacks)."),
        Option("noise-target", "noise_target", str, "Target of the noise-aware pairs: "
               "denoised (non-local means) or masked (Noise2Void blind spots)."),
        Option("wavelength", "psf.wavelength_um", float, "Emission wavelength (micrometres)."),
        Option("immersion", "psf.n_immersion", float, "Refractive index of the immersion medium."),
        Option("pixel", "psf.pixel_um", float, "Lateral pixel size (micrometres) the PSF is "
               "sampled with; default from the file's calibration."),
        Option("mode", "psf_mode", str, "PSF used for training pairs: split (recommended), "
               "full, none."),
        Option("arch", "arch", str, "unet (IsoNet-2) or srcnn (IsoNet-1)."),
        Option("patches", "n_patches", int, "Number of training patches."),
        Option("patch-size", "patch_size", int, "Patch size (multiple of 16)."),
        Option("bias", "bias", bool, "--bias: the paper's U-Net, with additive biases. "
               "--no-bias, the default: a bias-free U-Net that restores dim and bright "
               "structures alike and keeps a spot's intensity (README, real-data benchmark)."),
        Option("dropout", "dropout", float, "Dropout after every convolution (the paper: 0.2, "
               "--dropout 0.2; the default 0 restores ~2 dB better, see README Table 1)."),
        *loop_options(IsoNetSettings, epochs="Epochs (the paper: 100).",
                      steps_per_epoch="Batches per epoch (default: all patches once).",
                      lr="Adam learning rate (the paper: 5e-3, --lr 5e-3; the default 1e-3 "
                         "restores ~0.5 dB better in the demo, see README).",
                      lr_schedule="constant (the paper) or cosine."),
    )
    deployables = (
        Deployable("upsample", "raw anisotropic stack in, z upsampled x factor out "
                   "(bioimageio.core, sharpstack predict)", ("bioimageio",)),
        Deployable("isotropic", "stack resampled to isotropic voxels in, same shape out "
                   "(also Fiji/deepImageJ and ilastik)", ("bioimageio", "deepimagej", "ilastik")),
        Deployable("slice2d", "one axial slice (rows = z) in, same shape out (also QuPath)",
                   ("bioimageio", "deepimagej", "ilastik", "qupath")),
    )
    synth_model = IsoNetSynth
    synth_options = (
        Option("kind", "kind", str, "nuclei, membranes or nuclei+membranes."),
        Option("shape", "shape", str, "Isotropic ground-truth size Z,Y,X (voxels).",
               parse=_parse_shape),
        Option("factor", "factor", int, "Axial subsampling: keep every FACTOR-th slice."),
        *_PSF_OPTIONS,
        Option("pixel", "pixel_um", float, "Pixel size in micrometres (written as the "
               "calibration; z spacing = factor x pixel)."),
        Option("photons", "photons", float, "Photons at the brightest voxel (Poisson "
               "noise); 0 = none.", parse=_photons),
        Option("read-noise", "read_noise", float, "Gaussian read noise (fraction of max)."),
        Option("seed", "seed", int, "Random seed."),
    )
    demo = Demo(
        synth={"kind": "nuclei", "shape": (128, 128, 128), "factor": 8,
               "psf": {"kind": "gaussian", "sigma_xy": 2.0, "sigma_z": 8.0}, "seed": 0},
        settings={"arch": "unet", "psf_mode": "split", "epochs": 30, "steps_per_epoch": 25,
                  "batch_size": 16, "n_patches": 1024, "patch_size": 64, "lr": 1e-3,
                  "dropout": 0.0, "patience": None, "seed": 0},
        predict_with="upsample", deployables=("upsample", "isotropic"),
        about=("Nuclei phantom 128^3, Gaussian PSF sigma_xy/sigma_z = 2/8 px, every 8th slice "
               "kept, Poisson + Gaussian noise; IsoNet-2 (split PSF), 30 epochs x 25 batches of "
               "16 patches of 64^2, Adam lr 1e-3 (the paper's 5e-3 gains ~0.5 dB less at this "
               "budget); PSNR/SSIM against the isotropic ground truth (CARE protocol)."),
    )
    bench_options = (
        Option("size", "size", str, "Field of view N (cube) or Z,Y,X; z is cut to the span "
               "of the acquired slices, (n - 1) x factor + 1 (default 160; the paper: 512).",
               parse=lambda t: (lambda d: d[0] if len(set(d)) == 1 else d)(_parse_shape(t))),
        Option("volumes", "n_volumes", int, "Volumes per dataset (default 2; the paper: 10)."),
        Option("epochs", "epochs", int, "Training epochs per network (default 60; the paper: "
               "100)."),
        Option("steps", "steps_per_epoch", int, "Batches per epoch (default 40)."),
        Option("batch", "isonet.batch_size", int, "Batch size (default 8)."),
        Option("patch", "isonet.patch_size", int, "Training patch size, a multiple of 16 "
               "(default 48, or the largest that fits)."),
        Option("patches", "isonet.n_patches", int, "Training patches per network (default "
               "1024)."),
        Option("lr", "isonet.lr", float, "Adam learning rate (default 1e-3; the paper: 5e-3, "
               "which trains worse on short budgets)."),
        Option("dropout", "isonet.dropout", float, "Dropout of every network (default 0; the "
               "paper: 0.2, which trains worse on short budgets)."),
        Option("dataset", "datasets", list[str], "nuclei, membranes, nuclei+membranes "
               "(repeat or comma-separated; default all).", parse=_parse_datasets),
        Option("device", "device", str, "cpu or cuda; default GPU if present."),
        Option("seed", "seed", int, "Random seed (default 0)."),
        Option("jobs", "jobs", int, "Trainings at once, in worker processes (default: 2 on a "
               "CPU with at least 2 cores per --threads, else 1; results do not depend on it)."),
        Option("pairs", "isonet.pairs", str, "IsoNet training pairs of every network: "
               "noise-aware (default) or paper (the paper's)."),
        Option("real", "real", bool, "Instead of Table 1: the real-data benchmark on spot "
               "stacks (the shared bead stack and synthetic spots with widefield-like noise): "
               "spot FWHM z/x, background noise and spot intensity of the input, IsoNet "
               "(the paper's pairs and network, noise-aware pairs with the paper's network, "
               "the default) and Richardson-Lucy, 30 epochs x 25 batches unless given, about "
               "20 min on one thread; writes real.md and orthogonal views.",
               default=False),
        Option("quiet", "quiet", bool, "No log line per training and volume.",
               default=False),
    )
    bench_threads = 1
    """One torch thread per job: on a shared 2-core machine, 2 threads made each training
    step about 10x slower through oversubscription."""
    citations = ({"text": "Weigert, Royer, Jug & Myers. Isotropic reconstruction of 3D "
                          "fluorescence microscopy images using convolutional neural networks. "
                          "MICCAI 2017.", "doi": "10.1007/978-3-319-66185-8_15"},)

    # ------------------------------------------------------------------ training
    def train(self, inputs: Sequence[Path], settings: IsoNetSettings, *, out_dir: Path,
              resume: bool = False, progress: bool = False,
              voxel_size: Mapping[str, float] | None = None) -> Trained:
        from ...io import (check_finite, check_not_constant, describe_voxel_size, read_stack,
                          with_voxel_size)

        (stack_path,) = inputs
        data = with_voxel_size(read_stack(stack_path), voxel_size)
        if tuple(data.dims) != ("z", "y", "x"):
            hint = ("split the channels first (Fiji: Image > Color > Split Channels)"
                    if "c" in data.dims else "give a z-stack, not a single plane"
                    if data.ndim == 2 else "save one time point of one channel as its own "
                    "file (Fiji: Image > Duplicate, one frame and channel) and train on that")
            raise InputError(f"{stack_path} has axes {''.join(data.dims).upper()}; IsoNet trains "
                             f"on one-channel z-stacks (ZYX): {hint}")
        if data.dtype == bool:
            raise InputError(f"{stack_path} is a binary (bool) mask; IsoNet restores intensity "
                             "images: give the raw stack")
        check_finite(data, str(stack_path))
        check_not_constant(data, f"the training stack {stack_path}")
        factor = _factor_from(data, settings.factor)
        notice = factor_notice(factor)
        if notice:
            import warnings

            warnings.warn(notice, stacklevel=2)
        psf_spec = settings.psf
        psf_given = bool(psf_spec.model_fields_set) or "psf" in settings.model_fields_set
        if psf_spec.needs_pixel and psf_spec.pixel_um is None and settings.psf_mode != "none":
            from ...io import require_voxel_size

            px = require_voxel_size(data, "x", purpose=f"the {psf_spec.kind} PSF (sampled in "
                                    "micrometres)", alternative="--pixel UM")["x"]
            psf_spec = psf_spec.model_copy(update={"pixel_um": px})
        if psf_spec.kind == "file" and psf_spec.pixel_um is None:
            px = (data.attrs.get("voxel_size") or {}).get("x")
            if px:
                psf_spec = psf_spec.model_copy(update={"pixel_um": float(px)})
        settings = settings.model_copy(update={"factor": factor, "psf": psf_spec})
        h = None
        if settings.psf_mode != "none":
            import warnings

            h, notes = psf_spec.build_noted()
            if not psf_given:
                notes.append(default_psf_notice(psf_spec))
            for note in notes:
                warnings.warn(note, stacklevel=2)
        model = train_isonet(np.asarray(data.values), h, settings.config(), out_dir=out_dir,
                             resume=resume, progress=progress,
                             record={"isonet": settings.model_dump(mode="json"),
                                     "data": {"shape": list(data.shape),
                                              "name": Path(stack_path).name}})
        from .selfcheck import gain_warning, input_gain

        # does the model beat its input on this stack? (said to the user, kept for the card)
        gain = input_gain(model, np.asarray(data.values), h)
        notice = gain_warning(gain)
        if notice:
            import warnings

            warnings.warn(notice, stacklevel=2)
        record = {
            "normalizer": {"pmin": model.normalizer.pmin, "pmax": model.normalizer.pmax,
                           "eps": model.normalizer.eps},
            "input_gain": gain,
            "psf_text": psf_spec.describe() if h is not None else "none (psf_mode none)",
            "training_data": (f"{Path(stack_path).name}, shape {tuple(data.shape)}, voxel size "
                              f"{describe_voxel_size(data)}, factor {factor}"),
            "voxel_size": dict(data.attrs.get("voxel_size") or {}),
            "pairs": settings.pairs,
            "noise_model": ({"a": model.noise.a, "b": model.noise.b,
                             "units": "normalised intensities"} if model.noise else None),
        }
        tensors = {"net": model.net.state_dict()}
        if h is not None:
            tensors["psf"] = {"psf": torch.from_numpy(np.ascontiguousarray(h))}
        return Trained(settings=settings, model=model, result=model.result, record=record,
                       tensors=tensors)

    def load(self, settings: IsoNetSettings, record, tensors, result) -> Trained:
        cfg = settings.config()
        net = build_network(cfg.arch, **cfg.arch_kwargs())
        try:
            net.load_state_dict(tensors["net"])
        except (KeyError, RuntimeError) as exc:
            raise InputError(f"the run's weights do not fit its IsoNet settings ({exc}); the "
                             "run folder is damaged: train again") from None
        net.eval()
        model = IsoNetModel(net=net, config=cfg,
                            normalizer=PercentileNormalizer(**record["normalizer"]),
                            result=result)
        return Trained(settings=settings, model=model, result=result, record=record,
                       tensors=tensors)

    # ------------------------------------------------------------------ synthetic data, demo
    def package_request(self, trained: Trained, sample: Path, deployable: str, *,
                        workdir: Path):
        from .package import package_request

        return package_request(trained, sample, deployable, workdir=workdir)

    def consumer_input(self, trained: Trained, stack, deployable: str):
        from .package import consumer_input

        return consumer_input(trained.model.config.factor, stack, deployable)

    def synthesize(self, options: IsoNetSynth) -> SynthResult:
        return synthesize(options)

    def evaluate(self, trained: Trained, synth: SynthResult) -> dict[str, Any]:
        from ...metrics import psnr_normalized

        f = trained.settings.factor
        iso = synth.references["ground_truth_isotropic"]
        aniso = synth.references["anisotropic"]
        up = upsample_linear(aniso, f, axis=0)
        return {"PSNR vs isotropic GT, z-interpolated input (dB)": psnr_normalized(iso, up),
                "PSNR vs isotropic GT, IsoNet restoration (dB)":
                    psnr_normalized(iso, restore(trained.model, aniso, factor=f)),
                "data": f"synthetic {synth.info.get('kind')} {tuple(synth.info.get('shape'))}, "
                        f"{synth.info.get('psf_text')}, factor {f}"}

    def score(self, synth: SynthResult, restored) -> dict[str, float]:
        from ...metrics import psnr_normalized, ssim_normalized

        iso = synth.references["ground_truth_isotropic"]
        f = int(synth.info["factor"])
        up = upsample_linear(synth.references["anisotropic"], f, axis=0)
        out = np.asarray(restored, dtype=np.float32)
        return {"psnr_input_db": psnr_normalized(iso, up),
                "psnr_restored_db": psnr_normalized(iso, out),
                "ssim_input": ssim_normalized(iso, up, axes="ZYX"),
                "ssim_restored": ssim_normalized(iso, out, axes="ZYX")}

    def figure(self, synth: SynthResult, restored) -> list[tuple[str, Any]]:
        f = int(synth.info["factor"])
        up = upsample_linear(synth.references["anisotropic"], f, axis=0)
        return [("input (z interpolated)", up), ("IsoNet (package)", np.asarray(restored)),
                ("isotropic GT", synth.references["ground_truth_isotropic"])]

    # ------------------------------------------------------------------ benchmark
    def bench(self, out_dir: Path, *, progress: bool = False, **options: Any) -> dict[str, Any]:
        import os

        from ...bench._jobs import stderr_log
        from .bench import run_isonet_table1

        isonet = {k.split(".", 1)[1]: options.pop(k) for k in list(options)
                  if k.startswith("isonet.")}
        if options.get("jobs") is None:  # both cores of a CPU, one job on a GPU
            device = options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
            options["jobs"] = (1 if str(device).startswith("cuda") else
                               max(1, min(2, (os.cpu_count() or 1) // torch.get_num_threads())))
        on_step = None if options.pop("quiet", False) or not progress else stderr_log()
        if options.pop("real", False):
            from .realbench import run_isonet_real

            kw = {k: options[k] for k in ("epochs", "steps_per_epoch", "seed", "device")
                  if options.get(k) is not None}
            kw.update({k: isonet[k] for k in ("batch_size", "n_patches", "patch_size")
                       if k in isonet})
            if options.get("datasets"):
                kw["datasets"] = options["datasets"]
            return run_isonet_real(out_dir, on_step=on_step, **kw)
        return run_isonet_table1(out_dir, progress=progress, on_step=on_step,
                                 isonet=isonet or None, **options)
