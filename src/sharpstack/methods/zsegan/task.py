"""ZSE-GAN's training task for the generic loop: the per-slice weights (focal coefficients α,
cycle weights), the image pools and :class:`ZSEGANTask` (generator and discriminator steps,
stored normalisation statistics, validation)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ...errors import InputError
from ...training import TrainTask
from .data import vertical_sections
from .settings import ZSEGANConfig
from .warmstart import DefocusModel, ZScanSynthesizer, reblur_zscans
from .zsegan_arch import PatchDiscriminator2D, ResnetGenerator3D, calibrate_norms

__all__ = ["focal_coefficients", "cycle_weights", "ImagePool", "ZSEGANTask", "gaussian_blur2d"]

_LAYOUT = torch.channels_last_3d  # ~2-3x faster 3D convolutions on CPU (measured, torch 2.x)


# --------------------------------------------------------------------------- per-slice weights
def _notebook_gaussian(sigma: float, x: float) -> float:
    """The notebook's ``gaussian``: round(3.4 N(x; 0, sigma) + 0.1, 2)."""
    g = math.exp(-x * x / (2 * sigma * sigma)) / (sigma * math.sqrt(2 * math.pi))
    return round(g * 3.4 + 0.1, 2)


def focal_coefficients(n_planes: int = 29) -> np.ndarray:
    """Focal coefficient α per plane (METHODS.md; the notebook's ``anisotropic``):
    ``0.72 + round(3.4 N(0.2 d; σ=1.6) + 0.1, 2)`` with d the distance (planes) from the
    nearer stack end: 1.67 at both ends, 1.00 at the centre of 29 planes.

    >>> a = focal_coefficients(29)
    >>> float(a[0]), float(a[14]), float(a[28])
    (1.67, 1.0, 1.67)
    """
    n = int(n_planes)
    d = np.minimum(np.arange(n), n - 1 - np.arange(n))
    return np.array([round(_notebook_gaussian(1.6, 0.2 * k), 2) + 0.72 for k in d])


def cycle_weights(n_planes: int = 29, kind: str = "notebook") -> np.ndarray:
    """Per-slice weights of the cycle L1.

    ``notebook``: the reference notebook's ``similarity`` (``round(3.4 N(0.05 d; σ) +
    0.1, 2)``, σ = 0.46 for the upper half and 0.45 minus a 0.01-per-plane ramp for the
    lower half; 3.05 and 2.97 at the ends, 1.03 at the focal plane of 29); ``focal``: α;
    ``uniform``: ones.
    """
    n = int(n_planes)
    if kind == "uniform":
        return np.ones(n)
    if kind == "focal":
        return focal_coefficients(n)
    if kind != "notebook":
        raise InputError(f"cycle weighting must be notebook, focal or uniform, got {kind!r}")
    half = (n + 1) // 2
    w = np.ones(n)
    mid = (n - 1) / 2
    for i in range(half):
        w[i] = _notebook_gaussian(0.46, 0.05 * i)
    for i in range(half, n):
        w[i] = round(_notebook_gaussian(0.45, 0.05 * (n - 1 - i)) - 0.01 * (i - mid), 2)
    return w


# -------------------------------------------------------------------------------------- pool
class ImagePool:
    """History of generated images for a discriminator (Shrivastava et al. 2017), with the
    reference notebook's rule: while not full, store and return each new image; then with
    probability 1/2 return a stored one (replaced by the new one), else the new one. Each
    image carries a loss weight (its plane's α). Random draws use torch's global generator.
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self.images: list[torch.Tensor] = []
        self.weights: list[torch.Tensor] = []

    def query(self, images: torch.Tensor, weights: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.size == 0:
            return images.detach(), weights
        out_i, out_w = [], []
        for im, w in zip(images.detach(), weights):
            im, w = im.clone(), w.clone()
            if len(self.images) < self.size:
                self.images.append(im)
                self.weights.append(w)
                out_i.append(im)
                out_w.append(w)
            elif float(torch.rand(())) > 0.5:
                j = int(torch.randint(0, self.size, ()))
                out_i.append(self.images[j])
                out_w.append(self.weights[j])
                self.images[j], self.weights[j] = im, w
            else:
                out_i.append(im)
                out_w.append(w)
        return torch.stack(out_i), torch.stack(out_w)

    def state_dict(self) -> dict[str, torch.Tensor]:
        if not self.images:
            return {"images": torch.zeros(0), "weights": torch.zeros(0)}
        return {"images": torch.stack(self.images).cpu(),
                "weights": torch.stack(self.weights).cpu()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor], device: torch.device) -> None:
        imgs, ws = state["images"], state["weights"]
        self.images = [t.to(device) for t in imgs] if imgs.numel() else []
        self.weights = [t.to(device) for t in ws] if imgs.numel() else []


# -------------------------------------------------------------------------------------- task
def _lsq(pred: torch.Tensor, target: float) -> torch.Tensor:
    """Least-squares GAN loss per sample: mean over the score map of (D - target)²."""
    return ((pred - target) ** 2).flatten(1).mean(dim=1)


def gaussian_blur2d(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, 1, H, W)`` sections (reflect padding, radius 3 sigma);
    the identity for ``sigma`` 0."""
    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-t * t / (2 * sigma * sigma))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))


def _fm_ratio(vol01: np.ndarray) -> float:
    from ...metrics import focus_measure

    fm = [focus_measure(p) for p in vol01]
    return float(max(fm) / min(fm))


class ZSEGANTask(TrainTask):
    """ZSE-GAN's step for the generic loop: one generator update (both generators, one
    Adam), then one discriminator update (both discriminators, one Adam) per batch.

    With a fitted :class:`~.warmstart.DefocusModel` ``defocus``, the first
    ``warm_start_steps`` steps are the physics warm start instead: both generators (one
    Adam) learn the synthetic pairs made from the batch's in-focus crops (G_S: synthetic
    z-scan -> the crop on every plane; G_B: the reverse) with an L1 loss; the discriminators
    wait. ``synthetic_weight`` > 0 keeps that loss in the adversarial phase; with
    ``adversarial`` "anchored" it replaces the cycle and identity terms there.
    ``fidelity_weight`` > 0 adds, in the adversarial phase, the L1 between the real z-scan
    and G_S's output re-blurred plane by plane with the fitted PSFs
    (:func:`~.warmstart.reblur_zscans`); ``focal_anchor`` > 0 the L1 between G_S's output
    and its input at the focal plane; ``adversarial_lr`` sets both optimisers' rate there.

    ``val_step`` first refreshes the generators' stored normalisation statistics from
    ``calib`` (training crops) whenever training steps ran since the last refresh, so the
    validation metrics, the best/last snapshots and the checkpoints all hold the statistics
    that the exported generator uses.
    """

    def __init__(self, config: ZSEGANConfig, calib: torch.Tensor,
                 defocus: DefocusModel | None = None,
                 residuals: np.ndarray | None = None) -> None:
        cfg = config
        if defocus is None and (cfg.warm_start_steps > 0 or cfg.synthetic_weight > 0
                                or cfg.fidelity_weight > 0):
            raise InputError("the physics warm start needs a fitted defocus model; set "
                             "--warm-start-steps 0, --synthetic-weight 0 and "
                             "--fidelity-weight 0 for the paper's recipe")
        self.synth = ZScanSynthesizer(defocus, residuals) if defocus is not None else None
        self.step = 0
        self.cfg = cfg
        gk, dk = cfg.generator_kwargs(), cfg.discriminator_kwargs()
        self.models = {"G_S": ResnetGenerator3D(**gk).to(memory_format=_LAYOUT),
                       "G_B": ResnetGenerator3D(**gk).to(memory_format=_LAYOUT),
                       "D_S": PatchDiscriminator2D(**dk), "D_B": PatchDiscriminator2D(**dk)}
        self.alpha = torch.tensor(focal_coefficients(cfg.n_planes), dtype=torch.float32)
        self.cycle_w = torch.tensor(cycle_weights(cfg.n_planes, cfg.cycle_weighting),
                                    dtype=torch.float32)
        self.pools = {k: ImagePool(cfg.pool_size) for k in ("S_h", "S_v", "B")}
        self.calib = calib
        self._stale = True
        self.final_state: dict[str, dict[str, torch.Tensor]] | None = None

    # ---- state beyond networks and optimisers (checkpointed by the loop)
    def state_dict(self) -> dict[str, Any]:
        return {"pools": {k: p.state_dict() for k, p in self.pools.items()},
                "step": self.step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        dev = next(self.models["G_S"].parameters()).device
        # checkpoints from before the warm start existed continue adversarially
        self.step = int(state.get("step", self.cfg.warm_start_steps))
        for k, st in (state.get("pools") or {}).items():
            self.pools[k].load_state_dict(st, dev)

    def make_optimizers(self):
        betas = (self.cfg.beta1, self.cfg.beta2)
        g = list(self.models["G_S"].parameters()) + list(self.models["G_B"].parameters())
        d = list(self.models["D_S"].parameters()) + list(self.models["D_B"].parameters())
        return {"G": torch.optim.Adam(g, lr=self.cfg.lr, betas=betas),
                "D": torch.optim.Adam(d, lr=self.cfg.lr_d or self.cfg.lr, betas=betas)}

    # ---- pieces
    def _cycle(self, x: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
        per_slice = (x - rec).abs().mean(dim=(0, 1, 3, 4)) * self.cycle_w.to(x.device)
        return per_slice.max() if self.cfg.cycle_reduce == "max" else per_slice.mean()

    def _sample(self, z: int, lateral: int, device):
        k = self.cfg.sections
        return (torch.randint(0, z, (k,)), torch.randint(0, lateral, (k,)),
                torch.randint(0, 2, (k,)))

    @staticmethod
    def _requires_grad(nets, flag: bool) -> None:
        for n in nets:
            for p in n.parameters():
                p.requires_grad_(flag)

    def _supervised(self, yh: torch.Tensor) -> torch.Tensor:
        """L1 of both generators on synthetic pairs from in-focus crops ``yh`` (N, 1, c, c)."""
        gs, gb = self.models["G_S"], self.models["G_B"]
        yh = yh[:self.cfg.warm_start_crops]
        xs = self.synth(yh[:, 0]).to(yh.dtype).contiguous(memory_format=_LAYOUT)
        ys = yh[:, :, None].expand_as(xs).contiguous(memory_format=_LAYOUT)
        return F.l1_loss(gs(xs), ys) + F.l1_loss(gb(ys), xs)

    def _warm_step(self, batch, optimizers) -> dict[str, float]:
        _, yh, _ = batch
        yh = yh.reshape(-1, 1, *yh.shape[-2:])
        loss = self._supervised(yh)
        opt_g = optimizers["G"]
        opt_g.zero_grad(set_to_none=True)
        self.backward(loss)
        self.optimizer_step(opt_g)
        v = float(loss.detach())
        return {"loss": v, "synthetic": v, "g_adv_s": 0.0, "g_adv_b": 0.0, "cycle": 0.0,
                "identity": 0.0, "focal": 0.0, "fidelity": 0.0, "d_s": 0.0, "d_b": 0.0}

    def train_step(self, batch, optimizers):
        self._stale = True
        self.step += 1
        if self.step <= self.cfg.warm_start_steps:
            return self._warm_step(batch, optimizers)
        cfg, m = self.cfg, self.models
        if cfg.adversarial_lr is not None:
            # set on every step so that a resumed run (optimisers rebuilt) keeps it
            for name, opt in optimizers.items():
                lr = cfg.adversarial_lr * ((cfg.lr_d or cfg.lr) / cfg.lr if name == "D" else 1)
                for g in opt.param_groups:
                    g["lr"] = lr
        gs, gb, db = m["G_S"], m["G_B"], m["D_B"]
        d_s_net, blur = m["D_S"], cfg.d_blur

        def ds(sections: torch.Tensor) -> torch.Tensor:  # D_S behind the optional blur
            return d_s_net(gaussian_blur2d(sections, blur))

        x, yh, yv = batch
        x = x.contiguous(memory_format=_LAYOUT)
        b, _, z, h, _ = x.shape
        kk = cfg.sections
        yh = yh.reshape(b * kk, 1, *yh.shape[-2:])
        yv = yv.reshape(b * kk, 1, *yv.shape[-2:])
        p = cfg.p_vertical
        alpha = self.alpha.to(x.device)
        # ---- generators
        self._requires_grad((d_s_net, db), False)
        y = gs(x)
        rec = gb(y)
        kh, jv, ov = self._sample(z, h, x.device)
        hs = y[:, 0, kh].reshape(b * kk, 1, *y.shape[-2:])
        w_h = (alpha[kh] if cfg.alpha_on_ds else torch.ones(kk, device=x.device)).repeat(b)
        vs = vertical_sections(y, jv, ov)
        g_s = (1 - p) * (w_h * _lsq(ds(hs), 1.0)).mean() + p * _lsq(ds(vs), 1.0).mean()
        kb = torch.randint(0, z, (kk,))
        rb = rec[:, 0, kb].reshape(b * kk, 1, *rec.shape[-2:])
        a_b = alpha[kb].repeat(b)
        g_b = (a_b * _lsq(db(rb), 1.0)).mean()
        # anchored: the synthetic L1 holds the generators to the physics in place of the
        # cycle and identity terms, which pull them back to the identity (settings); the
        # cycle is then only logged, so it keeps no graph
        paper = cfg.adversarial == "paper"
        cyc = self._cycle(x, rec if paper else rec.detach())
        loss = g_s + g_b + (cfg.lambda_cycle * cyc if paper else 0.0)
        idt = torch.zeros(())
        if paper and cfg.lambda_identity > 0:
            idt = F.l1_loss(gb(x), x) + F.l1_loss(gs(y), y)
            loss = loss + cfg.lambda_identity * idt
        foc = torch.zeros(())
        if cfg.focal_anchor > 0:
            f = cfg.focal_index
            foc = F.l1_loss(y[:, :, f], x[:, :, f])
            loss = loss + cfg.focal_anchor * foc
        fid = torch.zeros(())
        if cfg.fidelity_weight > 0:
            fid = F.l1_loss(reblur_zscans(y, self.synth), x)
            loss = loss + cfg.fidelity_weight * fid
        syn = torch.zeros(())
        if cfg.synthetic_weight > 0:
            syn = self._supervised(yh)
            loss = loss + cfg.synthetic_weight * syn
        opt_g = optimizers["G"]
        opt_g.zero_grad(set_to_none=True)
        self.backward(loss)
        self.optimizer_step(opt_g)
        # ---- discriminators (fakes through the pools)
        self._requires_grad((d_s_net, db), True)
        hs_q, w_hq = self.pools["S_h"].query(hs, w_h)
        vs_q, _ = self.pools["S_v"].query(vs, torch.ones(vs.shape[0], device=x.device))
        rb_q, a_q = self.pools["B"].query(rb, a_b)
        kr = torch.randint(0, z, (kk,))
        xr = x[:, 0, kr].reshape(b * kk, 1, *x.shape[-2:])
        a_r = alpha[kr].repeat(b)
        d_s = 0.5 * ((1 - p) * _lsq(ds(yh), 1.0).mean() + p * _lsq(ds(yv), 1.0).mean()
                     + (1 - p) * (w_hq * _lsq(ds(hs_q), 0.0)).mean()
                     + p * _lsq(ds(vs_q), 0.0).mean())
        d_b = 0.5 * ((a_r * _lsq(db(xr), 1.0)).mean() + (a_q * _lsq(db(rb_q), 0.0)).mean())
        opt_d = optimizers["D"]
        opt_d.zero_grad(set_to_none=True)
        self.backward(d_s + d_b)
        self.optimizer_step(opt_d)
        return {"loss": float(loss.detach()), "g_adv_s": float(g_s.detach()),
                "g_adv_b": float(g_b.detach()), "cycle": float(cyc.detach()),
                "identity": float(idt.detach()), "synthetic": float(syn.detach()),
                "focal": float(foc.detach()), "fidelity": float(fid.detach()),
                "d_s": float(d_s.detach()),
                "d_b": float(d_b.detach())}

    # ---- normalisation statistics and validation
    @torch.no_grad()
    def calibrate(self, chunk: int = 4) -> None:
        """Stored norm statistics of G_S from training crops, then of G_B from G_S's
        (eval-mode) outputs on the same crops."""
        gs, gb = self.models["G_S"], self.models["G_B"]
        dev = next(gs.parameters()).device
        batches = [self.calib[i:i + chunk].to(dev).contiguous(memory_format=_LAYOUT)
                   for i in range(0, len(self.calib), chunk)]
        calibrate_norms(gs, batches)
        was = gs.training
        gs.eval()
        outs = [gs(b_) for b_ in batches]
        gs.train(was)
        calibrate_norms(gb, outs)

    @torch.no_grad()
    def val_step(self, batch):
        if self._stale:
            self.calibrate()
            self._stale = False
            self.final_state = {k: {n: v.detach().cpu().clone() for n, v in m.state_dict().items()}
                                for k, m in self.models.items()}
        from ...metrics import ssim

        (x,) = batch
        x = x.contiguous(memory_format=_LAYOUT)
        gs, gb = self.models["G_S"], self.models["G_B"]
        y = gs(x)
        rec = gb(y)
        cyc = float(self._cycle(x, rec))
        f = self.cfg.focal_index
        ratios, ssims = [], []
        for i in range(x.shape[0]):
            y01 = ((y[i, 0] + 1) / 2).clamp(0, 1).cpu().numpy()
            x01 = ((x[i, 0] + 1) / 2).clamp(0, 1).cpu().numpy()
            ratios.append(_fm_ratio(y01))
            ssims.append(ssim(x01[f], y01[f], data_range=1.0))
        r, s = float(np.mean(ratios)), float(np.mean(ssims))
        return {"loss": math.log(r) + (1.0 - s), "fm_ratio": r, "ssim_focal": s,
                "cycle": cyc}
