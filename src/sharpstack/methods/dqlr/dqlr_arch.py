"""DQLR networks and deploy module, in one self-contained file.

This file imports nothing but ``torch``: the exporter ships it verbatim as the architecture
source of the ``pytorch_state_dict`` weights, so that bioimageio.core (and ilastik) can rebuild
the network from JSON keyword arguments without sharpstack installed. Keep it that way.

DQLR (Gupta, Aich, Rodriguez, Reddy & Roy-Chowdhury, "Deep quantized representation for
enhanced reconstruction", ISBI 2020, arXiv:2107.14368): an encoder ``E`` maps every slice of a
z-stack to a latent map at reduced lateral resolution, a convolutional recurrent network ``R``
runs over consecutive slices (from shallow to deep) and gives correlated codes, a vector
quantiser ``Q`` (VQ-VAE, van den Oord et al. 2017, with an EMA codebook) replaces every code
vector by its nearest codeword, and a generator ``G`` reconstructs slice ``t`` and predicts
slices ``t+1 .. t+n`` from the quantised codes.

Modules (all shapes ``(N, C, H, W)`` unless noted; ``H`` and ``W`` multiples of
``2**n_down``):

- :class:`Encoder`: ``(N, 1, H, W) -> (N, code_dim, H/2**n_down, W/2**n_down)``.
- :class:`ConvLSTMCell` / :class:`ConvGRUCell`: one recurrent step on latent maps.
- :class:`EMAQuantizer`: nearest-codeword lookup with EMA codebook updates (decay, eps),
  commitment loss, straight-through gradients, dead-codeword restarts and usage statistics.
- :class:`Generator`: ``(N, code_dim, h, w) -> (N, 1, h*2**n_down, w*2**n_down)``.
- :class:`DQLRNet`: the four parts plus :meth:`DQLRNet.forward_clip` (training on clips of
  ``window + n_predict`` consecutive slices).
- :class:`DQLRDeploy`: the exported module, ``(B, 1, Z, Y, X) -> (B, 1, Z, Y, X)``: encoder on
  every slice, the recurrence over the ``window`` slices ending at each slice (a fixed,
  causal window along z, so every output slice depends on ``window`` input slices only and a
  z halo of ``window - 1`` makes tiled prediction exact), nearest-codeword lookup, generator.

Everything in :class:`DQLRDeploy` is traceable by ``torch.jit.trace`` and exportable to ONNX
opset 17 for any stack size: no Python control flow depends on data or shapes (the window
loop has a fixed length; slices use constant, negative ends).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ResBlock", "Encoder", "Generator", "ConvLSTMCell", "ConvGRUCell", "EMAQuantizer",
           "DQLRNet", "DQLRDeploy", "usage_stats", "receptive_field", "halo_for",
           "lateral_multiple"]


class ResBlock(nn.Module):
    """VQ-VAE residual block: ``x + conv1x1(relu(conv3x3(relu(x))))``."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


def _level_channels(hidden: int, n_down: int) -> list[int]:
    """Channels at full resolution, 1/2, ..., 1/2**n_down (hidden at the latent level)."""
    return [max(4, hidden // 2 ** (n_down - i)) for i in range(n_down + 1)]


class Encoder(nn.Module):
    """Per-slice encoder ``E``: conv3x3, ``n_down`` stride-2 conv3x3, conv3x3, residual
    blocks, ReLU, conv1x1 to ``code_dim`` (the VQ-VAE encoder with 3x3 strided convolutions,
    whose receptive field is symmetric).

    Shapes: ``(N, 1, H, W) -> (N, code_dim, H / 2**n_down, W / 2**n_down)``.
    """

    def __init__(self, hidden: int = 128, n_down: int = 2, res_blocks: int = 2,
                 res_hidden: int = 32, code_dim: int = 64) -> None:
        super().__init__()
        ch = _level_channels(hidden, n_down)
        layers: list[nn.Module] = [nn.Conv2d(1, ch[0], 3, padding=1), nn.ReLU()]
        for i in range(n_down):
            layers += [nn.Conv2d(ch[i], ch[i + 1], 3, stride=2, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(ch[-1], ch[-1], 3, padding=1))
        layers += [ResBlock(ch[-1], res_hidden) for _ in range(res_blocks)]
        layers += [nn.ReLU(), nn.Conv2d(ch[-1], code_dim, 1)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Generator(nn.Module):
    """Generator ``G``: conv3x3, residual blocks, ``n_down`` x (upsampling x2, conv3x3,
    ReLU), conv3x3 to one channel (linear output: normalised intensities).

    Resize-convolution (Odena et al. 2016) instead of VQ-VAE's transposed convolutions.
    ``upsample="bilinear"`` (default) interpolates the codes before each convolution;
    ``"nearest"`` (the first sharpstack version) copies every code into a 2x2 block: with
    quantised codes, whose neighbours jump from one codeword to another, the block edges
    fall on a fixed grid of ``2**n_down`` px and the ReLU decoder turns them into a
    periodic texture (a peak at 1/``2**n_down`` cycles/px in the output spectrum).

    Shapes: ``(N, code_dim, h, w) -> (N, 1, h * 2**n_down, w * 2**n_down)``.
    """

    def __init__(self, hidden: int = 128, n_down: int = 2, res_blocks: int = 2,
                 res_hidden: int = 32, code_dim: int = 64, upsample: str = "bilinear") -> None:
        super().__init__()
        if upsample not in ("bilinear", "nearest"):
            raise ValueError(f"upsample must be 'bilinear' or 'nearest', got {upsample!r}")
        self.mode = str(upsample)
        ch = _level_channels(hidden, n_down)
        self.head = nn.Conv2d(code_dim, ch[-1], 3, padding=1)
        self.res = nn.Sequential(*[ResBlock(ch[-1], res_hidden) for _ in range(res_blocks)])
        self.ups = nn.ModuleList(
            nn.Conv2d(ch[n_down - i], ch[n_down - i - 1], 3, padding=1) for i in range(n_down))
        self.tail = nn.Conv2d(ch[0], 1, 3, padding=1)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.res(self.head(q)))
        for conv in self.ups:
            # integer-factor resize: ONNX Resize (opset >= 11), exact in tiles with the halo
            if self.mode == "nearest":
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            else:
                h = F.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False)
            h = F.relu(conv(h))
        return self.tail(h)


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM step (Shi et al. 2015) with ``kernel`` x ``kernel`` convolutions.

    ``state`` is ``None`` (a zero initial state, computed without building zero tensors, so
    that the traced graph has no shape-dependent constants) or ``(h, c)``.
    Returns ``(h, (h, c))``.
    """

    def __init__(self, in_channels: int, hidden: int = 64, kernel: int = 3) -> None:
        super().__init__()
        self.hidden = int(hidden)
        self.conv_x = nn.Conv2d(in_channels, 4 * hidden, kernel, padding=kernel // 2)
        self.conv_h = nn.Conv2d(hidden, 4 * hidden, kernel, padding=kernel // 2, bias=False)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        gates = self.conv_x(x)
        if state is not None:
            gates = gates + self.conv_h(state[0])
        i, f, g, o = torch.chunk(gates, 4, dim=1)
        i, f, o, g = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o), torch.tanh(g)
        c = i * g if state is None else f * state[1] + i * g
        h = o * torch.tanh(c)
        return h, (h, c)


class ConvGRUCell(nn.Module):
    """Convolutional GRU step (Ballas et al. 2016) with ``kernel`` x ``kernel`` convolutions.

    ``state`` is ``None`` (zero initial state) or ``h``. Returns ``(h, h)``.
    """

    def __init__(self, in_channels: int, hidden: int = 64, kernel: int = 3) -> None:
        super().__init__()
        self.hidden = int(hidden)
        self.conv_x = nn.Conv2d(in_channels, 3 * hidden, kernel, padding=kernel // 2)
        self.conv_h = nn.Conv2d(hidden, 2 * hidden, kernel, padding=kernel // 2, bias=False)
        self.conv_c = nn.Conv2d(hidden, hidden, kernel, padding=kernel // 2, bias=False)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None):
        xr, xz, xn = torch.chunk(self.conv_x(x), 3, dim=1)
        if state is None:
            z = torch.sigmoid(xz)
            h = z * torch.tanh(xn)
            return h, h
        hr, hz = torch.chunk(self.conv_h(state), 2, dim=1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + self.conv_c(r * state))
        h = (1 - z) * state + z * n
        return h, h


class EMAQuantizer(nn.Module):
    """Vector quantiser with an exponential-moving-average codebook (VQ-VAE, van den Oord et
    al. 2017, appendix A.1; the ``decay``/``eps`` Laplace smoothing of the reference code).

    ``forward(y)`` (training and validation) returns ``(y_q, commitment, codes)``: ``y_q`` is
    the nearest codeword of every code vector with straight-through gradients, ``commitment``
    is ``commitment * ||y - sg(y_q)||^2``, ``codes`` the codeword index map. In training mode
    the codebook follows the EMA of the assigned vectors, the codebook is initialised from the
    first batch, and codewords whose EMA usage falls below ``restart_threshold`` are restarted
    at random code vectors of the batch (dead codewords are the known failure of VQ training;
    the EMA usage of a codeword is about the number of vectors it gets per batch, so the
    default threshold 1 restarts codewords used less than about once per batch, as Jukebox
    does).

    :meth:`lookup` is the deploy path: nearest codeword only, no state change; traceable and
    ONNX-exportable (MatMul, ArgMin, Gather).

    Shapes: ``y`` ``(N, dim, h, w)``; ``codes`` ``(N, h, w)``.
    """

    def __init__(self, num_codes: int = 128, dim: int = 64, decay: float = 0.99,
                 eps: float = 1e-5, commitment: float = 0.25,
                 restart_threshold: float = 1.0) -> None:
        super().__init__()
        self.num_codes, self.dim = int(num_codes), int(dim)
        self.decay, self.eps = float(decay), float(eps)
        self.commitment = float(commitment)
        self.restart_threshold = float(restart_threshold)
        embed = torch.randn(num_codes, dim)
        self.register_buffer("embedding", embed)
        self.register_buffer("cluster_size", torch.ones(num_codes))
        self.register_buffer("embed_avg", embed.clone())
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))

    def _nearest(self, flat: torch.Tensor) -> torch.Tensor:
        # ||y - e||^2 = ||y||^2 - 2 y.e + ||e||^2; ||y||^2 does not change the argmin
        dist = (self.embedding * self.embedding).sum(1)[None, :] - 2.0 * flat @ self.embedding.t()
        return torch.argmin(dist, dim=1)

    def lookup(self, y: torch.Tensor) -> torch.Tensor:
        """Nearest codeword of every code vector (the deploy path)."""
        n, d, h, w = y.shape
        flat = y.permute(0, 2, 3, 1).reshape(-1, d)
        q = F.embedding(self._nearest(flat), self.embedding)
        return q.reshape(n, h, w, d).permute(0, 3, 1, 2)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, codes: torch.Tensor) -> None:
        onehot = F.one_hot(codes, self.num_codes).to(flat.dtype)
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.num_codes * self.eps) * total
        self.embedding.copy_(self.embed_avg / smoothed[:, None])
        dead = self.cluster_size < self.restart_threshold
        n_dead = int(dead.sum())
        if n_dead:
            pick = torch.randint(0, flat.shape[0], (n_dead,), device=flat.device)
            fresh = flat[pick] + 1e-3 * flat.std() * torch.randn_like(flat[pick])
            self.embedding[dead] = fresh
            self.embed_avg[dead] = fresh
            self.cluster_size[dead] = 1.0
            self.restarts += n_dead

    def forward(self, y: torch.Tensor):
        n, d, h, w = y.shape
        flat = y.permute(0, 2, 3, 1).reshape(-1, d)
        if self.training and not bool(self.initialized):
            with torch.no_grad():
                pick = torch.randperm(flat.shape[0], device=flat.device)[: self.num_codes]
                if pick.numel() < self.num_codes:
                    pick = torch.randint(0, flat.shape[0], (self.num_codes,), device=flat.device)
                self.embedding.copy_(flat[pick].detach())
                self.embed_avg.copy_(self.embedding)
                self.cluster_size.fill_(1.0)
                self.initialized.fill_(True)
        codes = self._nearest(flat.detach())
        if self.training:
            self._ema_update(flat.detach(), codes)
        q = F.embedding(codes, self.embedding).reshape(n, h, w, d).permute(0, 3, 1, 2)
        commit = self.commitment * F.mse_loss(y, q.detach())
        q_st = y + (q - y).detach()  # straight-through estimator
        return q_st, commit, codes.reshape(n, h, w)


def usage_stats(codes: torch.Tensor, num_codes: int) -> tuple[float, int]:
    """Perplexity ``exp(H(p))`` of the code histogram and the number of codewords used."""
    counts = torch.bincount(codes.reshape(-1), minlength=num_codes).to(torch.float64)
    p = counts / counts.sum().clamp(min=1.0)
    ent = -(p[p > 0] * torch.log(p[p > 0])).sum()
    return float(torch.exp(ent)), int((counts > 0).sum())


def _make_cell(cell: str, channels: int, hidden: int) -> nn.Module:
    if cell == "lstm":
        return ConvLSTMCell(channels, hidden)
    if cell == "gru":
        return ConvGRUCell(channels, hidden)
    raise ValueError(f"rnn cell must be 'lstm' or 'gru', got {cell!r}")


class DQLRNet(nn.Module):
    """Encoder ``E``, recurrence ``R``, quantiser ``Q`` and generator ``G`` of DQLR.

    Parameters
    ----------
    hidden : int
        Channels of the encoder/generator at the latent level (halved per finer level).
    n_down : int
        Stride-2 stages: the latent has ``1 / 2**n_down`` of the lateral resolution.
    res_blocks, res_hidden : int
        Residual blocks at the latent level and their bottleneck channels.
    code_dim : int
        Dimension of a code vector (= of a codeword).
    num_codes : int
        Codebook size ``k``.
    rnn_cell : {"lstm", "gru"}
        ConvLSTM or ConvGRU, 3x3 convolutions.
    rnn_hidden : int
        Hidden channels of the recurrent cell.
    quantize : bool
        ``False`` is the ablation: the same network with ``Q`` bypassed.
    decay, eps, commitment, restart_threshold : float
        See :class:`EMAQuantizer`.
    upsample : {"bilinear", "nearest"}
        Resize of the generator (see :class:`Generator`; "nearest" leaves a grid texture).

    The code of a slice is ``y = x + P(h)``: the slice's own latent ``x`` plus a 1x1
    projection of the recurrent state that has seen the previous slices of the window.
    """

    def __init__(self, hidden: int = 128, n_down: int = 2, res_blocks: int = 2,
                 res_hidden: int = 32, code_dim: int = 64, num_codes: int = 128,
                 rnn_cell: str = "lstm", rnn_hidden: int = 64, quantize: bool = True,
                 decay: float = 0.99, eps: float = 1e-5, commitment: float = 0.25,
                 restart_threshold: float = 1.0, upsample: str = "bilinear") -> None:
        super().__init__()
        self.n_down = int(n_down)
        self.quantize = bool(quantize)
        self.code_dim = int(code_dim)
        self.encoder = Encoder(hidden, n_down, res_blocks, res_hidden, code_dim)
        self.rnn = _make_cell(rnn_cell, code_dim, rnn_hidden)
        self.proj = nn.Conv2d(rnn_hidden, code_dim, 1)
        self.quantizer = EMAQuantizer(num_codes, code_dim, decay, eps, commitment,
                                      restart_threshold)
        self.generator = Generator(hidden, n_down, res_blocks, res_hidden, code_dim, upsample)

    def step(self, x: torch.Tensor, state):
        """One recurrent step: ``(code, state)`` from input latent ``x``."""
        h, state = self.rnn(x, state)
        return x + self.proj(h), state

    def forward_clip(self, clip: torch.Tensor, window: int):
        """Training forward on clips of consecutive slices ordered from shallow to deep.

        ``clip``: ``(B, 1, T, H, W)`` with ``T >= window``. The recurrence runs over slices
        ``0 .. window-1``; its code at the last one, ``y_t``, reconstructs slice ``t =
        window - 1``; ``T - window`` further steps fed with the previous code (``y_{t+j} =
        R(y_{t+j-1}, h)``, eq. 2 of the paper) predict slices ``t+1 .. T-1``.

        Returns ``(images, commitment, codes)``: ``images`` ``(B, 1, T - window + 1, H, W)``
        (reconstruction of ``t`` then the predictions), the summed commitment loss (0 without
        quantisation) and the codeword indices of all codes (None without quantisation).
        """
        b, _, t_len, h, w = clip.shape
        n_pred = t_len - window
        lat = self.encoder(clip[:, :, :window].permute(0, 2, 1, 3, 4).reshape(-1, 1, h, w))
        lat = lat.reshape(b, window, *lat.shape[1:])
        state = None
        y = lat[:, 0]
        for k in range(window):
            y, state = self.step(lat[:, k], state)
        codes_y = [y]
        for _ in range(n_pred):
            y, state = self.step(y, state)
            codes_y.append(y)
        ys = torch.cat(codes_y, dim=0)  # ((n_pred + 1) * B, code_dim, h', w')
        if self.quantize:
            q, commit, codes = self.quantizer(ys)
        else:
            q, commit, codes = ys, ys.new_zeros(()), None
        out = self.generator(q).reshape(n_pred + 1, b, 1, h, w).permute(1, 2, 0, 3, 4)
        return out, commit, codes


class DQLRDeploy(nn.Module):
    """The exported DQLR model: 3D in, 3D out, same shape.

    For every slice ``t`` the encoder latents of the ``window`` slices ending at ``t`` (in the
    direction of growing depth) go through the recurrence from a zero state; the last code is
    replaced by its nearest codeword and decoded by the generator (the reconstruction head).
    With ``ensemble_predictions = n > 0`` the output is the mean of that reconstruction and
    the ``n`` predictions of slice ``t`` made from the windows ending at ``t - 1 .. t - n``
    (``j`` further recurrent steps fed with the previous code, as in training): the paper's
    generator "reconstructs and predicts" consecutive slices, and the predictions never saw
    slice ``t``'s own noise. Slices before the first one are the first slice repeated
    (replicate padding), as in training clips that start at the top of a stack. Every output
    slice depends on ``window + n`` input slices: a z halo of ``window - 1 + n`` makes tiled
    and untiled predictions agree.

    Parameters
    ----------
    net_kwargs : dict
        JSON keyword arguments of :class:`DQLRNet`.
    window : int
        Slices the recurrence sees per code (the current one and ``window - 1`` shallower
        ones).
    depth_increases_with_z : bool
        ``True``: slice 0 is the shallowest (depth grows with z); ``False``: the last slice is
        (the stack is flipped along z inside the module).
    ensemble_predictions : int
        ``n``: predictions averaged with the reconstruction (0: reconstruction only).

    Shapes: ``(B, 1, Z, Y, X) -> (B, 1, Z, Y, X)``, ``Y`` and ``X`` multiples of
    ``2**n_down``, any ``Z >= 1``.
    """

    def __init__(self, net_kwargs: dict | None = None, window: int = 3,
                 depth_increases_with_z: bool = True, ensemble_predictions: int = 0) -> None:
        super().__init__()
        if int(window) < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if int(ensemble_predictions) < 0:
            raise ValueError(f"ensemble_predictions must be >= 0, got {ensemble_predictions}")
        self.net = DQLRNet(**(net_kwargs or {}))
        self.window = int(window)
        self.down = bool(depth_increases_with_z)
        self.n_ens = int(ensemble_predictions)

    @property
    def z_halo(self) -> int:
        return self.window - 1 + self.n_ens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, z, h, w = x.shape
        if not self.down:
            x = torch.flip(x, dims=(2,))
        wlen, n = self.window, self.n_ens
        pad = wlen - 1 + n
        if pad:
            x = F.pad(x, (0, 0, 0, 0, pad, 0), mode="replicate")
        lat = self.net.encoder(x.permute(0, 2, 1, 3, 4).reshape(-1, 1, h, w))
        d, hh, ww = lat.shape[1], lat.shape[2], lat.shape[3]
        lat = lat.reshape(b, -1, d, hh, ww)  # (B, Z + pad, D, h', w')
        # windows end at padded indices wlen-1 .. Z+pad-1 (Z + n of them); step k of every
        # window reads index (end - wlen + 1 + k): constant slice bounds, negative ends
        state = None
        y = lat
        for k in range(wlen):
            stop = k - (wlen - 1)
            xs = lat[:, k:stop] if stop < 0 else lat[:, k:]
            y, state = self.net.step(xs.reshape(-1, d, hh, ww), state)
        codes = [y]
        for _ in range(n):  # j-step predictions from the same windows
            y, state = self.net.step(y, state)
            codes.append(y)
        out = None
        for j, code in enumerate(codes):
            q = self.net.quantizer.lookup(code) if self.net.quantize else code
            img = self.net.generator(q).reshape(b, -1, 1, h, w)  # (B, Z + n, 1, H, W)
            # the window ending n - j entries before output t predicts t with j steps
            stop = -j
            img = img[:, n - j:stop] if stop < 0 else img[:, n - j:]
            out = img if out is None else out + img
        out = out / float(n + 1)
        out = out.permute(0, 2, 1, 3, 4)
        if not self.down:
            out = torch.flip(out, dims=(2,))
        return out


def lateral_multiple(n_down: int = 2, **_: Any) -> int:
    """Lateral sizes must be multiples of this (``2**n_down``)."""
    return 2 ** int(n_down)


def receptive_field(net_kwargs: dict | None = None, window: int = 3,
                    ensemble_predictions: int = 0) -> tuple[int, int]:
    """``(lateral radius in pixels, z radius in slices)`` of :class:`DQLRDeploy`.

    An upper bound on how far an output voxel's inputs lie, counted layer by layer: a
    ``k``-tap convolution at a level where one feature pixel spans ``J`` input pixels adds
    ``(k // 2) * J``, a stride-2 stage's cell offset adds ``J``, an upsampling stage adds
    ``J``; the recurrence adds one 3x3 reach per step for the LSTM's gates and two for the
    GRU's (its candidate convolves the reset-gated state), also for each of the
    ``ensemble_predictions`` prediction steps. Along z an output slice sees itself and the
    ``window - 1 + ensemble_predictions`` preceding slices.
    """
    kw = dict(net_kwargs or {})
    n_down = int(kw.get("n_down", 2))
    res_blocks = int(kw.get("res_blocks", 2))
    cell = kw.get("rnn_cell", "lstm")
    r, jump = 1, 1  # encoder conv3x3 at full resolution
    for _ in range(n_down):
        r += jump  # 3x3 at the current level
        r += jump  # position of the pixel within the coarser cell
        jump *= 2
    r += jump  # conv3x3 at the latent level
    r += res_blocks * jump  # one 3x3 per residual block
    per_step = 1 if cell == "lstm" else 2
    r += (int(window) + int(ensemble_predictions)) * per_step * jump
    r += jump + res_blocks * jump  # generator head and residual blocks
    up = 2 if kw.get("upsample", "bilinear") == "bilinear" else 1
    for _ in range(n_down):
        jump //= 2
        r += up * jump + jump  # upsampling reach (bilinear: 2 fine px) + conv3x3
    r += 1  # tail conv3x3
    return int(r), int(window) - 1 + int(ensemble_predictions)


def halo_for(net_kwargs: dict | None = None, window: int = 3,
             ensemble_predictions: int = 0) -> tuple[int, int]:
    """Tiling halos ``(lateral, z)``: the receptive radius rounded up to the lateral multiple."""
    lat, zr = receptive_field(net_kwargs, window, ensemble_predictions)
    m = lateral_multiple(**(net_kwargs or {}))
    return int(math.ceil(lat / m) * m), zr
