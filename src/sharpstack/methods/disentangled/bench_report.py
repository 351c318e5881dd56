"""The outputs of the disentangled-deblurring benchmark: the thesis's numbers beside ours
(``tables.md``), ``per_dz.csv``, ``results.json``, the deblurring figures and the done-when
checks (see :mod:`.bench` for the protocol). Nothing here prints."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BASE_LABELS", "LABELS", "MAIN", "THESIS", "gauss2d", "checks", "write_outputs",
           "figure", "plot_vs_dz"]

LABELS = {"mlvae": "ML-VAE", "manifold": "Manifold-based", "manifold1d": "1D manifold-based",
          "no_cross": "No Cross Recon Loss", "no_contrastive": "No Contrastive Loss",
          "supervised1d": "1D manifold, supervised (sharpstack's default)"}
MAIN = ("mlvae", "manifold", "manifold1d")
#: the baselines' rows (keys of ``results["datasets"][d]["baselines"]``)
BASE_LABELS = {"blurry": "Blurry input", "rl": "Richardson-Lucy (oracle iterations)",
               "linear": "Linear filter, one for all planes (least squares on the training "
                         "fields)",
               "linear_plane": "Linear filter per plane (least squares on the training "
                               "fields; told the plane)"}

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


def gauss2d(sigma: float) -> np.ndarray:
    """Normalised 2D Gaussian PSF (the central plane of :func:`sharpstack.psf.gaussian_psf`)."""
    from ...psf import gaussian_psf

    g = gaussian_psf(float(sigma), 0.0)
    g = g[g.shape[0] // 2]
    return g / g.sum()


def checks(results: dict[str, Any]) -> list[dict[str, Any]]:
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
        for key, label in BASE_LABELS.items():
            if key not in r["baselines"]:  # results written before the linear filters
                continue
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
        bases = [b for b in BASE_LABELS if b in r["baselines"]]
        short = {"blurry": "blurry", "rl": "RL", "linear": "linear filter (all planes)",
                 "linear_plane": "linear filter per plane"}
        lines += ["", f"### Deblurring PSNR (dB) per |dz| (test fields; |dz| in {unit}; "
                  "models: the package's stored in-focus code)", "",
                  "| |dz| | " + " | ".join(short[b] for b in bases) + " | "
                  + " | ".join(LABELS[m] for m in ms) + " |",
                  "|---" * (1 + len(bases) + len(ms)) + "|"]
        scale = r["spacing"]

        def avg(per: dict[str, tuple], a: int, k: int) -> float:
            return float(np.mean([v[k] for kk, v in per.items() if abs(int(kk)) == a]))

        for a in absdz:
            row = [f"{a * scale:g}"] + [f"{avg(r['baselines'][b]['per_dz'], a, 1):.2f}"
                                        for b in bases]
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


def write_outputs(out: Path, results: dict[str, Any]) -> None:
    (out / "tables.md").write_text(_tables(results), encoding="utf-8")
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float),
                                      encoding="utf-8")
    with open(out / "per_dz.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["dataset", "dz", "method", "protocol", "ssim", "psnr"])
        for d, r in results["datasets"].items():
            for key in [b for b in BASE_LABELS if b in r["baselines"]]:
                for k, v in r["baselines"][key]["per_dz"].items():
                    w.writerow([d, k, key, "-", f"{v[0]:.5f}", f"{v[1]:.4f}"])
            for m, v in r["models"].items():
                for proto in ("thesis", "package"):
                    for k, sv in v[f"per_dz_{proto}"].items():
                        w.writerow([d, k, m, proto, f"{sv[0]:.5f}", f"{sv[1]:.4f}"])


def figure(path: Path, data: dict[str, Any], i: int, models: dict[str, Any],
            order: Sequence[str], sigmas) -> None:
    """Rows: increasing |dz|; columns: blurry, RL, each model (package deblurring), in focus;
    centre crops, every panel percentile-normalised."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...baselines import richardson_lucy_best
    from ...normalize import PercentileNormalizer
    from .model import deblur

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
            psf = gauss2d(max(float(sigmas[q]) if sigmas is not None else 1.0, 0.25))
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


def plot_vs_dz(path: Path, results: dict[str, Any]) -> None:
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
