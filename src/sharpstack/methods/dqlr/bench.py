"""The DQLR benchmark: deep-slice enhancement on synthetic stacks with ground truth and on
real confocal membrane stacks without.

:func:`run_dqlr_bench` runs, for every phantom kind of the synthetic protocol
(:func:`sharpstack.methods.dqlr.synthetic_depth_stack`: blur growing with depth, exponential
attenuation, Poisson + Gaussian noise; the ground truth is the stack imaged everywhere with the
shallowest slice's PSF, without attenuation or noise):

1. ``n_stacks`` seeded training stacks (seeds ``seed + 1 ...``) and one held-out test stack
   (seed ``seed``);
2. four columns on the test stack, all in the normalised units the network sees
   (1st/99.8th percentile of the whole stack -> 0/1):

   - ``input``: the normalised stack;
   - ``deconv``: slice-wise Richardson-Lucy with a Gaussian PSF whose width follows depth,
     the oracle width ``sqrt(sigma_xy(z)^2 - sigma_xy(0)^2)`` (what separates a slice from
     the ground truth) and the oracle iteration count (best whole-stack PSNR against the
     ground truth among ``rl_iterations``): an upper bound on this baseline;
   - ``novq`` (optional, ``variants``): the paper's DQLR without quantisation (its
     ablation), the same budget;
   - ``paper``: DQLR trained as in the paper (``pairs="self"``: the acquired slices are the
     targets);
   - ``dqlr``: DQLR with the default shallow-to-deep pairs;

3. per depth third (shallow, middle, deep): PSNR and SSIM against the ground truth (CARE
   protocol: percentile-normalised target, affinely fitted prediction; SSIM 2D per slice),
   mean gradient magnitude and FM (De & Masilamani 2013, ``metrics.focus_measure``).

On the real stacks (``../shared/data/1135_mini_raw.tif`` and ``sample_ovule_raw.tif``, Arabidopsis
ovule, confocal, cell membranes, no ground truth) DQLR and its ablation are trained on both
stacks together (self-supervised, as a user would on their own data) and every column is
measured per slice: FM, mean gradient magnitude and contrast (standard deviation), with the
deep/shallow ratio (mean over the deepest third / mean over the shallowest third). Slice 0 is
the shallowest in both stacks (they are stored in acquisition order from the objective side:
FM of the denoised input falls with z in both). The deconvolution column there uses a
constant Gaussian PSF (``real_sigma`` px, ``real_rl_iterations`` iterations): the paper's
"Gaussian PSF with standard values", since the real PSF is unknown.

Outputs in ``out_dir``: ``table.md`` (the tables below), ``results.json``, ``synthetic.csv``,
``real_per_slice.csv``, ``deep_slices.png`` (deep slices side by side: input, deconvolution,
no-VQ, DQLR, and the ground truth on synthetic data), ``synthetic_<kind>.png`` and
``real_<stack>.png`` (shallow, middle and deep slices and an xz section per column),
``codebook.png`` (perplexity per epoch
of every DQLR training) and ``contrast_per_depth.png``.

Nothing here prints; progress goes to an optional callback or a tqdm bar.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...bench._jobs import job_executor
from ...errors import InputError
from .dqlr_arch import DQLRNet
from .evaluate import DEPTH_BINS, depth_bins, mean_gradient, score_depth_bins
from .figures import real_figure
from .realmeasures import (band_power, foreground_contrast, grid_peak, neighbour_ssim,
                           signal_band)
from .settings import DQLRConfig
from .synth import synthetic_depth_stack
from .task import DQLRModel, restore, train_dqlr

__all__ = ["COLUMNS", "COLUMN_TITLES", "REAL_STACKS", "reduced_settings", "run_dqlr_bench",
           "format_tables", "real_depth_profile"]

COLUMNS = ("input", "deconv", "novq", "paper", "dqlr")
COLUMN_TITLES = {"input": "input", "deconv": "Gaussian deconv. (RL)",
                 "novq": "paper DQLR without VQ", "paper": "paper DQLR (self pairs)",
                 "dqlr": "DQLR (shallow-to-deep)"}
VARIANTS = {"novq": {"quantize": False, "pairs": "self"}, "paper": {"pairs": "self"},
            "dqlr": {}}
"""Settings of every trained column over the common ones."""
REAL_STACKS = ("1135_mini_raw.tif", "sample_ovule_raw.tif")
_DEFAULT_REAL_DATA = Path(__file__).resolve().parents[4].parent / "shared" / "data"


def reduced_settings(**overrides: Any) -> dict[str, Any]:
    """DQLR settings of the reduced CPU run (the paper-size values in comments)."""
    s = {"hidden": 32,          # paper size: 128
         "rnn_hidden": 32,      # paper size: 64 (ConvLSTM 3x3, the later variant)
         "res_hidden": 16,      # paper size: 32
         "patch_size": 48,      # paper size: 64
         "batch_size": 16,      # paper size: 32
         "lr": 1e-3,            # paper size: 3e-4 (the public code)
         "n_clips": 8192, "val_clips": 32, "patience": None, "lr_schedule": "cosine"}
    s.update({k: v for k, v in overrides.items() if v is not None})
    return s


def _train_job(stacks, names, settings: dict[str, Any], variant: str) -> dict[str, Any]:
    """Train one network (in this process or a worker); plain values and tensors back."""

    t0 = time.perf_counter()
    cfg = DQLRConfig(**{**settings, **VARIANTS[variant]})
    m = train_dqlr(stacks, cfg, names=names)
    r = m.result
    return {"state": {k: v.detach().cpu() for k, v in m.net.state_dict().items()},
            "history": r.history, "best_epoch": r.best_epoch, "best_val": r.best_val_loss,
            "stopped": r.stopped_early, "seconds": time.perf_counter() - t0}


def _model_from(job: dict[str, Any], settings: dict[str, Any], variant: str):
    from ...normalize import PercentileNormalizer
    from ...training import TrainResult

    cfg = DQLRConfig(**{**settings, **VARIANTS[variant]})
    net = DQLRNet(**cfg.net_kwargs())
    net.load_state_dict(job["state"])
    net.eval()
    res = TrainResult(history=job["history"], best_epoch=job["best_epoch"],
                      best_val_loss=job["best_val"], stopped_early=job["stopped"],
                      out_dir=None, seconds=job["seconds"])
    return DQLRModel(net=net, config=cfg, normalizer=PercentileNormalizer(cfg.pmin, cfg.pmax),
                     result=res)


def real_depth_profile(stack: np.ndarray, band: tuple[float, float] | None = None
                       ) -> dict[str, list[float]]:
    """Per-slice measures of a stack (as given): FM, mean gradient magnitude, contrast
    (std), and the two that noise does not fool: foreground contrast (99th - 50th
    percentile after a 1-px smoothing) and, with ``band``, the power in that band above the
    slice's noise floor; and the SSIM of every slice with the one above it (structures
    continue; noise lowers it, blur raises it; :mod:`.realmeasures`)."""
    from ...metrics import focus_measure

    a = np.asarray(stack, dtype=np.float32)
    out = {"fm": [focus_measure(a[z]) for z in range(a.shape[0])],
           "grad": [mean_gradient(a[z]) for z in range(a.shape[0])],
           "contrast": [float(a[z].std()) for z in range(a.shape[0])],
           "fg_contrast": foreground_contrast(a).tolist(),
           "neighbour_ssim": neighbour_ssim(a).tolist()}
    if band is not None:
        out["band_power"] = band_power(a, band).tolist()
    return out


def _ratio(values: Sequence[float], bins: dict[str, slice]) -> float:
    v = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(v[bins["deep"]]) / np.nanmean(v[bins["shallow"]]))


def _usage(model) -> dict[str, Any]:
    h = model.result.history
    return {"perplexity_per_epoch": [r.get("train_perplexity") for r in h],
            "codes_used_per_epoch": [r.get("train_codes_used") for r in h],
            "restarts_total": float(sum(r.get("train_restarts", 0.0) * (
                model.config.steps_per_epoch or 1) for r in h)),
            "final": model.codebook_usage()}


def run_dqlr_bench(out_dir: str | Path, *, steps: int = 1500, epochs: int = 20,
                   n_stacks: int = 2, kinds: Sequence[str] = ("membranes", "nuclei"),
                   real: bool = True, real_data: str | Path | None = None,
                   shape: Sequence[int] = (48, 128, 128), photons: float = 50.0,
                   settings: dict[str, Any] | None = None,
                   rl_iterations: Sequence[int] = (2, 3, 5, 8, 12, 20, 30),
                   real_sigma: float = 1.0, real_rl_iterations: int = 10,
                   threads: int | None = None, jobs: int = 1, device: str | None = None,
                   seed: int = 0, progress: bool = False,
                   variants: Sequence[str] = ("paper", "dqlr"),
                   on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the DQLR benchmark and write its tables, CSVs and figures into ``out_dir``.

    Parameters
    ----------
    steps, epochs : int
        Training budget of every network: ``epochs`` epochs of ``steps // epochs`` batches
        (DQLR and its ablation get the same).
    n_stacks : int
        Synthetic training stacks per phantom kind.
    kinds : sequence of {"membranes", "nuclei"}
        Phantom kinds of the synthetic protocol (empty: real stacks only).
    real : bool
        Also train on and measure the two real stacks (``real_data`` folder, default
        ``../shared/data`` beside the repository).
    shape, photons : synthetic stack size (Z, Y, X) and photons at the brightest voxel
        (default 50: the relative noise of the real 1135 stack, 0.09 of its 1-99.8
        percentile range).
    settings : dict, optional
        DQLR settings overriding :func:`reduced_settings` (e.g. the paper-size ones).
    rl_iterations : iteration counts the oracle deconvolution chooses from.
    real_sigma, real_rl_iterations : the deconvolution of the real stacks.
    threads : torch CPU threads (None: leave as is); per worker with ``jobs`` > 1.
    jobs : trainings at once, in worker processes (2 with 1 thread each uses a 2-core CPU
        better than one training with 2 threads: its small convolutions scale poorly);
        every training is seeded, so the results do not depend on it.
    device : torch device for training and restoration.
    seed : base seed (phantoms, noise, training).
    variants : trained columns among ``novq``, ``paper``, ``dqlr`` (:data:`VARIANTS`).
    """
    import torch

    from ... import baselines
    from ...normalize import PercentileNormalizer
    from .baseline import richardson_lucy_slicewise_best

    kinds = tuple(kinds)
    bad = [v for v in tuple(variants) if v not in VARIANTS]
    if bad or not tuple(variants):
        raise InputError(f"unknown or no DQLR variants {bad}; choose among {list(VARIANTS)}")
    variants = tuple(v for v in COLUMNS if v in tuple(variants))
    columns = ("input", "deconv", *variants)
    for k in kinds:
        if k not in ("membranes", "nuclei"):
            raise InputError(f"unknown phantom kind {k!r}; use membranes or nuclei")
    if not kinds and not real:
        raise InputError("nothing to run: give at least one phantom kind or --real")
    if steps < epochs:
        raise InputError(f"steps ({steps}) must be at least epochs ({epochs})")
    if threads is not None:
        torch.set_num_threads(int(threads))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    cfg = reduced_settings(**(settings or {}))
    cfg.update(epochs=int(epochs), steps_per_epoch=max(1, int(steps) // int(epochs)),
               seed=int(seed), device=device)
    n_tasks = len(variants) * (len(kinds) + (1 if real else 0))
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=n_tasks, desc="dqlr bench", unit="training")

    def say(msg: str) -> None:
        if on_step is not None:
            on_step(msg)
        if bar is not None:
            bar.set_postfix_str(msg[:40])

    norm = PercentileNormalizer(cfg.get("pmin", 1.0), cfg.get("pmax", 99.8))
    results: dict[str, Any] = {"settings": cfg, "synthetic": {}, "real": {},
                               "columns": list(columns),
                               "seconds": {}, "protocol": {},
                               "run": {"jobs": int(jobs),
                                       "torch_threads": torch.get_num_threads()}}
    panels: list[tuple[str, list[tuple[str, np.ndarray]]]] = []
    usage: dict[str, Any] = {}

    # ---------------------------------------------------------------- data, then trainings
    # every training is submitted first (to worker processes with jobs > 1, or run at once
    # with jobs == 1), then each dataset is scored as its two networks come back
    if isinstance(jobs, bool) or int(jobs) != jobs or jobs < 1:
        raise InputError(f"jobs must be a positive integer, got {jobs!r}")
    executor: Any = job_executor(jobs)
    datasets: list[dict[str, Any]] = []
    try:
        for kind in kinds:
            say(f"{kind}: synthesising")
            train = [synthetic_depth_stack(kind, tuple(shape), seed=seed + 1 + i,
                                           poisson_peak=photons) for i in range(n_stacks)]
            test = synthetic_depth_stack(kind, tuple(shape), seed=seed, poisson_peak=photons)
            results["protocol"][kind] = {
                "sigma_xy": [float(test.sigma_xy[0]), float(test.sigma_xy[-1])],
                "sigma_z": [float(test.sigma_z[0]), float(test.sigma_z[-1])],
                "attenuation": float(test.attenuation[-1]), "photons": photons,
                "shape": list(shape), "train_seeds": [seed + 1 + i for i in range(n_stacks)],
                "test_seed": seed}
            stacks = [d.degraded for d in train]
            names = [f"{kind}-{d.seed}" for d in train]
            datasets.append({"key": kind, "test": test, "futures": {
                name: executor.submit(_train_job, stacks, names, cfg, name)
                for name in variants}})
        if real:
            from ...io import read_stack

            folder = Path(real_data) if real_data is not None else _DEFAULT_REAL_DATA
            paths = [folder / n for n in REAL_STACKS]
            missing = [str(p) for p in paths if not p.exists()]
            if missing:
                raise InputError(f"real stacks not found: {', '.join(missing)}; give their "
                                 "folder (real_data) or run without the real stacks")
            raw = [np.asarray(read_stack(p).values, dtype=np.float32) for p in paths]
            datasets.append({"key": "real", "paths": paths, "raw": raw, "futures": {
                name: executor.submit(_train_job, raw, list(REAL_STACKS), cfg, name)
                for name in variants}})

        for ds in datasets:
            key = ds["key"]
            t0 = time.perf_counter()
            models = {}
            for name, fut in ds["futures"].items():
                say(f"{key}: training {name}")
                job = fut.result()
                results["seconds"][f"{key}_{name}_train"] = job["seconds"]
                models[name] = _model_from(job, cfg, name)
                if bar is not None:
                    bar.update(1)
            usage[key] = _usage(models[[v for v in variants if v != "novq"][-1]]
                                if any(v != "novq" for v in variants) else models["novq"])
            say(f"{key}: scoring")
            if key != "real":
                test = ds["test"]
                xin = norm.before(test.degraded)
                rl = richardson_lucy_slicewise_best(
                    np.clip(xin, 0, None), test.deconv_sigma, test.gt, tuple(rl_iterations))
                cols = {"input": xin, "deconv": rl.volume}
                for name, m in models.items():
                    cols[name] = restore(m, test.degraded, device=device)
                gt_norm = norm.before(test.gt)
                scores = score_depth_bins(test.gt, {**cols, "gt": gt_norm})
                dbins = depth_bins(test.gt.shape[0])
                for c, v in {**cols, "gt": gt_norm}.items():
                    ns = neighbour_ssim(v)
                    scores[c].update({f"nssim_{b}": float(np.nanmean(ns[dbins[b]]))
                                      for b in DEPTH_BINS})
                results["synthetic"][key] = {"scores": scores, "rl_iterations": rl.iterations,
                                             "rl_scores": rl.scores,
                                             "codebook": usage[key]["final"]}
                real_figure(f"synthetic {key} (test stack, seed {seed})",
                            {**{COLUMN_TITLES[c]: cols[c] for c in columns},
                             "ground truth": gt_norm}, out / f"synthetic_{key}.png")
                z = int(round(0.9 * (test.gt.shape[0] - 1)))
                panels.append((f"{key} (slice {z})",
                               [(COLUMN_TITLES[c], cols[c][z]) for c in columns]
                               + [("ground truth", gt_norm[z])]))
            else:
                for p, stack in zip(ds["paths"], ds["raw"]):
                    xin = norm.before(stack)
                    cols = {"input": xin,
                            "deconv": baselines.richardson_lucy_slicewise(
                                np.clip(xin, 0, None), real_sigma,
                                iterations=real_rl_iterations)}
                    for name, m in models.items():
                        cols[name] = restore(m, stack, device=device)
                    bins = depth_bins(stack.shape[0])
                    band = signal_band(xin)
                    prof = {c: real_depth_profile(cols[c], band) for c in columns}
                    ratios = {c: {k: _ratio(v, bins) for k, v in prof[c].items()}
                              for c in columns}
                    means = {c: {f"{k}_{b}": float(np.nanmean(np.asarray(v)[bins[b]]))
                                 for k, v in prof[c].items() for b in DEPTH_BINS}
                             for c in columns}
                    grid = {c: grid_peak(cols[c], 2 ** int(cfg.get("n_down", 2)))
                            for c in columns}
                    real_figure(p.name, {COLUMN_TITLES[c]: cols[c] for c in columns},
                                out / f"real_{p.stem}.png")
                    results["real"][p.name] = {"shape": list(stack.shape), "per_slice": prof,
                                               "deep_over_shallow": ratios, "bin_means": means,
                                               "band": list(band), "grid_peak": grid}
                    z = int(round(0.9 * (stack.shape[0] - 1)))
                    panels.append((f"{p.name} (slice {z})",
                                   [(COLUMN_TITLES[c], cols[c][z]) for c in columns]))
                results["real_codebook"] = usage["real"]["final"]
            results["seconds"][f"{key}_scoring"] = time.perf_counter() - t0
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    if bar is not None:
        bar.close()
    results["codebook"] = usage
    results["seconds"]["total"] = time.perf_counter() - t_start

    # ---------------------------------------------------------------- outputs
    from ...io import write_file_atomic

    text = format_tables(results)
    write_file_atomic(out / "table.md", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    write_file_atomic(out / "results.json", lambda tmp: tmp.write_text(
        json.dumps(results, indent=1, default=float), encoding="utf-8"))
    _write_csvs(results, out)
    _deep_slices_png(panels, out / "deep_slices.png")
    _codebook_png(usage, out / "codebook.png")
    if results["real"]:
        _fm_png(results["real"], out / "contrast_per_depth.png")
    results["table"] = text
    return results


# --------------------------------------------------------------------------------------------
# tables and figures
# --------------------------------------------------------------------------------------------

def format_tables(results: dict[str, Any]) -> str:
    """Markdown tables of a :func:`run_dqlr_bench` result."""

    cfg = results["settings"]
    cols = tuple(results.get("columns", COLUMNS))
    steps = cfg["epochs"] * cfg["steps_per_epoch"]
    lines = [f"DQLR benchmark: every network {cfg['epochs']} epochs x {cfg['steps_per_epoch']} "
             f"batches of {cfg['batch_size']} clips ({steps} steps, patch {cfg['patch_size']}, "
             f"hidden {cfg['hidden']}, ConvLSTM hidden {cfg['rnn_hidden']}, k = "
             f"{cfg.get('num_codes', 128)} codewords of dim {cfg.get('code_dim', 64)}, lr "
             f"{cfg['lr']} {cfg.get('lr_schedule', 'constant')}); wall time "
             f"{results['seconds']['total'] / 60:.1f} min ({results['run']['jobs']} training "
             f"job(s) at once, {results['run']['torch_threads']} torch thread(s) each).", ""]
    for kind, r in results["synthetic"].items():
        p = results["protocol"][kind]
        s = r["scores"]
        lines += [f"### Synthetic {kind}: PSNR (dB) / SSIM against the shallow-quality GT, per "
                  f"depth third", "",
                  f"{tuple(p['shape'])} stacks, sigma_xy {p['sigma_xy'][0]:g} -> "
                  f"{p['sigma_xy'][1]:g} px, sigma_z {p['sigma_z'][0]:g} -> {p['sigma_z'][1]:g}"
                  f" px, attenuation to {p['attenuation']:g}, {p['photons']:g} photons peak; "
                  f"trained on seeds {p['train_seeds']}, tested on seed {p['test_seed']}; RL "
                  f"oracle iterations {r['rl_iterations']}.", "",
                  "| column | " + " | ".join(f"{b} PSNR | {b} SSIM" for b in DEPTH_BINS) + " |",
                  "|---|" + "---|---|" * len(DEPTH_BINS)]
        for c in cols:
            lines.append(f"| {COLUMN_TITLES[c]} | " + " | ".join(
                f"{s[c][f'psnr_{b}']:.2f} | {s[c][f'ssim_{b}']:.3f}" for b in DEPTH_BINS) + " |")
        lines += ["", "Sharpness per depth third (normalised units): mean gradient magnitude / "
                      "FM.", "",
                  "| column | " + " | ".join(f"{b} grad | {b} FM" for b in DEPTH_BINS) + " |",
                  "|---|" + "---|---|" * len(DEPTH_BINS)]
        for c in (*cols, "gt"):
            lines.append(f"| {COLUMN_TITLES.get(c, 'ground truth')} | " + " | ".join(
                f"{s[c][f'grad_{b}']:.4f} | {s[c][f'fm_{b}']:.3f}" for b in DEPTH_BINS) + " |")
        if "nssim_deep" in s["input"]:
            lines += ["", "SSIM of every slice with the slice above (1 px smoothed; the "
                          "ground truth's is what continuing structures give; noise lowers "
                          "it, blur raises it), shallow / deep third: " + ", ".join(
                              f"{COLUMN_TITLES.get(c, 'ground truth')} "
                              f"{s[c]['nssim_shallow']:.3f} / {s[c]['nssim_deep']:.3f}"
                              for c in (*cols, "gt")) + "."]
        if "dqlr" not in s:
            continue
        d, dc, i = (s[c]["psnr_deep"] for c in ("dqlr", "deconv", "input"))
        sd, sdc = s["dqlr"]["ssim_deep"], s["deconv"]["ssim_deep"]
        msg = (f"Deep third: DQLR {d - i:+.2f} dB over the input, {d - dc:+.2f} dB "
               f"(SSIM {sd - sdc:+.3f}) over the deconvolution")
        for c in ("paper", "novq"):
            if c in s:
                msg += (f", {d - s[c]['psnr_deep']:+.2f} dB (SSIM "
                        f"{sd - s[c]['ssim_deep']:+.3f}) over {COLUMN_TITLES[c]}")
        lines += ["", msg + ".", ""]
    if results["real"]:
        lines += ["### Real confocal stacks (no GT): deep/shallow ratio (deepest third / "
                  "shallowest third)", "",
                  "| stack | measure | " + " | ".join(COLUMN_TITLES[c] for c in cols) + " |",
                  "|---|---|" + "---|" * len(cols)]
        for name, r in results["real"].items():
            for k, title in (("fg_contrast", "foreground contrast (p99 - p50)"),
                             ("band_power", "band power above noise"),
                             ("neighbour_ssim", "SSIM with the slice above (1 px smoothed)"),
                             ("fm", "FM"), ("grad", "gradient"), ("contrast", "contrast (std)")):
                if k not in r["deep_over_shallow"]["input"]:
                    continue
                lines.append(f"| {name} | {title} | " + " | ".join(
                    f"{r['deep_over_shallow'][c][k]:.3f}" for c in cols) + " |")
            if "grid_peak" in r:
                lines.append(f"| {name} | grid peak (spectrum at the latent period / "
                             f"neighbours) | " + " | ".join(
                                 f"{r['grid_peak'][c]:.2f}" for c in cols) + " |")
        lines += ["", "Mean FM per depth third:", "",
                  "| stack | column | shallow | middle | deep |", "|---|---|---|---|---|"]
        for name, r in results["real"].items():
            for c in cols:
                lines.append(f"| {name} | {COLUMN_TITLES[c]} | " + " | ".join(
                    f"{r['bin_means'][c][f'fm_{b}']:.3f}" for b in DEPTH_BINS) + " |")
        lines.append("")
    lines += ["### Codebook usage of the DQLR trainings (last epoch)", "",
              "| data | perplexity | codewords used per batch | validation perplexity | "
              "restarts (total) |", "|---|---|---|---|---|"]
    for key, u in results["codebook"].items():
        f = u["final"]
        lines.append(f"| {key} | {f.get('train_perplexity', float('nan')):.1f} | "
                     f"{f.get('train_codes_used', float('nan')):.1f} | "
                     f"{f.get('val_perplexity', float('nan')):.1f} | "
                     f"{u['restarts_total']:.0f} |")
    secs = results["seconds"]
    lines += ["", "Seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in secs.items()), ""]
    return "\n".join(lines)


def _write_csvs(results: dict[str, Any], out: Path) -> None:
    from ...io import write_file_atomic

    rows = []
    for kind, r in results["synthetic"].items():
        for c, vals in r["scores"].items():
            rows.append({"kind": kind, "column": c, **{k: f"{v:.6g}" for k, v in vals.items()}})
    if rows:
        keys = list(rows[0])

        def w(tmp: Path) -> None:
            with tmp.open("w", newline="") as fh:
                wr = csv.DictWriter(fh, fieldnames=keys)
                wr.writeheader()
                wr.writerows(rows)
        write_file_atomic(out / "synthetic.csv", w)
    rrows = []
    for name, r in results["real"].items():
        for c, prof in r["per_slice"].items():
            for z in range(len(prof["fm"])):
                rrows.append({"stack": name, "column": c, "z": z, "fm": f"{prof['fm'][z]:.6g}",
                              "grad": f"{prof['grad'][z]:.6g}",
                              "contrast": f"{prof['contrast'][z]:.6g}"})
    if rrows:
        def w2(tmp: Path) -> None:
            with tmp.open("w", newline="") as fh:
                wr = csv.DictWriter(fh, fieldnames=list(rrows[0]))
                wr.writeheader()
                wr.writerows(rrows)
        write_file_atomic(out / "real_per_slice.csv", w2)


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> None:
    from ...io import write_file_atomic

    write_file_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    _plt().close(fig)


def _clip01(a: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(a, [0.5, 99.8])
    return np.clip((a - lo) / (hi - lo + 1e-12), 0, 1)


def _deep_slices_png(panels, path: Path) -> None:
    if not panels:
        return
    plt = _plt()
    ncol = max(len(p[1]) for p in panels)
    fig, axes = plt.subplots(len(panels), ncol, figsize=(2.4 * ncol, 2.5 * len(panels)),
                             dpi=100, squeeze=False)
    for i, (row_title, items) in enumerate(panels):
        for j in range(ncol):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(items):
                ax.axis("off")
                continue
            title, img = items[j]
            ax.imshow(_clip01(np.asarray(img, dtype=np.float32)), cmap="gray",
                      interpolation="nearest")
            ax.set_title(title, fontsize=8)
            if j == 0:
                ax.set_ylabel(row_title, fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def _codebook_png(usage: dict[str, Any], path: Path) -> None:
    if not usage:
        return
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    for key, u in usage.items():
        vals = [v for v in u["perplexity_per_epoch"] if v is not None]
        ax.plot(range(1, len(vals) + 1), vals, marker=".", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("codebook perplexity (training)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def _fm_png(real: dict[str, Any], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, len(real), figsize=(5 * len(real), 3.5), dpi=100,
                             squeeze=False)
    for ax, (name, r) in zip(axes[0], real.items()):
        for c in r["per_slice"]:
            ax.plot(r["per_slice"][c]["fg_contrast"], label=COLUMN_TITLES[c])
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("slice (depth)")
        ax.set_ylabel("foreground contrast (p99 - p50)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
