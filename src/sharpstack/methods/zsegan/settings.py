"""ZSE-GAN's settings: the training configuration (the paper's and the reference notebook's
defaults), the data options of ``sharpstack train zsegan`` and the synthetic-data options of
``sharpstack synth zsegan``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ...training import BatchSize, Epochs, LearningRate, LoopSettings, LrSchedule, TrainConfig

__all__ = ["ZSEGANConfig", "ZSEGANSettings", "ZSEGANSynth"]


class ZSEGANConfig(LoopSettings, LrSchedule):
    """Everything that defines a ZSE-GAN training run.

    Defaults are the paper's and, where the paper is silent, the reference notebook's
    (network sizes, loss weights, pool, optimiser). A reduced CPU recipe changes only the
    size fields (``crop``, ``ngf``, ``n_res``, ``ndf``, ``epochs``, ``steps_per_epoch``).
    Unknown keys are rejected by name (a zoo recipe loads into this model). The loop's
    options (epochs, steps per epoch, batch size, lr, seed, device) come from
    :class:`~sharpstack.training.LoopSettings`, with the notebook's defaults set here; there
    is no early stopping; ``lr_schedule`` "cosine" (not in the notebook, whose rate is
    constant for the paper's recipe) decays both optimisers' rate over the epochs.
    """

    model_config = ConfigDict(extra="forbid")

    epochs: Epochs = 200
    batch_size: BatchSize = 1
    """z-scans per batch (the paper: 1)."""
    lr: LearningRate = 2e-4
    """Adam learning rate of both optimisers."""
    n_planes: int = Field(29, ge=5, le=512, description=(
        "Focal planes per z-scan (29 in the paper); every z-scan must have exactly this many."))
    focal_plane: int | None = Field(None, ge=1, description=(
        "1-based index of the in-focus plane (default: the centre, 15 of 29)."))
    crop: int = Field(128, ge=16, le=1024, description=(
        "Lateral size of the training crops of z-scans and in-focus images (multiple of 4; "
        "the paper trains on whole 128x128 scans)."))
    ngf: int = Field(16, ge=1, le=256, description="Generator filters of the first layer.")
    n_res: int = Field(6, ge=0, le=32, description="Residual blocks of each generator.")
    first_kernel: int = Field(5, ge=1, le=9, description="Size of the first 3D convolution (odd).")
    residual: bool = Field(False, description=(
        "Generators output x + net(x), starting as the identity (not in the notebook: its "
        "generators end in tanh; converges in far fewer steps, for short CPU trainings)."))
    upsample: Literal["transposed", "resize", "linear"] = Field("transposed", description=(
        "Decoder upsampling: stride-2 transposed convolutions (the notebook), nearest x2 + "
        "convolution (no checkerboard artefacts), or trilinear x2 + convolution (no 2x2 "
        "block phase; on the brain z-scans the adversarial training then drew an oblique "
        "2-3 px hatching instead of the 4-px grid, README)."))
    z_padding: Literal["zeros", "replicate"] = Field("zeros", description=(
        "Padding of the generators' convolutions at the first and last focal planes: zeros "
        "(the notebook) or the outermost planes repeated (the outermost planes then see "
        "defocused content beyond them rather than mid-grey)."))
    self_ensemble: bool = Field(False, description=(
        "The exported G_S returns the mean of its outputs for the 8 lateral flips and 90-degree "
        "rotations of the z-scan, each turned back (not in the paper): 8x the inference time; "
        "removes the generator's 4-px grid and part of the far planes' noise, at the cost of "
        "the no-reference sharpness scores (FM, PIQE), which that texture raises."))
    ndf: int = Field(32, ge=1, le=512, description="Discriminator filters of the first layer.")
    d_layers: int = Field(4, ge=1, le=6, description="Stride-2 layers of each PatchGAN.")
    d_norm: Literal["instance", "none"] = Field("instance", description=(
        "Normalisation inside the discriminators: instance norm (the notebook) or none. "
        "Instance norm rescales every channel to unit variance, erasing the edge energy "
        "that separates blurred from sharp sections; on small crops (3x3 maps) the "
        "discriminators then cannot tell them apart and the generator stays the identity."))
    infocus_match: Literal["focal", "none"] = Field("none", description=(
        "Map the in-focus images' intensities onto the histogram of the training z-scans' "
        "focal planes (quantile mapping) so that D_S compares sharpness, not brightness "
        "(normalised on their own, the in-focus crops are brighter: mean 0.66 vs 0.58), or "
        "leave them as normalised (the notebook)."))
    p_vertical: float = Field(0.35, ge=0.0, le=1.0, description=(
        "Weight p of the vertical sections in D_S's loss (horizontal: 1 - p)."))
    lambda_cycle: float = Field(10.5, ge=0.0, le=1000.0, description=(
        "Weight of the per-slice weighted cycle-consistency L1."))
    lambda_identity: float = Field(0.5, ge=0.0, le=100.0, description=(
        "Weight of the identity L1 terms (0 skips them and their two generator passes)."))
    cycle_weighting: Literal["notebook", "focal", "uniform"] = Field("notebook", description=(
        "Per-slice weights c_k of the cycle L1: the reference notebook's (3.05 at the ends, "
        "1.03 at the focal plane), the focal coefficients α, or all 1."))
    cycle_reduce: Literal["mean", "max"] = Field("mean", description=(
        "Combine the weighted per-slice L1s by their mean (the paper's expectation) or "
        "their maximum (the notebook)."))
    alpha_on_ds: bool = Field(False, description=(
        "Also weight D_S's horizontal sections by α (the notebook; the paper does not)."))
    sections: int = Field(1, ge=1, le=256, description=(
        "Horizontal planes and vertical sections sampled per z-scan and step for each "
        "adversarial term (the notebook: 1)."))
    warm_start_steps: int = Field(300, ge=0, le=10**7, description=(
        "Physics warm start (not in the paper): steps of supervised pretraining of G_S "
        "(synthetic z-scan -> in-focus image on every plane) and G_B (the reverse) on "
        "z-scans synthesised from the in-focus crops with the per-plane defocus model "
        "fitted on the training z-scans, before the adversarial + cycle training; 0 is "
        "the paper's recipe."))
    warm_start_scans: int = Field(16, ge=1, le=100000, description=(
        "Training z-scans on which the per-plane defocus model is fitted."))
    warm_start_crops: int = Field(1, ge=1, le=256, description=(
        "Synthetic z-scans (made from that many of the step's in-focus crops) per warm-start "
        "step and per synthetic term of the adversarial phase."))
    warm_start_noise: Literal["white", "residual"] = Field("white", description=(
        "What the synthetic z-scans carry besides the blurred in-focus image: white noise "
        "of the std fitted per plane, or random crops of the real residual, what the "
        "defocus model leaves unexplained on the training z-scans (the part of the far "
        "planes not correlated with the focal plane; a generator that never saw it "
        "amplifies it into a mottled texture)."))
    adversarial: Literal["anchored", "paper"] | None = Field(None, description=(
        "Losses of the adversarial phase. anchored (the default after a warm start; not in "
        "the paper): the adversarial terms plus the synthetic-pair L1 (synthetic_weight), "
        "no cycle and no identity terms; paper (the default without a warm start): "
        "adversarial + cycle (lambda_cycle) + identity (lambda_identity) terms. Measured on "
        "the paper's z-scans: after a warm start the cycle term undoes it within 50 steps "
        "(the real far planes hold structure the defocus model does not explain, so "
        "G_B(G_S(x)) misses x by 0.11, two identities by 0), while the anchored "
        "phase keeps flattening FM and lowers the outer planes' PIQE."))
    synthetic_weight: float | None = Field(None, ge=0.0, le=1000.0, description=(
        "Weight of the same supervised L1 on synthetic pairs kept during the adversarial "
        "phase (default 10 with adversarial anchored, 0 with the paper's losses)."))
    fidelity_weight: float | None = Field(None, ge=0.0, le=1000.0, description=(
        "Weight of a data-fidelity L1 in the adversarial phase (not in the paper; default 10 "
        "with adversarial anchored, 0 with the paper's losses): G_S's output, blurred plane "
        "by plane with the fitted defocus PSFs, must give back the real z-scan it came from "
        "(at the focal plane: the plane itself). It pins what the microscope recorded and "
        "leaves to the adversarial terms only what the blur removed; measured, it kept the "
        "focal plane (SSIM 1.000) through 1920 steps where the anchored phase without it "
        "rewrote it after ~650. Needs the fitted defocus model."))
    focal_anchor: float = Field(0.0, ge=0.0, le=1000.0, description=(
        "Weight of an L1 between G_S's output and its input at the focal plane of the real "
        "training z-scans, in the adversarial phase (not in the paper): that plane is in "
        "focus already, and without a real-data anchor the anchored phase rewrote it after "
        "~650 steps (measured)."))
    d_blur: float = Field(0.0, ge=0.0, le=8.0, description=(
        "Gaussian sigma (pixels) applied to every section D_S sees, real and generated (not "
        "in the paper; 0: none). An unblurred PatchGAN rewards any energy near the Nyquist "
        "frequency, which the generator supplies as a periodic 2-3 px texture; behind the "
        "blur that texture earns nothing and the fidelity terms remove it."))
    adversarial_lr: float | None = Field(None, gt=0.0, le=1.0, description=(
        "Learning rate of both optimisers in the adversarial phase, if other than lr (not "
        "in the paper): after a warm start the generators only need to be corrected, and a "
        "smaller step keeps the anchored phase from drifting away from the physics."))
    pool_size: int = Field(50, ge=0, le=10000, description="Image pool size (0: no pool).")
    lr_d: float | None = Field(None, gt=0.0, le=1.0, description=(
        "Discriminators' learning rate if other than lr (two time-scale update rule, Heusel "
        "et al. 2017; not in the notebook)."))
    beta1: float = Field(0.5, ge=0.0, lt=1.0, description="Adam beta1.")
    beta2: float = Field(0.999, ge=0.0, lt=1.0, description="Adam beta2.")
    val_count: int = Field(16, ge=1, le=100000, description=(
        "z-scans held apart (seeded) for validation and the benchmark (20% of 80 in the "
        "paper's split)."))
    val_monitor: int = Field(4, ge=1, le=100000, description=(
        "Held-apart z-scans scored after every epoch (validation log; the benchmark scores "
        "all of them after training)."))
    select: Literal["last", "best"] | None = Field(None, description=(
        "Weights kept: the last epoch's (as for any CycleGAN; the default with the paper's "
        "losses), or the epoch with the lowest validation criterion log(max FM / min FM "
        "over the planes) + 1 - SSIM at the focal plane (the default with the anchored "
        "adversarial phase, which has no cycle to keep it stable: measured, after 600 good "
        "steps it rewrote the focal plane, focal SSIM 0.99 -> 0.69; the monitored "
        "held-apart scans are then used for selection)."))
    calib_crops: int = Field(32, ge=1, le=100000, description=(
        "Training crops whose instance statistics become the stored normalisation of the "
        "exported generator."))
    pmin: float = Field(1.0, ge=0.0, lt=100.0, description="Lower normalisation percentile.")
    pmax: float = Field(99.8, gt=0.0, le=100.0, description="Upper normalisation percentile.")
    augment: bool = Field(True, description="Random lateral flips and 90 degree rotations.")

    @field_validator("crop")
    @classmethod
    def _crop4(cls, v: int) -> int:
        if v % 4:
            raise ValueError(f"crop must be a multiple of 4 (two stride-2 layers), got {v}")
        return v

    @field_validator("first_kernel")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"first_kernel must be odd, got {v}")
        return v

    @model_validator(mode="after")
    def _adversarial_losses(self) -> "ZSEGANConfig":
        # defaults that depend on the warm start, resolved here so that records store them
        if self.adversarial is None:
            self.adversarial = "anchored" if self.warm_start_steps > 0 else "paper"
        if self.synthetic_weight is None:
            self.synthetic_weight = 10.0 if self.adversarial == "anchored" else 0.0
        if self.fidelity_weight is None:
            self.fidelity_weight = 10.0 if self.adversarial == "anchored" else 0.0
        if self.select is None:
            self.select = "best" if self.adversarial == "anchored" else "last"
        if self.adversarial_lr is not None and self.lr_schedule != "constant":
            raise ValueError("adversarial_lr fixes the rate of the adversarial phase, "
                             "lr_schedule decays it: give one of them (--adversarial-lr or "
                             "--lr-schedule cosine)")
        if self.adversarial == "anchored" and self.synthetic_weight <= 0:
            raise ValueError("adversarial 'anchored' replaces the cycle and identity terms by "
                             "the synthetic-pair L1; give synthetic_weight > 0 "
                             "(--synthetic-weight 10) or adversarial 'paper' (--adversarial "
                             "paper)")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> "ZSEGANConfig":
        if self.focal_plane is not None and self.focal_plane > self.n_planes:
            raise ValueError(f"focal_plane {self.focal_plane} is beyond the {self.n_planes} "
                             f"planes")
        if self.pmin >= self.pmax:
            raise ValueError(f"pmin ({self.pmin}) must be below pmax ({self.pmax})")
        w = min(self.n_planes, self.crop)
        for _ in range(self.d_layers):
            w = (w - 2) // 2 + 1
        if w < 1:
            raise ValueError(f"d_layers={self.d_layers} halves sections of {self.n_planes} "
                             f"planes to nothing; use fewer layers")
        return self

    @property
    def focal_index(self) -> int:
        """0-based index of the focal plane."""
        return (self.focal_plane - 1) if self.focal_plane else (self.n_planes - 1) // 2

    def generator_kwargs(self) -> dict[str, Any]:
        """JSON-serialisable kwargs of both generators (rebuilds them from a package)."""
        return {"ngf": self.ngf, "n_res": self.n_res, "n_planes": self.n_planes,
                "first_kernel": self.first_kernel, "residual": self.residual,
                "upsample": self.upsample, "z_padding": self.z_padding}

    def discriminator_kwargs(self) -> dict[str, Any]:
        return {"ndf": self.ndf, "n_layers": self.d_layers, "norm": self.d_norm}

    def train_config(self) -> TrainConfig:
        """The loop's config: the held-apart scans are the method's own validation data
        (``val_fraction`` unused) and there is no early stopping."""
        return super().train_config(val_fraction=0.5, patience=None)


class ZSEGANSettings(ZSEGANConfig):
    """ZSE-GAN training settings plus the data options of ``sharpstack train zsegan``."""

    zscan_limit: int | None = Field(None, ge=2, le=10**6, description=(
        "Use only the first N z-scans of the folder (sorted by name)."))
    vertical: str | None = Field(None, description=(
        "Folder of sharp vertical sections (lateral x planes) for D_S (the notebook's "
        "trainA29); default: windows of the in-focus images."))


class ZSEGANSynth(BaseModel):
    """Data of ``sharpstack synth zsegan``: the paper's shared z-scans (read in place) or
    synthetic z-scans of :func:`.phantom.zscan`."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["shared", "synthetic"] = Field("shared", description=(
        "shared: the paper's z-scans in ../shared/data/zse_gan (not copied); synthetic: "
        "phantom z-scans with their true in-focus fields."))
    zscans: int = Field(12, ge=2, le=10**5, description="Number of z-scans used.")
    held_apart: int = Field(4, ge=1, le=10**5, description=(
        "Of those, z-scans held apart (seeded); the first is the sample."))
    infocus: int = Field(16, ge=1, le=10**5, description="Synthetic in-focus images.")
    size: int = Field(64, ge=16, le=2048, description="Synthetic lateral size (pixels).")
    planes: int = Field(29, ge=5, le=512, description="Synthetic focal planes.")
    sigma_max: float = Field(4.0, gt=0, le=50, description=(
        "Synthetic defocus blur (pixels) of the outermost plane."))
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed (also the split's).")

    @model_validator(mode="after")
    def _check(self) -> "ZSEGANSynth":
        if self.held_apart >= self.zscans:
            raise ValueError(f"held_apart ({self.held_apart}) must be below zscans "
                             f"({self.zscans})")
        return self
