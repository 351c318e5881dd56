"""One generic training loop shared by every method.

A method supplies a :class:`TrainTask`: its networks, its optimisers and one training step
(GANs take several optimisers in one step). The loop owns everything else: seeding, the
validation split, batching, checkpoints written atomically every epoch, ``resume``, early
stopping on the validation loss, a progress bar, a JSON log and a loss-curve PNG.

Data come either as tensors sharing their first dimension (split into training and validation
samples here) or as a :class:`TrainData` of two ``torch.utils.data.Dataset`` (for data that do
not fit in one tensor: many stacks, pairs built on the fly; the method decides the split, e.g.
by identity). Either way every batch reaches the task as a tuple of tensors.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the loop runs data parallel with PyTorch's
DistributedDataParallel: every process draws the same global batch order and trains on its
share of each batch, gradients are averaged, logged losses are averaged over processes, and
only rank 0 writes files. ``gloo`` on CPU, ``nccl`` on GPUs.

Checkpoints hold tensors and plain Python values only and are read with
``torch.load(weights_only=True)``: a run folder from someone else cannot execute code.

Files written to ``out_dir``::

    last.pt          everything needed to resume (networks, optimisers, epoch, history, RNG)
    best.pt          network weights at the best validation loss
    history.json     one record per epoch (losses, seconds), plus the config
    loss_curve.png   training and validation loss per epoch
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .errors import InputError
from .io import write_file_atomic
from .precision import PRECISIONS, autocast_models, resolve_precision, to_channels_last

__all__ = ["LoopSettings", "LrSchedule", "EarlyStopping", "Epochs", "Steps", "BatchSize",
           "LearningRate", "Patience", "Seed", "Precision", "TrainConfig", "TrainTask", "TrainData", "TrainResult", "fit", "seed_everything",
           "pick_device", "atomic_torch_save", "load_checkpoint", "RESUMABLE_KEYS"]

RESUMABLE_KEYS = frozenset({"epochs", "patience", "device", "min_delta"})
"""Settings that may change when a run is resumed; any other difference is refused."""


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
    precision: str = "fp32"
    """``auto``, ``fp32``, ``bf16`` or ``fp16`` (:mod:`sharpstack.precision`). The library
    default is float32; the settings models (the CLI) default to ``auto``."""

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise InputError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 < self.val_fraction < 1.0:
            raise InputError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise InputError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                             f"{self.precision!r}")


# --------------------------------------------------------------------------------------------
# The loop's options, declared once. A method's settings model subclasses LoopSettings (plus
# LrSchedule / EarlyStopping where the method offers them) and holds only what is its own; a
# method whose default differs redefines just the default with the same type, e.g.
# ``lr: LearningRate = 2e-4`` (bounds and description come with the type).
# --------------------------------------------------------------------------------------------

Epochs = Annotated[int, Field(ge=1, le=100_000, description="Training epochs.")]
Steps = Annotated[int, Field(ge=1, le=10**7, description="Batches per epoch.")]
BatchSize = Annotated[int, Field(ge=1, le=4096, description="Samples per batch.")]
LearningRate = Annotated[float, Field(gt=0.0, le=1.0, description="Initial Adam learning rate.")]
Patience = Annotated[int | None, Field(ge=1, le=100_000, description=(
    "Stop after this many epochs without a better validation loss (None: never)."))]
Seed = Annotated[int, Field(ge=0, le=2**31 - 1, description="Seed of weights, data and batches.")]
Precision = Annotated[Literal["auto", "fp32", "bf16", "fp16"], Field(description=(
    "Number format of training: auto (bf16 autocast + channels-last on GPUs and AMX CPUs, "
    "float32 channels-last on other CPUs), fp32, bf16, or fp16 (CUDA). Weights stay "
    "float32."))]


class LoopSettings(BaseModel):
    """The generic loop's options every method takes (``sharpstack train <m>`` flags of the
    same names, from ``methods._base.LOOP_OPTIONS``). Unknown keys are rejected by name."""

    model_config = ConfigDict(extra="forbid")

    epochs: Epochs = 100
    steps_per_epoch: Steps | None = Field(None, description=(
        "Batches per epoch (None: one pass over the training samples)."))
    batch_size: BatchSize = 16
    lr: LearningRate = 1e-3
    seed: Seed = 0
    device: str | None = Field(None, description=(
        "torch device (default: CUDA if present, else CPU)."))
    precision: Precision = "auto"

    def train_config(self, **overrides: Any) -> TrainConfig:
        """The :class:`TrainConfig` of this run: every loop field the settings have (the
        fields named like ``TrainConfig``'s, ``val_fraction`` included), then ``overrides``
        (e.g. a method without early stopping passes ``patience=None``)."""
        names = [f.name for f in fields(TrainConfig)]
        values = {k: getattr(self, k) for k in names if k in type(self).model_fields}
        return TrainConfig(**{**values, **overrides})


class LrSchedule(BaseModel):
    """Loop option of methods that offer a learning-rate schedule."""

    lr_schedule: Literal["constant", "cosine"] = Field("constant", description=(
        "Constant learning rate, or cosine decay to 0 over the epochs."))


class EarlyStopping(BaseModel):
    """Loop option of methods that stop early on the validation loss."""

    patience: Patience = 10


class TrainTask:
    """What a method gives the loop.

    Subclasses set ``self.models`` (name -> module) and implement :meth:`make_optimizers`,
    :meth:`train_step` and :meth:`val_step`. Both steps return a dict of floats; ``val_step``
    must contain ``"loss"`` (the early-stopping criterion, lower is better).
    """

    models: dict[str, nn.Module]

    def state_dict(self) -> dict[str, Any]:
        """Extra state to checkpoint besides networks and optimisers (e.g. a GAN's image
        pool): tensors and plain Python values only. Default: none."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (called on ``resume``)."""

    scaler: torch.amp.GradScaler | None = None
    """Set by the loop under ``precision="fp16"``; :meth:`backward` and
    :meth:`optimizer_step` use it."""

    def fp32_modules(self) -> list[nn.Module]:
        """Submodules that must run in float32 under reduced precision (autocast off, float32
        inputs), e.g. a VQ codebook updated by an EMA. Default: none."""
        return []

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, with loss scaling under float16. Steps call this (and
        :meth:`optimizer_step`) instead of ``loss.backward()`` / ``optimizer.step()``."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``; under float16 it skips steps whose gradients overflowed."""
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self._scaled = True
        else:
            optimizer.step()

    def make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def train_step(self, batch: tuple[torch.Tensor, ...],
                   optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def val_step(self, batch: tuple[torch.Tensor, ...]) -> dict[str, float]:
        raise NotImplementedError


@dataclass
class TrainData:
    """Training and validation samples as datasets; each item is a tuple of tensors.

    ``train`` items are drawn in a seeded random order (with ``steps_per_epoch``, as many
    passes as needed); ``val`` is read in order every epoch. ``workers`` > 0 reads items in
    that many DataLoader worker processes.
    """

    train: Dataset
    val: Dataset
    workers: int = 0

    def __post_init__(self) -> None:
        if len(self.train) < 1 or len(self.val) < 1:
            raise InputError(f"need at least one training and one validation sample, got "
                             f"{len(self.train)} and {len(self.val)}")


class _TensorRows(Dataset):
    """Rows ``idx`` of tensors sharing their first dimension (fast path: batches are gathered
    by indexing, not item by item)."""

    def __init__(self, tensors: Sequence[torch.Tensor], idx: np.ndarray) -> None:
        self.tensors, self.idx = tuple(tensors), np.asarray(idx)

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int):
        j = int(self.idx[i])
        return tuple(t[j] for t in self.tensors)

    def batch(self, items: np.ndarray) -> tuple[torch.Tensor, ...]:
        sel = torch.as_tensor(self.idx[items])
        return tuple(t[sel] for t in self.tensors)


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


def _as_train_data(data: tuple[torch.Tensor, ...] | TrainData, config: TrainConfig) -> TrainData:
    if isinstance(data, TrainData):
        return data
    if not isinstance(data, (tuple, list)) or not data:
        raise TypeError("data must be a tuple of tensors or a TrainData")
    n = int(data[0].shape[0])
    if any(int(d.shape[0]) != n for d in data):
        raise InputError("all training tensors must have the same number of samples")
    train_idx, val_idx = _split(n, config.val_fraction, config.seed)
    return TrainData(_TensorRows(data, train_idx), _TensorRows(data, val_idx))


def _batches(ds: Dataset, order: np.ndarray, batch_size: int, device: torch.device,
             workers: int = 0, rank: int = 0, world: int = 1):
    """Batches of ``ds`` in ``order``; with ``world`` > 1, this process's share of each."""
    chunks = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    if world > 1:
        chunks = [np.array_split(c, world)[rank] for c in chunks]
        chunks = [c for c in chunks if len(c)]
    if isinstance(ds, _TensorRows):
        for c in chunks:
            yield tuple(t.to(device) for t in ds.batch(c))
        return
    loader = DataLoader(ds, batch_sampler=[c.tolist() for c in chunks], num_workers=workers)
    for batch in loader:
        yield tuple(t.to(device) for t in batch)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`fit` safely (``weights_only``: no code runs)."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a crafted or damaged file is a user error here
        raise InputError(f"{path} is not a readable sharpstack checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); start a new run in "
                         f"another folder instead of --resume") from None


def _diff_records(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Keys whose values differ between two settings records (nested), except
    :data:`RESUMABLE_KEYS`."""
    out = []
    for k in sorted(set(old) | set(new)):
        if k in RESUMABLE_KEYS:
            continue
        a, b = old.get(k), new.get(k)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _diff_records(a, b, f"{prefix}{k}.")
        elif json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True,
                                                                      default=str):
            out.append(f"{prefix}{k}: {a!r} in the run, {b!r} now")
    return out


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group under torchrun."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _mean_over_processes(sums: dict[str, float], count: int, world: int) -> dict[str, float]:
    if world <= 1:
        return {k: v / max(count, 1) for k, v in sums.items()}
    import torch.distributed as dist

    keys = sorted(sums)
    t = torch.tensor([sums[k] for k in keys] + [float(count)], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(t[i] / max(float(t[-1]), 1.0)) for i, k in enumerate(keys)}


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


def fit(task: TrainTask, data: tuple[torch.Tensor, ...] | TrainData, config: TrainConfig, *,
        out_dir: str | Path | None = None, resume: bool = False, progress: bool = False,
        config_record: Mapping[str, Any] | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train ``task`` on ``data``.

    Parameters
    ----------
    task : TrainTask
        Networks, optimisers and the step of one method.
    data : tuple of torch.Tensor or TrainData
        Tensors sharing their first dimension, e.g. ``(inputs, targets)`` each ``(N, ...)``,
        split into training and validation samples with ``config.val_fraction`` (seeded); or
        a :class:`TrainData` with the method's own training and validation datasets.
    config : TrainConfig
    out_dir : path, optional
        Where checkpoints, ``history.json`` and ``loss_curve.png`` go (nothing written if None).
    resume : bool
        Continue from ``out_dir/last.pt``. The checkpoint must come from the same settings
        (``config_record``) except :data:`RESUMABLE_KEYS` (e.g. more epochs); otherwise an
        :class:`~sharpstack.errors.InputError` names what differs.
    progress : bool
        Show a tqdm progress bar over the training steps with the running loss, and each
        epoch's training and validation loss at its end (the CLI turns it on).
    config_record : mapping, optional
        JSON-serialisable settings of the method (written to ``history.json`` and compared on
        resume).

    Returns
    -------
    TrainResult
        The history; the task's networks hold the weights of the best validation epoch.
    """
    t0 = time.perf_counter()
    rank, world = _distributed()
    device = pick_device(config.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    seed_everything(config.seed)
    td = _as_train_data(data, config)
    record = json.loads(json.dumps(dict(config_record or {}), default=str))
    numerics = resolve_precision(config.precision, device)
    for m in task.models.values():
        m.to(device)
        if numerics.channels_last:
            to_channels_last(m)
    task.scaler = torch.amp.GradScaler(device.type) if numerics.scale_loss else None
    plain_models = dict(task.models)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        task.models = {k: DDP(m) if any(p.requires_grad for p in m.parameters()) else m
                       for k, m in plain_models.items()}
    optimizers = task.make_optimizers()
    for o in optimizers.values():
        for g in o.param_groups:
            g.setdefault("initial_lr", g["lr"])

    writes = out_dir is not None and rank == 0
    out = Path(out_dir) if out_dir is not None else None
    if writes:
        out.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, Any]] = []
    best_val, best_epoch, start_epoch, bad_epochs = math.inf, 0, 1, 0

    def snapshot() -> dict[str, dict[str, torch.Tensor]]:
        return {k: {p: v.detach().cpu().clone() for p, v in m.state_dict().items()}
                for k, m in plain_models.items()}

    best_state = snapshot()
    rng = np.random.default_rng(config.seed + 1)

    if resume:
        last = out / "last.pt" if out is not None else None
        if last is None or not last.exists():
            raise InputError(f"cannot resume: no checkpoint {last}; train without --resume first")
        ckpt = load_checkpoint(last, device)
        differs = _diff_records(ckpt.get("record", {}), record)
        if differs:
            raise InputError(
                f"cannot resume {out}: it was trained with other settings ("
                + "; ".join(differs) + "); resume with the run's settings, or train into a new "
                "folder")
        try:
            for k, m in plain_models.items():
                m.load_state_dict(ckpt["models"][k])
            for k, o in optimizers.items():
                o.load_state_dict(ckpt["optimizers"][k])
        except (KeyError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"cannot resume {out}: its checkpoint holds another network "
                             f"({first}); resume with the run's architecture settings, or "
                             f"train into a new folder") from None
        task.load_state_dict(ckpt.get("task", {}))
        if task.scaler is not None and ckpt.get("scaler"):
            task.scaler.load_state_dict(ckpt["scaler"])
        history = ckpt["history"]
        best_val, best_epoch = ckpt["best_val"], ckpt["best_epoch"]
        bad_epochs, start_epoch = ckpt["bad_epochs"], ckpt["epoch"] + 1
        best_state = ckpt["best_state"]
        rng.bit_generator.state = ckpt["rng"]
        torch.set_rng_state(ckpt["torch_rng"].cpu())

    n_train = len(td.train)
    bar = None
    if progress and rank == 0:  # one tick per step, the running loss beside it
        from tqdm.auto import tqdm
        per_epoch = config.steps_per_epoch or math.ceil(n_train / config.batch_size)
        bar = tqdm(total=config.epochs * per_epoch, initial=(start_epoch - 1) * per_epoch,
                   desc=f"training epoch {start_epoch}/{config.epochs}", unit="step")
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
        order = rng.permutation(n_train)
        if config.steps_per_epoch:
            need = config.steps_per_epoch * config.batch_size
            reps = int(math.ceil(need / n_train))
            order = np.concatenate([rng.permutation(n_train) for _ in range(reps)])[:need]
        sums: dict[str, float] = {}
        nb = 0
        for batch in _batches(td.train, order, config.batch_size, device, td.workers,
                              rank, world):
            with autocast_models(plain_models.values(), task.fp32_modules(), numerics, device):
                logs = task.train_step(batch, optimizers)
            if task.scaler is not None and getattr(task, "_scaled", False):
                task.scaler.update()
                task._scaled = False
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            nb += 1
            if bar is not None:
                bar.set_description(f"training epoch {epoch}/{config.epochs}", refresh=False)
                bar.set_postfix(loss=f"{float(logs.get('loss', math.nan)):.4g}", refresh=False)
                bar.update(1)
        train_logs = {f"train_{k}": v for k, v in _mean_over_processes(sums, nb, world).items()}
        for m in task.models.values():
            m.eval()
        vsums: dict[str, float] = {}
        nvb = 0
        with torch.no_grad():
            for batch in _batches(td.val, np.arange(len(td.val)), config.batch_size, device,
                                  td.workers):
                with autocast_models(plain_models.values(), task.fp32_modules(), numerics,
                                     device):
                    vlogs = task.val_step(batch)
                for k, v in vlogs.items():
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
            best_state = snapshot()
            if writes:
                atomic_torch_save({"models": best_state, "epoch": epoch}, out / "best.pt")
        else:
            bad_epochs += 1
        if config.patience is not None and bad_epochs >= config.patience:
            stopped = True
        if writes:
            atomic_torch_save({
                "models": {k: m.state_dict() for k, m in plain_models.items()},
                "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                "task": task.state_dict(), "record": record,
                "history": history, "best_val": best_val, "best_epoch": best_epoch,
                "bad_epochs": bad_epochs, "epoch": epoch, "best_state": best_state,
                "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                "scaler": task.scaler.state_dict() if task.scaler is not None else {},
            }, out / "last.pt")
            log = {"config": {**asdict(config), **record, "numerics": numerics.name},
                   "best_epoch": best_epoch, "best_val_loss": best_val, "history": history}
            _atomic_write_text(out / "history.json", json.dumps(log, indent=2, default=str))
            plot_history(history, out / "loss_curve.png")
        if on_epoch is not None:
            on_epoch(rec)
        if bar is not None:
            bar.set_postfix(train=f"{rec['train_loss']:.4g}", val=f"{rec['val_loss']:.4g}")
        if stopped:
            break
    if bar is not None:
        bar.close()
    task.models = plain_models
    for k, m in task.models.items():
        m.load_state_dict(best_state[k])
        if numerics.channels_last:  # hand back the layout every consumer expects
            for t in list(m.parameters()) + list(m.buffers()):
                t.data = t.data.contiguous()
        m.eval()
    task.scaler = None
    return TrainResult(history=history, best_epoch=best_epoch, best_val_loss=best_val,
                       stopped_early=stopped, out_dir=out, seconds=time.perf_counter() - t0,
                       extra={"numerics": numerics.name})
