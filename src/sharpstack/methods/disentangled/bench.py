"""The disentangled-deblurring benchmark: the thesis's Tables 5.1-5.4 on held-apart fields.

One function, :func:`run_disentangled_bench`:

1. builds two defocus-series datasets, each split by field (identity) into training /
   validation / test sets (seeded, recorded in ``results.json``):

   - ``synthetic``: nuclei + membranes fields (:func:`sharpstack.phantoms.defocus_fields`)
     imaged at 13 defocus levels from -3 to +3 um with the widefield PSF of
     :func:`.defocus.defocus_psf_2d` (NA 1.0, 0.2 um pixels) and Poisson + Gaussian
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
   (:func:`sharpstack.psf.fit_defocus_sigmas`: the Gaussian that best turns the
   in-focus plane into that plane) (real);
6. writes ``tables.md`` (Table 5.3 layout with the thesis's values, Tables 5.1, 5.2, 5.4,
   deblurring per |dz|, the done-when checks), ``per_dz.csv``, ``results.json``,
   ``deblurring_<dataset>.png`` (blurry / RL / models / in-focus crops at several |dz|) and
   ``quality_vs_dz.png``.

All sizes are options, so the reduced CPU run and the paper-size GPU run are the same code
(``sharpstack bench disentangled``; the README gives both commands). Nothing here prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...bench._jobs import job_executor
from .bench_report import (BASE_LABELS, LABELS, THESIS, checks, figure, gauss2d, plot_vs_dz,
                           write_outputs)

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

# the thesis's models and ablations train with the thesis's losses (and batch norm) to the
# end; supervised1d is sharpstack's default recipe (the deploy path trained alone)
_THESIS_LOSSES = {"supervised": 0.0, "batch_norm": True}
MODELS: dict[str, dict[str, Any]] = {
    "mlvae": {"variant": "mlvae", **_THESIS_LOSSES},
    "manifold": {"variant": "manifold", **_THESIS_LOSSES},
    "manifold1d": {"variant": "manifold1d", **_THESIS_LOSSES},
    "no_cross": {"variant": "manifold", "w_cross": 0.0, **_THESIS_LOSSES},
    "no_contrastive": {"variant": "manifold", "w_contrastive": 0.0, **_THESIS_LOSSES},
    "supervised1d": {"variant": "manifold1d", "supervised": 1.0, "batch_norm": False},
}
THESIS_MODELS = ("mlvae", "manifold", "manifold1d", "no_cross", "no_contrastive")
"""What the benchmark trains unless told (the thesis's tables)."""
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
    from ...errors import InputError
    from .data import read_defocus_series, shared_zscans_dir
    from .defocus import defocus_psf_2d
    from .synth import synthetic_series

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
    from .settings import DisentangledConfig
    from .task import train_disentangled

    series = load_dataset(dataset, **data_kw)["series"]
    t0 = time.perf_counter()
    model = train_disentangled(series, DisentangledConfig(**cfg), out_dir=out_dir)
    return {"state": {k: v.detach().cpu() for k, v in model.net.state_dict().items()},
            "focus_code": model.focus_code, "split": model.split,
            "history": model.result.history, "best_epoch": model.result.best_epoch,
            "seconds": time.perf_counter() - t0}


def _rebuild(cfg: dict[str, Any], job: dict[str, Any]):
    from ...normalize import PercentileNormalizer
    from ...training import TrainResult
    from .disentangled_arch import DisentangledAE
    from .model import DisentangledModel
    from .settings import DisentangledConfig

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



#: width (px) of the least-squares linear filters
LINEAR_SIZE = 15


def _score(target: np.ndarray, image: np.ndarray) -> tuple[float, float]:
    from ...metrics import psnr_normalized, ssim_normalized

    return psnr_normalized(target, image), ssim_normalized(target, image)


def _evaluate_model(model, series, ids: Sequence[int], *, seed: int, partners: Sequence[int]
                    ) -> dict[str, Any]:
    """Reconstruction and deblurring scores of ``model`` on the fields ``ids``."""
    from .model import deblur, decode_codes, encode_images, prepare_images

    rng = np.random.default_rng(seed)
    focus_codes = {int(j): encode_images(model, series.images[j, int(series.focus[j])][None])[1]
                   for j in partners}
    rec_p, rec_s, per_dz = [], [], {}
    idc_all, blur_all, lab_all = [], [], []
    for i in ids:
        stack = series.images[i]
        f = int(series.focus[i])
        idc, blur = encode_images(model, stack)
        base = prepare_images(model, stack)
        idc_all.append(idc)
        blur_all.append(blur)
        lab_all += [int(i)] * len(stack)
        rec = decode_codes(model, idc, blur, base=base)[:, : stack.shape[1], : stack.shape[2]]
        for q in range(len(stack)):
            p, s = _score(stack[q], rec[q])
            rec_p.append(p)
            rec_s.append(s)
        others = [j for j in partners if j != i]
        for q in range(len(stack)):
            if q == f:
                continue
            j = int(others[int(rng.integers(len(others)))])
            thesis = decode_codes(model, idc[q:q + 1], focus_codes[j], base=base[q:q + 1])[
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
    """Per dz: scores of the blurry input, of Richardson-Lucy and of the least-squares linear
    filters fitted on the training fields' (plane, in-focus) pairs, one for all planes
    (``linear``: blind, like the models) and one per plane (``linear_plane``: told the plane,
    as RL is through its per-plane PSF)."""
    from ...baselines import richardson_lucy_best
    from ...normalize import PercentileNormalizer
    from ...psf import fit_defocus_sigmas
    from .linear_filter import apply_linear_filter, fit_linear_filters

    series = data["series"]
    ln = PercentileNormalizer()
    groups: dict[int, list] = {}
    for i in train_ids:
        st = np.stack([ln.before(p) for p in series.images[i]])
        fi = int(series.focus[i])
        for q in range(len(st)):
            if q != fi:
                groups.setdefault(int(q - fi), []).append((st[q], st[fi]))
    lin_plane, lin_all = fit_linear_filters(groups, LINEAR_SIZE)
    sigmas = None
    if data["kernels"] is None:  # real data: Gaussian widths fitted on training fields
        stacks = [ln.before(series.images[i]) for i in list(train_ids)[:16]]
        sigmas = fit_defocus_sigmas(stacks, int(series.focus[train_ids[0]]))
    out: dict[int, dict[str, list]] = {}
    for i in ids:
        stack = series.images[i]
        f = int(series.focus[i])
        for q in range(len(stack)):
            if q == f:
                continue
            d = out.setdefault(int(q - f), {"blurry": [], "rl": [], "rl_iterations": [],
                                            "linear": [], "linear_plane": []})
            d["blurry"].append(_score(stack[f], stack[q]))
            xn = ln.before(stack[q])
            d["linear"].append(_score(stack[f], apply_linear_filter(xn, lin_all)))
            if int(q - f) in lin_plane:
                d["linear_plane"].append(_score(stack[f], apply_linear_filter(
                    xn, lin_plane[int(q - f)])))
            else:  # a defocus no training field has: the filter of all planes
                d["linear_plane"].append(d["linear"][-1])
            if data["kernels"] is not None:
                psf = data["kernels"][q]
            else:
                s = float(sigmas[q])
                if s <= 0:
                    d["rl"].append(d["blurry"][-1])
                    d["rl_iterations"].append(0)
                    continue
                psf = gauss2d(s)
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
                           models: Sequence[str] | str = tuple(THESIS_MODELS),
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

    from ...errors import InputError
    from ...metrics import mlvae_score

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
            for key in BASE_LABELS:  # the baselines scored beside the models
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
            figure(out / f"deblurring_{d}.png", data, test[0], examples, mnames,
                    res_d.get("rl_sigmas"))
            write_outputs(out, results)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
    results["seconds"] = time.perf_counter() - t_start
    results["checks"] = checks(results)
    plot_vs_dz(out / "quality_vs_dz.png", results)
    write_outputs(out, results)
    return results


# --------------------------------------------------------------------------------------------
# measured quality of one trained run (for a zoo model card)
# --------------------------------------------------------------------------------------------

def card_quality(recipe: str | Path, out: str | Path, *,
                 built: str | Path | None = None) -> dict[str, Any]:
    """The measured quality of a zoo model for its card: :func:`held_out_quality` of the run
    that ``sharpstack zoo RECIPE`` built (in ``built``, default ``zoo/built/<recipe id>``) on
    its own series; writes ``{"quality": {...}, "run": ...}`` to the file ``out`` (for
    ``sharpstack export ... --quality``) and returns it."""
    import json

    from ...io import write_file_atomic
    from ...zoo import load_recipe
    from .settings import DisentangledSynth

    rec = load_recipe(recipe)
    root = Path(built) if built else Path("zoo/built") / rec.id
    run_json = json.loads((root / "run" / "run.json").read_text())
    dz, opts = None, {}
    if rec.data.synth is not None:
        syn = DisentangledSynth(**rec.data.synth)
        dz, opts = syn.dz(), syn.model_dump()
    quality = held_out_quality(root / "run", root / "data" / "series", dz_um=dz,
                               pixel_size_um=opts.get("pixel_um", 0.2), na=opts.get("na", 1.0))
    res = {"quality": quality, "run": run_json.get("method")}
    write_file_atomic(Path(out), lambda tmp: tmp.write_text(json.dumps(res, indent=2)))
    return res


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
    from ...baselines import richardson_lucy_best
    from ...errors import InputError
    from ...workflows import load_run
    from .data import read_defocus_series
    from .model import deblur

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
        from .defocus import defocus_psf_2d

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
