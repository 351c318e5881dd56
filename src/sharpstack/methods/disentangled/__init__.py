"""Disentangled-representation deblurring (Ritsema, MSc thesis, University of Twente 2023).

An autoencoder whose latent space is split into an *identity* code and a *blur* code is
trained on images of the same field (an identity) at many defocus levels. Deblurring decodes
the identity code of a blurry image with the blur code of an in-focus image.

Three models (``DisentangledConfig.variant``):

- ``manifold``: the thesis's own model (after Fumero et al. 2021): reconstruction loss plus,
  delayed by an exponential ``beta`` schedule, a consistency loss, a contrastive loss (margin
  0.6) and a cross-reconstruction loss (thesis Eq. 4.5).
- ``manifold1d``: the same with a one-dimensional blur code (the thesis's best model).

Every variant runs on one of two networks (``DisentangledConfig.architecture``): ``skips``
(the default) passes multi-scale identity features to the decoder as part of the identity
code; ``thesis`` is the thesis's network, whose identity code at 1/8 resolution cannot
reconstruct fine detail (kept for the ablation).
- ``mlvae``: the ML-VAE baseline (Bouchacourt et al. 2018): Gaussian codes, the identity
  posterior of a group of images of one field accumulated as a product of Gaussians, KL terms
  for both codes (thesis Eq. 4.4).

Training samples are built from a :class:`DefocusSeries` (``N`` identities x ``L`` focal
planes, each with its in-focus plane): one item is a group of images of one identity at
distinct defocus levels, cropped at the same place, plus one image of another identity at the
defocus of the first (the "same blur, different identity" pair of the thesis). Identities are
split into training / validation / test sets (seeded, recorded in the run).

The exported deploy module (:class:`~.disentangled_arch.DisentangledDeploy`) holds the mean
blur code of the in-focus training images as a buffer: 2D in, 2D out.

The folder holds everything of the method: ``settings`` (training, data and synthetic-data
options), ``data`` (defocus series, split, datasets), ``losses``, ``task`` (the training
tasks and :func:`train_disentangled`), ``model`` (the trained model, :func:`deblur`),
``disentangled_arch`` (the networks and the deploy module, one self-contained file shipped in
packages), ``package`` (the package request) with its card template ``card.md``, ``synth``
(synthetic defocus series, the demo's data) with ``defocus`` (widefield defocus PSFs and the
imaging of a series), ``evaluate`` (PSNR/SSIM for the card and the
demo), ``bench`` (the thesis's tables) with ``bench_report`` (its tables and figures), ``pairs``
(the real paired benchmark on one defocus series with its in-focus plane) and
``plugin`` (:class:`Disentangled`, the method interface). None of them writes files other than
through the training loop's ``out_dir`` or the benchmark's output folder, and none parses CLI
arguments (DESIGN.md).
"""

from __future__ import annotations

from .data import (DefocusSeries, GroupDataset, find_focus, is_shared_data,
                   read_defocus_series, series_from_stacks, shared_zscans_dir,
                   split_identities)
from .losses import (VGG16Features, VGGPerceptualLoss, beta_schedule, code_distance,
                     load_vgg16_features, product_of_gaussians)
from .model import DisentangledModel, deblur, decode_codes, encode_images, reconstruct
from .plugin import Disentangled
from .settings import VARIANTS, DisentangledConfig, DisentangledSettings, DisentangledSynth
from .synth import synthetic_series
from .task import MLVAETask, ManifoldTask, train_disentangled

__all__ = [
    "VARIANTS", "DisentangledConfig", "DefocusSeries", "find_focus", "series_from_stacks",
    "read_defocus_series", "synthetic_series", "split_identities", "GroupDataset",
    "code_distance", "product_of_gaussians", "beta_schedule", "VGG16Features",
    "load_vgg16_features", "VGGPerceptualLoss", "ManifoldTask", "MLVAETask", "DisentangledModel",
    "train_disentangled", "encode_images", "decode_codes", "deblur", "reconstruct",
    "DisentangledSettings", "DisentangledSynth", "Disentangled", "shared_zscans_dir",
    "is_shared_data",
]
