"""ZSE-GAN: focal-length weighted GANs for z-scan stacks ("Visual enhancement of image stacks
from a z-scanning microscope using focal lengths weighted GANs"; reference code
keerfish/ZSE-GAN; ``../shared/papers/zse-gan-focal-weighted-gans.md``).

A z-scan x through a thin tissue section is sharp only near its focal plane. Without any 3D
ground truth, a 3D generator G_S learns to make every horizontal plane x_∥ and every vertical
section x_⊥ as sharp as in-focus 2D images y*, while a second 3D generator G_B maps the
result back (cycle consistency). Both are trained against two 2D PatchGAN discriminators:

- D_S sees horizontal sections y_∥ and vertical sections y_⊥ of ``y = G_S(x)`` against sharp
  in-focus images (weights 1 - p and p, p = 0.35);
- D_B sees horizontal sections of ``G_B(y)`` against the planes of x, each weighted by the
  focal coefficient α(d) of its plane (1.67 at the stack ends, 1.00 at the focal plane).

What is y for G_B? The paper defines the sharp set Y as "the translated x from X"
(Sect. 2.2): there are no 3D sharp volumes, so G_B's input is always ``y = G_S(x)`` and
``G_B(y) = G_B(G_S(x))`` is both the cycle reconstruction and what D_B judges (as in the
reference notebook). The 2D sets are only ever seen by D_S.

Losses (least-squares GAN, Mao et al. 2017, as in the notebook), per training step with a
batch of z-scan crops, in-focus crops and sharp vertical crops::

    L_G = (1-p) E_k[w_k (D_S(y_∥k) - 1)²] + p E[(D_S(y_⊥) - 1)²]
          + E_k[α_k (D_B(G_B(y)_∥k) - 1)²]
          + λ Σ_k c_k |x_k - G_B(y)_k|₁ / Z                 (per-slice weighted cycle L1)
          + λ_id (|G_B(x) - x|₁ + |G_S(y) - y|₁)            (identity, notebook)
    L_D = ½[(1-p)(D_S(y*)-1)² + p(D_S(y*_⊥)-1)² + (1-p) w D_S(pool_∥)² + p D_S(pool_⊥)²]
          + ½[α (D_B(x_∥)-1)² + α D_B(pool_B)²]

with ``k`` the sampled planes, ``w_k = 1`` (the paper's Eq. 2-3; ``alpha_on_ds`` uses α as
the notebook does), ``c_k`` the notebook's per-slice cycle weights, fake sections drawn from
image pools of 50 (Shrivastava et al. 2017), two Adam optimisers (generators,
discriminators), lr 2e-4, betas (0.5, 0.999).

The folder holds everything of the method: ``settings`` (training, data and synthetic-data
options), ``data`` (z-scans and 2D sets read from folders, split, datasets), ``task`` (the
per-slice weights, image pools and the training step), ``model`` (the trained model,
:func:`train_zsegan`, :func:`restore`), ``zsegan_arch`` (the networks and the deploy module,
one self-contained file shipped in packages), ``package`` (the package request) with its card
template ``card.md``, ``synth`` (the demo's data) with ``phantom`` (synthetic z-scans, also
the packages' test input), ``evaluate`` (the no-reference scores),
``bench`` (the paper's tables) and ``plugin`` (:class:`ZSEGAN`, the method interface). None of
them writes files other than through the training loop's ``out_dir`` or the benchmark's output
folder, and none parses CLI arguments (DESIGN.md).
"""

from __future__ import annotations

from .data import (match_histogram, read_images2d, read_zscans, shared_data_dir, split_zscans,
                   vertical_sections)
from .model import ZSEGANModel, restore, train_zsegan
from .plugin import ZSEGAN
from .settings import ZSEGANConfig, ZSEGANSettings, ZSEGANSynth
from .task import ImagePool, ZSEGANTask, cycle_weights, focal_coefficients

__all__ = ["ZSEGANConfig", "ZSEGANSettings", "ZSEGANSynth", "ZSEGAN", "ZSEGANTask",
           "ZSEGANModel", "ImagePool", "focal_coefficients", "cycle_weights", "read_zscans",
           "read_images2d", "train_zsegan", "match_histogram", "restore", "split_zscans",
           "vertical_sections",
           "shared_data_dir"]
