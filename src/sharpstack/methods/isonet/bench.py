"""The IsoNet Table 1 benchmark (Weigert et al., MICCAI 2017) on synthetic phantoms.

One function, :func:`run_isonet_table1`, runs the paper's protocol on seeded synthetic volumes
and writes the table beside the paper's values. Per dataset and volume:

1. ground truth ``f``: a phantom of :mod:`sharpstack.phantoms` on an isotropic grid;
2. isotropic GT ``h_iso ⊗ f`` (:func:`.optics.isotropic_psf` of the dataset's PSF);
3. anisotropic acquisition ``g = S_σ[P(h ⊗ f) + η]`` (:func:`.acquisition.form_image`:
   blur, Poisson shot noise, Gaussian read noise, every σ-th z slice kept);
4. the seven columns of Table 1, all on the isotropic grid:

   - ``blurred``: ``g`` linearly upsampled along z (the input every method sees);
   - ``rl``: Richardson-Lucy on the upsampled input (clipped at 0) with the full PSF, the
     iteration count chosen against the isotropic GT (an oracle, i.e. an upper bound on RL);
   - ``srcnn``: IsoNet-1's network trained on pairs that ignore the PSF (subsampling and
     linear upsampling only), ``arch="srcnn", psf_mode="none"``;
   - ``isonet1_full`` / ``isonet1_split``: SRCNN-like network, PSF ``full`` / ``split``;
   - ``isonet2_full`` / ``isonet2_split``: U-Net, PSF ``full`` / ``split``;

   every network trained self-supervised on that volume's anisotropic stack only
   (:func:`sharpstack.methods.isonet.train_isonet`) and applied with
   :func:`sharpstack.methods.isonet.restore`;
5. PSNR of every column against the isotropic GT and against the GT with
   :func:`sharpstack.metrics.psnr_normalized` (CARE protocol: percentile-normalised target,
   least-squares affine fit of the prediction), mean ± std over volumes;
6. on the nuclei data, SEG (:func:`sharpstack.metrics.seg_score`) against the phantom's labels
   of :func:`.segmentation.segment_nuclei` applied to the isotropic GT, the blurred
   input and IsoNet-2 (the PSF mode with the better mean PSNR against the isotropic GT).

Datasets (:data:`DATASETS`), as in the paper:

========================  =====================================  ======  ===========
name                      PSF                                    factor  pixel (µm)
========================  =====================================  ======  ===========
``nuclei``                Gaussian σ_xy/σ_z = 2/8 voxels         8       (unitless)
``membranes``             confocal NA 1.1, λ 488/520 nm, n 1.33  4       0.10
``nuclei+membranes``      light-sheet NA 0.8 detect., 0.1 illum  6       0.15
========================  =====================================  ======  ===========

The pixel sizes put the lateral PSF at about 1.3 px (confocal) and 2 px (light-sheet, the
Gaussian's σ_xy) second-moment width, so every PSF is sampled without aliasing and is well
resolved against the phantoms' 2-voxel membranes and 9-14-voxel nuclei.

Camera noise (:data:`NOISE`): the blurred volume is scaled so that its brightest voxel has
``poisson_peak`` expected photons, Poisson-sampled, then Gaussian read noise of
``read_noise`` photons (standard deviation) is added: ``gauss_sigma = read_noise *
max(h ⊗ f) / poisson_peak`` in intensity units.

Volume geometry: the field of view is cut from a larger phantom (a margin of half the PSF on
every side, so borders are blurred as in a microscope, not mirrored), and its z size is the
span of the acquired slices, ``(n - 1) * factor + 1`` (a 128³ request gives 121 planes at
factor 8, 125 at factor 4, 127 at factor 6): every method is scored on planes between
acquired slices, none beyond the last one (see :func:`dataset_shape`). The volumes are made in
:mod:`.synth` (:func:`make_volume`, :data:`DATASETS`, :data:`NOISE`).

Nothing here prints; progress goes to an optional callback or a tqdm bar.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ...bench._jobs import job_executor
from ...errors import InputError
from .settings import IsoNetConfig
from .synth import DATASETS, NOISE, DatasetSpec, dataset_shape, make_volume
from .task import restore, train_isonet

__all__ = ["DatasetSpec", "DATASETS", "METHODS", "METHOD_TITLES", "PAPER_TABLE1", "PAPER_SEG",
           "NOISE", "dataset_shape", "make_volume", "run_isonet_table1", "format_table1"]

# --------------------------------------------------------------------------------------------
# protocol constants
# --------------------------------------------------------------------------------------------

METHODS: tuple[str, ...] = ("blurred", "rl", "srcnn", "isonet1_full", "isonet1_split",
                            "isonet2_full", "isonet2_split")
"""The seven columns of Table 1, in the paper's order."""

METHOD_TITLES: dict[str, str] = {
    "blurred": "Blurred (input)", "rl": "Deconv (RL)", "srcnn": "SRCNN",
    "isonet1_full": "IsoNet-1 full", "isonet1_split": "IsoNet-1 split",
    "isonet2_full": "IsoNet-2 full", "isonet2_split": "IsoNet-2 split",
}

# network column -> (arch, psf_mode)
_NETWORKS: dict[str, tuple[str, str]] = {
    "srcnn": ("srcnn", "none"),
    "isonet1_full": ("srcnn", "full"), "isonet1_split": ("srcnn", "split"),
    "isonet2_full": ("unet", "full"), "isonet2_split": ("unet", "split"),
}

PAPER_TABLE1: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    "nuclei": {
        "iso_gt": dict(zip(METHODS, [(25.84, .17), (27.48, .16), (25.89, .19), (32.18, .18),
                                     (32.47, .18), (35.11, .18), (35.61, .18)])),
        "gt": dict(zip(METHODS, [(24.09, .10), (25.88, .11), (24.15, .10), (27.74, .10),
                                 (27.53, .10), (29.51, .10), (28.84, .10)])),
    },
    "membranes": {
        "iso_gt": dict(zip(METHODS, [(21.83, .13), (18.52, .14), (21.69, .13), (19.55, .12),
                                     (26.19, .13), (19.14, .12), (27.33, .14)])),
        "gt": dict(zip(METHODS, [(15.95, .01), (16.48, .01), (15.94, .01), (16.84, .01),
                                 (16.49, .01), (17.09, .01), (16.62, .01)])),
    },
    "nuclei+membranes": {
        "iso_gt": dict(zip(METHODS, [(28.13, .37), (25.00, .37), (28.69, .39), (25.59, .38),
                                     (30.23, .37), (25.40, .39), (30.95, .36)])),
        "gt": dict(zip(METHODS, [(24.61, .52), (26.57, .51), (24.59, .52), (26.86, .51),
                                 (26.07, .51), (27.85, .51), (26.66, .51)])),
    },
}
"""Table 1 of the paper: dataset -> reference (``iso_gt``/``gt``) -> column -> (mean, std) dB,
n = 10 volumes of 512³."""

PAPER_SEG: dict[str, float] = {"gt": 0.923, "blurred": 0.742, "isonet2": 0.913}
"""SEG on the nuclei data (paper, section 3.1): isotropic GT, blurred input, IsoNet-2."""

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def _check_datasets(datasets: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(datasets, str):
        datasets = [d.strip() for d in datasets.split(",") if d.strip()]
    out = tuple(datasets)
    if not out:
        raise InputError(f"datasets is empty; choose from {list(DATASETS)}")
    for d in out:
        if d not in DATASETS:
            raise InputError(f"unknown dataset {d!r}; choose from {list(DATASETS)} "
                             f"(comma-separated on the command line)")
    if len(set(out)) != len(out):
        raise InputError(f"datasets lists a dataset twice: {list(out)}")
    return out


def _seg(labels: np.ndarray, image: np.ndarray, segment: Callable, score: Callable) -> float:
    """SEG of the paper's pipeline on ``image``; an image the pipeline cannot threshold (e.g. a
    constant output of an untrained network) segments nothing and scores 0."""
    try:
        pred = segment(image)
    except InputError:
        pred = np.zeros(labels.shape, dtype=np.int32)
    return float(score(labels, pred))


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def _fmt(mean: float, std: float, digits: int = 2) -> str:
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


# --------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------

def format_table1(results: dict[str, Any]) -> str:
    """Markdown of Table 1 (ours beside the paper), the IsoNet-2 margins and SEG.

    Parameters
    ----------
    results : dict
        As returned by :func:`run_isonet_table1` (``results["summary"]`` is used).

    Returns
    -------
    str
        Markdown text.
    """
    s = results["settings"]
    summ = results["summary"]
    lines = [
        "# IsoNet Table 1 (sharpstack vs Weigert et al. 2017)",
        "",
        f"PSNR (dB, `psnr_normalized`), mean ± std over {s['n_volumes']} volume(s) per dataset; "
        f"paper: mean (std), n = 10 volumes of 512³, 100 epochs. This run: volume "
        f"{s['size']} (fields of view {', '.join(f'{d} {tuple(v)}' for d, v in s['shapes'].items())}: "
        f"z = the span of the acquired slices), {s['epochs']} epochs × "
        f"{s['steps_per_epoch']} steps × batch {s['isonet']['batch_size']} "
        f"(patch {s['isonet']['patch_size']}, {s['isonet']['n_patches']} patches, "
        f"lr {s['isonet']['lr']:g}, dropout {s['isonet']['dropout']:g}), "
        f"noise {s['noise']['poisson_peak']:g} photons peak + {s['noise']['read_noise']:g} "
        f"photons read noise, seed {s['seed']}.",
        "",
        "| dataset | reference | source | " + " | ".join(METHOD_TITLES[m] for m in METHODS)
        + " |",
        "|---|---|---|" + "---|" * len(METHODS),
    ]
    for d, ds in summ.items():
        for ref, rname in (("iso_gt", "isotropic GT"), ("gt", "GT")):
            ours = [_fmt(*ds["psnr"][ref][m]) for m in METHODS]
            paper = [f"{PAPER_TABLE1[d][ref][m][0]:.2f} ({PAPER_TABLE1[d][ref][m][1]:.2f})"
                     for m in METHODS]
            lines.append(f"| {DATASETS[d].title} | {rname} | sharpstack | " + " | ".join(ours)
                         + " |")
            lines.append(f"| {DATASETS[d].title} | {rname} | paper | " + " | ".join(paper)
                         + " |")
    lines += ["", "IsoNet-2 (best PSF mode) against the isotropic GT: gain over the blurred "
              "input and over Richardson-Lucy (dB).", "",
              "| dataset | best mode | gain over blurred (ours) | gain over blurred (paper) "
              "| margin reached | gain over RL (ours) | beats RL | IsoNet-2 split − full "
              "(ours / paper) | IsoNet-2 − IsoNet-1, best modes (ours / paper) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for d, ds in summ.items():
        best = ds["isonet2_best"]
        ps = ds["psnr"]["iso_gt"]
        gain = ps[best][0] - ps["blurred"][0]
        paper_gain = (max(PAPER_TABLE1[d]["iso_gt"]["isonet2_full"][0],
                          PAPER_TABLE1[d]["iso_gt"]["isonet2_split"][0])
                      - PAPER_TABLE1[d]["iso_gt"]["blurred"][0])
        over_rl = ps[best][0] - ps["rl"][0]
        pp = {m: PAPER_TABLE1[d]["iso_gt"][m][0] for m in METHODS}
        split_full = ps["isonet2_split"][0] - ps["isonet2_full"][0]
        p_split_full = pp["isonet2_split"] - pp["isonet2_full"]
        two_one = (max(ps["isonet2_full"][0], ps["isonet2_split"][0])
                   - max(ps["isonet1_full"][0], ps["isonet1_split"][0]))
        p_two_one = (max(pp["isonet2_full"], pp["isonet2_split"])
                     - max(pp["isonet1_full"], pp["isonet1_split"]))
        lines.append(f"| {DATASETS[d].title} | {best.split('_')[1]} | {gain:+.2f} | "
                     f"{paper_gain:+.2f} | {'yes' if gain >= paper_gain else 'no'} | "
                     f"{over_rl:+.2f} | {'yes' if over_rl > 0 else 'no'} | "
                     f"{split_full:+.2f} / {p_split_full:+.2f} | "
                     f"{two_one:+.2f} / {p_two_one:+.2f} |")
    if any("seg" in ds for ds in summ.values()):
        lines += ["", "SEG on the nuclei data (intermodes threshold, fill holes, watershed on "
                  "the distance transform; against the phantom labels).", "",
                  "| source | isotropic GT | blurred input | IsoNet-2 | gap closed |",
                  "|---|---|---|---|---|"]
        for d, ds in summ.items():
            if "seg" not in ds:
                continue
            sg = ds["seg"]
            gap = sg["gt"][0] - sg["blurred"][0]
            closed = (sg["isonet2"][0] - sg["blurred"][0]) / gap if gap > 0 else float("nan")
            lines.append(f"| sharpstack ({d}, IsoNet-2 {ds['isonet2_best'].split('_')[1]}) | "
                         f"{_fmt(*sg['gt'], 3)} | {_fmt(*sg['blurred'], 3)} | "
                         f"{_fmt(*sg['isonet2'], 3)} | {closed:.0%} |")
        pg = ((PAPER_SEG["isonet2"] - PAPER_SEG["blurred"])
              / (PAPER_SEG["gt"] - PAPER_SEG["blurred"]))
        lines.append(f"| paper | {PAPER_SEG['gt']:.3f} | {PAPER_SEG['blurred']:.3f} | "
                     f"{PAPER_SEG['isonet2']:.3f} | {pg:.0%} |")
    rl = {d: ds.get("rl_iterations") for d, ds in summ.items()}
    lines += ["", f"Richardson-Lucy iterations (oracle, chosen against the isotropic GT per "
              f"volume): {rl}. Wall time: {results['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def _write_csv(path: Path, summ: dict[str, Any], per_volume: dict[str, list[dict]]) -> None:
    rows = []
    for d, ds in summ.items():
        for ref in ("iso_gt", "gt"):
            for m in METHODS:
                mean, std = ds["psnr"][ref][m]
                vals = [v["psnr"][ref][m] for v in per_volume[d]]
                rows.append({"dataset": d, "metric": "psnr", "reference": ref, "method": m,
                             "mean": f"{mean:.4f}", "std": f"{std:.4f}", "n": len(vals),
                             "paper_mean": PAPER_TABLE1[d][ref][m][0],
                             "paper_std": PAPER_TABLE1[d][ref][m][1],
                             "values": " ".join(f"{v:.4f}" for v in vals)})
        if "seg" in ds:
            for m in ("gt", "blurred", "isonet2"):
                mean, std = ds["seg"][m]
                vals = [v["seg"][m] for v in per_volume[d] if "seg" in v]
                rows.append({"dataset": d, "metric": "seg", "reference": "labels", "method": m,
                             "mean": f"{mean:.4f}", "std": f"{std:.4f}", "n": len(vals),
                             "paper_mean": PAPER_SEG[m], "paper_std": "",
                             "values": " ".join(f"{v:.4f}" for v in vals)})
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def _write_figure(path: Path, slices: dict[str, dict[str, np.ndarray]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["gt", "iso_gt", *METHODS]
    titles = {"gt": "GT", "iso_gt": "isotropic GT", **METHOD_TITLES}
    rows = list(slices)
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(1.9 * len(cols), 2.0 * len(rows)),
                             squeeze=False, dpi=110)
    for i, d in enumerate(rows):
        for j, c in enumerate(cols):
            ax = axes[i, j]
            img = slices[d][c]
            lo, hi = np.percentile(img, (0.5, 99.8))
            ax.imshow(img, cmap="magma", vmin=lo, vmax=hi if hi > lo else lo + 1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[c], fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{d}\n(x→, z↓)", fontsize=8)
    fig.suptitle("Axial (xz) slices through volume 0 (central y)", fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _network_job(stack: np.ndarray, psf: np.ndarray | None,
                 cfg: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """Train one network of the table on one volume and restore that volume with it."""
    config = IsoNetConfig(**cfg)
    t0 = time.perf_counter()
    model = train_isonet(stack, psf, config)
    t1 = time.perf_counter()
    out = restore(model, stack, factor=config.factor)
    t2 = time.perf_counter()
    return out, {"train_seconds": t1 - t0, "restore_seconds": t2 - t1,
                 "best_epoch": model.result.best_epoch,
                 "best_val_loss": model.result.best_val_loss}


def _rl_job(blurred: np.ndarray, psf: np.ndarray, iso_gt: np.ndarray,
            iterations: tuple[int, ...]) -> tuple[np.ndarray, dict[str, Any]]:
    """Richardson-Lucy with the oracle iteration count (see :func:`richardson_lucy_best`)."""
    from ...baselines import richardson_lucy_best

    t0 = time.perf_counter()
    rl = richardson_lucy_best(np.clip(blurred, 0, None), psf, iso_gt, iterations=iterations)
    return rl.volume, {"iterations": rl.iterations, "scores": dict(rl.scores),
                       "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------

def run_isonet_table1(out_dir: str | Path, *, size: int | Sequence[int] = 160,
                      n_volumes: int = 2, epochs: int = 60, steps_per_epoch: int = 40,
                      datasets: Sequence[str] | str = ("nuclei", "membranes",
                                                       "nuclei+membranes"),
                      device: str | None = None, seed: int = 0, progress: bool = False,
                      on_step: Callable[[str], None] | None = None,
                      isonet: dict[str, Any] | None = None,
                      noise: dict[str, float] | None = None,
                      rl_iterations: Sequence[int] = (1, 2, 3, 5, 8, 12, 20, 30, 50),
                      jobs: int = 1) -> dict[str, Any]:
    """Run the IsoNet Table 1 protocol and write the table, a CSV, a figure and the raw results.

    Parameters
    ----------
    out_dir : path
        Output folder (created); receives ``table1.md``, ``table1.csv``, ``axial_slices.png``
        and ``results.json`` (each written atomically; existing ones are replaced).
    size : int or (Z, Y, X)
        Field-of-view size in voxels; Z is cut to the span of the acquired slices of each
        dataset, ``(n - 1) * factor + 1`` (:func:`dataset_shape`). The paper: 512.
    n_volumes : int
        Seeded volumes per dataset (paper: 10); volume ``v`` uses phantom seed ``seed + v``.
    epochs, steps_per_epoch : int
        Training budget of every network (paper: 100 epochs; steps not stated).
    datasets : sequence of str or comma-separated str
        Subset of :data:`DATASETS`.
    device : str, optional
        Torch device for training and restoration (default: CUDA when present).
    seed : int
        Base seed (phantoms, noise, training).
    progress : bool
        Show a tqdm bar over the training runs.
    on_step : callable(str), optional
        Called with a one-line message after every step (the CLI logs it).
    isonet : dict, optional
        Extra :class:`~sharpstack.methods.isonet.IsoNetConfig` fields for every network
        (e.g. ``{"n_patches": 2048, "lr": 1e-3}``). Defaults of the reduced run:
        ``patch_size=48`` (or the largest multiple of 16 that fits), ``n_patches=1024``,
        ``batch_size=8``, ``lr=1e-3`` (the paper's 5e-3 reached 3.4 dB less on nuclei after
        1000 steps), ``dropout=0`` (the paper's 20 % cost 2.0 dB on nuclei and 2.0 dB on
        membranes after 800 steps: at this budget the networks underfit, they do not
        overfit), ``patience=None``; the rest are IsoNetConfig's (paper) defaults.
        ``arch``, ``psf_mode``, ``factor``,
        ``epochs``, ``steps_per_epoch``, ``seed`` and ``device`` are set here.
    noise : dict, optional
        ``{"poisson_peak": photons, "read_noise": photons}``; default :data:`NOISE`.
    rl_iterations : sequence of int
        Iteration counts among which the oracle picks the best Richardson-Lucy result.
    jobs : int
        Trainings (and Richardson-Lucy runs) at once. 1: one after the other in this process.
        More: that many worker processes, each with this process's torch thread count; the
        results are the same as with ``jobs=1`` (every job is seeded), only faster. On a
        2-core CPU, ``jobs=2`` with 1 thread each about halves the wall time.

    Returns
    -------
    dict
        ``settings``, ``per_volume`` (dataset -> list of per-volume dicts with ``psnr``
        [reference][column], ``seg``, ``rl_iterations``, ``train_seconds``),
        ``summary`` (dataset -> ``psnr`` [reference][column] = (mean, std), ``seg``,
        ``isonet2_best``), ``seconds``, ``files``.
    """
    import torch

    from ...metrics import psnr_normalized, seg_score
    from .segmentation import segment_nuclei

    t_start = time.perf_counter()
    names = _check_datasets(datasets)
    if isinstance(n_volumes, bool) or int(n_volumes) != n_volumes or n_volumes < 1:
        raise InputError(f"n_volumes must be a positive integer, got {n_volumes!r}")
    n_volumes = int(n_volumes)
    if isinstance(jobs, bool) or int(jobs) != jobs or jobs < 1:
        raise InputError(f"jobs must be a positive integer, got {jobs!r}")
    jobs = int(jobs)
    shapes = {d: dataset_shape(size, DATASETS[d].factor) for d in names}
    extra = dict(isonet or {})
    fixed = {"arch", "psf_mode", "factor", "epochs", "steps_per_epoch", "seed", "device"}
    clash = fixed & set(extra)
    if clash:
        raise InputError(f"isonet overrides {sorted(clash)} are set by the benchmark itself; "
                         f"use the dedicated arguments (epochs=, steps_per_epoch=, ...)")
    min_lat = min(min(s[1], s[2]) for s in shapes.values())
    extra.setdefault("patch_size", min(48, 16 * (min_lat // 16)))
    extra.setdefault("n_patches", 1024)
    extra.setdefault("batch_size", 8)
    extra.setdefault("lr", 1e-3)
    extra.setdefault("dropout", 0.0)
    extra.setdefault("patience", None)
    probe = IsoNetConfig(factor=2, epochs=epochs, steps_per_epoch=steps_per_epoch, **extra)
    noise = dict(NOISE if noise is None else noise)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def say(msg: str) -> None:
        if on_step is not None:
            on_step(msg)

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(names) * n_volumes * len(_NETWORKS), desc="isonet table 1",
                   unit="net")

    per_volume: dict[str, list[dict[str, Any]]] = {d: [] for d in names}
    slices: dict[str, dict[str, np.ndarray]] = {}

    def finish(d: str, v: int, vol: dict[str, Any], futures: dict[str, Any]) -> None:
        """Collect one volume's jobs (in submission order), score it, log it."""
        iso_gt, gt = vol["iso_gt"], vol["gt"]
        outputs: dict[str, np.ndarray] = {"blurred": vol["blurred"]}
        outputs["rl"], rl_info = futures["rl"].result()
        say(f"[{d} v{v}] RL best at {rl_info['iterations']} iterations "
            f"({rl_info['seconds']:.0f} s)")
        train_info: dict[str, Any] = {}
        for m in _NETWORKS:
            out, train_info[m] = futures[m].result()
            outputs[m] = out[: iso_gt.shape[0]]  # n * factor planes: keep the acquired span
            if bar is not None:
                bar.update(1)
        psnr = {ref: {m: psnr_normalized(target, outputs[m]) for m in METHODS}
                for ref, target in (("iso_gt", iso_gt), ("gt", gt))}
        for m, info in train_info.items():
            say(f"[{d} v{v}] {m}: trained {info['train_seconds']:.0f} s, restored "
                f"{info['restore_seconds']:.0f} s, val -PSNR {info['best_val_loss']:.2f} dB, "
                f"PSNR vs iso GT {psnr['iso_gt'][m]:.2f} dB")
        rec: dict[str, Any] = {"seed": seed + v, "shape": list(shapes[d]), "psnr": psnr,
                               "rl_iterations": rl_info["iterations"],
                               "rl_scores": {str(k): s for k, s in rl_info["scores"].items()},
                               "gauss_sigma": vol["gauss_sigma"], "train": train_info}
        if vol["labels"] is not None and int(vol["labels"].max()) > 0:
            t0 = time.perf_counter()
            rec["seg"] = {k: _seg(vol["labels"], img, segment_nuclei, seg_score)
                          for k, img in (("gt", iso_gt), ("blurred", vol["blurred"]),
                                         ("isonet2_full", outputs["isonet2_full"]),
                                         ("isonet2_split", outputs["isonet2_split"]))}
            rec["n_nuclei"] = int(vol["labels"].max())
            say(f"[{d} v{v}] SEG {json.dumps({k: round(x, 3) for k, x in rec['seg'].items()})}"
                f" ({time.perf_counter() - t0:.0f} s)")
        per_volume[d].append(rec)
        say(f"[{d} v{v}] PSNR vs iso GT: "
            + ", ".join(f"{m} {psnr['iso_gt'][m]:.2f}" for m in METHODS))
        if v == 0:
            yc = shapes[d][1] // 2
            slices[d] = {"gt": gt[:, yc, :].copy(), "iso_gt": iso_gt[:, yc, :].copy(),
                         **{m: outputs[m][:, yc, :].copy() for m in METHODS}}

    # jobs == 1 runs every job at submission, in this process; jobs > 1 runs them in worker
    # processes with this process's thread count (on 2 cores, two single-thread trainings
    # each ran as fast as one alone), with the next volume queued while one is collected
    executor: Any = job_executor(jobs)
    window = 0 if int(jobs) == 1 else 1
    pending: list[tuple[str, int, dict[str, Any], dict[str, Any]]] = []
    try:
        for d in names:
            spec = DATASETS[d]
            f = spec.factor
            for v in range(n_volumes):
                vseed = seed + v
                t0 = time.perf_counter()
                vol = make_volume(spec, shapes[d], vseed, noise)
                say(f"[{d} v{v}] volume {shapes[d]} ready ({time.perf_counter() - t0:.0f} s)")
                futures = {"rl": executor.submit(_rl_job, vol["blurred"], vol["psf"],
                                                 vol["iso_gt"], tuple(rl_iterations))}
                for m, (arch, mode) in _NETWORKS.items():
                    cfg = IsoNetConfig(arch=arch, psf_mode=mode, factor=f, epochs=epochs,
                                       steps_per_epoch=steps_per_epoch, seed=vseed,
                                       device=device, **extra)
                    futures[m] = executor.submit(_network_job, vol["stack"],
                                                 None if mode == "none" else vol["psf"],
                                                 cfg.model_dump())
                pending.append((d, v, vol, futures))
                while len(pending) > window:
                    finish(*pending.pop(0))
        while pending:
            finish(*pending.pop(0))
    finally:
        executor.shutdown(wait=not pending, cancel_futures=True)
        if bar is not None:
            bar.close()

    summary: dict[str, Any] = {}
    for d in names:
        recs = per_volume[d]
        ps = {ref: {m: _mean_std([r["psnr"][ref][m] for r in recs]) for m in METHODS}
              for ref in ("iso_gt", "gt")}
        best = max(("isonet2_full", "isonet2_split"), key=lambda m: ps["iso_gt"][m][0])
        ds: dict[str, Any] = {"psnr": ps, "isonet2_best": best,
                              "rl_iterations": [r["rl_iterations"] for r in recs]}
        seg_recs = [r["seg"] for r in recs if "seg" in r]
        if seg_recs:
            for r in seg_recs:
                r["isonet2"] = r[best]
            ds["seg"] = {k: _mean_std([r[k] for r in seg_recs])
                         for k in ("gt", "blurred", "isonet2")}
        summary[d] = ds

    seconds = time.perf_counter() - t_start
    settings = {"size": list(size) if not isinstance(size, (int, np.integer)) else int(size),
                "shapes": {d: list(s) for d, s in shapes.items()}, "n_volumes": n_volumes,
                "epochs": int(epochs), "steps_per_epoch": int(steps_per_epoch),
                "datasets": list(names), "device": device, "seed": int(seed),
                "torch_threads": torch.get_num_threads(), "jobs": jobs, "noise": noise,
                "isonet": probe.model_dump(exclude={"arch", "psf_mode", "factor", "seed",
                                                    "device"}),
                "rl_iterations": list(rl_iterations),
                "datasets_spec": {d: {k: v for k, v in asdict(DATASETS[d]).items()}
                                  for d in names}}
    results = {"settings": settings, "per_volume": per_volume, "summary": summary,
               "seconds": seconds}
    files = {"table": out / "table1.md", "csv": out / "table1.csv",
             "figure": out / "axial_slices.png", "results": out / "results.json"}
    _atomic_text(files["table"], format_table1(results))
    _write_csv(files["csv"], summary, per_volume)
    _write_figure(files["figure"], slices)
    results["files"] = {k: str(p) for k, p in files.items()}
    _atomic_text(files["results"], json.dumps(results, indent=1, default=_json_default))
    say(f"done in {seconds:.0f} s; wrote {', '.join(str(p) for p in files.values())}")
    return results


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
