"""The ZSE-GAN benchmark: the paper's Tables 1-3 and figures on held-apart real z-scans.

One function, :func:`run_zsegan_bench`:

1. reads the paper's own data in place (``../shared/data/zse_gan``: 80 z-scans of 29 planes,
   128x128, a human brain section; 200 in-focus images; see
   :func:`sharpstack.methods.zsegan.shared_data_dir`), and holds ``val_count`` z-scans apart
   (seeded; the split is recorded);
2. trains ZSE-GAN on the others (checkpoints in ``out/run``; ``resume=True`` continues);
3. restores every held-apart z-scan in-process (:func:`sharpstack.methods.zsegan.restore`:
   what the package computes untiled), and the baseline: plane-by-plane Richardson-Lucy
   (:func:`sharpstack.baselines.richardson_lucy_slicewise`) with a Gaussian PSF whose width
   grows with the distance from the focal plane, the width of each plane fitted on training
   z-scans as the Gaussian that best turns the focal plane into that plane (least squares,
   affine intensity fit), 20 iterations;
4. scores input x, RL and ZSE-GAN y on one intensity scale (x percentile-normalised to
   [0, 1] as the package does and clipped; y is the package's [0, 1] output; RL of the
   normalised x, its output percentile-normalised and clipped to [0, 1]):

   - Table 3: FM (:func:`sharpstack.metrics.focus_measure`) and PIQE
     (:func:`sharpstack.metrics.piqe`) of every plane 1..29 and of vertical sections (every
     16th xz and yz plane), mean over the held-apart scans;
   - Table 2: mean absolute gradient (:func:`sharpstack.metrics.mean_abs_gradient`) of the
     planes z = 8, 15, 22, 25 and of the vertical sections at x = 24 and y = 24;
   - Table 1: SSIM(x_k, y_k) per plane, with the paper's references SSIM(x_k, x_15) and
     SSIM(x_i,k, x_j,k) of two different scans;
   - the done-when criteria of issue 9: FM of y flat over the planes (max/min <= 1.15)
     while x's is not, PIQE of the outer planes (1-4, 26-29) lower than the input's, FM of
     y_perp above x_perp, SSIM at the focal plane >= 0.85;

5. writes ``tables.md`` (every table beside the paper's values), ``per_plane.csv``,
   ``results.json``, ``cross_sections.png`` (the paper's Fig. 4: planes and vertical
   sections before/after), ``gradient_histograms.png`` (Fig. 6) and ``fm_piqe.png``
   (Fig. 7).

:func:`card_quality` scores the weights a zoo build wrote (``sharpstack zoo``) with the same
criteria on the z-scans that run held apart, for its model card (``bench zsegan --card``).

All sizes are options, so the reduced CPU run and the paper-size GPU run are the same code
(``sharpstack bench zsegan``; the README gives both commands). Nothing here prints.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...psf import fit_defocus_sigmas

__all__ = ["run_zsegan_bench", "card_quality", "quality_of", "fit_defocus_sigmas",
           "PAPER_TABLE3", "PAPER_TABLE1",
           "PAPER_TABLE2", "REDUCED"]

REDUCED: dict[str, Any] = {"crop": 48, "ngf": 8, "n_res": 3, "ndf": 16, "sections": 4,
                           "epochs": 40, "steps_per_epoch": 64, "calib_crops": 32,
                           "residual": True, "upsample": "resize", "z_padding": "replicate"}
"""The reduced CPU recipe (about an hour on 2 CPU cores): smaller crops and networks, and
residual generators with nearest + conv upsampling, which a 640-step trial of the
notebook's tanh / transposed-convolution generators showed to be needed at this budget
(focal-plane SSIM 0.11, checkerboard output), and replicate z padding, which lifted the
outermost planes' sharpness to that of their neighbours (FM max/min 1.57 -> 1.39 at 30
epochs, README). The paper size is the settings' defaults
(crop 128, ngf 16, 6 residual blocks, ndf 32, tanh, transposed convolutions, 200 epochs)."""

# The paper's Table 3 (plane 1..29, then the vertical sections): PIQE(y), PIQE(x), FM(y), FM(x)
PAPER_TABLE3 = {
    "piqe_y": [16.69, 18.04, 15.58, 17.84, 16.10, 18.59, 19.09, 19.14, 18.20, 16.6, 16.99,
               16.50, 16.24, 14.88, 16.09, 15.14, 15.23, 15.73, 17.40, 16.66, 17.58, 17.26,
               18.63, 15.93, 15.91, 15.71, 16.59, 15.03, 14.21],
    "piqe_x": [28.18, 31.06, 34.91, 37.95, 39.65, 39.03, 35.49, 28.27, 22.24, 19.10, 18.71,
               18.27, 17.53, 17.75, 16.96, 16.96, 17.20, 17.61, 18.44, 18.79, 19.60, 22.46,
               29.88, 37.36, 39.27, 37.61, 35.09, 31.31, 28.30],
    "fm_y": [0.0234, 0.0232, 0.0238, 0.0232, 0.0234, 0.0231, 0.0232, 0.0227, 0.0224, 0.0227,
             0.0230, 0.0230, 0.0222, 0.0221, 0.0227, 0.0228, 0.0222, 0.0220, 0.0225, 0.0234,
             0.0232, 0.0240, 0.0250, 0.0253, 0.0248, 0.0240, 0.0239, 0.0231, 0.0224],
    "fm_x": [0.0075, 0.0079, 0.0084, 0.0091, 0.0100, 0.0110, 0.0125, 0.0143, 0.0164, 0.0188,
             0.0211, 0.0229, 0.0238, 0.0242, 0.0238, 0.0238, 0.0234, 0.0228, 0.0217, 0.0200,
             0.0178, 0.0155, 0.0134, 0.0116, 0.0102, 0.0092, 0.0084, 0.0078, 0.0074],
    "vertical": {"piqe_y": 22.73, "piqe_x": 33.91, "fm_y": 0.0649, "fm_x": 0.0287},
}
# The paper's Table 1 (mean over 449 ROIs), plane 1..29
PAPER_TABLE1 = {
    "x_vs_x15": [0.95, 0.95, 0.95, 0.96, 0.96, 0.97, 0.97, 0.97, 0.98, 0.98, 0.98, 0.99, 0.99,
                 1.00, 0.99, 0.99, 0.98, 0.97, 0.97, 0.96, 0.96, 0.96, 0.96, 0.96, 0.95, 0.95,
                 0.95, 0.94, 0.94],
    "x_vs_y": [0.88, 0.88, 0.88, 0.88, 0.89, 0.89, 0.90, 0.90, 0.91, 0.91, 0.92, 0.92, 0.92,
               0.93, 0.93, 0.93, 0.93, 0.93, 0.93, 0.93, 0.93, 0.93, 0.92, 0.91, 0.90, 0.90,
               0.89, 0.89, 0.88],
    "xi_vs_xj": [0.41, 0.41, 0.41, 0.41, 0.40, 0.41, 0.41, 0.41, 0.41, 0.41, 0.41, 0.41, 0.41,
                 0.41, 0.41, 0.41, 0.41, 0.41, 0.41, 0.40, 0.40, 0.40, 0.40, 0.39, 0.39, 0.39,
                 0.39, 0.40, 0.41],
}
# The paper's Table 2 (mean absolute gradient, 1000 ROIs)
PAPER_TABLE2 = {
    "planes": {25: (0.0537, 0.1315), 22: (0.0786, 0.1300), 8: (0.0894, 0.1268),
               15: (0.1293, 0.1310)},
    "vertical": {"x=24": (0.0841, 0.1307), "y=24": (0.0885, 0.1217)},
}
_PLANES_T2 = (8, 15, 22, 25)
_OUTER = (1, 2, 3, 4, 26, 27, 28, 29)


def _verticals(vol: np.ndarray, every: int = 16) -> list[np.ndarray]:
    """xz and yz sections (rows lateral, columns z) every ``every`` pixels."""
    h, w = vol.shape[1:]
    out = [vol[:, r, :].T for r in range(every // 2, h, every)]
    out += [vol[:, :, c].T for c in range(every // 2, w, every)]
    return out


def _scores(vol: np.ndarray) -> dict[str, Any]:
    from ...metrics import focus_measure, mean_abs_gradient, piqe

    vs = _verticals(vol)
    return {
        "fm": [focus_measure(p) for p in vol],
        "piqe": [piqe(p, data_range=1.0) for p in vol],
        "grad": [mean_abs_gradient(p, data_range=1.0) for p in vol],
        "fm_v": float(np.mean([focus_measure(v) for v in vs])),
        "piqe_v": float(np.mean([piqe(v, data_range=1.0) for v in vs])),
        "grad_x24": mean_abs_gradient(vol[:, :, 23].T, data_range=1.0),
        "grad_y24": mean_abs_gradient(vol[:, 23, :].T, data_range=1.0),
    }


def _instance_gap(model, raw: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """How the package's stored-statistics output differs from running G_S with each
    scan's own instance statistics (the reference notebook's inference)."""
    import torch

    from ...metrics import focus_measure, ssim

    net = model.deploy()
    net.train()  # instance statistics of this scan; no parameter changes (no_grad, no dropout)
    with torch.no_grad():
        inst = net(torch.from_numpy(model.normalizer.before(raw))[None, None])[0, 0].numpy()
    f = model.config.focal_index
    fm = [focus_measure(p) for p in inst]
    return {"mean_abs_diff": float(np.abs(inst - y).mean()),
            "ssim": ssim(inst[f], y[f], data_range=1.0),
            "fm_ratio_instance": max(fm) / min(fm)}


def _evaluate(model, zs: list[tuple[str, np.ndarray]], rl_iterations: int) -> dict[str, Any]:
    """Score ``model`` on its held-apart z-scans (``model.split``) beside the input and the
    fitted Richardson-Lucy baseline: per-plane scores, Table 1, the criteria of issue 9/22 and
    the same criteria on the scans that did not choose the kept epoch."""
    from ...baselines import richardson_lucy_slicewise
    from ...metrics import gradient_histogram, ssim, ssim_per_slice
    from .model import restore

    cfg = model.config
    by_name = dict(zs)
    norm = model.normalizer
    focal = cfg.focal_index
    train01 = [np.clip(norm.before(by_name[n]), 0, 1) for n in model.split["train"][:8]]
    sigmas = fit_defocus_sigmas(train01, focal)

    t_eval = time.perf_counter()
    per = {"input": [], "rl": [], "zsegan": []}
    t1 = {"x_vs_y": [], "x_vs_rl": [], "x_vs_xf": [], "xi_vs_xj": []}
    keys = ("z=8", "z=15", "z=21", "z=25")
    hist_acc: dict[str, dict[str, Any]] = {"input x": {k: 0 for k in keys},
                                           "ZSE-GAN y": {k: 0 for k in keys}}
    held = model.split["held_apart"]
    example = None
    gap = []
    for i, name in enumerate(held):
        x01 = np.clip(norm.before(by_name[name]), 0, 1).astype(np.float32)
        y = restore(model, by_name[name])
        gap.append(_instance_gap(model, by_name[name], y))
        rl = np.clip(norm.before(richardson_lucy_slicewise(x01 + 1e-3, sigmas,
                                                           iterations=rl_iterations)),
                     0, 1).astype(np.float32)
        per["input"].append(_scores(x01))
        per["rl"].append(_scores(rl))
        per["zsegan"].append(_scores(y))
        t1["x_vs_y"].append(ssim_per_slice(x01, y, data_range=1.0))
        t1["x_vs_rl"].append(ssim_per_slice(x01, rl, data_range=1.0))
        t1["x_vs_xf"].append([ssim(x01[k], x01[focal], data_range=1.0)
                              for k in range(len(x01))])
        other = np.clip(norm.before(by_name[held[(i + 1) % len(held)]]), 0, 1)
        t1["xi_vs_xj"].append(ssim_per_slice(x01, other, data_range=1.0))
        for vol, nm in ((x01, "input x"), (y, "ZSE-GAN y")):
            for k in keys:
                z = int(k.split("=")[1])
                if z <= len(vol):
                    hist_acc[nm][k] = hist_acc[nm][k] + gradient_histogram(
                        vol[z - 1], data_range=1.0, bins=40, max_gradient=0.4)[0]
        if example is None:
            example = (x01, rl, y)
    eval_s = time.perf_counter() - t_eval
    scores = {k: _mean_scores(v) for k, v in per.items()}
    table1 = {k: np.mean(np.array(v), axis=0).tolist() for k, v in t1.items()}
    edges = np.linspace(0, 0.4, 41)
    hists = {"centres": 0.5 * (edges[1:] + edges[:-1]),
             **{nm: {k: np.asarray(v) / len(held) for k, v in d.items()}
                for nm, d in hist_acc.items()}}

    def ratio(fm):
        return max(fm) / min(fm)

    def outer(piqe):
        return float(np.mean([piqe[k - 1] for k in _OUTER if k <= len(piqe)]))

    s_in, s_rl, s_y = scores["input"], scores["rl"], scores["zsegan"]
    criteria = [
        {"name": "FM max/min over the planes", "target": "y <= 1.15, x not",
         "input": f"{ratio(s_in['fm']):.3f}", "rl": f"{ratio(s_rl['fm']):.3f}",
         "zsegan": f"{ratio(s_y['fm']):.3f}",
         "met": ratio(s_y["fm"]) <= 1.15 < ratio(s_in["fm"])},
        {"name": "PIQE of planes 1-4 and 26-29", "target": "y < x (paper 28-40 -> 15-19)",
         "input": f"{outer(s_in['piqe']):.2f}", "rl": f"{outer(s_rl['piqe']):.2f}",
         "zsegan": f"{outer(s_y['piqe']):.2f}",
         "met": outer(s_y["piqe"]) < outer(s_in["piqe"])},
        {"name": "FM of vertical sections", "target": "y > x (paper 0.0287 -> 0.0649)",
         "input": f"{s_in['fm_v']:.4f}", "rl": f"{s_rl['fm_v']:.4f}",
         "zsegan": f"{s_y['fm_v']:.4f}", "met": s_y["fm_v"] > s_in["fm_v"]},
        {"name": f"SSIM(x, y) at the focal plane {focal + 1}", "target": ">= 0.85 (paper 0.93)",
         "input": "1", "rl": f"{table1['x_vs_rl'][focal]:.3f}",
         "zsegan": f"{table1['x_vs_y'][focal]:.3f}", "met": table1["x_vs_y"][focal] >= 0.85},
    ]
    # the first val_monitor held-apart scans chose the kept epoch (select best): the same
    # criteria on the others alone are free of that selection
    unselected = None
    if cfg.select == "best" and len(held) > cfg.val_monitor:
        part = {k: _mean_scores(v[cfg.val_monitor:]) for k, v in per.items()}
        ss = float(np.mean([t[focal] for t in t1["x_vs_y"][cfg.val_monitor:]]))
        unselected = {"scans": held[cfg.val_monitor:],
                      **{k: {"fm_max_min": ratio(v["fm"]), "piqe_outer": outer(v["piqe"]),
                             "fm_vertical": v["fm_v"]} for k, v in part.items()},
                      "ssim_focal": ss}
    return {"per": per, "t1": t1, "table1": table1, "scores": scores, "criteria": criteria,
            "unselected": unselected, "held": held, "sigmas": sigmas, "n_fit": len(train01),
            "gap": gap, "example": example, "hists": hists, "seconds": eval_s}


def quality_of(res: dict[str, Any], n_held: int, how: str = "sharpstack bench zsegan"
               ) -> dict[str, Any]:
    """The model card's measured quality from :func:`_evaluate`'s criteria and unselected
    scores (for ``export --quality``)."""
    quality: dict[str, Any] = {}
    for c in res["criteria"]:
        quality[f"{c['name']}: input / RL / ZSE-GAN"] = \
            f"{c['input']} / {c['rl']} / {c['zsegan']}"
    u = res.get("unselected")
    if u:
        quality[f"the {len(u['scans'])} held-apart scans that did not choose the kept epoch "
                "(input / RL / ZSE-GAN)"] = "; ".join(
            f"{label} {u['input'][k]:.{nd}f} / {u['rl'][k]:.{nd}f} / {u['zsegan'][k]:.{nd}f}"
            for label, k, nd in (("FM max/min", "fm_max_min", 3),
                                 ("outer PIQE", "piqe_outer", 2),
                                 ("FM vertical", "fm_vertical", 4))) + (
            f"; focal SSIM {u['ssim_focal']:.3f}")
    quality["evaluated on"] = f"{n_held} held-apart z-scans of the paper's data ({how})"
    return quality


def _export(out: Path, root: Path, model, cfg, res: dict[str, Any], train_data: str) -> Path:
    """The benchmark's model as a tested package (``out/zsegan.zip``) and its card."""
    import tempfile
    import zipfile

    from ...export.package import build_package
    from ...io import write_file_atomic
    from .. import get_method
    from .._base import Trained

    quality = quality_of(res, len(model.split["held_apart"]))
    trained = Trained(settings=cfg, model=model, result=model.result,
                      record={"training_data": train_data})
    method = get_method("zsegan")
    with tempfile.TemporaryDirectory(prefix=".zsegan-export-", dir=out) as tmp:
        spec = method.package_spec(
            trained, root / "zscans" / model.split["held_apart"][0], method.deployables[0].name,
            workdir=Path(tmp), quality=quality, name="ZSE-GAN brain z-scans 29 planes")
        pkg = build_package(spec, out / "zsegan.zip", overwrite=True)
    with zipfile.ZipFile(pkg) as z:
        card = z.read("README.md").decode("utf-8")
    write_file_atomic(out / "model_card.md", lambda t: t.write_text(card, encoding="utf-8"))
    return pkg


def card_quality(recipe: str | Path, out: str | Path, *, built: str | Path | None = None,
                 rl_iterations: int = 20) -> dict[str, Any]:
    """The measured quality of a zoo model for its card: the benchmark's criteria of the run
    that ``sharpstack zoo RECIPE`` built (in ``built``, default ``zoo/built/<recipe id>``) on
    the z-scans it held apart, read from the recipe's data; writes ``{"quality": {...},
    "run": ...}`` to the file ``out`` (for ``sharpstack export ... --quality``) and returns it.
    """
    from ...errors import InputError
    from ...io import write_file_atomic
    from ...workflows import load_run
    from ...zoo import load_recipe
    from .data import read_zscans

    rec = load_recipe(recipe)
    if rec.method != "zsegan":
        raise InputError(f"{recipe} is a {rec.method} recipe; give a zsegan recipe")
    root = Path(built) if built else Path("zoo/built") / rec.id
    loaded = load_run(root / "run")
    model = loaded.trained.model
    zdirs = [Path(recipe).parent / i for i in rec.data.inputs or []]
    if not zdirs:
        raise InputError(f"{recipe} names no z-scan folder (data: inputs:)")
    zs = read_zscans(zdirs[0], n_planes=model.config.n_planes)
    missing = [n for n in model.split["held_apart"] if n not in dict(zs)]
    if missing:
        raise InputError(f"the run's held-apart z-scans {missing[:3]} are not in {zdirs[0]}; "
                         "give the recipe the run was built from")
    ev = _evaluate(model, zs, rl_iterations)
    res = {"quality": quality_of(ev, len(ev["held"]), "sharpstack bench zsegan --card: the "
                                 "run that sharpstack zoo built"),
           "run": {"method": "zsegan", "kept_epoch": model.result.best_epoch,
                   "epochs": len(model.result.history)}}
    write_file_atomic(Path(out), lambda tmp: tmp.write_text(json.dumps(res, indent=2)))
    return res


def _mean_scores(items: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for k in items[0]:
        out[k] = np.mean([it[k] for it in items], axis=0).tolist()
    return out


def _fmt(v: float, nd: int = 4) -> str:
    return f"{v:.{nd}f}"


def _tables(res: dict[str, Any]) -> str:
    x, y, rl = res["scores"]["input"], res["scores"]["zsegan"], res["scores"]["rl"]
    n = len(x["fm"])
    lines = [f"# ZSE-GAN benchmark ({res['protocol']})", ""]
    lines += ["## Done-when criteria (issue 9)", "",
              "| criterion | target | input x | RL | ZSE-GAN y | met |", "|---|---|---|---|---|---|"]
    for c in res["criteria"]:
        lines.append(f"| {c['name']} | {c['target']} | {c['input']} | {c['rl']} | "
                     f"{c['zsegan']} | {'yes' if c['met'] else 'no'} |")
    u = res.get("unselected")
    if u:
        lines += ["", f"The same on the {len(u['scans'])} held-apart z-scans that did not "
                  "choose the kept epoch (FM max/min, PIQE of planes 1-4 and 26-29, FM of "
                  "vertical sections; input / RL / ZSE-GAN): "
                  + "; ".join(f"{u['input'][k]:.3f} / {u['rl'][k]:.3f} / {u['zsegan'][k]:.3f}"
                              for k in ("fm_max_min", "piqe_outer", "fm_vertical"))
                  + f"; SSIM(x, y) at the focal plane {u['ssim_focal']:.3f}."]
    lines += ["", "## Table 3: FM and PIQE per plane (mean over the held-apart z-scans)", "",
              "Ours on the held-apart scans (x percentile-normalised to [0, 1]); the paper's "
              "values (449/1000 ROIs of its own split) beside them. FM's absolute scale "
              "depends on the image's mean intensity (the threshold is a fraction of the DC "
              "term), so compare shapes and ratios, not absolute FM.", "",
              "| plane | FM x | FM RL | FM y | FM x (paper) | FM y (paper) | PIQE x | PIQE RL | "
              "PIQE y | PIQE x (paper) | PIQE y (paper) |", "|---" * 11 + "|"]
    for k in range(n):
        px = PAPER_TABLE3 if n == 29 else None
        lines.append(
            f"| {k + 1} | {_fmt(x['fm'][k])} | {_fmt(rl['fm'][k])} | {_fmt(y['fm'][k])} | "
            f"{_fmt(px['fm_x'][k]) if px else '-'} | {_fmt(px['fm_y'][k]) if px else '-'} | "
            f"{x['piqe'][k]:.2f} | {rl['piqe'][k]:.2f} | {y['piqe'][k]:.2f} | "
            f"{px['piqe_x'][k] if px else '-'} | {px['piqe_y'][k] if px else '-'} |")
    pv = PAPER_TABLE3["vertical"]
    lines.append(f"| vertical | {_fmt(x['fm_v'])} | {_fmt(rl['fm_v'])} | {_fmt(y['fm_v'])} | "
                 f"{pv['fm_x']} | {pv['fm_y']} | {x['piqe_v']:.2f} | {rl['piqe_v']:.2f} | "
                 f"{y['piqe_v']:.2f} | {pv['piqe_x']} | {pv['piqe_y']} |")
    lines += ["", "## Table 2: mean absolute gradient", "",
              "Central differences on [0, 1] images (the paper does not say which "
              "derivative; its absolute values are about 1.7x ours on the same planes).", "",
              "| section | x | RL | y | x (paper) | y (paper) |", "|---|---|---|---|---|---|"]
    for z in _PLANES_T2:
        if z <= n:
            p = PAPER_TABLE2["planes"][z]
            lines.append(f"| plane z={z} | {_fmt(x['grad'][z - 1])} | {_fmt(rl['grad'][z - 1])} | "
                         f"{_fmt(y['grad'][z - 1])} | {p[0]} | {p[1]} |")
    for key, name in (("grad_x24", "x=24"), ("grad_y24", "y=24")):
        p = PAPER_TABLE2["vertical"][name]
        lines.append(f"| vertical {name} | {_fmt(x[key])} | {_fmt(rl[key])} | {_fmt(y[key])} | "
                     f"{p[0]} | {p[1]} |")
    t1 = res["table1"]
    lines += ["", "## Table 1: SSIM per plane", "",
              "| plane | SSIM(x_k, y_k) | paper | SSIM(x_k, RL_k) | SSIM(x_k, x_15) | paper | "
              "SSIM(x_i,k, x_j,k) | paper |", "|---" * 8 + "|"]
    for k in range(n):
        pp = PAPER_TABLE1 if n == 29 else None
        lines.append(f"| {k + 1} | {t1['x_vs_y'][k]:.3f} | {pp['x_vs_y'][k] if pp else '-'} | "
                     f"{t1['x_vs_rl'][k]:.3f} | {t1['x_vs_xf'][k]:.3f} | "
                     f"{pp['x_vs_x15'][k] if pp else '-'} | {t1['xi_vs_xj'][k]:.3f} | "
                     f"{pp['xi_vs_xj'][k] if pp else '-'} |")
    lines += ["", "## Protocol", "", res["protocol_text"], ""]
    return "\n".join(lines)


def _figures(out: Path, x: np.ndarray, rl: np.ndarray, y: np.ndarray, res: dict[str, Any],
             hists: dict[str, Any]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...io import write_file_atomic

    n = x.shape[0]
    planes = [p for p in (4, 9, 15, 22, 26) if p <= n]
    r = x.shape[1] // 2
    fig, ax = plt.subplots(3, len(planes) + 1, figsize=(2.3 * (len(planes) + 1), 7.2), dpi=90,
                           gridspec_kw={"width_ratios": [1] * len(planes) + [0.5]})
    for row, (vol, name) in enumerate(((x, "input x"), (rl, "RL"), (y, "ZSE-GAN y"))):
        for j, p in enumerate(planes):
            ax[row, j].imshow(vol[p - 1], cmap="gray", vmin=0, vmax=1)
            ax[row, j].set_title(f"{name}, z={p}", fontsize=8)
        ax[row, -1].imshow(vol[:, r, :].T, cmap="gray", vmin=0, vmax=1, aspect="auto")
        ax[row, -1].set_title("vertical (x, z)", fontsize=8)
    for a in ax.ravel():
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    write_file_atomic(out / "cross_sections.png", lambda t: fig.savefig(t, format="png"))
    plt.close(fig)

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5), dpi=90)
    centres = hists["centres"]
    for name, a in (("input x", ax[0]), ("ZSE-GAN y", ax[1])):
        for z, freq in hists[name].items():
            a.semilogy(centres, np.maximum(freq, 1e-6), label=z)
        a.set_title(f"gradient magnitude histogram, {name}", fontsize=9)
        a.set_xlabel("|gradient| (per pixel, [0, 1] images)")
        a.legend(fontsize=7)
    fig.tight_layout()
    write_file_atomic(out / "gradient_histograms.png", lambda t: fig.savefig(t, format="png"))
    plt.close(fig)

    s = res["scores"]
    ks = np.arange(1, n + 1)
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5), dpi=90)
    for name, lab in (("input", "x"), ("rl", "RL"), ("zsegan", "ZSE-GAN y")):
        ax[0].plot(ks, s[name]["fm"], marker=".", label=lab)
        ax[1].plot(ks, s[name]["piqe"], marker=".", label=lab)
    if n == 29:
        ax[1].plot(ks, PAPER_TABLE3["piqe_x"], "k:", label="x (paper)")
        ax[1].plot(ks, PAPER_TABLE3["piqe_y"], "k--", label="y (paper)")
    ax[0].set_title("FM per plane", fontsize=9)
    ax[1].set_title("PIQE per plane (lower is better)", fontsize=9)
    for a in ax:
        a.set_xlabel("plane")
        a.legend(fontsize=7)
    fig.tight_layout()
    write_file_atomic(out / "fm_piqe.png", lambda t: fig.savefig(t, format="png"))
    plt.close(fig)


def run_zsegan_bench(out_dir: str | Path, *, progress: bool = False, crop: int | None = None,
                     ngf: int | None = None, n_res: int | None = None, ndf: int | None = None,
                     sections: int | None = None, epochs: int | None = None,
                     steps_per_epoch: int | None = None, val_count: int = 16,
                     lambda_identity: float = 0.5, lambda_cycle: float = 10.5,
                     use_vertical: bool = False,
                     device: str | None = None, seed: int = 0, resume: bool = False,
                     residual: bool | None = None, upsample: str | None = None,
                     rl_iterations: int = 20, data_dir: str | Path | None = None,
                     export: bool = True, extra: dict[str, Any] | None = None
                     ) -> dict[str, Any]:
    """Train ZSE-GAN on the paper's z-scans and reproduce its Tables 1-3 (see module doc).

    Size options left as None take the reduced CPU recipe :data:`REDUCED`; ``extra`` holds
    further :class:`~sharpstack.methods.zsegan.ZSEGANConfig` fields. With ``export`` the
    trained generator is also written as a tested package ``out_dir/zsegan.zip`` (card in
    ``model_card.md``). Returns the results dict that is also written to
    ``out_dir/results.json``.
    """
    from ...io import write_file_atomic
    from .data import read_images2d, read_zscans, shared_data_dir
    from .model import train_zsegan
    from .settings import ZSEGANConfig

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(data_dir) if data_dir is not None else shared_data_dir()
    given = {"crop": crop, "ngf": ngf, "n_res": n_res, "ndf": ndf, "sections": sections,
             "epochs": epochs, "steps_per_epoch": steps_per_epoch, "residual": residual,
             "upsample": upsample}
    sizes = {k: (v if v is not None else REDUCED.get(k)) for k, v in given.items()}
    cfg = ZSEGANConfig(**{**REDUCED, **{k: v for k, v in sizes.items() if v is not None},
                          "val_count": val_count, "lambda_identity": lambda_identity,
                          "lambda_cycle": lambda_cycle,
                          "device": device, "seed": seed, **(extra or {})})
    zs = read_zscans(root / "zscans", n_planes=cfg.n_planes)
    fs = read_images2d(root / "infocus")
    vert = [a for _, a in read_images2d(root / "vertical", what="vertical section")] \
        if use_vertical else None
    t_train = time.perf_counter()
    model = train_zsegan([a for _, a in zs], [a for _, a in fs], cfg, vertical=vert,
                         names=[n for n, _ in zs], out_dir=out / "run", resume=resume,
                         progress=progress)
    train_s = time.perf_counter() - t_train
    ev = _evaluate(model, zs, rl_iterations)
    table1, scores = ev["table1"], ev["scores"]
    criteria, unselected, held, sigmas = ev["criteria"], ev["unselected"], ev["held"], ev["sigmas"]
    s_in, s_rl, s_y = scores["input"], scores["rl"], scores["zsegan"]
    n_fit, gap, example, hists, eval_s = (ev["n_fit"], ev["gap"], ev["example"], ev["hists"],
                                          ev["seconds"])
    hist = model.result.history
    protocol = (f"crop {cfg.crop}, ngf {cfg.ngf}, {cfg.n_res} residual blocks, ndf {cfg.ndf}, "
                f"{'residual' if cfg.residual else 'tanh'} generators, {cfg.upsample} "
                "upsampling, "
                + ("replicate z padding, " if cfg.z_padding == "replicate" else "") +
                f"{len(hist)} epochs x {cfg.steps_per_epoch or len(model.split['train'])} "
                f"steps ({cfg.warm_start_steps} of them the physics warm start), "
                f"{cfg.sections} section(s) per term, "
                + (f"anchored adversarial phase (synthetic-pair L1 x{cfg.synthetic_weight}, "
                   "no cycle or identity terms), " if cfg.adversarial == "anchored"
                   else f"lambda_cycle {cfg.lambda_cycle}, ")
                + (f"data fidelity x{cfg.fidelity_weight}, " if cfg.fidelity_weight > 0 else "")
                + (f"focal-plane anchor x{cfg.focal_anchor}, " if cfg.focal_anchor > 0 else "")
                + (f"adversarial-phase lr {cfg.adversarial_lr}, "
                   if cfg.adversarial_lr is not None else "") +
                f"discriminator norm {cfg.d_norm}, in-focus intensities "
                f"{'matched to the focal planes' if cfg.infocus_match == 'focal' else 'as normalised'}, "
                f"Adam lr {cfg.lr} (discriminators {cfg.lr_d or cfg.lr}), "
                f"{len(model.split['train'])} "
                f"training / {len(held)} held-apart z-scans")
    protocol_text = (
        f"Data: the paper's {len(zs)} z-scans (29 planes, 128x128, from keerfish/ZSE-GAN), "
        f"{len(fs)} in-focus images; {len(held)} z-scans held apart (seed {cfg.seed}): "
        f"{', '.join(held)}. Training: {protocol}; "
        f"{'' if cfg.adversarial == 'anchored' else f'lambda_identity {cfg.lambda_identity}; '}"
        f"sharp vertical examples: {'the vertical set' if vert else 'in-focus windows'}; "
        f"weights of the {cfg.select} epoch "
        f"({model.result.best_epoch if cfg.select == 'best' else len(hist)}). Baseline RL: per-plane Gaussian widths fitted on "
        f"{n_fit} training scans ({', '.join(f'{s:g}' for s in sigmas)} px for planes "
        f"1..{len(sigmas)}), {rl_iterations} iterations. Wall time: training "
        f"{train_s:.0f} s, evaluation {eval_s:.0f} s.")
    gap_mean = {k: float(np.mean([g[k] for g in gap])) for k in gap[0]}
    protocol_text += (
        " Stored normalisation statistics (what the package computes, tile-independent) vs "
        "each scan's own instance statistics (the notebook's inference, whole 128x128 scan): "
        f"mean |difference| {gap_mean['mean_abs_diff']:.4f}, SSIM {gap_mean['ssim']:.3f} at "
        f"the focal plane, FM max/min {gap_mean['fm_ratio_instance']:.3f} with instance "
        "statistics.")
    res = {"protocol": protocol, "protocol_text": protocol_text, "criteria": criteria,
           "unselected": unselected,
           "instance_norm_gap": gap_mean,
           "scores": scores, "table1": table1, "rl_sigmas": sigmas.tolist(),
           "split": model.split, "settings": cfg.model_dump(mode="json"),
           "history": hist, "seconds": {"train": train_s, "eval": eval_s}}
    _figures(out, *example, res, hists)
    res["seconds"]["total"] = time.perf_counter() - t0
    text = _tables(res)
    write_file_atomic(out / "tables.md", lambda t: t.write_text(text, encoding="utf-8"))

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["plane", "fm_x", "fm_rl", "fm_y", "piqe_x", "piqe_rl", "piqe_y",
                        "grad_x", "grad_rl", "grad_y", "ssim_x_y", "ssim_x_rl", "ssim_x_xf",
                        "ssim_xi_xj"])
            for k in range(len(s_in["fm"])):
                w.writerow([k + 1] + [f"{v:.6g}" for v in (
                    s_in["fm"][k], s_rl["fm"][k], s_y["fm"][k], s_in["piqe"][k],
                    s_rl["piqe"][k], s_y["piqe"][k], s_in["grad"][k], s_rl["grad"][k],
                    s_y["grad"][k], table1["x_vs_y"][k], table1["x_vs_rl"][k],
                    table1["x_vs_xf"][k], table1["xi_vs_xj"][k])])

    write_file_atomic(out / "per_plane.csv", write_csv)
    if export:
        t_exp = time.perf_counter()
        pkg = _export(out, root, model, cfg, res, train_data=(
            f"{len(model.split['train'])} of the paper's z-scans (29 planes, 128x128; "
            f"keerfish/ZSE-GAN, read in place, not redistributed), {len(fs)} in-focus images; "
            f"{len(held)} z-scans held apart (seed {cfg.seed})"))
        res["package"] = str(pkg)
        res["seconds"]["export"] = time.perf_counter() - t_exp
    write_file_atomic(out / "results.json", lambda t: t.write_text(
        json.dumps(res, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist")
                   else str(o)), encoding="utf-8"))
    return res
