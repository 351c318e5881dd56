"""Settings of disentangled deblurring: the training configuration (the thesis's defaults),
the data options of ``sharpstack train disentangled`` and the synthetic-data options of
``sharpstack synth disentangled``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ...training import (BatchSize, EarlyStopping, Epochs, LoopSettings, Patience,
                        Steps)

__all__ = ["VARIANTS", "DisentangledConfig", "DisentangledSettings", "DisentangledSynth"]

VARIANTS = ("manifold1d", "manifold", "mlvae")


class DisentangledConfig(LoopSettings, EarlyStopping):
    """Everything that defines a disentangled-deblurring training run.

    Thesis values where the thesis gives them (Adam 0.9/0.999, lr 1e-3 x 0.98 every 5 epochs,
    400 epochs, margin 0.6, the architecture); the reduced CPU recipe changes only sizes and
    lengths. Unknown keys are rejected by name (a zoo recipe loads into this model). The
    loop's options (epochs, steps per epoch, batch size, lr, patience, seed, device) come
    from :class:`~sharpstack.training.LoopSettings`, with this method's defaults set here
    (steps per epoch is always set: the beta schedule and the lr decay count steps).
    """

    model_config = ConfigDict(extra="forbid")

    epochs: Epochs = 60
    """Training epochs (the thesis: 400)."""
    steps_per_epoch: Steps = 50
    batch_size: BatchSize = 8
    """Groups per batch (each group: group_size images of one identity + one of another)."""
    patience: Patience = None

    variant: Literal["manifold1d", "manifold", "mlvae"] = Field(
        "manifold1d", description="manifold1d: manifold model with a 1-D blur code (the "
        "thesis's best); manifold: the thesis's manifold model; mlvae: the ML-VAE baseline")
    channels: list[int] = Field(
        [16, 32, 64], min_length=1, max_length=6,
        description="channels of each encoder block (one 2x2 pooling each; the last entry is "
        "the identity and blur heads). Thesis: 64, 128, 256, 512")
    architecture: Literal["skips", "thesis"] = Field(
        "skips", description="skips: the identity branch also passes multi-scale features "
        "(skip_channels per level) to the decoder, part of the identity code (sharpstack's "
        "default: the thesis's network cannot reconstruct fine detail from a code at "
        "1/2**len(channels) resolution); thesis: the thesis's network (the ablation)")
    residual: bool = Field(
        True, description="manifold models: the decoder corrects the image whose identity it "
        "decodes (input + correction, the identity when untrained; sharpstack's default, "
        "issue 22); False: the thesis's decoder, which redraws the image from the codes")
    batch_norm: bool = Field(
        False, description="batch normalisation after every 3x3 convolution (the thesis's); "
        "False (sharpstack's default): convolutions with biases instead, which deblurred the "
        "real paired series better (29.21 against 29.03 dB, supervised training)")
    skip_channels: int = Field(8, ge=1, le=512, description="channels of the identity skip "
                               "features at every resolution (architecture skips)")
    id_channels: int = Field(64, ge=1, le=2048, description="channels of the identity code "
                             "map (thesis 512)")
    blur_channels: int | None = Field(
        None, ge=1, le=2048, description="length of the blur code; default 1 for manifold1d "
        "and id_channels otherwise (thesis: 512, or 1)")
    patch_size: int = Field(64, ge=16, le=1024, description="square training crop in pixels "
                            "(a multiple of 2**len(channels); thesis 128)")
    lr_decay: float = Field(0.98, gt=0, le=1, description="learning-rate factor applied "
                            "every lr_decay_every epochs (thesis 0.98)")
    lr_decay_every: int = Field(5, ge=1, le=10000, description="epochs between decays "
                                "(thesis 5)")
    margin: float = Field(0.6, gt=0, le=10, description="contrastive margin m on the "
                          "normalised distance (thesis 0.6)")
    distance: Literal["rms", "unit"] = Field(
        "rms", description="code distance delta: rms = Euclidean distance divided by the "
        "square root of the code length (defined for a 1-D code); unit = Euclidean distance "
        "of the codes scaled to unit length")
    beta_full: float = Field(0.075, ge=0, le=1, description="fraction of training at which "
                             "beta reaches 1 (thesis: about 30 of 400 epochs)")
    beta_rate: float = Field(25.0, gt=0, le=1000, description="beta = min(exp(beta_rate * "
                             "(t - beta_full)), 1), t = fraction of training done (Fumero et "
                             "al.'s code: 25)")
    w_consistency: float = Field(1.0, ge=0, le=1000, description="weight of the consistency "
                                 "loss (0 switches it off)")
    w_contrastive: float = Field(1.0, ge=0, le=1000, description="weight of the contrastive "
                                 "loss (0: the 'without contrastive' ablation)")
    w_cross: float = Field(1.0, ge=0, le=1000, description="weight of the cross-"
                           "reconstruction loss (0: the 'without cross-reconstruction' "
                           "ablation)")
    w_deblur: float = Field(4.0, ge=0, le=1000, description="weight of sharpstack's "
                            "supervised deblurring term: L1 of D(I_a, B_focus) against the "
                            "in-focus plane where a pair's partner is in focus (not delayed; "
                            "0: the thesis's losses only)")
    supervised: float = Field(1.0, ge=0, le=1, description="manifold models: fraction of "
                              "the training steps, at the end, that train the deploy path alone "
                              "(sharpstack's, issue 22): L1 of D(I_a, B_f) against a's in-focus "
                              "plane f for every group, no thesis losses. 1 (the default): the "
                              "whole run; 0: the thesis's losses to the end")
    recon_loss: Literal["ssim_l1", "vgg"] = Field(
        "ssim_l1", description="reconstruction loss gamma: ssim_l1 = alpha (1 - SSIM) + "
        "(1 - alpha) L1 (no downloads); vgg = VGG-16 perceptual loss from vgg_weights")
    ssim_alpha: float = Field(0.84, ge=0, le=1, description="SSIM weight of ssim_l1")
    vgg_weights: str | None = Field(None, description="state dict of torchvision's vgg16 "
                                    "'features' (needed by recon_loss=vgg)")
    vgg_layers: list[int] = Field([3, 8, 15], min_length=1, max_length=13,
                                  description="indices of the ReLU layers of vgg16.features "
                                  "compared (3, 8, 15 = relu1_2, relu2_2, relu3_3)")
    kl_weight: float = Field(1.0, ge=0, le=1e6, description="ML-VAE: weight of the KL terms "
                             "(KL summed over the code, divided by the pixels of the image)")
    group_size: int = Field(4, ge=2, le=64, description="ML-VAE: images of one identity per "
                            "group (the manifold models use pairs)")
    p_focus: float = Field(0.25, ge=0, le=1, description="probability that the partner of a "
                           "same-identity pair is the in-focus plane (the thesis does not say "
                           "how pairs are drawn)")
    val_fraction: float = Field(0.15, gt=0, lt=1, description="fraction of identities for "
                                "validation (early stopping criterion: deblurring loss)")
    test_fraction: float = Field(0.0, ge=0, lt=1, description="fraction of identities held "
                                 "out entirely (recorded, never trained or validated on)")
    val_items: int = Field(64, ge=1, le=100000, description="validation groups per epoch "
                           "(fixed, seeded)")
    augment: bool = Field(True, description="random flips and 90 degree rotations (the same "
                          "for all images of one identity)")
    self_ensemble: bool = Field(True, description="the deployed model averages its output "
                                "over the 8 flips and 90 degree rotations of the image "
                                "(geometric self-ensemble, Lim et al. 2017; sharpstack's, "
                                "issue 22): 8x the inference time, +0.07 dB on the real "
                                "z-scans; the training is unchanged")
    pmin: float = Field(1.0, ge=0, lt=100, description="lower percentile of the per-image "
                        "normalisation (bioimage.io scale_range)")
    pmax: float = Field(99.8, gt=0, le=100, description="upper percentile")

    @model_validator(mode="after")
    def _check(self) -> "DisentangledConfig":
        if any(c < 1 or c > 4096 for c in self.channels):
            raise ValueError(f"channels must be between 1 and 4096, got {self.channels}")
        mult = 2 ** len(self.channels)
        if self.patch_size % mult:
            raise ValueError(f"patch_size {self.patch_size} must be a multiple of "
                             f"2**len(channels) = {mult}")
        if self.variant == "manifold1d" and self.blur_channels not in (None, 1):
            raise ValueError(f"variant manifold1d has a 1-D blur code; blur_channels must be 1 "
                             f"or unset, got {self.blur_channels}")
        if self.recon_loss == "vgg" and not self.vgg_weights:
            raise ValueError("recon_loss 'vgg' needs vgg_weights (a state dict of torchvision's "
                             "vgg16 features); or use recon_loss 'ssim_l1'")
        if self.pmin >= self.pmax:
            raise ValueError(f"pmin {self.pmin} must be below pmax {self.pmax}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must leave identities to train on")
        if any(i < 0 or i > 29 for i in self.vgg_layers):
            raise ValueError(f"vgg_layers are indices into vgg16.features (0..29), got "
                             f"{self.vgg_layers}")
        return self

    @property
    def code_blur_channels(self) -> int:
        """The length of the blur code this config trains."""
        if self.variant == "manifold1d":
            return 1
        return int(self.blur_channels or self.id_channels)

    @property
    def multiple(self) -> int:
        """Image sizes must be multiples of this (``2**len(channels)``)."""
        return 2 ** len(self.channels)

    def arch_kwargs(self) -> dict[str, Any]:
        """JSON-serialisable kwargs of the network (used to rebuild it from a package)."""
        return {"channels": [int(c) for c in self.channels], "id_channels": self.id_channels,
                "blur_channels": self.code_blur_channels,
                "variational": self.variant == "mlvae",
                "skip_channels": self.skip_channels if self.architecture == "skips" else 0,
                "residual": bool(self.residual and self.variant != "mlvae"),
                "batch_norm": bool(self.batch_norm)}


class DisentangledSettings(DisentangledConfig):
    """What ``sharpstack train disentangled`` takes: the training config plus data options."""

    focus_plane: int | None = Field(None, ge=1, le=100000, description="1-based in-focus "
                                    "plane of every stack (default: found per stack by the "
                                    "focus measure FM)")

    def config(self) -> DisentangledConfig:
        return DisentangledConfig(**self.model_dump(exclude={"focus_plane"}))


class DisentangledSynth(BaseModel):
    """``sharpstack synth disentangled``: a synthetic widefield defocus series (see
    :func:`synthetic_series`) plus one more field as the sample (a defocused 2D plane and its
    whole series), with known in-focus images."""

    model_config = ConfigDict(extra="forbid")

    identities: int = Field(24, ge=4, le=10000, description="fields of view (identities) of "
                            "the training series")
    size: int = Field(96, ge=32, le=2048, description="lateral size of every field (pixels)")
    dz_max: float = Field(3.0, gt=0, le=50, description="largest defocus above and below "
                          "focus (micrometres)")
    dz_step: float = Field(0.5, gt=0, le=10, description="plane spacing (micrometres)")
    pixel_um: float = Field(0.2, gt=0, le=10, description="pixel size (micrometres)")
    na: float = Field(1.0, gt=0, lt=1.33, description="objective NA (oil objective, water "
                      "sample)")
    photons: float | None = Field(200.0, gt=0, description="photons at the brightest pixel "
                                  "of the in-focus series (None: no shot noise)")
    read_noise: float = Field(0.01, ge=0, le=1, description="Gaussian read noise")
    sample_dz: float = Field(2.0, description="defocus of the 2D sample plane (micrometres)")
    seed: int = Field(0, ge=0, description="random seed")

    @model_validator(mode="after")
    def _check(self) -> "DisentangledSynth":
        n = self.dz_max / self.dz_step
        if abs(n - round(n)) > 1e-6 or round(n) < 1:
            raise ValueError(f"dz_max {self.dz_max} must be a positive multiple of dz_step "
                             f"{self.dz_step}")
        k = self.sample_dz / self.dz_step
        if abs(k - round(k)) > 1e-6 or abs(self.sample_dz) > self.dz_max:
            raise ValueError(f"sample_dz {self.sample_dz} must be one of the planes (a multiple "
                             f"of dz_step within +-dz_max)")
        return self

    def dz(self) -> list[float]:
        n = int(round(self.dz_max / self.dz_step))
        return [round(k * self.dz_step, 6) for k in range(-n, n + 1)]
