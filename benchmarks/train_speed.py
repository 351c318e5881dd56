"""Training speed and quality per precision: fp32 against the automatic setting, per method.

For each method, one run on one machine: the demo's data and recipe (``sharpstack demo
<m>``'s synthetic protocol and settings), trained for the same number of steps once with
``--precision fp32``, once with ``--precision auto`` (float32 channels-last on CPUs without
AMX; bf16 autocast + channels-last on AMX CPUs and GPUs) and once with ``--precision bf16``,
same seed (``--precisions`` picks others). Prints per method and setting:

- training steps per second (training batches only: the loop's per-epoch time minus nothing,
  over a budget where validation is a small share; the validation share is printed too);
- the quality the demo's in-process evaluation reaches after those steps (IsoNet: PSNR vs
  the isotropic ground truth; DQLR: deep-third PSNR; ZSE-GAN: FM max/min over the planes of
  the held-apart z-scan; disentangled: deblurring PSNR vs the in-focus plane), so a speed-up
  never hides a quality loss.

Usage::

    python benchmarks/train_speed.py                       # all four methods
    python benchmarks/train_speed.py --methods isonet dqlr --steps 200 --threads 2

Run it with nothing else on the machine: the steps/s are wall-clock figures. The quality at a
reduced step budget is not the demo's figure (the demos train longer); it is the same budget
in both settings, which is what the comparison needs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

# the figure of each method's evaluation that the comparison reports (higher is better unless
# the flag says otherwise)
MEASURES = {
    "isonet": ("PSNR vs isotropic GT, IsoNet restoration (dB)", True),
    "dqlr": ("PSNR deep third, DQLR (dB)", True),
    "zsegan": ("FM max/min over planes, ZSE-GAN", False),
    "disentangled": ("PSNR vs in-focus plane, deblurred (dB, mean)", True),
}


def _pick(quality: dict, wanted: str):
    """The evaluation entry named ``wanted`` (or the first whose name contains its words)."""
    if wanted in quality:
        return wanted, quality[wanted]
    words = [w.lower() for w in wanted.replace(",", " ").split() if len(w) > 2]
    for k, v in quality.items():
        if isinstance(v, (int, float)) and all(w in k.lower() for w in words):
            return k, v
    return None, None


def run_method(name: str, steps: int, epochs: int, work: Path, precisions: list[str],
               seed: int = 0) -> dict:
    from sharpstack.methods import get_method
    from sharpstack.workflows import synthesize, train_run

    m = get_method(name)
    demo = m.demo
    data = work / name / "data"
    syn = synthesize(m, data, overwrite=True, **dict(demo.synth))
    rows = {}
    for precision in precisions:
        settings = {**syn["settings"], **dict(demo.settings), "epochs": epochs,
                    "steps_per_epoch": max(1, steps // epochs), "precision": precision,
                    "seed": seed}
        out = work / name / f"run_{precision}"
        t = time.perf_counter()
        res = train_run(m, syn["inputs"], out, settings=settings, overwrite=True)
        wall = time.perf_counter() - t
        hist = res["history"]
        done = settings["steps_per_epoch"] * len(hist)
        loop_s = sum(h["seconds"] for h in hist)
        quality = m.evaluate(res["trained"], syn["synth"])
        key, value = _pick(quality, MEASURES[name][0])
        numerics = json.loads((out / "history.json").read_text())["config"].get("numerics")
        rows[precision] = {"numerics": numerics, "steps": done, "loop_s": loop_s,
                           "steps_per_s": done / loop_s, "wall_s": wall,
                           "measure": key, "value": value,
                           "final_train_loss": hist[-1].get("train_loss"),
                           "final_val_loss": hist[-1].get("val_loss")}
        print(f"  {name:13s} {precision:5s} ({numerics}): {done} steps in {loop_s:7.1f} s "
              f"= {done / loop_s:6.2f} steps/s; {key} = {value}", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=list(MEASURES))
    ap.add_argument("--steps", type=int, default=200, help="training steps per run")
    ap.add_argument("--epochs", type=int, default=4, help="epochs the steps are split into")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "auto", "bf16"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0, help="training seed (the data stay the demo's)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args(argv)

    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from sharpstack.precision import cpu_has_amx, cpu_has_native_bf16

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU native bf16: "
          f"{cpu_has_native_bf16()}, AMX: {cpu_has_amx()}, CUDA: {torch.cuda.is_available()}",
          flush=True)
    work = a.work or Path(tempfile.mkdtemp(prefix="train_speed_"))
    results = {}
    try:
        for name in a.methods:
            results[name] = run_method(name, a.steps, a.epochs, work, a.precisions, a.seed)
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    base = a.precisions[0]
    head = " | ".join(f"{p} steps/s" for p in a.precisions)
    vals = " | ".join(a.precisions)
    print(f"\n| method | steps | {head} | speed-up vs {base} | measure | {vals} |")
    print("|---|---|" + "---|" * (2 * len(a.precisions) + 1))
    fmt = (lambda v: f"{v:.3f}" if isinstance(v, float) else str(v))
    for name, rows in results.items():
        b = rows[base]
        sps = " | ".join(f"{rows[p]['steps_per_s']:.2f}" for p in a.precisions)
        ups = ", ".join(f"{p} {rows[p]['steps_per_s'] / b['steps_per_s']:.2f}x"
                        for p in a.precisions[1:])
        qs = " | ".join(fmt(rows[p]["value"]) for p in a.precisions)
        print(f"| {name} | {b['steps']} | {sps} | {ups} | {b['measure']} | {qs} |")
    if a.json:
        a.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
