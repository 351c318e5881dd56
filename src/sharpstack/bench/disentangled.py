"""The disentangled-deblurring benchmark: the thesis's Tables 5.1-5.4 on held-apart fields.

One function, :func:`run_disentangled_bench`:

1. builds two defocus-series datasets, each split by field (identity) into training /
   validation / test sets (seeded, recorded in ``results.json``):

   - ``synthetic``: nuclei + membranes fields (:func:`sharpstack.phantoms.defocus_fields`)
     imaged at 13 defocus levels from -3 to +3 um with the widefield PSF of
     :func:`sharpstack.psf.defocus_psf_2d` (NA 1.0, 0.2 um pixels) and Poisson + Gaussian
     noise; in focus at dz = 0;
   - ``real``: the 80 z-scans of ``../shared/data/zse_gan/zscans`` (29 planes, a human brain
     section; in focus at plane 15), read in place;

2. trains, on each dataset, ML-VAE, the manifold model, the 1-D manifold model and the two
   ablations of the manifold model (without cross-reconstruction, without contrastive loss),
   in worker processes (``jobs``);
3. scores every model on the test fields (and on up to 16 training fields) with the thesis's
   protocol (section 4.4): *reconstruction* ``D(E(x))`` against ``x`` for every plane;
   *deblurring* ``D(I(x_blurry), B(x_focus'))`` with the blur code of the in-focus image of
   a random other test field (seeded), against the field's own in-focus plane, for every
   out-of-focus plane; and the deblurring the package does (the stored mean in-focus code);
   PSNR and SSIM with the CARE protocol (:func:`sharpstack.metrics.psnr_normalized`,
   :func:`~sharpstack.metrics.ssim_normalized`);
4. the ML-VAE score (:func:`sharpstack.metrics.mlvae_score`) on the codes of every plane of
   the test fields (classifiers fit on alternate planes, scored on the others);
5. baselines: the blurry input itself, and Richardson-Lucy
   (:func:`sharpstack.baselines.richardson_lucy_best`, oracle iteration count against the
   in-focus plane, so an upper bound on RL) with the true defocus PSF of each plane
   (synthetic) or a Gaussian PSF whose width per plane is fitted on training fields
   (:func:`sharpstack.bench.zsegan.fit_defocus_sigmas`: the Gaussian that best turns the
   in-focus plane into that plane) (real);
6. writes ``tables.md`` (Table 5.3 layout with the thesis's values, Tables 5.1, 5.2, 5.4,
   deblurring per |dz|, the done-when checks), ``per_dz.csv``, ``results.json``,
   ``deblurring_<dataset>.png`` (blurry / RL / models / in-focus crops at several |dz|) and
   ``quality_vs_dz.png``.

All sizes are options, so the reduced CPU run and the paper-size GPU run are the same code
(``benchmarks/disentangled.py`` gives both commands). Nothing here prints.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._jobs import job_executor

__all__ = ["run_disentangled_bench", "REDUCED", "MODELS", "LABELS", "THESIS", "load_dataset",
           "held_out_quality"]

REDUCED: dict[str, Any] = {"channels": [16, 32, 64], "id_channels": 128, "patch_size": 64,
                           "epochs": 10, "steps_per_epoch": 45, "batch_size": 8,
                           "p_focus": 0.5}
"""The reduced CPU recipe (ten models in under 50 minutes on 2 CPU cores, two single-thread
trainings at once, about 1 s per manifold step); the thesis's sizes are ``channels
64,128,256,512``, ``id_channels 512``, ``patch 128``, 400 epochs. ``id_channels`` 128 keeps
the thesis's ratio of identity-code numbers to pixels (2: 512 x 8 x 8 codes for 128 x 128
images; here 128 x 8 x 8 for 64 x 64 crops); 32 channels (ratio 1/2) reconstructed visibly
worse in a 100-step trial (deblurring SSIM 0.25 against 0.35 on synthetic test fields)."""

MODELS: dict[str, dict[str, Any]] = {
    "mlvae": {"variant": "mlvae"},
    "manifold": {"variant": "manifold"},
    "manifold1d": {"variant": "manifold1d"},
    "no_cross": {"variant": "manifold", "w_cross": 0.0},
    "no_contrastive": {"variant": "manifold", "w_contrastive": 0.0},
}
LABELS = {"mlvae": "ML-VAE", "manifold": "Manifold-based", "manifold1d": "1D manifold-based",
          "no_cross": "No Cross Recon Loss", "no_contrastive": "No Contrastive Loss"}
MAIN = ("mlvae", "manifold", "manifold1d")

#: the thesis's numbers (its own plant-cell data): (SSIM, PSNR)
THESIS = {
    "reconstruction_test": {"mlvae": (0.9101, 31.923), "manifold": (0.9455, 37.927),
                            "manifold1d": (0.9422, 36.560), "no_cross": (0.9439, 38.098),
                            "no_contrastive": (0.9487, 38.914)},
    "reconstruction_train": {"mlvae": (0.9233, 32.279), "manifold": (0.9462, 38.455),
                             "manifold1d": (0.9444, 37.437), "no_cross": (0.9452, 38.323),
                             "no_contrastive": (0.9486, 38.239)},
    "deblurring_test": {"mlvae": (0.8629, 28.816), "manifold": (0.8925, 31.062),
                        "manifold1d": (0.9179, 33.020), "no_cross": (0.7724, 24.736),
                        "no_contrastive": (0.8722, 29.642)},
    "deblurring_train": {"mlvae": (0.8927, 29.801), "manifold": (0.9095, 32.150),
                         "manifold1d": (0.9315, 34.492), "no_cross": (0.8123, 25.406),
                         "no_contrastive": (0.8935, 30.563)},
    "mlvae_score": {"mlvae": (0.962, 0.995, 0.033), "manifold": (0.732, 0.955, 0.263),
                    "manifold1d": (0.007, 0.958, 0.951)},
}
SYNTH_DZ = tuple(np.round(np.arange(-3.0, 3.01, 0.5), 3))
REAL_FOCUS = 14  # plane 15 of 1..29


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------

_CACHE: dict[tuple, Any] = {}


def load_dataset(name: str, *, n_synthetic: int = 48, synthetic_size: int = 128,
                 seed: int = 0, data_dir: str | Path | None = None,
                 real_focus: int = REAL_FOCUS) -> dict[str, Any]:
    """``{"series": DefocusSeries, "kernels": (L, k, k) or None, "unit": str, "dz": (L,)}``
    of one benchmark dataset (cached per process)."""
    from ..errors import InputError
    from ..methods.disentangled import (read_defocus_series, shared_zscans_dir,
                                        synthetic_series)
    from ..psf import defocus_psf_2d

    key = (name, n_synthetic, synthetic_size, seed, str(data_dir), real_focus)
    if key in _CACHE:
        return _CACHE[key]
    if name == "synthetic":
        series, gt = synthetic_series(n_synthetic, synthetic_size, dz_um=SYNTH_DZ, seed=seed)
        kernels = defocus_psf_2d(SYNTH_DZ)
        out = {"series": series, "kernels": kernels, "fields": gt, "unit": "um",
               "spacing": float(SYNTH_DZ[1] - SYNTH_DZ[0]),
               "dz": np.asarray(SYNTH_DZ, dtype=np.float64),
               "about": f"{n_synthetic} synthetic nuclei + membranes fields of "
                        f"{synthetic_size}x{synthetic_size} px, 13 planes dz = -3..3 um "
                        f"(widefield NA 1.0, 0.2 um pixels), Poisson (200 photons) + "
                        f"Gaussian (0.01) noise"}
    elif name == "real":
        folder = Path(data_dir) if data_dir else shared_zscans_dir()
        series = read_defocus_series(folder, focus=real_focus)
        out = {"series": series, "kernels": None, "fields": None, "unit": "planes",
               "spacing": 1.0,
               "dz": np.arange(series.n_planes, dtype=np.float64) - real_focus,
               "about": f"{series.n_identities} real z-scans of {series.n_planes} planes "
                        f"({series.images.shape[2]}x{series.images.shape[3]} px, a human "
                        f"brain section, ZSE-GAN's data), in focus at plane "
                        f"{real_focus + 1}"}
    else:
        raise InputError(f"unknown dataset {name!r}; use synthetic or real")
    _CACHE[key] = out
    return out


def _train_job(dataset: str, data_kw: dict[str, Any], cfg: dict[str, Any],
               out_dir: str | None) -> dict[str, Any]:
    """Train one model on one dataset; returns its weights and log (picklable)."""
    from ..methods.disentangled import DisentangledConfig, train_disentangled

    series = load_dataset(dataset, **data_kw)["series"]
    t0 = time.perf_counter()
    model = train_disentangled(series, DisentangledConfig(**cfg), out_dir=out_dir)
    return {"state": {k: v.detach().cpu() for k, v in model.net.state_dict().items()},
            "focus_code": model.focus_code, "split": model.split,
            "history": model.result.history, "best_epoch": model.result.best_epoch,
            "seconds": time.perf_counter() - t0}


def _rebuild(cfg: dict[str, Any], job: dict[str, Any]):
    from ..methods.disentangled import DisentangledConfig, DisentangledModel
    from ..nn.disentangled_arch import DisentangledAE
    from ..normalize import PercentileNormalizer
    from ..training import TrainResult

    config = DisentangledConfig(**cfg)
    net = DisentangledAE(**config.arch_kwargs())
    net.load_state_dict(job["state"])
    res = TrainResult(history=job["history"], best_epoch=job["best_epoch"],
                      best_val_loss=min(h["val_loss"] for h in job["history"]),
                      stopped_early=False, out_dir=None, seconds=job["seconds"])
    return DisentangledModel(net=net.eval(), config=config,
                             normalizer=PercentileNormalizer(config.pmin, config.pmax),
                             focus_code=np.asarray(job["focus_code"], dtype=np.float32),
                             split=job["split"], result=res)


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------

def _gauss2d(sigma: float) -> np.ndarray:
    """Normalised 2D Gaussian PSF (the central plane of :func:`sharpstack.psf.gaussian_psf`)."""
    from ..psf import gaussian_psf

    g = gaussian_psf(float(sigma), 0.0)
    g = g[g.shape[0] // 2]
    return g / g.sum()


def _score(target: np.ndarray, image: np.ndarray) -> tuple[float, float]:
    from ..metrics import psnr_normalized, ssim_normalized

    return psnr_normalized(target, image), ssim_normalized(target, image)


def _evaluate_model(model, series, ids: Sequence[int], *, seed: int, partners: Sequence[int]
                    ) -> dict[str, Any]:
    """Reconstruction and deblurring scores of ``model`` on the fields ``ids``."""
    from ..methods.disentangled import decode_codes, deblur, encode_images

    rng = np.random.default_rng(seed)
    focus_codes = {int(j): encode_images(model, series.images[j, int(series.focus[j])][None])[1]
                   for j in partners}
    rec_p, rec_s, per_dz = [], [], {}
    idc_all, blur_all, lab_all = [], [], []
    for i in ids:
        stack = series.images[i]
        f = int(series.focus[i])
        idc, blur = encode_images(model, stack)
        idc_all.append(idc)
        blur_all.append(blur)
        lab_all += [int(i)] * len(stack)
        rec = decode_codes(model, idc, blur)[:, : stack.shape[1], : stack.shape[2]]
        for q in range(len(stack)):
            p, s = _score(stack[q], rec[q])
            rec_p.append(p)
            rec_s.append(s)
        others = [j for j in partners if j != i]
        for q in range(len(stack)):
            if q == f:
                continue
            j = int(others[int(rng.integers(len(others)))])
            thesis = decode_codes(model, idc[q:q + 1], focus_codes[j])[
                0, : stack.shape[1], : stack.shape[2]]
            pkg = deblur(model, stack[q])
            d = per_dz.setdefault(int(q - f), {"thesis": [], "package": []})
            d["thesis"].append(_score(stack[f], thesis))
            d["package"].append(_score(stack[f], pkg))
    return {"rec": (float(np.mean(rec_s)), float(np.mean(rec_p))), "per_dz": per_dz,
            "codes": (np.concatenate(idc_all), np.concatenate(blur_all), np.array(lab_all))}


def _mean_over(per_dz: dict[int, dict[str, list]], key: str) -> tuple[float, float]:
    vals = [v for d in per_dz.values() for v in d[key]]
    return float(np.mean([v[1] for v in vals])), float(np.mean([v[0] for v in vals]))


def _baselines(data: dict[str, Any], ids: Sequence[int], train_ids: Sequence[int],
               rl_iterations: Sequence[int]) -> tuple[dict[int, dict[str, list]], Any]:
    """Per dz: scores of the blurry input and of Richardson-Lucy."""
    from ..baselines import richardson_lucy_best
    from ..bench.zsegan import fit_defocus_sigmas

    series = data["series"]
    sigmas = None
    if data["kernels"] is None:  # real data: Gaussian widths fitted on training fields
        from ..normalize import PercentileNormalizer

        norm = PercentileNormalizer()
        stacks = [norm.before(series.images[i]) for i in list(train_ids)[:16]]
        sigmas = fit_defocus_sigmas(stacks, int(series.focus[train_ids[0]]))
    out: dict[int, dict[str, list]] = {}
    for i in ids:
        stack = series.images[i]
        f = int(series.focus[i])
        for q in range(len(stack)):
            if q == f:
                continue
            d = out.setdefault(int(q - f), {"blurry": [], "rl": [], "rl_iterations": []})
            d["blurry"].append(_score(stack[f], stack[q]))
            if data["kernels"] is not None:
                psf = data["kernels"][q]
            else:
                s = float(sigmas[q])
                if s <= 0:
                    d["rl"].append(d["blurry"][-1])
                    d["rl_iterations"].append(0)
                    continue
                psf = _gauss2d(s)
            img = np.clip(stack[q].astype(np.float32), 0, None)
            r = richardson_lucy_best(img, psf, stack[f], iterations=tuple(rl_iterations),
                                     axes="YX")
            d["rl"].append(_score(stack[f], r.volume))
            d["rl_iterations"].append(int(r.iterations))
    return out, sigmas


# --------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------

def run_disentangled_bench(out_dir: str | Path, *,
                           datasets: Sequence[str] | str = ("synthetic", "real"),
                           models: Sequence[str] | str = tuple(MODELS),
                           epochs: int = REDUCED["epochs"],
                           steps_per_epoch: int = REDUCED["steps_per_epoch"],
                           batch_size: int = REDUCED["batch_size"],
                           patch_size: int = REDUCED["patch_size"],
                           channels: Sequence[int] = tuple(REDUCED["channels"]),
                           id_channels: int = REDUCED["id_channels"],
                           blur_channels: int | None = None, n_synthetic: int = 48,
                           synthetic_size: int = 128, jobs: int = 2, device: str | None = None,
                           seed: int = 0, progress: bool = False,
                           extra: dict[str, Any] | None = None,
                           rl_iterations: Sequence[int] = (1, 2, 3, 5, 8, 12, 20, 30, 50),
                           n_train_scored: int = 16, data_dir: str | Path | None = None,
                           real_focus_plane: int = REAL_FOCUS + 1,
                           keep_runs: bool = False,
                           on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train and score the thesis's models on each dataset; write tables, CSV and figures.

    Parameters
    ----------
    out_dir : path
        Output folder (``tables.md``, ``per_dz.csv``, ``results.json``, figures; with
        ``keep_runs`` also one training folder per model).
    datasets, models : names
        ``synthetic`` / ``real``; keys of :data:`MODELS`.
    epochs, steps_per_epoch, batch_size, patch_size, channels, id_channels, blur_channels
        Training sizes (:class:`~sharpstack.methods.disentangled.DisentangledConfig`), the
        same for every model; ``blur_channels`` is the blur-code length of ML-VAE and the
        manifold models (default ``id_channels``; the 1-D model has 1).
    extra : dict
        Further config fields for every model (e.g. ``{"lr": 5e-4}``).
    jobs : int
        Trainings at once in worker processes with this process's torch thread count (2 on
        a 2-core CPU); results do not depend on it (every job is seeded).
    data_dir, real_focus_plane : path, int
        Folder of the real z-scans (default: the shared data) and their 1-based in-focus
        plane (15).
    """
    import torch

    from ..errors import InputError
    from ..metrics import mlvae_score

    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    mnames = [models] if isinstance(models, str) else list(models)
    for m in mnames:
        if m not in MODELS:
            raise InputError(f"unknown model {m!r}; use {', '.join(MODELS)}")
    if isinstance(jobs, bool) or int(jobs) != jobs or jobs < 1:
        raise InputError(f"jobs must be a positive integer, got {jobs!r}")
    say = on_step or (lambda msg: None)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(names) * len(mnames), desc="bench disentangled", unit="model")
    base = {"channels": [int(c) for c in channels], "id_channels": int(id_channels),
            "patch_size": int(patch_size), "epochs": int(epochs),
            "steps_per_epoch": int(steps_per_epoch), "batch_size": int(batch_size),
            "p_focus": REDUCED["p_focus"], "test_fraction": 0.2, "val_fraction": 0.1,
            "seed": int(seed), "device": device, **(extra or {})}
    data_kw = {"n_synthetic": int(n_synthetic), "synthetic_size": int(synthetic_size),
               "seed": int(seed), "data_dir": str(data_dir) if data_dir else None,
               "real_focus": int(real_focus_plane) - 1}

    def cfg_of(m: str) -> dict[str, Any]:
        c = {**base, **MODELS[m]}
        if c["variant"] != "manifold1d" and blur_channels:
            c["blur_channels"] = int(blur_channels)
        return c

    executor: Any = job_executor(jobs)
    results: dict[str, Any] = {"settings": {**base, "blur_channels": blur_channels,
                                            "models": mnames, "datasets": names,
                                            "n_synthetic": n_synthetic,
                                            "synthetic_size": synthetic_size, "jobs": jobs,
                                            "torch_threads": torch.get_num_threads()},
                               "datasets": {}}
    try:
        futures = {(d, m): executor.submit(_train_job, d, data_kw, cfg_of(m),
                                           str(out / "runs" / d / m) if keep_runs else None)
                   for d in names for m in mnames}
        for d in names:
            data = load_dataset(d, **data_kw)
            series = data["series"]
            t0 = time.perf_counter()
            trained = {}
            for m in mnames:
                job = futures[(d, m)].result()
                trained[m] = (_rebuild(cfg_of(m), job), job)
                say(f"[{d}] {m} trained in {job['seconds']:.0f} s (best epoch "
                    f"{job['best_epoch']})")
                if bar is not None:
                    bar.update(1)
            split = trained[mnames[0]][0].split
            idx = {n: i for i, n in enumerate(series.names)}
            test = [idx[n] for n in split["test"]]
            if len(test) < 2:
                raise InputError(f"dataset {d} has {series.n_identities} fields, so only "
                                 f"{len(test)} test field(s); the protocol needs at least 2 "
                                 f"(a partner of another identity): use at least 10 fields")
            train_ids = [idx[n] for n in split["train"]]
            scored_train = train_ids[: int(n_train_scored)]
            base_dz, sigmas = _baselines(data, test, train_ids, rl_iterations)
            res_d: dict[str, Any] = {"about": data["about"], "unit": data["unit"],
                                     "spacing": data["spacing"],
                                     "split": split, "models": {}, "baselines": {},
                                     "rl_sigmas": None if sigmas is None else
                                     [float(s) for s in sigmas]}
            for key in ("blurry", "rl"):
                vals = [v for dz in base_dz.values() for v in dz[key]]
                res_d["baselines"][key] = {
                    "deblurring_test": (float(np.mean([v[1] for v in vals])),
                                        float(np.mean([v[0] for v in vals]))),
                    "per_dz": {str(k): (float(np.mean([v[1] for v in dz[key]])),
                                        float(np.mean([v[0] for v in dz[key]])))
                               for k, dz in sorted(base_dz.items())}}
            res_d["baselines"]["rl"]["iterations"] = {
                str(k): int(np.median(dz["rl_iterations"])) for k, dz in sorted(base_dz.items())}
            examples: dict[str, dict[int, np.ndarray]] = {}
            for m in mnames:
                model, job = trained[m]
                ev = _evaluate_model(model, series, test, seed=seed + 11, partners=test)
                ev_tr = _evaluate_model(model, series, scored_train, seed=seed + 13,
                                        partners=scored_train)
                idc, blur, lab = ev["codes"]
                score = mlvae_score(idc, blur, lab)
                res_d["models"][m] = {
                    "reconstruction_test": ev["rec"], "reconstruction_train": ev_tr["rec"],
                    "deblurring_test": _mean_over(ev["per_dz"], "thesis"),
                    "deblurring_train": _mean_over(ev_tr["per_dz"], "thesis"),
                    "deblurring_package_test": _mean_over(ev["per_dz"], "package"),
                    "per_dz_thesis": {str(k): (float(np.mean([v[1] for v in dz["thesis"]])),
                                               float(np.mean([v[0] for v in dz["thesis"]])))
                                      for k, dz in sorted(ev["per_dz"].items())},
                    "per_dz_package": {str(k): (float(np.mean([v[1] for v in dz["package"]])),
                                                float(np.mean([v[0] for v in dz["package"]])))
                                       for k, dz in sorted(ev["per_dz"].items())},
                    "mlvae_score": score, "train_seconds": job["seconds"],
                    "best_epoch": job["best_epoch"], "epochs": len(job["history"]),
                    "focus_code": [float(v) for v in np.ravel(job["focus_code"])[:8]],
                }
                examples[m] = model
            res_d["eval_seconds"] = time.perf_counter() - t0
            results["datasets"][d] = res_d
            _figure(out / f"deblurring_{d}.png", data, test[0], examples, mnames,
                    res_d.get("rl_sigmas"))
            _write_outputs(out, results)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
    results["seconds"] = time.perf_counter() - t_start
    results["checks"] = _checks(results)
    _plot_vs_dz(out / "quality_vs_dz.png", results)
    _write_outputs(out, results)
    return results


# --------------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------------

def _checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The done-when criteria of issue 10, per dataset (thesis protocol)."""
    checks = []
    for d, r in results["datasets"].items():
        ms = r["models"]
        if all(m in ms for m in MAIN):
            for k, name in ((1, "PSNR"), (0, "SSIM")):
                v = [ms[m]["deblurring_test"][k] for m in ("manifold1d", "manifold", "mlvae")]
                checks.append({"dataset": d, "check": f"deblurring {name}: 1-D manifold > "
                               f"manifold > ML-VAE", "values": v,
                               "passed": bool(v[0] > v[1] > v[2])})
        if "manifold1d" in ms and "mlvae" in ms:
            checks.append({"dataset": d, "check": "ML-VAE score: 1-D manifold > ML-VAE",
                           "values": [ms["manifold1d"]["mlvae_score"]["score"],
                                      ms["mlvae"]["mlvae_score"]["score"]],
                           "passed": bool(ms["manifold1d"]["mlvae_score"]["score"]
                                          > ms["mlvae"]["mlvae_score"]["score"])})
        for m in [m for m in MAIN if m in ms]:
            for base in ("blurry", "rl"):
                for k, name in ((1, "PSNR"), (0, "SSIM")):
                    a = ms[m]["deblurring_test"][k]
                    b = r["baselines"][base]["deblurring_test"][k]
                    checks.append({"dataset": d, "check": f"{LABELS[m]} beats "
                                   f"{'the blurry input' if base == 'blurry' else 'RL'} "
                                   f"({name})", "values": [a, b], "passed": bool(a > b)})
        if "manifold1d" in ms:
            per = ms["manifold1d"]["per_dz_package"]
            dz = np.array([abs(int(k)) for k in per])
            psnr = np.array([v[1] for v in per.values()])
            near = float(psnr[dz == dz.min()].mean())
            far = float(psnr[dz == dz.max()].mean())
            corr = float(np.corrcoef(dz, psnr)[0, 1]) if len(set(dz)) > 1 else 0.0
            checks.append({"dataset": d, "check": "1-D manifold deblurring falls with |dz| "
                           "(PSNR at the smallest vs largest |dz|; correlation)",
                           "values": [near, far, corr], "passed": bool(near > far and corr < 0)})
    return checks


def _fmt(v: tuple[float, float] | None) -> str:
    return "-" if v is None else f"{v[0]:.4f} | {v[1]:.2f}"


def _tables(results: dict[str, Any]) -> str:
    s = results["settings"]
    lines = ["# Disentangled deblurring: the thesis's tables (reduced protocol)", "",
             f"Every model: encoder channels {s['channels']}, identity code {s['id_channels']} "
             f"channels, blur code {s.get('blur_channels') or s['id_channels']} (1 for the 1-D "
             f"model), {s['epochs']} epochs x {s['steps_per_epoch']} batches of "
             f"{s['batch_size']} groups, {s['patch_size']} px crops, partner in focus with "
             f"probability {s['p_focus']}, seed {s['seed']}; split by field: 70% training, "
             f"10% validation, 20% test. SSIM | PSNR (dB) with the CARE protocol against the "
             f"in-focus plane. Thesis values (its own plant-cell data, 400 epochs, VGG-16 "
             f"loss) in the last columns.", ""]
    for d, r in results["datasets"].items():
        ms = r["models"]
        lines += [f"## Dataset `{d}`: {r['about']}", "",
                  f"Test fields: {len(r['split']['test'])}; training fields: "
                  f"{len(r['split']['train'])}.", "",
                  "### Table 5.3 (deblurring) with Table 5.1 (reconstruction)", "",
                  "| model | test rec. SSIM | PSNR | test deblur SSIM | PSNR | package deblur "
                  "(stored code) SSIM | PSNR | train rec. SSIM | PSNR | train deblur SSIM | "
                  "PSNR | thesis test deblur SSIM | PSNR |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for m, v in ms.items():
            lines.append(f"| {LABELS[m]} | {_fmt(v['reconstruction_test'])} | "
                         f"{_fmt(v['deblurring_test'])} | {_fmt(v['deblurring_package_test'])} |"
                         f" {_fmt(v['reconstruction_train'])} | {_fmt(v['deblurring_train'])} | "
                         f"{_fmt(THESIS['deblurring_test'].get(m))} |")
        for key, label in (("blurry", "Blurry input"), ("rl", "Richardson-Lucy (oracle "
                                                                "iterations)")):
            b = r["baselines"][key]["deblurring_test"]
            lines.append(f"| {label} | - | - | {_fmt(b)} | - | - | - | - | - | - | - | - |")
        lines += ["", "### Table 5.2 (ML-VAE score on the test fields)", "",
                  "| model | blur code accuracy | identity code accuracy | ML-VAE score | "
                  "thesis blur / identity / score |", "|---|---|---|---|---|"]
        for m, v in ms.items():
            sc = v["mlvae_score"]
            th = THESIS["mlvae_score"].get(m)
            lines.append(f"| {LABELS[m]} | {sc['blur_accuracy']:.3f} | "
                         f"{sc['identity_accuracy']:.3f} | {sc['score']:.3f} | "
                         + (f"{th[0]} / {th[1]} / {th[2]}" if th else "-") + " |")
        lines.append(f"\n(chance level {1 / len(r['split']['test']):.3f})")
        abl = [m for m in ("manifold", "no_cross", "no_contrastive") if m in ms]
        if len(abl) > 1:
            lines += ["", "### Table 5.4 (ablation of the manifold model)", "",
                      "| model | test rec. SSIM | PSNR | test deblur SSIM | PSNR | thesis test "
                      "rec. SSIM | PSNR | thesis test deblur SSIM | PSNR |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for m in abl:
                lines.append(f"| {LABELS[m]} | {_fmt(ms[m]['reconstruction_test'])} | "
                             f"{_fmt(ms[m]['deblurring_test'])} | "
                             f"{_fmt(THESIS['reconstruction_test'][m])} | "
                             f"{_fmt(THESIS['deblurring_test'][m])} |")
        unit = r["unit"]
        keys = list(r["baselines"]["blurry"]["per_dz"])
        absdz = sorted({abs(int(k)) for k in keys})
        lines += ["", f"### Deblurring PSNR (dB) per |dz| (test fields; |dz| in {unit}; "
                  "models: the package's stored in-focus code)", "",
                  "| |dz| | blurry | RL | " + " | ".join(LABELS[m] for m in ms) + " |",
                  "|---" * (3 + len(ms)) + "|"]
        scale = r["spacing"]

        def avg(per: dict[str, tuple], a: int, k: int) -> float:
            return float(np.mean([v[k] for kk, v in per.items() if abs(int(kk)) == a]))

        for a in absdz:
            row = [f"{a * scale:g}", f"{avg(r['baselines']['blurry']['per_dz'], a, 1):.2f}",
                   f"{avg(r['baselines']['rl']['per_dz'], a, 1):.2f}"]
            row += [f"{avg(ms[m]['per_dz_package'], a, 1):.2f}" for m in ms]
            lines.append("| " + " | ".join(row) + " |")
        lines += ["", f"RL iterations (median per dz): {r['baselines']['rl']['iterations']}"]
        if r.get("rl_sigmas"):
            lines.append(f"RL Gaussian widths per plane (px, fitted on training fields): "
                         f"{[round(s, 2) for s in r['rl_sigmas']]}")
        lines.append("Training seconds: " + ", ".join(
            f"{m} {v['train_seconds']:.0f}" for m, v in ms.items()) + "")
        lines.append("")
    if results.get("checks"):
        lines += ["## Done-when checks (issue 10)", "", "| dataset | check | values | passed |",
                  "|---|---|---|---|"]
        for c in results["checks"]:
            vals = ", ".join(f"{v:.4g}" for v in c["values"])
            lines.append(f"| {c['dataset']} | {c['check']} | {vals} | "
                         f"{'yes' if c['passed'] else 'NO'} |")
    if "seconds" in results:
        lines += ["", f"Wall time: {results['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def _write_outputs(out: Path, results: dict[str, Any]) -> None:
    (out / "tables.md").write_text(_tables(results), encoding="utf-8")
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float),
                                      encoding="utf-8")
    with open(out / "per_dz.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["dataset", "dz", "method", "protocol", "ssim", "psnr"])
        for d, r in results["datasets"].items():
            for key in ("blurry", "rl"):
                for k, v in r["baselines"][key]["per_dz"].items():
                    w.writerow([d, k, key, "-", f"{v[0]:.5f}", f"{v[1]:.4f}"])
            for m, v in r["models"].items():
                for proto in ("thesis", "package"):
                    for k, sv in v[f"per_dz_{proto}"].items():
                        w.writerow([d, k, m, proto, f"{sv[0]:.5f}", f"{sv[1]:.4f}"])


def _figure(path: Path, data: dict[str, Any], i: int, models: dict[str, Any],
            order: Sequence[str], sigmas) -> None:
    """Rows: increasing |dz|; columns: blurry, RL, each model (package deblurring), in focus;
    centre crops, every panel percentile-normalised."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..baselines import richardson_lucy_best
    from ..methods.disentangled import deblur
    from ..normalize import PercentileNormalizer

    series = data["series"]
    stack, f = series.images[i], int(series.focus[i])
    n = len(stack)
    cands = sorted({q for q in range(n) if q != f}, key=lambda q: abs(q - f))
    far = [q for q in range(n) if q != f and abs(q - f) == max(abs(q - f) for q in cands)]
    rows = [cands[0], cands[len(cands) // 2], far[0]]
    norm = PercentileNormalizer()
    c = min(96, stack.shape[1])
    y0, x0 = (stack.shape[1] - c) // 2, (stack.shape[2] - c) // 2
    cols = ["blurry", "RL"] + [LABELS[m] for m in order] + ["in focus"]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(1.8 * len(cols), 1.9 * len(rows)),
                             dpi=110, squeeze=False)
    for r, q in enumerate(rows):
        if data["kernels"] is not None:
            psf = data["kernels"][q]
        else:
            psf = _gauss2d(max(float(sigmas[q]) if sigmas is not None else 1.0, 0.25))
        rl = richardson_lucy_best(np.clip(stack[q], 0, None), psf, stack[f], axes="YX").volume
        panels = [norm.before(stack[q]), norm.before(rl)]
        panels += [deblur(models[m], stack[q]) for m in order]
        panels.append(norm.before(stack[f]))
        dz = (q - f) * data["spacing"]
        for k, (img, title) in enumerate(zip(panels, cols)):
            ax = axes[r, k]
            ax.imshow(np.clip(img[y0:y0 + c, x0:x0 + c], 0, 1), cmap="gray",
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=7)
            if k == 0:
                ax.set_ylabel(f"dz {dz:+g} {data['unit']}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_vs_dz(path: Path, results: dict[str, Any]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = list(results["datasets"])
    if not ds:
        return
    fig, axes = plt.subplots(2, len(ds), figsize=(5 * len(ds), 6.5), dpi=100, squeeze=False)
    for c, d in enumerate(ds):
        r = results["datasets"][d]
        scale = r["spacing"]
        curves = {"blurry": r["baselines"]["blurry"]["per_dz"], "RL": r["baselines"]["rl"][
            "per_dz"]}
        curves.update({LABELS[m]: v["per_dz_package"] for m, v in r["models"].items()})
        for k, (row, name) in enumerate(((1, "PSNR (dB)"), (0, "SSIM"))):
            ax = axes[k, c]
            for label, per in curves.items():
                absdz = sorted({abs(int(q)) for q in per})
                ys = [np.mean([v[row] for q, v in per.items() if abs(int(q)) == a])
                      for a in absdz]
                ax.plot(np.array(absdz) * scale, ys, marker=".", label=label,
                        linestyle="--" if label in ("blurry", "RL") else "-")
            ax.set_xlabel(f"|dz| ({r['unit']})")
            ax.set_ylabel(name)
            ax.set_title(f"{d}: deblurring vs defocus")
            ax.grid(alpha=0.3)
            if k == 0 and c == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# measured quality of one trained run (for a zoo model card)
# --------------------------------------------------------------------------------------------

def held_out_quality(run_dir: str | Path, series: str | Path, *,
                     dz_um: Sequence[float] | None = None, pixel_size_um: float = 0.2,
                     na: float = 1.0, rl_iterations: Sequence[int] = (1, 2, 3, 5, 8, 12, 20,
                                                                      30, 50)
                     ) -> dict[str, Any]:
    """PSNR / SSIM (CARE protocol) against the in-focus plane of every out-of-focus plane of
    the fields a run held out (its recorded ``test`` split; ``val`` if none), for the blurry
    input, the run's deblurring (what its package computes on a 2D image) and, when the
    defocus of every plane ``dz_um`` is given (synthetic series), Richardson-Lucy with the
    true widefield PSF and the oracle iteration count.

    ``series`` is the folder of z-stacks the run was trained on. Returns a flat dict (the
    ``quality`` of :func:`sharpstack.workflows.export_run`).
    """
    from ..baselines import richardson_lucy_best
    from ..errors import InputError
    from ..methods.disentangled import deblur, read_defocus_series
    from ..workflows import load_run

    loaded = load_run(run_dir)
    trained = loaded.trained
    model = trained.model
    focus = trained.settings.focus_plane
    data = read_defocus_series(series, focus=focus - 1 if focus else None)
    names = model.split.get("test") or model.split.get("val") or []
    idx = [data.names.index(n) for n in names if n in data.names]
    if not idx:
        raise InputError(f"none of the run's held-out fields ({names[:3]} ...) is in {series}; "
                         f"give the series the run was trained on")
    kernels = None
    if dz_um is not None:
        from ..psf import defocus_psf_2d

        kernels = defocus_psf_2d(np.asarray(dz_um, dtype=np.float64),
                                 pixel_size_um=pixel_size_um, na=na)
    rows: dict[str, list[tuple[int, tuple[float, float]]]] = {"blurry": [], "deblurred": [],
                                                              "rl": []}
    for i in idx:
        stack, f = data.images[i], int(data.focus[i])
        for q in range(len(stack)):
            if q == f:
                continue
            dz = abs(q - f)
            rows["blurry"].append((dz, _score(stack[f], stack[q])))
            rows["deblurred"].append((dz, _score(stack[f], deblur(model, stack[q]))))
            if kernels is not None:
                r = richardson_lucy_best(np.clip(stack[q], 0, None), kernels[q], stack[f],
                                         iterations=tuple(rl_iterations), axes="YX")
                rows["rl"].append((dz, _score(stack[f], r.volume)))
    labels = {"blurry": "blurry input", "deblurred": "this model",
              "rl": "Richardson-Lucy (true PSF, oracle iterations)"}
    spacing = data.plane_spacing
    unit = f" ({spacing:g} um planes)" if spacing else " (planes)"
    out: dict[str, Any] = {}
    for key in ("blurry", "deblurred", "rl"):
        if not rows[key]:
            continue
        v = rows[key]
        out[f"PSNR (dB), all out-of-focus planes: {labels[key]}"] = float(
            np.mean([s[0] for _, s in v]))
        out[f"SSIM, all out-of-focus planes: {labels[key]}"] = float(
            np.mean([s[1] for _, s in v]))
    dzs = sorted({d for d, _ in rows["blurry"]})
    for d in dzs:
        parts = []
        for key in ("blurry", "deblurred", "rl"):
            vals = [s for dd, s in rows[key] if dd == d]
            if vals:
                parts.append(f"{np.mean([s[0] for s in vals]):.2f} / "
                             f"{np.mean([s[1] for s in vals]):.3f}")
        dz_text = f"{d * spacing:g} um" if spacing else f"{d} planes"
        out[f"|dz| {dz_text}: PSNR / SSIM of " + ", ".join(
            labels[k] for k in ("blurry", "deblurred", "rl") if rows[k])] = " | ".join(parts)
    out["evaluated on"] = (f"{len(idx)} held-out fields of the training series{unit}, every "
                           f"out-of-focus plane against the field's in-focus plane (CARE "
                           f"protocol: PSNR/SSIM after percentile normalisation)")
    return out
