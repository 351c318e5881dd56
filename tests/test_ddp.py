"""The generic loop under PyTorch DistributedDataParallel (2 CPU processes, gloo): the same
first-epoch loss and the same weights as one process with the same global batch."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from sharpstack.training import TrainConfig, TrainTask, fit


class _Regress(TrainTask):
    def __init__(self):
        torch.manual_seed(0)
        self.models = {"net": torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(),
                                                  torch.nn.Linear(8, 1))}
        self.seen = 0

    def make_optimizers(self):
        return {"adam": torch.optim.Adam(self.models["net"].parameters(), lr=0.05)}

    def train_step(self, batch, optimizers):
        x, y = batch
        self.seen += len(x)
        opt = optimizers["adam"]
        opt.zero_grad()
        loss = torch.mean((self.models["net"](x) - y) ** 2)
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach())}

    def val_step(self, batch):
        x, y = batch
        return {"loss": float(torch.mean((self.models["net"](x) - y) ** 2))}


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(80, 3, generator=g)
    y = torch.sin(x @ torch.tensor([[1.0], [-2.0], [0.5]]))
    return x, y


_CFG = dict(epochs=2, batch_size=8, patience=None, seed=4, device="cpu")


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    task = _Regress()
    res = fit(task, _data(), TrainConfig(**_CFG))
    if rank == 0:
        torch.save({"history": res.history, "seen": task.seen,
                    "weights": {k: v.clone() for k, v in task.models["net"].state_dict().items()}},
                   out)
    import torch.distributed as dist

    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process(tmp_path, monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    single_task = _Regress()
    single = fit(single_task, _data(), TrainConfig(**_CFG))
    out = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)
    assert ddp["seen"] == single_task.seen // 2  # each process trains on half of every batch
    for a, b in zip(single.history, ddp["history"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4, abs=1e-6)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4, abs=1e-6)
    for k, v in single_task.models["net"].state_dict().items():
        torch.testing.assert_close(ddp["weights"][k], v, rtol=1e-4, atol=1e-5)


def test_cli_training_under_torchrun_writes_one_loadable_run(synth_data, tmp_path):
    """`torchrun -m sharpstack.cli train ...` with 2 CPU processes: both train, only rank 0
    writes the run folder (one complete record, no temporaries), and the run loads."""
    import subprocess
    import sys

    from sharpstack.workflows import load_run

    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(_free_port()), "-m", "sharpstack.cli", "train", "isonet",
           str(synth_data["paths"]["anisotropic"]), str(run), "--psf", "gaussian",
           "--sigma-xy", "2", "--sigma-z", "8", "--epochs", "2", "--steps-per-epoch", "2",
           "--patch-size", "32", "--patches", "32", "--batch-size", "8", "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "history.json", "last.pt",
                                                      "loss_curve.png", "model.pt", "run.json"]
    loaded = load_run(run)
    assert loaded.method.name == "isonet"
    assert len(loaded.trained.result.history) == 2
