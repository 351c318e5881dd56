"""Training of disentangled deblurring: the tasks of the generic loop (the manifold models
and the ML-VAE baseline) and :func:`train_disentangled` (a defocus series -> a trained
model)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ...errors import InputError
from ...normalize import PercentileNormalizer
from ...training import TrainData, TrainTask, fit
from .data import DefocusSeries, GroupDataset, normalise_images, split_identities
from .disentangled_arch import DisentangledAE
from .losses import beta_schedule, code_distance, product_of_gaussians, recon_loss_for
from .model import DisentangledModel, encode_images
from .settings import DisentangledConfig

__all__ = ["ManifoldTask", "MLVAETask", "train_disentangled"]


class _DisentangledTask(TrainTask):
    """Shared parts: optimiser, the thesis's step-wise learning-rate decay, beta, val step."""

    def __init__(self, net: DisentangledAE, config: DisentangledConfig, recon) -> None:
        self.models = {"net": net}
        self.cfg = config
        self.recon = recon
        self.step = 0
        self.total = config.epochs * config.steps_per_epoch

    def state_dict(self) -> dict[str, Any]:
        return {"step": int(self.step)}

    def load_state_dict(self, state) -> None:
        self.step = int(state.get("step", 0))

    def make_optimizers(self):
        return {"adam": torch.optim.Adam(self.models["net"].parameters(), lr=self.cfg.lr,
                                         betas=(0.9, 0.999))}

    def _begin(self, optimizers) -> torch.optim.Optimizer:
        opt = optimizers["adam"]
        epoch = self.step // self.cfg.steps_per_epoch
        lr = self.cfg.lr * self.cfg.lr_decay ** (epoch // self.cfg.lr_decay_every)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        return opt

    def beta(self) -> float:
        return beta_schedule(self.step / max(self.total, 1), full=self.cfg.beta_full,
                             rate=self.cfg.beta_rate)

    def _codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.models["net"].encode(x)

    @torch.no_grad()
    def val_step(self, batch):
        imgs = batch[0]
        blurry, focused = imgs[:, 0], imgs[:, 1]
        net = self.models["net"]
        idc, blur = self._codes(torch.cat([blurry, focused]))
        n = blurry.shape[0]
        deblurred = net.decode(idc[:n], blur[n:], base=blurry)
        rec = net.decode(idc, blur, base=torch.cat([blurry, focused]))
        # with the supervised deblurring term, its L1 picks the best epoch: the SSIM of
        # gamma favours outputs that keep the input's noise when the in-focus plane is noisy
        loss = float(F.l1_loss(deblurred, focused) if self.cfg.w_deblur > 0
                     else self.recon(deblurred, focused))
        return {"loss": loss, "deblur": loss,
                "rec": float(self.recon(rec, torch.cat([blurry, focused])))}


class ManifoldTask(_DisentangledTask):
    """The manifold model's step (thesis Eq. 4.5):
    ``L = L_rec + beta (w_cons L_cons + w_cont L_cont + w_cross L_cross)``.

    Batch: ``(B, 3, 1, P, P)`` groups ``(a, b, c)``: ``a, b`` one identity at two defocus
    levels, ``c`` another identity at the defocus of ``a``.

    - ``L_rec``: ``gamma(D(E(x)), x)`` for ``a, b, c``.
    - ``L_cross`` (Eq. 4.8): swap the blur codes of the same-identity pair (``D(I_a, B_b)`` ->
      ``b``, ``D(I_b, B_a)`` -> ``a``) and of the same-blur pair (``D(I_a, B_c)`` -> ``a``,
      ``D(I_c, B_a)`` -> ``c``).
    - ``L_cont`` (Eq. 4.7): for ``(a, b)`` pull the identity codes together and push the blur
      codes apart up to the margin; for ``(a, c)`` the reverse.
    - ``L_cons`` (Eq. 4.6): re-encode ``D(I_a, B_b)``: its identity code must be ``I_a``;
      re-encode ``D(I_c, B_a)``: its blur code must be ``B_a``.
    - sharpstack's supervised term (``w_deblur`` > 0, not in the thesis): where ``b`` is the
      in-focus plane of ``a``'s field, ``w_deblur`` L1(``D(I_a, B_b)``, ``b``), undelayed:
      the defocus series holds the sharp image, so the deploy path is trained on it
      directly; L1 rather than gamma because SSIM rewards keeping the noise of the input.

    sharpstack's supervised phase (``supervised`` > 0, not in the thesis): the last
    ``supervised`` of the steps (all of them by default) train the deploy path alone,
    L1(``D(I_a, B_f)``, ``f``) with ``f`` the in-focus crop of ``a``'s field that ends every
    group, and no thesis losses. Why: the reconstruction term asks ``D(I_x, B_x) = x`` for
    every plane, the deploy path asks ``D(I_x, B_f)`` = the in-focus image, and when the blur
    codes of the two barely differ (a 1-D code on planes a few hundred nanometres apart) the
    decoder settles between them, at the identity.
    """

    def __init__(self, net: DisentangledAE, config: DisentangledConfig, recon) -> None:
        super().__init__(net, config, recon)
        self.supervised_from = int(round(self.total * (1.0 - config.supervised)))

    def _supervised_step(self, batch, optimizers):
        imgs = batch[0]
        xa, xf = imgs[:, 0], imgs[:, -1]
        n = xa.shape[0]
        net = self.models["net"]
        opt = self._begin(optimizers)
        idc, blur = net.encode(torch.cat([xa, xf]))
        loss = F.l1_loss(net.decode(idc[:n], blur[n:], base=xa), xf)
        self.backward(loss)
        self.optimizer_step(opt)
        self.step += 1
        return {"loss": float(loss.detach()), "deblur": float(loss.detach())}

    def train_step(self, batch, optimizers):
        cfg = self.cfg
        if cfg.supervised > 0 and self.step >= self.supervised_from:
            return self._supervised_step(batch, optimizers)
        imgs = batch[0]
        xa, xb, xc = imgs[:, 0], imgs[:, 1], imgs[:, 2]
        n = xa.shape[0]
        net = self.models["net"]
        opt = self._begin(optimizers)
        beta = self.beta()
        idc, blur = net.encode(torch.cat([xa, xb, xc]))
        ia, ib, ic = idc.split(n)
        ba, bb, bc = blur.split(n)
        cross = beta > 0 and cfg.w_cross > 0
        cons = beta > 0 and cfg.w_consistency > 0
        if cross or cons:
            out = net.decode(torch.cat([ia, ib, ic, ia, ib, ia, ic]),
                             torch.cat([ba, bb, bc, bb, ba, bc, ba]),
                             base=torch.cat([xa, xb, xc, xa, xb, xa, xc]))
            rec, swapped = out[: 3 * n], out[3 * n:]
        else:
            rec, swapped = net.decode(idc, blur, base=torch.cat([xa, xb, xc])), None
        l_rec = self.recon(rec, torch.cat([xa, xb, xc]))
        loss = l_rec
        logs = {"rec": float(l_rec.detach()), "beta": beta}
        if cross:
            l_cross = self.recon(swapped, torch.cat([xb, xa, xa, xc]))
            loss = loss + beta * cfg.w_cross * l_cross
            logs["cross"] = float(l_cross.detach())
        if beta > 0 and cfg.w_contrastive > 0:
            d, m = (lambda u, v: code_distance(u, v, cfg.distance)), cfg.margin
            l_cont = (d(ia, ib) + F.relu(m - d(ba, bb))
                      + d(ba, bc) + F.relu(m - d(ia, ic))).mean()
            loss = loss + beta * cfg.w_contrastive * l_cont
            logs["cont"] = float(l_cont.detach())
        if cfg.w_deblur > 0 and len(batch) > 1:
            # supervised deblurring where the partner b is a's in-focus plane: the deploy
            # path D(I_a, B_focus) against the in-focus image (L1, not delayed by beta)
            dz = batch[1]
            sel = (dz[:, 1] == 0) & (dz[:, 0] != 0)
            if bool(sel.any()):
                x_ab = (swapped[:n] if swapped is not None
                        else net.decode(ia, bb, base=xa))
                l_deb = F.l1_loss(x_ab[sel], xb[sel])
                loss = loss + cfg.w_deblur * l_deb
                logs["deblur"] = float(l_deb.detach())
        if cons:
            x_ab, x_ca = swapped[:n], swapped[3 * n:]
            i2, b2 = net.encode(torch.cat([x_ab, x_ca]))
            l_cons = 0.5 * (code_distance(i2[:n], ia, cfg.distance).mean()
                            + code_distance(b2[n:], ba, cfg.distance).mean())
            loss = loss + beta * cfg.w_consistency * l_cons
            logs["cons"] = float(l_cons.detach())
        self.backward(loss)
        self.optimizer_step(opt)
        self.step += 1
        logs["loss"] = float(loss.detach())
        return logs


class MLVAETask(_DisentangledTask):
    """The ML-VAE step (Bouchacourt et al. 2018; thesis Eq. 4.4), maximising the ELBO.

    Batch: ``(B, G+1, 1, P, P)``; the first ``G`` images of every group show one identity. The
    identity posteriors of the group are multiplied (a product of Gaussians: precisions add,
    the mean is precision-weighted), one identity sample is drawn for the group and one blur
    sample per image, and every image is decoded from the pair. Loss: mean reconstruction loss
    plus ``kl_weight`` times (the blur KL of every image + the group's identity KL) divided by
    the pixels of the group's images.
    """

    def train_step(self, batch, optimizers):
        cfg = self.cfg
        imgs = batch[0][:, : cfg.group_size]
        b, g = imgs.shape[:2]
        x = imgs.reshape((b * g,) + imgs.shape[2:])
        net = self.models["net"]
        opt = self._begin(optimizers)
        idc, blur = net.encode_full(x)
        ci, cb = net.code_channels, net.blur_channels
        mu_i, lv_i = idc[:, :ci], idc[:, ci:].clamp(-10.0, 10.0)
        mu_b, lv_b = blur[:, :cb], blur[:, cb:].clamp(-10.0, 10.0)
        mu_g, var_g = product_of_gaussians(mu_i.reshape((b, g) + mu_i.shape[1:]),
                                           lv_i.reshape((b, g) + lv_i.shape[1:]))
        z_i = mu_g + torch.sqrt(var_g) * torch.randn_like(mu_g)
        z_b = mu_b + torch.exp(0.5 * lv_b) * torch.randn_like(mu_b)
        z_i = z_i[:, None].expand((b, g) + z_i.shape[1:]).reshape(mu_i.shape)
        out = net.decode(z_i, z_b, base=x)
        l_rec = self.recon(out, x)
        kl_b = 0.5 * torch.sum(mu_b ** 2 + torch.exp(lv_b) - lv_b - 1.0)
        kl_i = 0.5 * torch.sum(mu_g ** 2 + var_g - torch.log(var_g) - 1.0)
        kl = (kl_b + kl_i) / float(x.numel())
        loss = l_rec + cfg.kl_weight * kl
        self.backward(loss)
        self.optimizer_step(opt)
        self.step += 1
        return {"loss": float(loss.detach()), "rec": float(l_rec.detach()),
                "kl": float(kl.detach())}


def _mean_focus_code(model: DisentangledModel, series: DefocusSeries, idx: Sequence[int],
                     normalized: bool = False) -> np.ndarray:
    imgs = series.images[list(idx), series.focus[list(idx)]]
    _, blur = encode_images(model, imgs, normalized=normalized)
    return blur.mean(axis=0).astype(np.float32)


def train_disentangled(series: DefocusSeries, config: DisentangledConfig, *,
                       out_dir: str | Path | None = None, resume: bool = False,
                       progress: bool = False, workers: int = 0,
                       normalized: bool = False) -> DisentangledModel:
    """Train a disentangled-deblurring model on a defocus series.

    Identities are split by :func:`split_identities` (``config.val_fraction``,
    ``config.test_fraction``, ``config.seed``); training groups come from the training
    identities only, the validation loss (deblurring: ``gamma(D(I_blurry, B_focus),
    in-focus)``) from the validation identities. The returned model holds the network of the
    best validation epoch and the mean in-focus blur code of the training identities.

    Parameters
    ----------
    series : DefocusSeries
    config : DisentangledConfig
    out_dir, resume, progress
        Passed to :func:`sharpstack.training.fit`.
    workers : int
        DataLoader worker processes building the groups.
    normalized : bool
        ``series.images`` are already normalised (e.g. tiles cut from a region normalised as a
        whole, as it is scored): train on them as they are. Default: every image is
        normalised by its own percentiles (as the package's preprocessing does per sample).
    """
    if not isinstance(series, DefocusSeries):
        raise TypeError("series must be a DefocusSeries (see read_defocus_series)")
    mult = config.multiple
    ny, nx = series.images.shape[2:]
    if min(ny, nx) < config.patch_size:
        raise InputError(f"images of {ny}x{nx} pixels are smaller than patch_size "
                         f"{config.patch_size}; use a smaller patch size (a multiple of {mult})")
    if series.n_planes < config.group_size and config.variant == "mlvae":
        raise InputError(f"group_size {config.group_size} exceeds the {series.n_planes} planes "
                         f"of the series; lower group_size")
    split = split_identities(series.n_identities, val_fraction=config.val_fraction,
                             test_fraction=config.test_fraction, seed=config.seed)
    normalizer = PercentileNormalizer(config.pmin, config.pmax)
    norm = series.images if normalized else normalise_images(series.images, normalizer)
    group = config.group_size if config.variant == "mlvae" else 2
    total = config.epochs * config.steps_per_epoch * config.batch_size
    train_ds = GroupDataset(norm, series.focus, split["train"], patch_size=config.patch_size,
                            group_size=group, p_focus=config.p_focus, length=max(total, 1),
                            seed=config.seed, augment=config.augment,
                            with_focus=config.variant != "mlvae" and config.supervised > 0)
    # validation: (blurry, in-focus) pairs of the validation identities (no partner needed)
    val_ds = GroupDataset(norm, series.focus, split["val"], patch_size=config.patch_size,
                          group_size=2, length=config.val_items, seed=config.seed + 7919,
                          augment=False, force_focus=True, need_other=False)
    torch.manual_seed(config.seed)
    net = DisentangledAE(**config.arch_kwargs())
    recon = recon_loss_for(config)
    task_cls = MLVAETask if config.variant == "mlvae" else ManifoldTask
    task = task_cls(net, config, recon)
    if isinstance(recon, nn.Module):
        from ...training import pick_device

        recon.to(pick_device(config.device))
    names = {k: [series.names[i] for i in v] for k, v in split.items()}
    record = {"disentangled": config.model_dump(), "split": names,
              "focus": [int(f) for f in series.focus], "n_planes": series.n_planes,
              "image_size": [int(ny), int(nx)]}
    result = fit(task, TrainData(train_ds, val_ds, workers=workers), config.train_config(),
                 out_dir=out_dir, resume=resume, progress=progress, config_record=record)
    model = DisentangledModel(net=task.models["net"].eval(), config=config,
                              normalizer=normalizer, focus_code=np.zeros(0, np.float32),
                              split=names, result=result)
    model.focus_code = _mean_focus_code(model, series, split["train"], normalized)
    return model
