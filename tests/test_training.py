"""The generic training loop: checkpoints, resume, early stopping, logs."""

from __future__ import annotations

import json

import pytest
import torch

from sharpstack.errors import InputError
from sharpstack.training import TrainConfig, TrainTask, fit


class _Regress(TrainTask):
    def __init__(self, seed=0):
        torch.manual_seed(seed)
        self.models = {"net": torch.nn.Linear(3, 1)}

    def make_optimizers(self):
        return {"sgd": torch.optim.Adam(self.models["net"].parameters(), lr=0.05)}

    def train_step(self, batch, optimizers):
        x, y = batch
        opt = optimizers["sgd"]
        opt.zero_grad()
        loss = torch.mean((self.models["net"](x) - y) ** 2)
        loss.backward()
        opt.step()
        return {"loss": float(loss)}

    def val_step(self, batch):
        x, y = batch
        return {"loss": float(torch.mean((self.models["net"](x) - y) ** 2))}


def _data(n=64):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    return x, y


def test_fit_learns_and_writes_logs(tmp_path):
    res = fit(_Regress(), _data(), TrainConfig(epochs=15, batch_size=8, patience=None),
              out_dir=tmp_path)
    assert res.history[-1]["val_loss"] < 0.1 * res.history[0]["val_loss"]
    for name in ("last.pt", "best.pt", "history.json", "loss_curve.png"):
        assert (tmp_path / name).stat().st_size > 0
    log = json.loads((tmp_path / "history.json").read_text())
    assert len(log["history"]) == 15 and log["best_epoch"] == res.best_epoch
    assert (tmp_path / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporaries


def test_resume_continues_exactly(tmp_path):
    cfg = TrainConfig(epochs=6, batch_size=8, patience=None, seed=3)
    straight = _Regress()
    fit(straight, _data(), cfg)
    part = _Regress()
    fit(part, _data(), TrainConfig(epochs=3, batch_size=8, patience=None, seed=3),
        out_dir=tmp_path)
    resumed = _Regress(seed=99)  # different init: everything must come from the checkpoint
    res = fit(resumed, _data(), cfg, out_dir=tmp_path, resume=True)
    assert [h["epoch"] for h in res.history] == list(range(1, 7))
    for a, b in zip(straight.models["net"].parameters(), resumed.models["net"].parameters()):
        torch.testing.assert_close(a, b)


def test_early_stopping_keeps_best_weights(tmp_path):
    class _Worse(_Regress):
        def val_step(self, batch):  # validation gets worse every epoch after the first
            self.calls = getattr(self, "calls", 0) + 1
            return {"loss": float(self.calls)}

    task = _Worse()
    res = fit(task, _data(), TrainConfig(epochs=50, batch_size=64, patience=3),
              out_dir=tmp_path)
    assert res.stopped_early and res.best_epoch == 1 and len(res.history) == 4
    best = torch.load(tmp_path / "best.pt", weights_only=False)["models"]["net"]
    for k, v in task.models["net"].state_dict().items():
        torch.testing.assert_close(v, best[k])


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="cannot resume"):
        fit(_Regress(), _data(), TrainConfig(epochs=1), out_dir=tmp_path, resume=True)


def test_bad_config_is_rejected():
    with pytest.raises(InputError, match="epochs"):
        TrainConfig(epochs=0)


def test_cosine_schedule_follows_the_epoch_and_survives_resume(tmp_path):
    import math

    cfg = TrainConfig(epochs=4, batch_size=16, patience=None, lr_schedule="cosine")
    fit(_Regress(), _data(), TrainConfig(epochs=2, batch_size=16, patience=None,
                                         lr_schedule="cosine"), out_dir=tmp_path)
    res = fit(_Regress(), _data(), cfg, out_dir=tmp_path, resume=True)
    lrs = [h["lr"] for h in res.history]
    want = [0.05 * 0.5 * (1 + math.cos(math.pi * (e - 1) / 4)) for e in (3, 4)]
    assert lrs[2:] == pytest.approx(want)
    with pytest.raises(InputError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")
