"""Reproduce Table 1 of IsoNet (Weigert et al., MICCAI 2017) on synthetic phantoms.

Reduced run (the defaults: 160³, 2 volumes, 60 epochs x 40 steps, two single-thread
training jobs at once; about an hour on 2 CPU cores)::

    python benchmarks/isonet_table1.py --out bench_out/isonet_table1

Full protocol of the paper (GPU)::

    python benchmarks/isonet_table1.py --size 512 --volumes 10 --epochs 100 --steps 100 \\
        --batch 16 --patch 64 --lr 5e-3 --dropout 0.2 --device cuda --out bench_out/isonet_table1_full

Writes ``table1.md``, ``table1.csv``, ``axial_slices.png`` and ``results.json`` to ``--out``
and prints the Markdown table. See :mod:`sharpstack.bench` for the protocol.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _size(text: str):
    parts = [int(p) for p in text.replace("x", ",").split(",") if p.strip()]
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 3:
        return tuple(parts)
    raise argparse.ArgumentTypeError(f"--size must be N or Z,Y,X, got {text!r}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=_size, default=160,
                   help="phantom size N (cube) or Z,Y,X; z is cut to the span of the acquired "
                        "slices, (n - 1) x factor + 1 (default 160; paper 512)")
    p.add_argument("--volumes", type=int, default=2, help="volumes per dataset (paper 10)")
    p.add_argument("--epochs", type=int, default=60, help="epochs per network (paper 100)")
    p.add_argument("--steps", type=int, default=40, help="steps per epoch")
    p.add_argument("--batch", type=int, default=8, help="batch size")
    p.add_argument("--patch", type=int, default=48, help="training patch size (multiple of 16)")
    p.add_argument("--patches", type=int, default=1024, help="training patches per network")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="Adam learning rate (paper 5e-3; 1e-3 trains better on short budgets)")
    p.add_argument("--dropout", type=float, default=0.0,
                   help="dropout of every network (paper 0.2; 0 trains better on short budgets)")
    p.add_argument("--datasets", default="nuclei,membranes,nuclei+membranes",
                   help="comma-separated subset of nuclei,membranes,nuclei+membranes")
    p.add_argument("--out", default="bench_out/isonet_table1", help="output folder")
    p.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads per job (default 1: on a shared 2-core machine, 2 "
                        "threads made each training step about 10x slower through "
                        "oversubscription)")
    p.add_argument("--jobs", type=int, default=None,
                   help="trainings at once, in worker processes (default: 2 on a CPU with at "
                        "least 2 cores, else 1; the numbers do not depend on it)")
    p.add_argument("--quiet", action="store_true", help="no per-step log lines")
    a = p.parse_args(argv)

    import torch

    from sharpstack.methods.isonet.bench import run_isonet_table1
    from sharpstack.errors import SharpstackError

    torch.set_num_threads(a.threads)
    jobs = a.jobs
    if jobs is None:
        on_gpu = (a.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        jobs = 1 if on_gpu else max(1, min(2, (os.cpu_count() or 1) // a.threads))
    t0 = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:7.0f} s] {msg}", file=sys.stderr, flush=True)

    try:
        res = run_isonet_table1(
            a.out, size=a.size, n_volumes=a.volumes, epochs=a.epochs, steps_per_epoch=a.steps,
            datasets=a.datasets, device=a.device, seed=a.seed, jobs=jobs,
            on_step=None if a.quiet else log,
            isonet={"batch_size": a.batch, "patch_size": a.patch, "n_patches": a.patches,
                    "lr": a.lr, "dropout": a.dropout})
    except SharpstackError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with open(res["files"]["table"], encoding="utf-8") as fh:
        print(fh.read())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
