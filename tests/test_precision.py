"""Reduced-precision training: the setting, what stays float32, the run's record and resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from sharpstack import precision as prec
from sharpstack.errors import InputError
from sharpstack.nn.losses import ssim
from sharpstack.precision import autocast_models, resolve_precision
from sharpstack.training import TrainConfig, TrainTask, fit

from .conftest import TINY

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _bf16_on_every_cpu(monkeypatch):
    """bf16 autocast computes correctly on any CPU; sharpstack refuses it only for speed
    where the CPU has no native bf16 (AVX-512 BF16 or AMX). The tests check the mechanics,
    so they run on every CPU (the refusal itself is tested below)."""
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: True)


def test_resolve_precision_per_device(monkeypatch):
    assert resolve_precision("fp32", CPU).dtype is None
    bf = resolve_precision("bf16", CPU)
    assert bf.dtype == torch.bfloat16 and bf.channels_last and not bf.scale_loss
    monkeypatch.setattr(prec, "cpu_has_amx", lambda: True)
    assert resolve_precision("auto", CPU).name == "bf16"
    monkeypatch.setattr(prec, "cpu_has_amx", lambda: False)
    auto = resolve_precision("auto", CPU)  # without AMX: float32, channels-last
    assert auto.dtype is None and auto.channels_last and not auto.reduced
    assert not resolve_precision("fp32", CPU).channels_last
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(InputError, match="no native bf16"):
        resolve_precision("bf16", CPU)
    monkeypatch.undo()
    with pytest.raises(InputError, match="fp16 needs a CUDA GPU.*bf16"):
        resolve_precision("fp16", CPU)
    with pytest.raises(InputError, match="precision must be one of"):
        resolve_precision("half", CPU)
    with pytest.raises(InputError, match="precision"):
        TrainConfig(precision="fp8")


class _Record(nn.Module):
    """Records whether autocast was on and the input dtype at each call."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.seen = []

    def forward(self, x):
        self.seen.append((torch.is_autocast_enabled("cpu"), x.dtype))
        return self.lin(x)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.island = _Record()

    def forward(self, x):
        h = self.conv(x).mean(dim=(2, 3))
        return self.island(h)

    def features(self, x):  # another entry point than forward
        return self.conv(x)


def test_autocast_runs_convs_reduced_and_hands_float32_back():
    net = _Net()
    x = torch.rand(2, 1, 8, 8)
    bf16 = resolve_precision("bf16", CPU)
    with autocast_models([net], [net.island], bf16, CPU):
        assert torch.is_autocast_enabled("cpu")
        y = net(x)
        f = net.features(x)  # not forward: its child (the conv) still hands back float32
        inner = torch.nn.functional.conv2d(x, net.conv.weight)
    assert y.dtype == torch.float32 and f.dtype == torch.float32
    assert inner.dtype == torch.bfloat16  # the region itself is autocast
    # the fp32 island ran with autocast off on float32 input, although its input came from
    # a bf16 conv
    assert net.island.seen == [(False, torch.float32)]
    assert not torch.is_autocast_enabled("cpu")
    # the hooks are gone afterwards, and fp32 numerics install nothing
    net.island.seen.clear()
    with autocast_models([net], [net.island], resolve_precision("fp32", CPU), CPU):
        assert not torch.is_autocast_enabled("cpu")
        net(x)
    assert net.island.seen == [(False, torch.float32)]
    assert not net._forward_hooks and not net.island._forward_pre_hooks


def test_ssim_is_float32_under_autocast():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 1, 32, 32, generator=g), torch.rand(2, 1, 32, 32, generator=g)
    ref = ssim(a, a * 0.8 + 0.2 * b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        red = ssim(a, a * 0.8 + 0.2 * b)
    assert red.dtype == torch.float32
    assert float(red) == pytest.approx(float(ref), abs=1e-6)


class _ConvTask(TrainTask):
    def __init__(self):
        torch.manual_seed(0)
        self.models = {"net": nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                                            nn.Conv2d(8, 1, 3, padding=1))}

    def make_optimizers(self):
        return {"adam": torch.optim.Adam(self.models["net"].parameters(), lr=1e-2)}

    def train_step(self, batch, optimizers):
        x, y = batch
        optimizers["adam"].zero_grad()
        loss = torch.mean((self.models["net"](x) - y) ** 2)
        self.backward(loss)
        self.optimizer_step(optimizers["adam"])
        return {"loss": float(loss.detach()), "dtype_is_fp32": float(loss.dtype == torch.float32)}

    def val_step(self, batch):
        x, y = batch
        return {"loss": float(torch.mean((self.models["net"](x) - y) ** 2))}


def _images(n=32):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 16, 16, generator=g)
    return x, torch.roll(x, 1, dims=-1)


def test_bf16_training_learns_and_leaves_float32_weights(tmp_path):
    task = _ConvTask()
    res = fit(task, _images(), TrainConfig(epochs=6, batch_size=8, patience=None,
                                           precision="bf16"), out_dir=tmp_path)
    losses = [h["train_loss"] for h in res.history] + [h["val_loss"] for h in res.history]
    assert all(math.isfinite(v) for v in losses)
    assert res.history[-1]["val_loss"] < 0.5 * res.history[0]["val_loss"]
    assert all(h["train_dtype_is_fp32"] == 1.0 for h in res.history)  # losses in float32
    assert res.extra["numerics"] == "bf16"
    for p in task.models["net"].parameters():  # float32, ordinary layout for export
        assert p.dtype == torch.float32 and p.is_contiguous()
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert all(t.dtype == torch.float32 for t in best["models"]["net"].values())
    log = json.loads((tmp_path / "history.json").read_text())
    assert log["config"]["precision"] == "bf16" and log["config"]["numerics"] == "bf16"


def test_precision_is_recorded_in_the_run_and_honoured_on_resume(tmp_path, synth_data):
    from sharpstack.workflows import train_run

    run = tmp_path / "run"
    aniso = synth_data["paths"]["anisotropic"]
    settings = {"psf": {"kind": "gaussian", "sigma_xy": 2.0, "sigma_z": 8.0},
                **TINY, "epochs": 1, "precision": "bf16"}
    res = train_run("isonet", [aniso], run, settings=settings)
    assert all(math.isfinite(h["train_loss"]) for h in res["history"])
    info = json.loads((run / "run.json").read_text())
    assert info["settings"]["precision"] == "bf16"
    # resuming without the option trains on in the run's precision
    res = train_run("isonet", [aniso], run, settings={"epochs": 2}, resume=True)
    assert len(res["history"]) == 2
    assert json.loads((run / "history.json").read_text())["config"]["numerics"] == "bf16"
    # another precision on resume is refused by name
    with pytest.raises(InputError, match="precision"):
        train_run("isonet", [aniso], run, settings={"epochs": 3, "precision": "fp32"},
                  resume=True)
    # the saved model is float32 and loads
    from sharpstack.workflows import load_run

    def leaves(x):
        if isinstance(x, dict):
            for v in x.values():
                yield from leaves(v)
        elif isinstance(x, torch.Tensor):
            yield x

    floats = [t for t in leaves(torch.load(run / "model.pt", weights_only=True))
              if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float32 for t in floats)
    assert load_run(run).model is not None


def test_dqlr_codebook_stays_float32_under_bf16():
    from sharpstack.methods.dqlr.dqlr_arch import DQLRNet
    from sharpstack.methods.dqlr.settings import DQLRConfig
    from sharpstack.methods.dqlr.task import DQLRTask

    cfg = DQLRConfig(hidden=8, rnn_hidden=8, res_hidden=4, code_dim=8, num_codes=16,
                     patch_size=16)
    torch.manual_seed(0)
    net = DQLRNet(**cfg.net_kwargs())
    task = DQLRTask(net, cfg)
    q = net.quantizer
    before = q.embedding.clone()
    seen = []
    nearest = q._nearest

    def spy(flat):  # the code search sees float32 without autocast
        seen.append((torch.is_autocast_enabled("cpu"), flat.dtype))
        return nearest(flat)

    q._nearest = spy
    clip = torch.rand(2, 1, cfg.window + cfg.n_predict, 16, 16)
    opt = task.make_optimizers()
    with autocast_models([net], task.fp32_modules(), resolve_precision("bf16", CPU), CPU):
        logs = task.train_step((clip,), opt)
    assert math.isfinite(logs["loss"])
    assert seen and all(s == (False, torch.float32) for s in seen)
    assert q.embedding.dtype == torch.float32 and not torch.equal(q.embedding, before)
