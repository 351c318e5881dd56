"""IsoNet on stacks with sub-resolution spots: the real-data benchmark
(``sharpstack bench isonet --real``).

No ground truth exists for a real stack, but point-like objects tell what a restoration did:
their axial and lateral FWHM (resolution), and the noise of the background around them (noise
amplification), measured the same way on the input, on every IsoNet variant and on the
classical baseline. Datasets:

- ``beads``: the shared bead stack (``beads/Bead_Image1_crop.tif``, 0.125 / 0.0225 um, ratio
  5.56, uint8); IsoNet and Richardson-Lucy use the PSF :func:`sharpstack.beads.measure_psf`
  measures from the same stack; spots = the isolated beads it found;
- ``spots``: a synthetic stack of point sources on a flat background (Gaussian PSF
  sigma_xy / sigma_z = 2 / 6 px, every 4th plane kept), with widefield-like noise (Poisson,
  60 photons at the brightest spot, 10 % background, Gaussian read noise of 3 photons);
  IsoNet and RL get the true PSF.

Per dataset: the input linearly upsampled along z (what every method sees), IsoNet-2 (split
PSF) trained with the paper's pairs and with each noise-aware target, and Richardson-Lucy
with the PSF (``rl_iterations``, no oracle: a user has no ground truth). Measured on each:

- the FWHM along z, y and x of the mean spot (crops about the known or detected centres,
  each less the median of its border, averaged: a noisy single profile would look too
  narrow) and the z/x ratio;
- the background noise: the standard deviation of the voxels farther than 3 axial FWHM from
  every detected spot, on the planes nearest to the acquired ones (where the input holds its
  raw samples), in the stack's intensity units (IsoNet's output de-normalised).

The issue's target: z/x FWHM <= 1.3, lateral FWHM grown by <= 10 %, background std grown by
<= 10 %.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ...resample import upsample
from .settings import IsoNetConfig
from .task import restore, train_isonet

__all__ = ["REAL_DATASETS", "spot_stack", "spot_fwhm", "background_std", "run_isonet_real",
           "format_real_table"]

REAL_DATASETS = ("beads", "spots")

VARIANTS: dict[str, dict[str, Any]] = {
    "paper": {"pairs": "paper", "bias": True},
    "biased": {"pairs": "noise-aware", "noise_target": "denoised", "bias": True},
    "denoised": {"pairs": "noise-aware", "noise_target": "denoised"},
    "masked": {"pairs": "noise-aware", "noise_target": "masked"},
}
"""IsoNet columns of the benchmark: the paper's pairs and network (``paper``), the noise-aware
pairs with the paper's network (``biased``: convolutions with biases, the default before the
bias-free U-Net), and the defaults with each noise-aware target (``denoised``, ``masked``)."""


# ------------------------------------------------------------------------------ data
def spot_stack(*, shape: tuple[int, int, int] = (128, 128, 128), factor: int = 4,
               sigma_xy: float = 2.0, sigma_z: float = 6.0, n_spots: int = 40,
               photons: float = 60.0, background: float = 0.1, read_noise: float = 3.0,
               seed: int = 0) -> dict[str, Any]:
    """A synthetic anisotropic stack of point sources with widefield-like noise.

    Returns ``stack`` (every ``factor``-th plane of the blurred, noisy isotropic volume),
    ``psf`` (isotropic grid), ``centres`` (spot positions on the isotropic grid) and
    ``factor``.
    """
    from ...degrade import add_noise
    from ...psf import gaussian_psf
    from .acquisition import blur

    rng = np.random.default_rng(seed)
    z, y, x = shape
    m = int(math.ceil(3 * sigma_z)), int(math.ceil(3 * sigma_xy)) + 2
    vol = np.zeros(shape, np.float32)
    centres: list[tuple[int, int, int]] = []
    tries = 0
    while len(centres) < n_spots and tries < 100 * n_spots:
        tries += 1
        c = (int(rng.integers(m[0], z - m[0])), int(rng.integers(m[1], y - m[1])),
             int(rng.integers(m[1], x - m[1])))
        if all(abs(c[0] - q[0]) > 4 * sigma_z or max(abs(c[1] - q[1]), abs(c[2] - q[2]))
               > 5 * sigma_xy for q in centres):
            centres.append(c)
            vol[c] = float(rng.uniform(0.5, 1.0))
    psf = gaussian_psf(sigma_xy, sigma_z)
    blurred = blur(vol, psf, mode="constant")
    blurred = np.clip(blurred, 0, None) / blurred.max()
    blurred += background
    peak = 1.0 + background
    noisy = add_noise(blurred, poisson_peak=photons * peak, gauss_sigma=read_noise / photons,
                      rng=rng)
    return {"stack": np.ascontiguousarray(noisy[::factor]), "psf": psf, "factor": factor,
            "centres": centres, "clean": blurred}


# ------------------------------------------------------------------------------ measures
def spot_fwhm(volume: np.ndarray, centres: Sequence[Sequence[float]], *,
              radius: tuple[int, int]) -> dict[str, Any]:
    """FWHM (voxels of ``volume``) along z, y and x of the mean spot.

    The crops of half-sizes ``radius`` (z, lateral) about every centre (rounded; a crop
    leaving the volume is skipped), each less its background (the median of its border),
    are averaged, and the half-maximum widths of the profiles through the centre of the mean
    are measured. Averaging at fixed centres keeps noise from narrowing the profiles (a
    single noisy profile's maximum sits on a noise peak and its FWHM comes out too small).
    """
    from ...beads import fwhm_1d

    v = np.asarray(volume, dtype=np.float32)
    rz, rxy = radius
    crops = []
    for c in centres:
        pz, py, px = (int(round(t)) for t in c)
        if (pz - rz < 0 or pz + rz >= v.shape[0] or py - rxy < 0 or py + rxy >= v.shape[1]
                or px - rxy < 0 or px + rxy >= v.shape[2]):
            continue
        crop = v[pz - rz:pz + rz + 1, py - rxy:py + rxy + 1, px - rxy:px + rxy + 1]
        border = np.concatenate([crop[[0, -1]].ravel(), crop[:, [0, -1]].ravel(),
                                 crop[:, :, [0, -1]].ravel()])
        crops.append(crop - float(np.median(border)))
    if not crops:
        return {"z": float("nan"), "y": float("nan"), "x": float("nan"), "n": 0,
                "flux": float("nan"), "peak": float("nan")}
    mean = np.mean(crops, axis=0)
    return {"z": fwhm_1d(mean[:, rxy, rxy]), "y": fwhm_1d(mean[rz, :, rxy]),
            "x": fwhm_1d(mean[rz, rxy, :]), "n": len(crops),
            "flux": float(mean.sum()), "peak": float(mean[rz, rxy, rxy])}


def background_mask(shape: tuple[int, int, int], centres, radius: tuple[float, float],
                    planes: Sequence[int]) -> np.ndarray:
    """Voxels on ``planes`` farther than ``radius`` (z, lateral; an ellipsoid) from every
    centre."""
    from scipy import ndimage as ndi

    seeds = np.zeros(shape, bool)
    for c in centres:
        idx = tuple(int(np.clip(round(t), 0, s - 1)) for t, s in zip(c, shape))
        seeds[idx] = True
    rz, rxy = radius
    scale = (1.0, rz / rxy, rz / rxy)
    dist = ndi.distance_transform_edt(~seeds, sampling=scale) if seeds.any() else \
        np.full(shape, np.inf)
    mask = dist > rz
    keep = np.zeros(shape[0], bool)
    keep[[p for p in planes if 0 <= p < shape[0]]] = True
    return mask & keep[:, None, None]


def background_std(volume: np.ndarray, mask: np.ndarray) -> float:
    """Standard deviation of ``volume`` on ``mask`` (each plane's median removed first, so
    a slow change of the background along z does not count as noise)."""
    v = np.asarray(volume, dtype=np.float64)
    vals = []
    for zi in np.nonzero(mask.any(axis=(1, 2)))[0]:
        s = v[zi][mask[zi]]
        vals.append(s - np.median(s))
    return float(np.concatenate(vals).std()) if vals else float("nan")


# ------------------------------------------------------------------------------ benchmark
def _dataset(name: str, seed: int) -> dict[str, Any]:
    if name == "spots":
        d = spot_stack(seed=seed)
        return {**d, "title": "synthetic spots (Gaussian 2/6 px, x4, widefield-like noise)",
                "pixel_um": None}
    from ...beads import measure_psf
    from ...io import read_stack
    from ...resample import isotropic_factor
    from ...shared_data import shared_dataset

    path = shared_dataset("beads") / "Bead_Image1_crop.tif"
    data = read_stack(path)
    vs = dict(data.attrs["voxel_size"])
    stack = np.asarray(data.values)
    m = measure_psf(stack, vs)
    f = isotropic_factor(vs)
    centres = [(c[0] * f, c[1], c[2]) for c in m.centres]
    return {"stack": stack, "psf": m.psf, "factor": f, "centres": centres,
            "title": f"bead stack {path.name} ({vs['z']:g} / {vs['y']:.4g} um, x{f:.3g}), "
                     f"PSF measured from {m.n_beads} beads", "pixel_um": m.pixel_um}


def _measure(vol: np.ndarray, d: dict[str, Any], radius: tuple[int, int], mask: np.ndarray
             ) -> dict[str, Any]:
    f = spot_fwhm(vol, d["centres"], radius=radius)
    f["z/x"] = f["z"] / f["x"] if f["x"] > 0 else float("nan")
    f["bg_std"] = background_std(vol, mask)
    return f


def run_isonet_real(out_dir: str | Path, *, datasets: Sequence[str] = REAL_DATASETS,
                    variants: Sequence[str] = ("paper", "biased", "denoised"),
                    epochs: int = 30, steps_per_epoch: int = 25, batch_size: int = 8,
                    n_patches: int = 1024, patch_size: int = 64, rl_iterations: int = 20,
                    seed: int = 0, device: str | None = None,
                    on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the real-data benchmark; write ``real.md`` (the table), ``real.json`` and one
    ``real_<dataset>.png`` of orthogonal views per dataset to ``out_dir``.

    ``variants``: IsoNet columns, keys of :data:`VARIANTS`.
    """
    from ...baselines import richardson_lucy_best

    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        raise InputError(f"unknown IsoNet variant(s) {bad}; choose from "
                         f"{', '.join(VARIANTS)}")
    bad = [d for d in datasets if d not in REAL_DATASETS]
    if bad or not datasets:
        raise InputError(f"unknown real-data set(s) {bad}; choose from {list(REAL_DATASETS)}")
    say = on_step or (lambda msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    results: dict[str, Any] = {"settings": {
        "epochs": epochs, "steps_per_epoch": steps_per_epoch, "batch_size": batch_size,
        "n_patches": n_patches, "patch_size": patch_size, "rl_iterations": rl_iterations,
        "seed": seed, "variants": list(variants)}, "datasets": {}}
    for name in datasets:
        d = _dataset(name, seed)
        f = d["factor"]
        stack = np.asarray(d["stack"], dtype=np.float32)
        up = upsample(stack, f, axis=0)
        psf = np.asarray(d["psf"], dtype=np.float32)
        c = tuple(s // 2 for s in psf.shape)
        from ...beads import fwhm_1d

        pz, pxy = fwhm_1d(psf[:, c[1], c[2]]), fwhm_1d(psf[c[0], c[1], :])
        radius = (int(math.ceil(1.5 * pz)), int(math.ceil(1.5 * pxy)))
        planes = sorted({int(round(k * f)) for k in range(stack.shape[0])})
        mask = background_mask(up.shape, d["centres"], (3.0 * pz, 3.0 * pxy), planes)
        outputs: dict[str, np.ndarray] = {"input": up}
        p = min(patch_size, 16 * (min(stack.shape[1:]) // 16))
        for var in variants:
            cfg = IsoNetConfig(factor=f, psf_mode="split", epochs=epochs,
                               steps_per_epoch=steps_per_epoch, batch_size=batch_size,
                               n_patches=n_patches, patch_size=p, seed=seed, device=device,
                               patience=None, **VARIANTS[var])
            t0 = time.perf_counter()
            model = train_isonet(stack, psf, cfg)
            norm_out = restore(model, stack, factor=f)[: up.shape[0]]
            lo, hi = model.normalizer.stats(stack)
            outputs[f"isonet_{var}"] = model.normalizer.after(norm_out, lo, hi)
            say(f"[{name}] IsoNet ({var} pairs) trained and restored in "
                f"{time.perf_counter() - t0:.0f} s"
                + (f"; noise model {model.noise.describe()}" if model.noise else ""))
        t0 = time.perf_counter()
        bg = float(np.median(up))
        g = np.clip(up - bg, 0, None)
        # one iteration count, so no choice against a reference (a user has none)
        outputs["rl"] = richardson_lucy_best(g, psf, g, iterations=(rl_iterations,)).volume + bg
        say(f"[{name}] Richardson-Lucy ({rl_iterations} iterations) in "
            f"{time.perf_counter() - t0:.0f} s")
        rows = {k: _measure(v, d, radius, mask) for k, v in outputs.items()}
        ref = rows["input"]
        for r in rows.values():
            r["x_growth"] = r["x"] / ref["x"] - 1.0
            r["bg_growth"] = r["bg_std"] / ref["bg_std"] - 1.0
            r["flux_kept"] = r["flux"] / ref["flux"]
            r["peak_gain"] = r["peak"] / ref["peak"]
            r["target_met"] = bool(r["z/x"] <= 1.3 and r["x_growth"] <= 0.10
                                   and r["bg_growth"] <= 0.10)
        png = out / f"real_{name}.png"
        _orthoviews(png, outputs, d["centres"], d["title"])
        results["datasets"][name] = {"title": d["title"], "factor": f, "rows": rows,
                                     "n_spots": len(d["centres"]), "figure": str(png),
                                     "pixel_um": d["pixel_um"]}
        say(f"[{name}] " + ", ".join(f"{k}: z/x {r['z/x']:.2f}" for k, r in rows.items()))
    results["seconds"] = time.perf_counter() - t_start
    text = format_real_table(results)
    (out / "real.md").write_text(text, encoding="utf-8")
    (out / "real.json").write_text(json.dumps(results, indent=1, default=float),
                                   encoding="utf-8")
    results["table"] = text
    return results


_TITLES = {"input": "input (z interpolated)",
           "isonet_paper": "IsoNet-2, paper pairs, paper network",
           "isonet_biased": "IsoNet-2, noise-aware, paper network (with biases)",
           "isonet_denoised": "IsoNet-2, noise-aware, bias-free (default)",
           "isonet_masked": "IsoNet-2, noise-aware, bias-free, blind-spot target",
           "rl": "Richardson-Lucy"}


def format_real_table(results: dict[str, Any]) -> str:
    """Markdown of :func:`run_isonet_real`'s results."""
    s = results["settings"]
    lines = ["# IsoNet on spot stacks (sharpstack bench isonet --real)", "",
             f"IsoNet-2, split PSF, {s['epochs']} epochs x {s['steps_per_epoch']} batches of "
             f"{s['batch_size']} (patch {s['patch_size']}, {s['n_patches']} patches); "
             f"Richardson-Lucy {s['rl_iterations']} iterations with the same PSF. FWHM in "
             "voxels of the isotropic grid (mean spot); background std in the stack's "
             "units on the acquired planes; spot intensity kept: the mean spot's integrated "
             "intensity (background removed) over the input's (a restoration moves light, "
             "it should not lose it); spot peak: its maximum over the input's. Target: "
             "z/x <= 1.3, x FWHM +10 % at most, background std +10 % at most.", ""]
    for name, ds in results["datasets"].items():
        lines += [f"## {name}: {ds['title']} ({ds['n_spots']} spots)", "",
                  "| output | FWHM z | FWHM y | FWHM x | z/x | x change | background std | "
                  "std change | spot intensity kept | spot peak | target met |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for k, r in ds["rows"].items():
            lines.append(f"| {_TITLES.get(k, k)} | {r['z']:.2f} | {r['y']:.2f} | "
                         f"{r['x']:.2f} | {r['z/x']:.2f} | {r['x_growth']:+.0%} | "
                         f"{r['bg_std']:.4g} | {r['bg_growth']:+.0%} | "
                         f"{r['flux_kept']:.0%} | x{r['peak_gain']:.2f} | "
                         f"{'yes' if r['target_met'] else 'no'} |")
        lines.append("")
    lines.append(f"Wall time: {results['seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


def _orthoviews(path: Path, outputs: dict[str, np.ndarray], centres, title: str) -> None:
    """xy and xz sections through the brightest spot of the input, one row per output."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    up = outputs["input"]
    vals = [float(up[tuple(int(round(t)) for t in c)]) for c in centres]
    cz, cy, _ = (int(round(t)) for t in centres[int(np.argmax(vals))])
    fig, axes = plt.subplots(len(outputs), 2, figsize=(7, 2.4 * len(outputs)), dpi=100,
                             squeeze=False,
                             gridspec_kw={"width_ratios": [up.shape[1], up.shape[1]]})
    for i, (k, v) in enumerate(outputs.items()):
        for j, (name, img) in enumerate((("xy", v[cz]), ("xz", v[:, cy, :]))):
            ax = axes[i, j]
            lo, hi = np.percentile(img, (1, 99.9))
            ax.imshow(img, cmap="magma", vmin=lo, vmax=hi if hi > lo else lo + 1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{_TITLES.get(k, k)}: {name}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
