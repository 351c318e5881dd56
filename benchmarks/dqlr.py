"""DQLR benchmark: deep-slice enhancement on synthetic stacks (PSNR/SSIM per depth third
against the shallow-quality ground truth) and on the two real confocal membrane stacks
(FM, gradient and contrast per depth, deep/shallow ratios), for the input, slice-wise
Gaussian deconvolution, DQLR without quantisation and DQLR. See :mod:`sharpstack.methods.dqlr.bench`.

Reduced run (the defaults: membranes and nuclei, 2 training stacks of 48x128x128 each, the
two real stacks, 6 networks of 1500 steps each (20 epochs x 75 batches of 16 clips of 48 px,
hidden 32, ConvLSTM hidden 32, lr 1e-3 cosine); about an hour on 2 CPU cores)::

    flock /tmp/sharpstack-heavy.lock python benchmarks/dqlr.py --out bench_out/dqlr --threads 2
    # the same as: sharpstack bench dqlr --out bench_out/dqlr --threads 2

Full (paper-size) run on a GPU: the paper's ConvLSTM hidden 64, encoder/generator 128
channels, batch 32, Adam 3e-4, 4 training stacks per kind (the paper: 4 training plants)::

    python benchmarks/dqlr.py --out bench_out/dqlr_full --steps 20000 --epochs 100 \\
        --hidden 128 --rnn-hidden 64 --res-hidden 32 --patch 64 --batch 32 --lr 3e-4 \\
        --lr-schedule constant --stacks 4 --shape 64,256,256 --device cuda

Writes ``table.md``, ``results.json``, ``synthetic.csv``, ``real_per_slice.csv``,
``deep_slices.png``, ``codebook.png`` and ``fm_per_depth.png`` to ``--out`` and prints the
Markdown tables.
"""

from __future__ import annotations

import argparse
import sys


def _shape(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.replace("x", ",").split(",") if p.strip()]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"--shape must be Z,Y,X, got {text!r}")
    return tuple(parts)  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench_out/dqlr", help="output folder")
    p.add_argument("--steps", type=int, default=1500, help="training steps per network")
    p.add_argument("--epochs", type=int, default=20, help="epochs (the steps are split over them)")
    p.add_argument("--stacks", type=int, default=2, help="synthetic training stacks per kind")
    p.add_argument("--kinds", default="membranes,nuclei",
                   help="comma-separated phantom kinds (empty: real stacks only)")
    p.add_argument("--no-real", action="store_true", help="skip the two real stacks")
    p.add_argument("--real-data", default=None, help="folder of the real stacks "
                   "(default ../shared/data beside the repository)")
    p.add_argument("--shape", type=_shape, default=(48, 128, 128), help="synthetic stack Z,Y,X")
    p.add_argument("--photons", type=float, default=50.0, help="photons at the brightest voxel")
    p.add_argument("--hidden", type=int, default=None, help="encoder/generator channels (32)")
    p.add_argument("--rnn-hidden", type=int, default=None, help="ConvLSTM hidden channels (32)")
    p.add_argument("--res-hidden", type=int, default=None, help="residual bottleneck (16)")
    p.add_argument("--patch", type=int, default=None, help="clip size in px (48)")
    p.add_argument("--batch", type=int, default=None, help="clips per batch (16)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (1e-3)")
    p.add_argument("--lr-schedule", default=None, help="constant or cosine (cosine)")
    p.add_argument("--codes", type=int, default=None, help="codebook size (128)")
    p.add_argument("--window", type=int, default=None, help="recurrence window (3)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (per job)")
    p.add_argument("--jobs", type=int, default=1, help="trainings at once in worker "
                   "processes (2 with --threads 1 on a 2-core CPU)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: GPU if present)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    from sharpstack.methods.dqlr.bench import run_dqlr_bench
    from sharpstack.errors import SharpstackError

    settings = {"hidden": a.hidden, "rnn_hidden": a.rnn_hidden, "res_hidden": a.res_hidden,
                "patch_size": a.patch, "batch_size": a.batch, "lr": a.lr,
                "lr_schedule": a.lr_schedule, "num_codes": a.codes, "window": a.window}
    try:
        res = run_dqlr_bench(
            a.out, steps=a.steps, epochs=a.epochs, n_stacks=a.stacks,
            kinds=tuple(k for k in a.kinds.split(",") if k.strip()), real=not a.no_real,
            real_data=a.real_data, shape=a.shape, photons=a.photons,
            settings={k: v for k, v in settings.items() if v is not None}, threads=a.threads,
            jobs=a.jobs,
            device=a.device, seed=a.seed, progress=True)
    except SharpstackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(res["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
