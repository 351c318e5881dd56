"""Reproduce the disentangled-deblurring thesis's Tables 5.1-5.4 on held-apart fields.

Reduced run (the defaults of :data:`sharpstack.methods.disentangled.bench.REDUCED`: ten
models, ML-VAE, manifold, 1-D manifold and the two ablations on a synthetic and on the real
defocus series, two single-thread trainings at once; under 50 minutes on 2 CPU cores)::

    flock /tmp/sharpstack-heavy.lock /usr/bin/time -v python benchmarks/disentangled.py --out bench_out/disentangled --threads 1 --jobs 2
    # the same as: sharpstack bench disentangled --out bench_out/disentangled --threads 1 --jobs 2

Paper-size run (GPU; the thesis's network, 128 px images, 400 epochs)::

    python benchmarks/disentangled.py --channels 64,128,256,512 --id-channels 512 \\
        --blur-channels 512 --patch 128 --epochs 400 --steps 100 --batch 16 --jobs 1 \\
        --device cuda --out bench_out/disentangled_paper

Measured quality of a zoo model for its card (held-out fields of its own series; writes
``{"quality": {...}}`` for ``sharpstack export ... --quality``)::

    python benchmarks/disentangled.py --card zoo/disentangled-widefield-synth-1d.yaml \\
        --out bench_out/disentangled_card.json

Writes ``tables.md``, ``per_dz.csv``, ``results.json``, ``deblurring_synthetic.png``,
``deblurring_real.png`` and ``quality_vs_dz.png`` to ``--out`` and prints the tables. See
:mod:`sharpstack.methods.disentangled.bench` for the protocol.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from sharpstack.methods.disentangled.bench import MODELS, REDUCED

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench_out/disentangled", help="output folder")
    p.add_argument("--dataset", action="append", choices=("synthetic", "real"),
                   help="dataset (repeat; default both)")
    p.add_argument("--model", action="append", choices=tuple(MODELS),
                   help="model (repeat; default all five)")
    p.add_argument("--channels", default=",".join(str(c) for c in REDUCED["channels"]),
                   help="encoder channels (thesis 64,128,256,512)")
    p.add_argument("--id-channels", type=int, default=REDUCED["id_channels"],
                   help="identity-code channels (thesis 512)")
    p.add_argument("--blur-channels", type=int, default=None,
                   help="blur-code length of ML-VAE and manifold (default: id-channels)")
    p.add_argument("--patch", type=int, default=REDUCED["patch_size"], help="crop (thesis 128)")
    p.add_argument("--epochs", type=int, default=REDUCED["epochs"], help="epochs (thesis 400)")
    p.add_argument("--steps", type=int, default=REDUCED["steps_per_epoch"],
                   help="batches per epoch")
    p.add_argument("--batch", type=int, default=REDUCED["batch_size"], help="groups per batch")
    p.add_argument("--synthetic-fields", type=int, default=48, help="synthetic fields")
    p.add_argument("--jobs", type=int, default=2, help="trainings at once (worker processes)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: GPU if present)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per job")
    p.add_argument("--keep-runs", action="store_true", help="keep every training folder")
    p.add_argument("--card", default=None, metavar="RECIPE",
                   help="instead of the benchmark: score the model that `sharpstack zoo "
                        "RECIPE` built (in --built) on its held-out fields and write the "
                        "quality JSON to --out")
    p.add_argument("--built", default=None,
                   help="output folder of `sharpstack zoo` (default zoo/built/<recipe id>)")
    a = p.parse_args(argv)

    import torch

    if a.card:
        import json
        from pathlib import Path

        from sharpstack.methods.disentangled.bench import held_out_quality

        torch.set_num_threads(a.threads)
        from sharpstack.methods.disentangled import DisentangledSynth
        from sharpstack.zoo import load_recipe

        recipe = load_recipe(a.card)
        root = Path(a.built) if a.built else Path("zoo/built") / recipe.id
        run_json = json.loads((root / "run" / "run.json").read_text())
        dz, opts = None, {}
        if recipe.data.synth is not None:
            syn = DisentangledSynth(**recipe.data.synth)
            dz, opts = syn.dz(), syn.model_dump()
        quality = held_out_quality(root / "run", root / "data" / "series", dz_um=dz,
                                   pixel_size_um=opts.get("pixel_um", 0.2),
                                   na=opts.get("na", 1.0))
        Path(a.out).write_text(json.dumps({"quality": quality,
                                           "run": run_json.get("method")}, indent=2))
        for k, v in quality.items():
            print(f"{k}: {v}")
        return 0

    from sharpstack.methods.disentangled.bench import run_disentangled_bench

    torch.set_num_threads(a.threads)
    run_disentangled_bench(
        a.out, datasets=tuple(a.dataset or ("synthetic", "real")),
        models=tuple(a.model or MODELS), channels=[int(c) for c in a.channels.split(",")],
        id_channels=a.id_channels, blur_channels=a.blur_channels, patch_size=a.patch,
        epochs=a.epochs, steps_per_epoch=a.steps, batch_size=a.batch,
        n_synthetic=a.synthetic_fields, jobs=a.jobs, device=a.device, seed=a.seed,
        progress=True, keep_runs=a.keep_runs,
        on_step=lambda msg: print(msg, file=sys.stderr, flush=True))
    from pathlib import Path

    print((Path(a.out) / "tables.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
