"""One generic training loop shared by every method.

A method supplies a :class:`TrainTask`: its networks, its optimisers and one training step
(GANs take several optimisers in one step). The loop owns everything else: seeding, the
validation split, batching, checkpoints written atomically every epoch, ``resume``, early
stopping on the validation loss, a progress bar, a JSON log and a loss-curve PNG.

Files written to ``out_dir``::

    last.pt          everything needed to resume (networks, optimisers, epoch, history, RNG)
    best.pt          network weights at the best validation loss
    history.json     one record per epoch (losses, seconds), plus the config
    loss_curve.png   training and validation loss per epoch
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import InputError
from .io import write_file_atomic

__all__ = ["TrainConfig", "TrainTask", "TrainResult", "fit", "seed_everything", "pick_device",
           "atomic_torch_save"]


@dataclass
class TrainConfig:
    """Settings of the generic loop (method-specific settings live in the method's config)."""

    epochs: int = 100
    batch_size: int = 16
    val_fraction: float = 0.1
    patience: int | None = 10
    seed: int = 0
    device: str | None = None
    steps_per_epoch: int | None = None
    min_delta: float = 0.0
    lr_schedule: str = "constant"
    """``constant``, or ``cosine``: each epoch's learning rate is the initial one times
    0.5 (1 + cos(pi (epoch - 1) / epochs)), derived from the epoch number so that a resumed
    run follows the same schedule."""

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise InputError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 < self.val_fraction < 1.0:
            raise InputError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise InputError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")


class TrainTask:
    """What a method gives the loop.

    Subclasses set ``self.models`` (name -> module) and implement :meth:`make_optimizers`,
    :meth:`train_step` and :meth:`val_step`. Both steps return a dict of floats; ``val_step``
    must contain ``"loss"`` (the early-stopping criterion, lower is better).
    """

    models: dict[str, nn.Module]

    def make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def train_step(self, batch: tuple[torch.Tensor, ...],
                   optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def val_step(self, batch: tuple[torch.Tensor, ...]) -> dict[str, float]:
        raise NotImplementedError


@dataclass
class TrainResult:
    history: list[dict[str, Any]]
    best_epoch: int
    best_val_loss: float
    stopped_early: bool
    out_dir: Path | None
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: never half-written."""
    write_file_atomic(Path(path), lambda tmp: torch.save(obj, tmp))


def _atomic_write_text(path: Path, text: str) -> None:
    write_file_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if n < 2:
        raise InputError(f"need at least 2 training samples for a validation split, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = min(max(1, int(round(n * val_fraction))), n - 1)
    return perm[n_val:], perm[:n_val]


def _batches(arrays: tuple[torch.Tensor, ...], idx: np.ndarray, batch_size: int,
             device: torch.device):
    for start in range(0, len(idx), batch_size):
        sel = torch.as_tensor(idx[start:start + batch_size])
        yield tuple(a[sel].to(device) for a in arrays)


def plot_history(history: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Write a PNG of training and validation loss per epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], label="training", marker=".")
    ax.plot(epochs, [h["val_loss"] for h in history], label="validation", marker=".")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    write_file_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def fit(task: TrainTask, data: tuple[torch.Tensor, ...], config: TrainConfig, *,
        out_dir: str | Path | None = None, resume: bool = False, progress: bool = False,
        config_record: Mapping[str, Any] | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train ``task`` on ``data`` (tensors sharing their first dimension).

    Parameters
    ----------
    task : TrainTask
        Networks, optimisers and the step of one method.
    data : tuple of torch.Tensor
        e.g. ``(inputs, targets)``, each ``(N, ...)``; split into training and validation
        samples with ``config.val_fraction`` (seeded).
    config : TrainConfig
    out_dir : path, optional
        Where checkpoints, ``history.json`` and ``loss_curve.png`` go (nothing written if None).
    resume : bool
        Continue from ``out_dir/last.pt`` (same data and config expected).
    progress : bool
        Show a tqdm progress bar over epochs (the CLI turns it on).

    Returns
    -------
    TrainResult
        The history; the task's networks hold the weights of the best validation epoch.
    """
    t0 = time.perf_counter()
    device = pick_device(config.device)
    seed_everything(config.seed)
    n = int(data[0].shape[0])
    if any(int(d.shape[0]) != n for d in data):
        raise InputError("all training tensors must have the same number of samples")
    train_idx, val_idx = _split(n, config.val_fraction, config.seed)
    for m in task.models.values():
        m.to(device)
    optimizers = task.make_optimizers()
    for o in optimizers.values():
        for g in o.param_groups:
            g.setdefault("initial_lr", g["lr"])

    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, Any]] = []
    best_val, best_epoch, start_epoch, bad_epochs = math.inf, 0, 1, 0
    best_state = {k: {p: v.detach().cpu().clone() for p, v in m.state_dict().items()}
                  for k, m in task.models.items()}
    rng = np.random.default_rng(config.seed + 1)

    if resume:
        last = out / "last.pt" if out is not None else None
        if last is None or not last.exists():
            raise InputError(f"cannot resume: no checkpoint {last}; train without --resume first")
        ckpt = torch.load(last, map_location=device, weights_only=False)
        for k, m in task.models.items():
            m.load_state_dict(ckpt["models"][k])
        for k, o in optimizers.items():
            o.load_state_dict(ckpt["optimizers"][k])
        history = ckpt["history"]
        best_val, best_epoch = ckpt["best_val"], ckpt["best_epoch"]
        bad_epochs, start_epoch = ckpt["bad_epochs"], ckpt["epoch"] + 1
        best_state = ckpt["best_state"]
        rng.bit_generator.state = ckpt["rng"]
        torch.set_rng_state(ckpt["torch_rng"])

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=config.epochs, initial=start_epoch - 1, desc="training", unit="epoch")

    stopped = False
    for epoch in range(start_epoch, config.epochs + 1):
        te = time.perf_counter()
        for m in task.models.values():
            m.train()
        if config.lr_schedule == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / config.epochs))
            for o in optimizers.values():
                for g in o.param_groups:
                    g["lr"] = g["initial_lr"] * factor
        order = rng.permutation(train_idx)
        if config.steps_per_epoch:
            need = config.steps_per_epoch * config.batch_size
            reps = int(math.ceil(need / len(order)))
            order = np.concatenate([rng.permutation(train_idx) for _ in range(reps)])[:need]
        sums: dict[str, float] = {}
        nb = 0
        for batch in _batches(data, order, config.batch_size, device):
            logs = task.train_step(batch, optimizers)
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            nb += 1
        train_logs = {f"train_{k}": v / max(nb, 1) for k, v in sums.items()}
        for m in task.models.values():
            m.eval()
        vsums: dict[str, float] = {}
        nvb = 0
        with torch.no_grad():
            for batch in _batches(data, val_idx, config.batch_size, device):
                for k, v in task.val_step(batch).items():
                    vsums[k] = vsums.get(k, 0.0) + float(v)
                nvb += 1
        val_logs = {f"val_{k}": v / max(nvb, 1) for k, v in vsums.items()}
        if "val_loss" not in val_logs:
            raise RuntimeError("val_step must return a 'loss' entry")
        rec = {"epoch": epoch, **train_logs, **val_logs, "seconds": time.perf_counter() - te,
               "lr": [g["lr"] for o in optimizers.values() for g in o.param_groups][0]}
        history.append(rec)
        if rec["val_loss"] < best_val - config.min_delta:
            best_val, best_epoch, bad_epochs = rec["val_loss"], epoch, 0
            best_state = {k: {p: v.detach().cpu().clone() for p, v in m.state_dict().items()}
                          for k, m in task.models.items()}
            if out is not None:
                atomic_torch_save({"models": best_state, "epoch": epoch}, out / "best.pt")
        else:
            bad_epochs += 1
        if config.patience is not None and bad_epochs >= config.patience:
            stopped = True
        if out is not None:
            atomic_torch_save({
                "models": {k: m.state_dict() for k, m in task.models.items()},
                "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                "history": history, "best_val": best_val, "best_epoch": best_epoch,
                "bad_epochs": bad_epochs, "epoch": epoch, "best_state": best_state,
                "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
            }, out / "last.pt")
            log = {"config": {**asdict(config), **dict(config_record or {})},
                   "best_epoch": best_epoch, "best_val_loss": best_val, "history": history}
            _atomic_write_text(out / "history.json", json.dumps(log, indent=2))
            plot_history(history, out / "loss_curve.png")
        if on_epoch is not None:
            on_epoch(rec)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(train=f"{rec['train_loss']:.4g}", val=f"{rec['val_loss']:.4g}")
        if stopped:
            break
    if bar is not None:
        bar.close()
    for k, m in task.models.items():
        m.load_state_dict(best_state[k])
        m.eval()
    return TrainResult(history=history, best_epoch=best_epoch, best_val_loss=best_val,
                       stopped_early=stopped, out_dir=out, seconds=time.perf_counter() - t0)
