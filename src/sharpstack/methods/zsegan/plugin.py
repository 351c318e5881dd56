"""ZSE-GAN behind the method interface (:class:`~sharpstack.methods._base.Method`): the
settings, inputs and options of ``sharpstack train zsegan``, the ``zscan`` deployable, the
demo, the benchmark's options and the citation; the work is done by the sibling modules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...errors import InputError
from ...normalize import PercentileNormalizer
from .._base import (Demo, Deployable, Input, Method, Option, SynthResult, Trained,
                     loop_options)
from .data import read_images2d, read_zscans
from .evaluate import evaluate, figure, score
from .model import ZSEGANModel, train_zsegan
from .settings import ZSEGANSettings, ZSEGANSynth
from .synth import synthesize
from .zsegan_arch import ResnetGenerator3D

__all__ = ["ZSEGAN"]


class ZSEGAN(Method):
    """ZSE-GAN behind the method interface."""

    name = "zsegan"
    title = "ZSE-GAN (focal-length weighted GANs for z-scans)"
    summary = ("sharpens z-scans through thin sections: every plane and every vertical section "
               "as sharp as the focal plane, learnt without 3D ground truth")
    settings_model = ZSEGANSettings
    # runs recorded before the physics warm start existed trained the paper's recipe
    recorded_before = {"warm_start_steps": 0, "adversarial": "paper", "select": "last",
                       "fidelity_weight": 0.0}
    inputs = (Input("zscans", "Folder of z-scans: one ZYX stack of N focal planes per file.",
                    kind="folder"),
              Input("infocus", "Folder of sharp in-focus 2D images (YX) of the same tissue.",
                    kind="folder"))
    options = (
        Option("planes", "n_planes", int, "Focal planes per z-scan (the paper: 29)."),
        Option("focal-plane", "focal_plane", int, "1-based in-focus plane (default: centre)."),
        Option("vertical", "vertical", str, "Folder of sharp vertical sections (lateral x "
               "planes) for D_S (the notebook's trainA29)."),
        Option("zscan-limit", "zscan_limit", int, "Use only the first N z-scans."),
        Option("val-count", "val_count", int, "z-scans held apart for validation."),
        Option("crop", "crop", int, "Lateral training crop (multiple of 4; paper 128)."),
        Option("ngf", "ngf", int, "Generator filters (notebook 16)."),
        Option("res-blocks", "n_res", int, "Residual blocks per generator (notebook 6)."),
        Option("ndf", "ndf", int, "Discriminator filters (notebook 32)."),
        Option("residual", "residual", bool, "Generators output x + net(x) (not in the "
               "notebook; for short trainings)."),
        Option("upsample", "upsample", str, "transposed (notebook), resize (nearest + conv) "
               "or linear (trilinear + conv)."),
        Option("z-padding", "z_padding", str, "zeros (notebook) or replicate: padding of the "
               "generators at the first and last focal planes."),
        Option("self-ensemble", "self_ensemble", bool, "The package averages G_S over the 8 "
               "lateral flips and rotations of the z-scan (8x the inference time; removes the "
               "4-px grid texture, lowers FM/PIQE); default: one pass."),
        Option("d-layers", "d_layers", int, "Stride-2 layers per PatchGAN (notebook 4)."),
        Option("d-blur", "d_blur", float, "Gaussian sigma (px) before D_S, on real and "
               "generated sections (not in the paper; 0: none): no reward for a 2-3 px "
               "texture."),
        Option("d-norm", "d_norm", str, "instance (notebook) or none: normalisation inside "
               "the discriminators (none lets them see edge strength on small crops)."),
        Option("infocus-match", "infocus_match", str, "focal: map the in-focus images onto "
               "the focal planes' intensity histogram; none (notebook)."),
        Option("p-vertical", "p_vertical", float, "Weight of vertical sections in D_S."),
        Option("lambda-cycle", "lambda_cycle", float, "Cycle-consistency weight."),
        Option("lambda-identity", "lambda_identity", float, "Identity-loss weight."),
        Option("cycle-weighting", "cycle_weighting", str, "notebook, focal or uniform."),
        Option("cycle-reduce", "cycle_reduce", str, "mean (paper) or max (notebook)."),
        Option("alpha-on-ds", "alpha_on_ds", bool, "Weight D_S's planes by alpha too."),
        Option("sections", "sections", int, "Sections per z-scan and step for each "
               "adversarial term."),
        Option("warm-start-steps", "warm_start_steps", int, "Physics warm start: supervised "
               "steps on z-scans synthesised from the in-focus images with the defocus model "
               "fitted per plane on the training z-scans (default 300; 0: the paper's "
               "recipe)."),
        Option("warm-start-scans", "warm_start_scans", int, "Training z-scans the defocus "
               "model is fitted on (default 16)."),
        Option("warm-start-noise", "warm_start_noise", str, "white (default): white noise "
               "of the fitted std in the synthetic z-scans; residual: crops of what the "
               "defocus model leaves unexplained on the training z-scans."),
        Option("adversarial", "adversarial", str, "Losses after the warm start: anchored "
               "(default with a warm start): adversarial + synthetic-pair L1, no cycle or "
               "identity terms (they undo the warm start); paper: adversarial + cycle + "
               "identity (the default without a warm start)."),
        Option("synthetic-weight", "synthetic_weight", float, "Weight of the synthetic-pair "
               "L1 in the adversarial phase (default 10 anchored, 0 paper)."),
        Option("fidelity-weight", "fidelity_weight", float, "Weight of the data-fidelity "
               "L1 in the adversarial phase: G_S's output blurred with the fitted defocus "
               "PSFs must give back the real z-scan (default 10 anchored, 0 paper)."),
        Option("focal-anchor", "focal_anchor", float, "Weight of the L1 that keeps G_S's "
               "focal plane equal to the real input's in the adversarial phase (0: off)."),
        Option("adversarial-lr", "adversarial_lr", float, "Learning rate of the adversarial "
               "phase (default: --lr; the discriminators keep their ratio to it)."),
        Option("pool", "pool_size", int, "Image pool size."),
        Option("lr-d", "lr_d", float, "Discriminators' learning rate (default: --lr)."),
        Option("select", "select", str, "last or best (validation FM flatness + SSIM); "
               "default best with the anchored adversarial phase, last with the paper's."),
        *loop_options(ZSEGANSettings, epochs="Epochs (the notebook: 200).",
                      batch_size="z-scans per batch.",
                      device="cpu, cuda, ...; default: GPU if present."),
    )
    deployables = (
        Deployable("zscan", "z-scan of N planes (or k*N: k scans stacked) in, sharpened, "
                   "same shape out", ("bioimageio", "deepimagej", "ilastik")),
    )
    synth_model = ZSEGANSynth
    synth_options = (
        Option("source", "source", str, "shared (the paper's z-scans, read in place) or "
               "synthetic."),
        Option("zscans", "zscans", int, "Number of z-scans."),
        Option("held-apart", "held_apart", int, "z-scans held apart (seeded)."),
        Option("infocus", "infocus", int, "Synthetic in-focus images."),
        Option("size", "size", int, "Synthetic lateral size."),
        Option("planes", "planes", int, "Synthetic focal planes."),
        Option("sigma-max", "sigma_max", float, "Synthetic blur of the outermost plane."),
        Option("seed", "seed", int, "Random seed."),
    )
    demo = Demo(
        synth={"source": "shared", "zscans": 16, "held_apart": 4, "seed": 0},
        settings={"crop": 48, "ngf": 8, "n_res": 3, "ndf": 16, "sections": 4, "epochs": 8,
                  "steps_per_epoch": 50, "calib_crops": 16, "residual": True,
                  "upsample": "resize", "warm_start_steps": 200, "infocus_match": "focal",
                  "d_norm": "none", "fidelity_weight": 0.0, "z_padding": "replicate"},
        predict_with="zscan",
        about=("ZSE-GAN's generator G_S trained briefly on 12 of the paper's brain-section "
               "z-scans (29 planes, 128x128) and its in-focus images, reduced networks (8 "
               "generator filters, 3 residual blocks, residual generators with the first and "
               "last planes repeated as z padding, 48x48 crops). "
               "The first 200 of its 400 steps are the physics warm start: a defocus PSF per "
               "plane fitted on the training z-scans, z-scans synthesised from the in-focus "
               "images with it, G_S and G_B trained on these pairs. The other 200 are the "
               "paper's focal-weighted adversarial training anchored by the same synthetic "
               "pairs instead of the cycle and identity terms (which returned the generators "
               "to the identity within 50 steps, measured). The data-fidelity term of longer "
               "trainings is off here: it prevents the collapse of runs past ~650 steps but "
               "slows the first adversarial steps (measured on this demo: outer planes' PIQE "
               "not lower after 400 steps with it, 18% lower without). One held-apart "
               "z-scan restored with the package. No ground truth exists: scores are the "
               "paper's no-reference ones (FM flatness over the planes, PIQE of the outer "
               "planes, FM of vertical sections, SSIM at the focal plane)."),
    )
    bench_options = (
        Option("crop", "crop", int, "Lateral training crop (default 48; the paper: 128)."),
        Option("ngf", "ngf", int, "Generator filters (default 8; notebook 16)."),
        Option("res-blocks", "n_res", int, "Residual blocks (default 3; notebook 6)."),
        Option("ndf", "ndf", int, "Discriminator filters (default 16; notebook 32)."),
        Option("sections", "sections", int, "Sections per adversarial term and step (default "
               "4; notebook 1)."),
        Option("residual", "residual", bool, "Residual generators, x + net(x); "
               "--no-residual: the notebook's plain generators.", default=True),
        Option("upsample", "upsample", str, "Decoder upsampling: transposed (notebook), "
               "resize (nearest + conv; default) or linear (trilinear + conv)."),
        Option("z-padding", "extra.z_padding", str, "Generators' padding at the first and "
               "last focal planes: zeros (notebook) or replicate (default)."),
        Option("epochs", "epochs", int, "Epochs (default 40; the notebook: 200)."),
        Option("steps", "steps_per_epoch", int, "Batches per epoch (default 64: one pass over "
               "the training z-scans)."),
        Option("val-count", "val_count", int, "Held-apart z-scans (default 16)."),
        Option("lambda-identity", "lambda_identity", float, "Identity-loss weight (default "
               "0.5)."),
        Option("lambda-cycle", "lambda_cycle", float, "Cycle weight (default and the paper: "
               "10.5)."),
        Option("warm-start-steps", "extra.warm_start_steps", int, "Physics warm start steps "
               "(without it: the training settings' 300; 0: the paper's recipe, the ablation "
               "row)."),
        Option("warm-start-noise", "extra.warm_start_noise", str, "white (default) or "
               "residual: what the synthetic z-scans carry besides the blurred image."),
        Option("adversarial", "extra.adversarial", str, "anchored (default with a warm "
               "start: adversarial + synthetic-pair L1) or paper (adversarial + cycle + "
               "identity; the default with --warm-start-steps 0)."),
        Option("synthetic-weight", "extra.synthetic_weight", float, "Synthetic-pair L1 in "
               "the adversarial phase (default 10 anchored, 0 paper)."),
        Option("fidelity-weight", "extra.fidelity_weight", float, "Data-fidelity weight "
               "in the adversarial phase (default 10 anchored, 0 paper)."),
        Option("focal-anchor", "extra.focal_anchor", float, "Focal-plane anchor weight in "
               "the adversarial phase (0: off)."),
        Option("adversarial-lr", "extra.adversarial_lr", float, "Learning rate of the "
               "adversarial phase (default: the warm start's)."),
        Option("lr-d", "extra.lr_d", float, "Discriminators' learning rate (default: the "
               "generators' 2e-4)."),
        Option("d-norm", "extra.d_norm", str, "Normalisation inside the discriminators: "
               "instance (default, notebook) or none."),
        Option("infocus-match", "extra.infocus_match", str, "none (default, notebook) or "
               "focal: map the in-focus images onto the focal planes' histogram."),
        Option("vertical-set", "use_vertical", bool, "Use the notebook's vertical sections "
               "for D_S.", default=False),
        Option("device", "device", str, "cpu or cuda; default GPU if present."),
        Option("seed", "seed", int, "Random seed (default 0)."),
        Option("resume", "resume", bool, "Continue OUT/run.", default=False),
        Option("card", "card", str, "Instead of the benchmark: score the model that "
               "`sharpstack zoo RECIPE` built (in --built) on its held-apart z-scans and "
               "write the quality JSON to the file --out (for `sharpstack export ... "
               "--quality`)."),
        Option("built", "built", str, "Output folder of `sharpstack zoo` (with --card; "
               "default zoo/built/<recipe id>)."),
    )
    bench_threads = 2

    citations = ({"text": "Visual enhancement of image stacks from a z-scanning microscope "
                          "using focal lengths weighted GANs (ZSE-GAN); reference code and "
                          "data: keerfish/ZSE-GAN.",
                  "url": "https://github.com/keerfish/ZSE-GAN"},)

    # ------------------------------------------------------------------ training
    def train(self, inputs: Sequence[Path], settings: ZSEGANSettings, *, out_dir: Path,
              resume: bool = False, progress: bool = False,
              voxel_size: Mapping[str, float] | None = None) -> Trained:
        zdir, fdir = (Path(p) for p in inputs)
        zs = read_zscans(zdir, n_planes=settings.n_planes)
        if settings.zscan_limit:
            zs = zs[:settings.zscan_limit]
        fs = read_images2d(fdir, what="in-focus image")
        vert = None
        if settings.vertical:
            vert = [a for _, a in read_images2d(settings.vertical, what="vertical section")]
        model = train_zsegan([a for _, a in zs], [a for _, a in fs], settings, vertical=vert,
                             names=[n for n, _ in zs], out_dir=out_dir, resume=resume,
                             progress=progress)
        shape = tuple(zs[0][1].shape)
        record = {
            "normalizer": {"pmin": model.normalizer.pmin, "pmax": model.normalizer.pmax,
                           "eps": model.normalizer.eps},
            "split": model.split, "defocus": model.defocus, "zscans_dir": str(zdir.resolve()),
            "infocus_dir": str(fdir.resolve()),
            "training_data": (f"{len(zs)} z-scans {shape} (ZYX) from {zdir.name}/, "
                              f"{len(model.split['held_apart'])} held apart (seed "
                              f"{settings.seed}); {len(fs)} in-focus images from {fdir.name}/; "
                              "sharp vertical examples: "
                              + ("the vertical sections in " + Path(settings.vertical).name
                                 if vert else "windows of the in-focus images")),
        }
        tensors = {"G_S": model.G_S.state_dict(), "G_B": model.G_B.state_dict()}
        return Trained(settings=settings, model=model, result=model.result, record=record,
                       tensors=tensors)

    def load(self, settings: ZSEGANSettings, record, tensors, result) -> Trained:
        gk = settings.generator_kwargs()
        nets = {}
        for k in ("G_S", "G_B"):
            net = ResnetGenerator3D(**gk)
            try:
                net.load_state_dict(tensors[k])
            except (KeyError, RuntimeError) as exc:
                raise InputError(f"the run's {k} weights do not fit its ZSE-GAN settings "
                                 f"({str(exc).splitlines()[0]}); the run folder is damaged: "
                                 "train again") from None
            nets[k] = net.eval()
        model = ZSEGANModel(G_S=nets["G_S"], G_B=nets["G_B"], config=settings,
                            normalizer=PercentileNormalizer(**record["normalizer"]),
                            result=result, split=dict(record.get("split", {})),
                            defocus=record.get("defocus"))
        return Trained(settings=settings, model=model, result=result, record=record,
                       tensors=tensors)

    # ------------------------------------------------------------------ data, demo
    def package_request(self, trained: Trained, sample: Path, deployable: str, *,
                        workdir: Path):
        from .package import package_request

        return package_request(trained, sample, deployable, workdir=workdir)

    def synthesize(self, options: ZSEGANSynth) -> SynthResult:
        return synthesize(options)

    def evaluate(self, trained: Trained, synth: SynthResult) -> dict[str, Any]:
        return evaluate(trained, synth)

    def score(self, synth: SynthResult, restored) -> dict[str, float]:
        return score(synth, restored)

    def figure(self, synth: SynthResult, restored) -> list[tuple[str, Any]]:
        return figure(synth, restored)

    # ------------------------------------------------------------------ benchmark
    def bench(self, out_dir: Path, *, progress: bool = False, **options: Any) -> dict[str, Any]:
        from ...bench._jobs import card_mode
        from .bench import card_quality, run_zsegan_bench

        scored = card_mode(options.pop("card", None), options.pop("built", None), options,
                           out_dir, card_quality)
        if scored is not None:
            return scored
        extra = {k.split(".", 1)[1]: options.pop(k) for k in list(options)
                 if k.startswith("extra.")}
        for key, choices in (("upsample", ("transposed", "resize", "linear")),
                             ("z_padding", ("zeros", "replicate")),
                             ("d_norm", ("instance", "none")),
                             ("infocus_match", ("none", "focal")),
                             ("warm_start_noise", ("white", "residual")),
                             ("adversarial", ("anchored", "paper"))):
            v = options.get(key, extra.get(key))
            if v is not None and v not in choices:
                raise InputError(f"--{key.replace('_', '-')} must be one of "
                                 f"{', '.join(choices)}; got {v!r}")
        return run_zsegan_bench(out_dir, progress=progress, extra=extra or None, **options)
